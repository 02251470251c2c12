"""Every ``/kubeflow`` subcommand through ``Commands.handle``, on the real pieces.

A real SQLite store, the real in-process queue consumed by the real worker on the
dry-run cloud, the real ``Authz`` and ``Approvals``; only the chat service and the clock
are stand-ins.  Each refusal is checked to change nothing: no record stored, no card
posted, nothing queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.wiring import build_runtime
from handlers import action_ids
from handlers.policy import Policy
from handlers.usage import USAGE
from provisioning.actions import DeleteAction, GrantAction, RevokeAction
from provisioning.inprocess_queue import InProcessQueue
from provisioning.records import State
from tests.support.clocks import FakeClock
from tests.support.command_bot import APPROVER, OWNER, START, TEAM, Bot, new_bot
from tests.support.paths import SAMPLE_POLICY
from tests.support.policies import policy
from tests.support.recording_chat import WAIT_SECONDS, RecordingChat

ELSEWHERE = "C0ELSEWHERE"
OTHER = "U_BOB"
DEMO_URL = "https://demo.endpoints.demo-project.cloud.goog/"


MakeBot = Callable[..., Bot]


@pytest.fixture
def make_bot(tmp_path: Path) -> Iterator[MakeBot]:
    built: list[Bot] = []

    def make(the_policy: Policy | None = None) -> Bot:
        bot = new_bot(tmp_path / f"requests-{len(built)}.db", the_policy or policy())
        built.append(bot)
        return bot

    yield make
    for bot in built:
        bot.close()


@pytest.fixture
def bot(make_bot: MakeBot) -> Bot:
    return make_bot()


# create


def test_create_files_a_request_posts_its_card_and_tells_the_requester(bot: Bot) -> None:
    record = bot.file(OWNER, "create demo --gpu nvidia-l4:2 --gpu-nodes 1-3")

    assert record.state is State.PENDING
    assert record.requester == OWNER
    assert record.channel == TEAM
    (card,) = bot.chat.cards()
    assert (card.channel, card.thread_ts) == (TEAM, None)
    assert record.thread_ts == card.ts
    assert "nvidia-l4" in card.text
    filed = bot.chat.last_ephemeral(OWNER)
    assert filed.startswith(f"Filed `{record.id}`")
    assert bot.settle() == []


def test_create_dry_run_answers_with_every_api_call_and_stores_and_queues_nothing(
    bot: Bot,
) -> None:
    answer = bot.run(OWNER, "create demo --gpu nvidia-tesla-t4:1 --dry-run")

    assert "dry-run" in answer
    assert "container.projects.locations.clusters.create" in answer
    assert "container.projects.locations.clusters.nodePools.create" in answer
    assert "compute.globalAddresses.insert" in answer
    assert f"{DEMO_URL} (dry-run)" in answer
    assert bot.store.list() == []
    assert bot.chat.posts() == []
    assert bot.settle() == []


def test_a_second_create_of_a_pending_name_names_the_request_that_holds_it(bot: Bot) -> None:
    holder = bot.file(OWNER, "create demo")
    before = bot.state()

    answer = bot.run(OTHER, "create demo --zone us-central1-c")

    assert holder.id in answer
    assert "demo" in answer
    assert bot.state() == before


def test_create_of_a_name_that_exists_already_is_refused(bot: Bot) -> None:
    existing = bot.deploy("demo")
    before = bot.state()

    answer = bot.run(OTHER, "create demo")
    dry_answer = bot.run(OTHER, "create demo --dry-run")

    assert "exists already" in answer
    assert existing.id in answer
    assert "exists already" in dry_answer
    assert bot.state() == before


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("create demo --zone europe-west4-a", ["us-central1-a", "us-central1-c"]),
        ("create demo --gpu nvidia-tesla-a100:1", ["nvidia-tesla-t4", "nvidia-l4"]),
        ("create demo --project other-project", ["demo-project"]),
    ],
)
def test_a_disallowed_zone_gpu_or_project_gets_one_line_naming_what_is_allowed(
    bot: Bot, text: str, allowed: list[str]
) -> None:
    answer = bot.run(OWNER, text)

    reason, usage = answer.splitlines()
    assert "not allowed" in reason
    assert all(value in reason for value in allowed)
    assert usage == f"Usage: {USAGE['create']}"
    assert bot.state() == ([], 0, [])


def test_an_unknown_subcommand_is_named_and_answered_with_usage(bot: Bot) -> None:
    answer = bot.run(OWNER, "deploy demo")

    assert "unknown subcommand `deploy`" in answer
    assert "Usage: /kubeflow create|grant|revoke|status|list|delete|help" in answer
    assert bot.state() == ([], 0, [])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("create", "needs a deployment NAME"),
        ("create demo --zone", "--zone needs a value"),
        ("create demo --colour red", "unknown flag `--colour`"),
        ("create demo --zone us-central1-a --zone us-central1-c", "given twice"),
        ("create demo --dry-run=yes", "--dry-run takes no value"),
        ("create demo --gpu nvidia-tesla-t4:9", "from 1 to 4"),
        ("create demo --gpu-nodes 2", "needs --gpu TYPE too"),
        ("create demo --gpu nvidia-tesla-t4 --gpu-nodes 3-1", "MIN 3 is larger than MAX 1"),
        ("create Demo_1", "not a valid deployment name"),
        ("create demo other", "unexpected `other`"),
        ("create kf-abc123", "looks like a request id"),
        ("grant", "needs the EMAIL"),
        ("grant not-an-email demo", "not a valid email address"),
        ("delete", "needs the NAME"),
        ("status demo extra", "unexpected `extra`"),
        ("list everything", "unexpected `everything`"),
    ],
)
def test_a_malformed_command_gets_the_reason_and_usage_and_changes_nothing(
    bot: Bot, text: str, reason: str
) -> None:
    answer = bot.run(OWNER, text)

    assert reason in answer.splitlines()[0]
    assert "Usage: /kubeflow" in answer
    assert len(bot.chat.ephemerals()) == 1
    assert bot.state() == ([], 0, [])


def test_only_people_on_the_requesters_list_may_create(make_bot: MakeBot) -> None:
    bot = make_bot(policy(requesters={"users": [OWNER]}))

    refusal = bot.run(OTHER, "create demo")

    assert "does not let you file requests" in refusal
    assert bot.state() == ([], 0, [])
    assert bot.file(OWNER, "create demo").requester == OWNER
    assert bot.file(APPROVER, "create other").requester == APPROVER


# grant and revoke


def test_a_grant_by_an_approver_is_queued_directly_and_answered_in_the_deployments_thread(
    bot: Bot,
) -> None:
    create = bot.deploy("demo")
    cards_before = len(bot.chat.cards())

    grant = bot.file(APPROVER, "grant ada@example.com demo", channel=ELSEWHERE)

    assert grant.action == GrantAction(
        email="ada@example.com", deployment="demo", project="demo-project"
    )
    assert grant.decided_by == APPROVER
    assert grant.state in {State.QUEUED, State.RUNNING, State.SUCCEEDED}
    assert len(bot.chat.cards()) == cards_before  # no card to click
    assert grant.id in bot.settle()
    assert bot.record(grant.id).state is State.SUCCEEDED
    in_thread = [c for c in bot.chat.replies(create.thread_ts or "") if grant.id in c.text]
    assert [c.channel for c in in_thread] == [TEAM, TEAM]
    assert "queued" in in_thread[0].text
    assert f"<@{APPROVER}>" in in_thread[1].text
    assert bot.chat.posts(channel=ELSEWHERE) == []


def test_a_grant_by_someone_else_files_a_card_in_the_deployments_thread(bot: Bot) -> None:
    create = bot.deploy("demo")
    delivered_before = bot.settle()

    grant = bot.file(OTHER, "grant ada@example.com demo", channel=ELSEWHERE)

    assert grant.state is State.PENDING
    assert grant.requester == OTHER
    card = bot.chat.cards()[-1]
    assert (card.channel, card.thread_ts) == (TEAM, create.thread_ts)
    assert {b["value"] for b in card.buttons} == {grant.id}
    assert grant.thread_ts == create.thread_ts
    assert bot.chat.last_ephemeral(OTHER).startswith(f"Filed `{grant.id}`")
    assert bot.settle() == delivered_before


def test_a_grant_to_an_address_outside_the_allowed_domains_is_refused(bot: Bot) -> None:
    bot.deploy("demo")
    before = bot.state()

    answer = bot.run(APPROVER, "grant eve@evil.test demo")

    assert "example.com" in answer.splitlines()[0]
    assert bot.state() == before


def test_a_grant_without_a_name_goes_to_the_only_deployment(bot: Bot) -> None:
    bot.deploy("demo")

    grant = bot.file(APPROVER, "grant ada@example.com")

    assert isinstance(grant.action, GrantAction)
    assert grant.action.deployment == "demo"


def test_a_grant_without_a_name_asks_which_when_there_are_two_deployments(bot: Bot) -> None:
    bot.deploy("alpha")
    bot.deploy("beta", owner=OTHER)
    before = bot.state()

    answer = bot.run(APPROVER, "grant ada@example.com")

    assert answer == "Name the deployment: `alpha`, `beta`."
    assert bot.state() == before


def test_a_grant_without_any_deployment_says_there_is_none(bot: Bot) -> None:
    answer = bot.run(APPROVER, "grant ada@example.com")

    assert "no deployment yet" in answer
    assert bot.state() == ([], 0, [])


def test_a_grant_for_an_unknown_deployment_lists_the_known_ones(bot: Bot) -> None:
    bot.deploy("demo")
    before = bot.state()

    answer = bot.run(APPROVER, "grant ada@example.com nosuch")

    assert answer == "No deployment named `nosuch`. Deployments: `demo`."
    assert bot.state() == before


def test_a_revoke_by_someone_who_is_not_an_approver_is_refused(bot: Bot) -> None:
    bot.deploy("demo")
    before = bot.state()

    answer = bot.run(OWNER, "revoke ada@example.com demo")

    assert answer == "Only approvers can revoke access."
    assert bot.state() == before


def test_a_revoke_by_an_approver_is_queued_directly(bot: Bot) -> None:
    create = bot.deploy("demo")

    revoke = bot.file(APPROVER, "revoke ada@example.com demo")

    assert isinstance(revoke.action, RevokeAction)
    assert revoke.thread_ts == create.thread_ts
    assert revoke.id in bot.settle()
    assert bot.record(revoke.id).state is State.SUCCEEDED


# delete


def test_a_delete_by_someone_who_neither_owns_nor_approves_is_refused(bot: Bot) -> None:
    bot.deploy("demo")
    before = bot.state()

    answer = bot.run(OTHER, "delete demo")

    assert answer == "Only the deployment's owner or an approver can delete it."
    assert bot.state() == before


def test_a_delete_by_the_owner_files_a_card_whose_approve_button_asks_for_confirmation(
    bot: Bot,
) -> None:
    create = bot.deploy("demo")

    delete = bot.file(OWNER, "delete demo")

    assert isinstance(delete.action, DeleteAction)
    assert delete.state is State.PENDING
    card = bot.chat.cards()[-1]
    assert card.thread_ts == create.thread_ts
    buttons = {b["action_id"]: b for b in card.buttons}
    confirm = buttons[action_ids.APPROVE]["confirm"]
    assert confirm["title"]["text"]
    assert "demo" in confirm["text"]["text"]
    assert {"confirm", "deny"} <= confirm.keys()
    assert "confirm" not in buttons[action_ids.DENY]
    assert bot.chat.last_ephemeral(OWNER).startswith(f"Filed `{delete.id}`")

    bot.approvals.approve(APPROVER, TEAM, delete.id)
    bot.settle()

    assert bot.record(delete.id).state is State.SUCCEEDED
    assert bot.run(OWNER, "list").startswith("No deployments yet")
    assert bot.file(OTHER, "create demo").requester == OTHER


# status, list, help


def test_status_by_request_id_shows_the_state_steps_and_url(bot: Bot) -> None:
    create = bot.deploy("demo", flags="--gpu nvidia-tesla-t4")

    answer = bot.run(OTHER, f"status {create.id}")

    assert answer.startswith(f"`{create.id}` (create) by <@{OWNER}>: succeeded")
    assert "Steps done: 11/11" in answer
    assert "[p] GKE cluster: create cluster demo in us-central1-a" in answer
    assert f"URL: {DEMO_URL}" in answer


def test_status_of_a_finished_deployment_without_gpus_counts_skipped_steps_as_done(
    bot: Bot,
) -> None:
    create = bot.deploy("demo")

    answer = bot.run(OTHER, f"status {create.id}")

    assert "Steps done: 11/11" in answer


def test_status_by_name_shows_the_deployments_latest_request(bot: Bot) -> None:
    create = bot.deploy("demo")

    answer = bot.run(OTHER, "status demo")

    assert answer.startswith(f"`{create.id}` (create)")
    assert f"URL: {DEMO_URL}" in answer


def test_status_by_name_after_a_grant_still_shows_the_deployments_url(bot: Bot) -> None:
    bot.deploy("demo")
    bot.file(APPROVER, "grant ada@example.com demo")
    bot.settle()

    answer = bot.run(OTHER, "status demo")

    assert f"URL: {DEMO_URL}" in answer


def test_status_without_an_argument_shows_my_own_requests(bot: Bot) -> None:
    mine = bot.file(OWNER, "create alpha")
    theirs = bot.file(OTHER, "create beta")

    answer = bot.run(OWNER, "status")
    nothing = bot.run(APPROVER, "status")

    assert mine.id in answer
    assert theirs.id not in answer
    assert "no requests" in nothing


def test_status_of_an_unknown_request_or_name_says_so(bot: Bot) -> None:
    bot.file(OWNER, "create demo")

    assert bot.run(OWNER, "status kf-zzzzzz") == "No such request `kf-zzzzzz`."
    assert bot.run(OWNER, "status nosuch") == "No deployment named `nosuch`. Deployments: `demo`."


def test_status_of_a_pending_request_past_its_ttl_says_expired(bot: Bot) -> None:
    record = bot.file(OWNER, "create demo")
    bot.clock.advance(hours=25)

    answer = bot.run(OWNER, f"status {record.id}")

    assert f"<@{OWNER}>: expired" in answer
    assert bot.record(record.id).state is State.EXPIRED


def test_list_shows_each_deployment_with_state_gpu_owner_age_and_url(bot: Bot) -> None:
    assert bot.run(OTHER, "list").startswith("No deployments yet")
    alpha = bot.deploy("alpha", flags="--gpu nvidia-tesla-t4:2")
    bot.clock.advance(hours=1)
    beta = bot.file(OTHER, "create beta")
    denied = bot.file(OTHER, "create gamma")
    bot.approvals.deny(APPROVER, TEAM, denied.id, "no")
    bot.clock.advance(hours=2)

    lines = bot.run(OTHER, "list").splitlines()

    assert lines == [
        "Deployments:",
        f"`alpha` planned (dry-run), 2x nvidia-tesla-t4, owner <@{OWNER}>, age 3h, "
        f"https://alpha.endpoints.demo-project.cloud.goog/ (`{alpha.id}`)",
        f"`beta` awaiting approval, no GPU, owner <@{OTHER}>, age 2h, "
        f"https://beta.endpoints.demo-project.cloud.goog/ (`{beta.id}`)",
    ]


@pytest.mark.parametrize("text", ["help", "", "--help"])
def test_help_lists_every_subcommand(bot: Bot, text: str) -> None:
    answer = bot.run(OTHER, text)

    assert all(usage in answer for usage in USAGE.values())
    assert bot.state() == ([], 0, [])


def test_help_for_one_subcommand_explains_it(bot: Bot) -> None:
    answer = bot.run(OTHER, "help grant")

    assert answer.startswith(f"`{USAGE['grant']}`")
    assert "roles/iap.httpsResourceAccessor" in answer


# Secrets


BOT_TOKEN = "xoxb-111-222-SECRETbottoken"
SIGNING_SECRET = "8f14e45fceea167a5a36dedd4bea2543signing"
APP_TOKEN = "xapp-1-A111-SECRETapptoken"
OAUTH_SECRET = "GOCSPX-SECREToauthclientsecret"


def test_secrets_never_appear_in_chat_or_logs_across_a_whole_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("PUBSUB_TOPIC", "PUBSUB_SUBSCRIPTION", "KUBEFLOW_BOT_CLOUD", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_app_token=APP_TOKEN,
        KUBEFLOW_BOT_OAUTH_CLIENT_ID="1234-client.apps.googleusercontent.com",
        KUBEFLOW_BOT_OAUTH_CLIENT_SECRET=OAUTH_SECRET,
        KUBEFLOW_BOT_POLICY=SAMPLE_POLICY,
        KUBEFLOW_BOT_STORE=f"sqlite:///{tmp_path / 'requests.db'}",
    )
    chat = RecordingChat(emails={"alice@example.com": OWNER})
    caplog.set_level(logging.DEBUG)
    runtime = build_runtime(settings, chat, chat, clock=FakeClock(START))
    try:
        runtime.queue.consume(runtime.worker.handle)
        runtime.commands.handle(OWNER, TEAM, "create demo --gpu nvidia-tesla-t4:1 --dry-run")
        runtime.commands.handle(OWNER, TEAM, "create demo --gpu nvidia-tesla-t4:1")
        (record,) = runtime.store.list()
        runtime.approvals.approve(OTHER, TEAM, record.id)
        runtime.approvals.approve(APPROVER, TEAM, record.id)
        assert isinstance(runtime.queue, InProcessQueue)
        assert runtime.queue.join(timeout=WAIT_SECONDS)
        runtime.commands.handle(APPROVER, TEAM, "grant ada@example.com demo")
        runtime.commands.handle(OWNER, TEAM, "create demo --zone mars-north1-a")
        runtime.commands.handle(OWNER, TEAM, f"status {record.id}")
        runtime.commands.handle(OWNER, TEAM, "list")
        assert runtime.queue.join(timeout=WAIT_SECONDS)
    finally:
        runtime.close()

    said = chat.everything_said()
    assert DEMO_URL in said  # the flow went all the way to the URL
    for secret in (BOT_TOKEN, SIGNING_SECRET, APP_TOKEN, OAUTH_SECRET):
        assert secret not in said
        assert secret not in caplog.text


def test_a_deployment_whose_create_failed_can_still_be_deleted(bot: Bot) -> None:
    create = bot.file(OWNER, "create demo")
    # Move it as approval and a worker whose cluster step failed for good would.
    for old, new in [
        (State.PENDING, State.APPROVED),
        (State.APPROVED, State.QUEUED),
        (State.QUEUED, State.RUNNING),
        (State.RUNNING, State.FAILED),
    ]:
        bot.store.transition(create.id, expected={old}, new=new, actor=APPROVER, at=START)

    delete = bot.file(OWNER, "delete demo")

    assert delete.kind == "delete"
    assert delete.state is State.PENDING


def test_help_for_create_names_what_the_policy_allows(bot: Bot) -> None:
    answer = bot.run(OTHER, "help create")

    assert "us-central1-a" in answer
    assert "nvidia-tesla-t4" in answer
