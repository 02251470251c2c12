"""``kubeflow-bot serve`` end to end: signed HTTP in, Web API calls out to a stand-in Slack.

Every test starts the installed console script as its own process (``BotLauncher``),
with a fresh SQLite file and the in-process worker on the dry-run cloud, talks to it the
way Slack does (``SlackSender``: signed slash commands, button clicks, modal submissions)
and checks what the ``SlackApiStub`` recorded and what the store holds (read-only).
Waiting is a bounded poll on the stub (``wait_for``), except in the expiry test, which
must let a one-second approval TTL pass on the process's real clock.  A negative check
("nothing else was posted") first sends a harmless command and waits for its answer, so
that work handed to the bot's pool before it has been picked up.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from handlers import action_ids, messages
from handlers.usage import USAGE
from provisioning.actions import CreateAction, GrantAction
from provisioning.records import State
from tests.support.bot_process import BotLauncher, http_get
from tests.support.pubsub_emulator import PubSubNames
from tests.support.slack_api import SlackApiStub
from tests.support.slack_driver import (
    APPROVER,
    CHANNEL,
    CREATE_DEMO,
    DEMO_URL,
    OTHER,
    REQUEST_ID,
    REQUESTER,
    USERS,
    WAIT,
    Card,
    Slack,
    acknowledged_text,
    assert_nothing_happened,
    buttons,
    card_of,
    is_card,
    text_of,
    thread_replies_containing,
)
from tests.support.slack_signing import (
    SentResponse,
    SlackSender,
    block_action_body,
    new_trigger_id,
    plain_text_values,
    slash_command_body,
    view_submission_body,
)

# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def slack(launcher: BotLauncher, stub: SlackApiStub) -> Slack:
    """The bot on the sample policy (approver U_APPROVER, four-eyes, example.com)."""
    return Slack.on(launcher.start(), stub)


# -- request verification and the HTTP front -------------------------------------------------

FORGERIES: dict[str, Callable[[SlackSender, bytes], SentResponse]] = {
    "unsigned": lambda sender, body: sender.unsigned(body),
    "bad signature": lambda sender, body: sender.bad_signature(body),
    "stale timestamp": lambda sender, body: sender.stale(body),
    "timestamp from the future": lambda sender, body: sender.post(
        body, timestamp=int(time.time()) + 301
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_slash_command_gets_401_and_has_no_effect(slack: Slack, forgery: str) -> None:
    body = slash_command_body(CREATE_DEMO, REQUESTER, CHANNEL)

    response = FORGERIES[forgery](slack.sender, body)

    assert response.status == 401, response
    slack.settle()
    assert set(slack.methods_called()) == {"auth.test"}  # at start-up, and nothing since
    assert slack.bot.records() == []
    assert slack.answer("list", user=OTHER).startswith("No deployments yet")


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_approve_click_gets_401_and_leaves_the_request_pending(
    slack: Slack, forgery: str
) -> None:
    card = slack.file()
    body = block_action_body(action_ids.APPROVE, card.request_id, APPROVER, CHANNEL, card.ts)
    calls_before = len(slack.stub.calls)

    response = FORGERIES[forgery](slack.sender, body)

    assert response.status == 401, response
    slack.settle()
    after = [c.method for c in slack.stub.calls[calls_before:]]
    assert after == [], after
    assert slack.bot.record(card.request_id).state is State.PENDING
    assert not slack.stub.message(CHANNEL, card.ts).edited


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_deny_submission_gets_401_and_leaves_the_request_pending(
    slack: Slack, forgery: str
) -> None:
    card = slack.file()
    body = view_submission_body(
        action_ids.DENY_MODAL,
        f"{card.request_id} {CHANNEL}",
        plain_text_values({action_ids.DENY_REASON_BLOCK: {action_ids.DENY_REASON_INPUT: "no"}}),
        APPROVER,
    )
    calls_before = len(slack.stub.calls)

    response = FORGERIES[forgery](slack.sender, body)

    assert response.status == 401, response
    slack.settle()
    after = [c.method for c in slack.stub.calls[calls_before:]]
    assert after == [], after
    assert slack.bot.record(card.request_id).state is State.PENDING


def test_healthz_answers_200(slack: Slack) -> None:
    assert http_get(f"{slack.bot.url}/healthz") == (200, "ok\n")


def test_an_unknown_path_gets_404(slack: Slack) -> None:
    assert http_get(f"{slack.bot.url}/nope")[0] == 404
    assert http_get(f"{slack.bot.url}/slack/events")[0] == 404  # GET: nothing to serve
    elsewhere = SlackSender(f"{slack.bot.url}/slack/other", slack.bot.secret)
    with elsewhere:
        assert elsewhere.command(CREATE_DEMO, REQUESTER, CHANNEL).status == 404
    assert_nothing_happened(slack)


# -- /kubeflow create ---------------------------------------------------------------------


def test_create_posts_the_card_as_the_thread_root_and_tells_the_requester_it_was_filed(
    slack: Slack,
) -> None:
    card = slack.file(CREATE_DEMO)

    assert REQUEST_ID.fullmatch(card.request_id)
    assert card.call.params["channel"] == CHANNEL
    assert "thread_ts" not in card.call.params  # a new message: the request's thread root
    text = text_of(card.call)
    assert f"Request `{card.request_id}` from <@{REQUESTER}>" in text
    assert "deployment `demo`" in text and "nvidia-tesla-t4" in text
    shown = buttons(card.call.params["blocks"])
    assert set(shown) == {action_ids.APPROVE, action_ids.DENY}
    assert {b["value"] for b in shown.values()} == {card.request_id}
    assert shown[action_ids.APPROVE]["style"] == "primary"
    assert shown[action_ids.DENY]["style"] == "danger"
    assert "confirm" not in shown[action_ids.APPROVE]
    [record] = slack.bot.records()
    assert record.id == card.request_id
    assert record.state is State.PENDING
    assert record.requester == REQUESTER
    assert record.thread_ts == card.ts
    assert record.cards == (card.ref,)
    assert isinstance(record.action, CreateAction)
    assert record.action.requester_email == USERS[REQUESTER]  # looked up with users.info


def test_create_with_dry_run_answers_with_the_plan_and_files_nothing(slack: Slack) -> None:
    text = slack.answer(CREATE_DEMO + " --dry-run")

    assert text.startswith("Plan for `demo`"), text
    assert "container.projects.locations.clusters.create" in text
    assert "nodePools.create" in text and "accelerator=nvidia-tesla-t4x1" in text
    assert "serviceusage.services.batchEnable" in text
    assert f"URL: {DEMO_URL} (dry-run)" in text
    assert_nothing_happened(slack)


def test_a_create_for_a_name_with_an_open_request_is_refused(slack: Slack) -> None:
    card = slack.file()

    text = slack.answer("create demo", user=OTHER)

    assert f"already has an active request `{card.request_id}`" in text
    slack.settle()
    assert len(slack.cards()) == 1
    assert len(slack.bot.records()) == 1


def test_two_creates_of_one_name_at_once_file_one_request(slack: Slack) -> None:
    start = threading.Barrier(2)

    def create(user: str) -> SentResponse:
        start.wait(timeout=WAIT)
        return slack.command("create demo", user=user)

    with ThreadPoolExecutor(2) as pool:
        users = [REQUESTER, OTHER]
        responses = dict(zip(users, pool.map(create, users), strict=True))

    [card] = [c for c in slack.stub.wait_for("chat.postMessage", 1, timeout=WAIT) if is_card(c)]
    winner = slack.bot.record(card_of(card).request_id).requester
    loser = OTHER if winner == REQUESTER else REQUESTER
    acked = responses[loser].body
    told = acknowledged_text(responses[loser]) if acked else slack.wait_told(loser)
    assert "`demo` already has an active request" in told or "exists already" in told, told
    slack.settle()
    assert len(slack.cards()) == 1
    assert len(slack.bot.records()) == 1


# -- grant, revoke, status, list, delete, help ---------------------------------------------


def test_an_approvers_grant_is_queued_directly_and_answered_in_the_deployments_thread(
    slack: Slack,
) -> None:
    card = slack.provision()

    # Slack may deliver a typed address as a mailto link.
    slack.command("grant <mailto:ada@example.com|ada@example.com> demo", user=APPROVER)

    announced = slack.wait_reply(card, f"<@{APPROVER}> is an approver", "ada@example.com")
    [grant_id] = REQUEST_ID.findall(text_of(announced))
    done = slack.wait_reply(card, f"`{grant_id}`", "(dry-run: nothing was changed)")
    assert done.params["channel"] == CHANNEL
    assert len(slack.cards()) == 1  # no card to approve
    record = slack.bot.record(grant_id)
    assert isinstance(record.action, GrantAction)
    assert record.action.email == "ada@example.com"
    assert record.action.deployment == "demo"
    assert record.decided_by == APPROVER
    assert record.state is State.SUCCEEDED


def test_a_non_approvers_grant_files_a_card_in_the_deployments_thread(slack: Slack) -> None:
    card = slack.provision()

    text = slack.answer("grant ada@example.com demo", user=OTHER)

    [grant_card] = slack.cards()[1:]
    assert text.startswith(f"Filed `{grant_card.request_id}`"), text
    assert grant_card.call.params["thread_ts"] == card.ts
    assert grant_card.channel == CHANNEL
    assert "grant `ada@example.com` access to `demo`" in text_of(grant_card.call)
    record = slack.bot.record(grant_card.request_id)
    assert record.state is State.PENDING
    assert record.requester == OTHER


def test_a_grant_to_an_email_outside_the_allowed_domains_is_refused(slack: Slack) -> None:
    slack.provision()
    stored = len(slack.bot.records())
    posted = len(slack.stub.calls_to("chat.postMessage"))

    text = slack.answer("grant eve@elsewhere.test demo", user=APPROVER)

    reason, usage = text.splitlines()
    assert "eve@elsewhere.test is not in an allowed domain" in reason
    assert "example.com" in reason
    assert usage == f"Usage: {USAGE['grant']}"
    slack.settle()
    assert len(slack.bot.records()) == stored
    assert len(slack.stub.calls_to("chat.postMessage")) == posted


def test_revoke_by_a_non_approver_is_refused(slack: Slack) -> None:
    slack.provision()
    stored = len(slack.bot.records())
    posted = len(slack.stub.calls_to("chat.postMessage"))

    text = slack.answer(f"revoke {USERS[REQUESTER]} demo", user=REQUESTER)

    assert text == messages.REVOKE_APPROVERS_ONLY
    slack.settle()
    assert len(slack.bot.records()) == stored
    assert len(slack.stub.calls_to("chat.postMessage")) == posted


def test_revoke_by_an_approver_is_queued_directly(slack: Slack) -> None:
    card = slack.provision()

    slack.command("revoke ada@example.com demo", user=APPROVER)

    announced = slack.wait_reply(card, "revoke `ada@example.com`'s access to `demo`")
    [revoke_id] = REQUEST_ID.findall(text_of(announced))
    slack.wait_reply(card, f"`{revoke_id}`", "(dry-run: nothing was changed)")
    assert slack.bot.record(revoke_id).state is State.SUCCEEDED


def test_status_shows_a_request_by_id_by_deployment_name_and_the_users_own(
    slack: Slack,
) -> None:
    card = slack.file()
    headline = f"`{card.request_id}` (create) by <@{REQUESTER}>: pending"

    assert slack.answer(f"status {card.request_id}", user=OTHER).startswith(headline)
    assert slack.answer("status demo", user=OTHER).startswith(headline)
    assert slack.answer("status", user=REQUESTER).startswith(headline)
    assert slack.answer("status", user=OTHER) == messages.no_requests()
    assert slack.answer("status kf-zzzzzz", user=OTHER) == messages.no_such_request("kf-zzzzzz")
    assert slack.answer("status nothing-here", user=OTHER).startswith(
        "No deployment named `nothing-here`"
    )


def test_status_after_the_run_shows_the_steps_and_the_url(slack: Slack) -> None:
    card = slack.provision()

    text = slack.answer(f"status {card.request_id}", user=OTHER)

    assert text.startswith(f"`{card.request_id}` (create) by <@{REQUESTER}>: succeeded"), text
    assert re.search(r"Steps done: (\d+)/\1", text), text
    assert f"URL: {DEMO_URL}" in text


def test_list_shows_each_deployment_with_state_gpu_owner_age_and_url(slack: Slack) -> None:
    demo = slack.provision()
    pending = slack.file("create notebook", user=OTHER)

    text = slack.answer("list", user=APPROVER)

    lines = text.splitlines()
    assert lines[0] == "Deployments:"
    [demo_line] = [line for line in lines if line.startswith("`demo`")]
    assert "planned (dry-run)" in demo_line
    assert "1x nvidia-tesla-t4" in demo_line
    assert f"owner <@{REQUESTER}>" in demo_line
    assert "age 0m" in demo_line
    assert DEMO_URL in demo_line and demo.request_id in demo_line
    [notebook_line] = [line for line in lines if line.startswith("`notebook`")]
    assert "awaiting approval" in notebook_line and "no GPU" in notebook_line
    assert f"owner <@{OTHER}>" in notebook_line and pending.request_id in notebook_line


def test_delete_by_the_owner_files_a_card_whose_approve_button_asks_for_confirmation(
    slack: Slack,
) -> None:
    demo = slack.provision()

    text = slack.answer("delete demo", user=REQUESTER)

    [delete_card] = slack.cards()[1:]
    assert text.startswith(f"Filed `{delete_card.request_id}`"), text
    assert delete_card.call.params["thread_ts"] == demo.ts
    assert "DELETE deployment `demo`" in text_of(delete_card.call)
    shown = buttons(delete_card.call.params["blocks"])
    confirm = shown[action_ids.APPROVE]["confirm"]
    assert confirm["confirm"]["text"] == "Delete"
    assert "demo" in confirm["text"]["text"]
    assert "confirm" not in shown[action_ids.DENY]

    slack.approve(delete_card)

    slack.wait_reply(demo, "`demo` is deleted", "dry-run")
    assert slack.bot.record(delete_card.request_id).state is State.SUCCEEDED
    assert slack.answer("list", user=OTHER).startswith("No deployments yet")
    again = slack.file(CREATE_DEMO, user=OTHER)  # the name is free again
    assert again.request_id not in (demo.request_id, delete_card.request_id)


def test_delete_by_someone_else_is_refused(slack: Slack) -> None:
    slack.provision()
    stored = len(slack.bot.records())

    text = slack.answer("delete demo", user=OTHER)

    assert text == messages.NOT_OWNER
    slack.settle()
    assert len(slack.cards()) == 1
    assert len(slack.bot.records()) == stored


@pytest.mark.parametrize("text", ["help", ""])
def test_help_lists_every_subcommand(slack: Slack, text: str) -> None:
    answer = slack.answer(text)

    for usage in USAGE.values():
        assert f"`{usage}`" in answer
    assert_nothing_happened(slack)


@pytest.mark.parametrize(
    ("text", "reason", "usage"),
    [
        ("create", "create needs a deployment NAME", USAGE["create"]),
        ("create Demo_1", "", USAGE["create"]),
        (
            "create demo --zone europe-west4-a",
            "zone europe-west4-a is not allowed",
            USAGE["create"],
        ),
        ("create demo --gpu nvidia-h100-80gb", "nvidia-h100-80gb is not allowed", USAGE["create"]),
        ("create demo --gpu nvidia-tesla-t4:9", "from 1 to 4", USAGE["create"]),
        ("create demo --colour blue", "unknown flag `--colour`", USAGE["create"]),
        ("frobnicate demo", "unknown subcommand `frobnicate`", None),
        ("grant not-an-email demo", "not a valid email address", USAGE["grant"]),
        ("delete", "delete needs the NAME", USAGE["delete"]),
        ("list everything", "unexpected `everything`", USAGE["list"]),
    ],
)
def test_a_malformed_command_gets_a_one_line_reason_and_the_usage_and_nothing_else(
    slack: Slack, text: str, reason: str, usage: str | None
) -> None:
    answer = slack.answer(text)

    lines = answer.splitlines()
    assert len(lines) == 2, answer
    assert reason in lines[0]
    assert lines[1].startswith("Usage: /kubeflow")
    if usage is not None:
        assert lines[1] == f"Usage: {usage}"
    assert_nothing_happened(slack)


# -- approving ------------------------------------------------------------------------------


def test_an_approvers_click_updates_the_card_in_place_and_replies_in_the_thread(
    slack: Slack,
) -> None:
    card = slack.file()

    slack.approve(card)

    reply = slack.wait_reply(card, f"Approved by <@{APPROVER}>")
    assert f"<@{REQUESTER}>" in text_of(reply) and card.request_id in text_of(reply)
    [update] = slack.stub.wait_for("chat.update", 1, timeout=WAIT)
    assert update.params["ts"] == card.ts and update.params["channel"] == CHANNEL
    assert re.search(rf"Approved by <@{APPROVER}> at \d\d:\d\d UTC", text_of(update))
    shown = slack.stub.message(CHANNEL, card.ts)
    assert shown.buttons == []
    assert "Approved by" in json.dumps(shown.blocks)


def test_a_non_approvers_click_gets_an_ephemeral_refusal_and_leaves_the_card(
    slack: Slack,
) -> None:
    card = slack.file()

    slack.approve(card, user=OTHER)

    assert slack.wait_told(OTHER) == messages.not_an_approver(card.request_id)
    slack.settle()
    assert slack.stub.calls_to("chat.update") == []
    assert not slack.stub.message(CHANNEL, card.ts).edited
    assert slack.thread_posts(card) == []
    assert slack.bot.record(card.request_id).state is State.PENDING


def test_under_four_eyes_an_approver_cannot_approve_their_own_request(slack: Slack) -> None:
    card = slack.file(user=APPROVER)

    slack.approve(card, user=APPROVER)

    assert slack.wait_told(APPROVER, 1) == messages.OWN_REQUEST
    slack.settle()
    assert slack.stub.calls_to("chat.update") == []
    assert slack.thread_posts(card) == []
    assert slack.bot.record(card.request_id).state is State.PENDING


def test_without_four_eyes_an_approver_may_approve_their_own_request(
    launcher: BotLauncher, stub: SlackApiStub
) -> None:
    slack = Slack.on(launcher.start(policy={"four_eyes": False}), stub)
    card = slack.file(user=APPROVER)

    slack.approve(card, user=APPROVER)

    slack.finished(card)
    assert slack.bot.record(card.request_id).decided_by == APPROVER


@pytest.mark.parametrize("value", ["kf-zzzzzz", "not-a-request-id"])
def test_a_click_on_an_unknown_request_id_hears_no_such_request(slack: Slack, value: str) -> None:
    card = slack.file()
    forged = Card(value, card.channel, card.ts, card.call)

    slack.approve(forged)

    assert slack.wait_told(APPROVER) == messages.no_such_request(value)
    slack.settle()
    assert slack.stub.calls_to("chat.update") == []
    assert slack.bot.record(card.request_id).state is State.PENDING


def test_deny_on_an_approved_request_hears_already_approved_and_opens_no_dialog(
    slack: Slack,
) -> None:
    card = slack.provision()

    slack.click(action_ids.DENY, card, APPROVER)

    assert slack.wait_told(APPROVER) == (
        f"`{card.request_id}` was already approved by <@{APPROVER}>."
    )
    slack.settle()
    assert slack.stub.calls_to("views.open") == []
    assert slack.bot.record(card.request_id).state is State.SUCCEEDED


def test_cards_in_the_approvals_channel_are_updated_together_with_the_thread_root(
    launcher: BotLauncher, stub: SlackApiStub
) -> None:
    slack = Slack.on(launcher.start(policy={"approvals_channel": "CAPPROVALS"}), stub)
    root = slack.file()
    [copy] = slack.cards()[1:]
    assert copy.channel == "CAPPROVALS"
    assert copy.request_id == root.request_id
    assert "thread_ts" not in copy.call.params

    slack.approve(copy)  # clicked in the approvals channel

    slack.finished(root)  # progress and result go to the request's own thread
    assert {c.params["ts"] for c in slack.updates_of(root.ts)} == {root.ts}
    assert len(slack.updates_of(copy.ts)) == 1
    for card in (root, copy):
        shown = stub.message(card.channel, card.ts)
        assert shown.buttons == []
        assert f"Approved by <@{APPROVER}>" in shown.text
    assert stub.thread("CAPPROVALS", copy.ts) == []
    assert slack.bot.record(root.request_id).cards == (root.ref, copy.ref)


def click_at_once(slack: Slack, card: Card, users: list[str]) -> list[SentResponse]:
    """Each user clicks Approve on ``card`` at the same moment (distinct trigger ids)."""
    start = threading.Barrier(len(users))

    def click(user: str) -> SentResponse:
        start.wait(timeout=WAIT)
        return slack.approve(card, user)

    with ThreadPoolExecutor(len(users)) as pool:
        return list(pool.map(click, users))


def assert_ran_once(slack: Slack, card: Card, approver: str) -> None:
    slack.finished(card)
    slack.settle()
    assert len(thread_replies_containing(slack, card, "Approved by")) == 1
    assert len(thread_replies_containing(slack, card, f"Approved by <@{approver}>")) == 1
    assert len(thread_replies_containing(slack, card, f"dry-run of `{card.request_id}`")) == 1
    assert len(slack.updates_of(card.ts)) == 1
    record = slack.bot.record(card.request_id)
    events = [entry.event for entry in record.history]
    assert events.count("approved") == 1
    assert events.count("queued") == 1
    assert events.count("running") == 1, events
    assert record.state is State.SUCCEEDED


def test_a_double_click_approves_and_runs_once_and_the_second_click_hears_already_approved(
    slack: Slack,
) -> None:
    card = slack.file()

    click_at_once(slack, card, [APPROVER, APPROVER])

    assert_ran_once(slack, card, APPROVER)
    [told] = slack.told(APPROVER)
    assert told == f"`{card.request_id}` was already approved by <@{APPROVER}>."


def test_two_approvers_at_once_approve_and_run_once(
    launcher: BotLauncher, stub: SlackApiStub
) -> None:
    second = "U_APPROVER2"
    slack = Slack.on(launcher.start(policy={"approvers": {"users": [APPROVER, second]}}), stub)
    card = slack.file()

    click_at_once(slack, card, [APPROVER, second])

    slack.finished(card)
    winner = slack.bot.record(card.request_id).decided_by
    assert winner in (APPROVER, second)
    assert_ran_once(slack, card, winner)
    loser = second if winner == APPROVER else APPROVER
    assert slack.told(loser) == [f"`{card.request_id}` was already approved by <@{winner}>."]
    assert slack.told(winner) == []


def test_a_slack_retry_of_an_approve_click_changes_nothing_and_says_nothing(
    slack: Slack,
) -> None:
    card = slack.file()
    body = block_action_body(action_ids.APPROVE, card.request_id, APPROVER, CHANNEL, card.ts)
    assert slack.sender.post(body).status == 200
    slack.finished(card)
    calls_before = len(slack.stub.calls)

    first = slack.sender.retry(body, retry_num=1, reason="http_timeout")
    second = slack.sender.retry(body, retry_num=2, reason="http_error")

    assert (first.status, second.status) == (200, 200)
    slack.settle()
    after = [c.method for c in slack.stub.calls[calls_before:]]
    assert after == [], after
    assert slack.told(APPROVER) == []
    assert_ran_once(slack, card, APPROVER)


def test_a_slack_retry_of_a_create_command_files_one_request(slack: Slack) -> None:
    answers = slack.stub.response_url(CHANNEL, user=REQUESTER)
    body = slash_command_body(CREATE_DEMO, REQUESTER, CHANNEL, response_url=answers)
    assert slack.sender.post(body).status == 200
    slack.stub.wait_for("chat.postMessage", 1, timeout=WAIT, predicate=is_card)
    assert slack.wait_told(REQUESTER).startswith("Filed `")

    assert slack.sender.retry(body).status == 200

    slack.settle()
    assert len(slack.cards()) == 1
    assert len(slack.told(REQUESTER)) == 1
    assert len(slack.bot.records()) == 1


def test_an_approver_named_by_user_group_handle_may_approve(
    launcher: BotLauncher, stub: SlackApiStub
) -> None:
    stub.groups["platform-team"] = ("S_PLATFORM", ["U_GROUPIE"])
    policy = {"approvers": {"groups": ["@platform-team"]}}
    slack = Slack.on(launcher.start(policy=policy), stub)
    card = slack.file()

    slack.approve(card, user=OTHER)
    assert slack.wait_told(OTHER) == messages.not_an_approver(card.request_id)
    slack.approve(card, user="U_GROUPIE")

    slack.wait_reply(card, "Approved by <@U_GROUPIE>")
    slack.finished(card)
    assert slack.bot.record(card.request_id).decided_by == "U_GROUPIE"
    assert stub.calls_to("usergroups.list")
    assert {c.params.get("usergroup") for c in stub.calls_to("usergroups.users.list")} == {
        "S_PLATFORM"
    }


def test_an_approver_named_by_email_may_approve(launcher: BotLauncher, stub: SlackApiStub) -> None:
    stub.users["U_BOSS"] = "boss@example.com"
    policy = {"approvers": {"emails": ["boss@example.com"]}}
    slack = Slack.on(launcher.start(policy=policy), stub)
    card = slack.file()

    slack.approve(card, user=APPROVER)  # not named by this policy
    assert slack.wait_told(APPROVER) == messages.not_an_approver(card.request_id)
    slack.approve(card, user="U_BOSS")

    slack.wait_reply(card, "Approved by <@U_BOSS>")
    slack.finished(card)
    assert slack.bot.record(card.request_id).decided_by == "U_BOSS"
    assert {c.params.get("email") for c in stub.calls_to("users.lookupByEmail")} == {
        "boss@example.com"
    }


# -- denying --------------------------------------------------------------------------------


def open_deny_dialog(slack: Slack, card: Card, user: str = APPROVER) -> dict[str, Any]:
    trigger = new_trigger_id()
    slack.click(action_ids.DENY, card, user, trigger_id=trigger)
    [opened] = slack.stub.wait_for("views.open", 1, timeout=WAIT)
    assert opened.ok
    assert opened.params["trigger_id"] == trigger
    view: dict[str, Any] = opened.params["view"]
    return {**view, "id": opened.response["view"]["id"]}


def submit_reason(
    slack: Slack, view: dict[str, Any], reason: str, user: str = APPROVER
) -> SentResponse:
    values = plain_text_values(
        {action_ids.DENY_REASON_BLOCK: {action_ids.DENY_REASON_INPUT: reason}}
    )
    return slack.sender.submit_view(
        str(view["callback_id"]), str(view["private_metadata"]), values, user, view_id=view["id"]
    )


def test_the_deny_button_opens_a_dialog_asking_for_the_reason(slack: Slack) -> None:
    card = slack.file()

    view = open_deny_dialog(slack, card)

    assert view["type"] == "modal"
    assert view["callback_id"] == action_ids.DENY_MODAL
    assert view["private_metadata"].split()[0] == card.request_id
    [field] = [b for b in view["blocks"] if b.get("block_id") == action_ids.DENY_REASON_BLOCK]
    assert field["element"]["action_id"] == action_ids.DENY_REASON_INPUT
    slack.settle()
    assert slack.stub.calls_to("chat.update") == []
    assert slack.bot.record(card.request_id).state is State.PENDING


def test_submitting_a_reason_denies_the_request_and_posts_the_reason_in_the_thread(
    slack: Slack,
) -> None:
    card = slack.file()
    view = open_deny_dialog(slack, card)

    response = submit_reason(slack, view, "No GPU budget left <!channel> this quarter")

    assert response.status == 200 and response.body == "", response  # the dialog closes
    reply = slack.wait_reply(card, f"was denied by <@{APPROVER}>")
    text = text_of(reply)
    assert text.startswith(f"<@{REQUESTER}>, `{card.request_id}`")
    assert "No GPU budget left &lt;!channel&gt; this quarter" in text  # no channel ping
    [update] = slack.stub.wait_for("chat.update", 1, timeout=WAIT)
    assert update.params["ts"] == card.ts
    assert f"Denied by <@{APPROVER}>" in text_of(update)
    assert "No GPU budget left" in text_of(update)
    assert slack.stub.message(CHANNEL, card.ts).buttons == []
    record = slack.bot.record(card.request_id)
    assert record.state is State.DENIED
    assert record.reason == "No GPU budget left <!channel> this quarter"
    slack.settle()
    assert len(slack.thread_posts(card)) == 1  # nothing ran


def test_a_resubmitted_deny_dialog_and_a_later_approve_change_nothing(slack: Slack) -> None:
    card = slack.file()
    view = open_deny_dialog(slack, card)
    assert submit_reason(slack, view, "not now").status == 200
    slack.wait_reply(card, f"was denied by <@{APPROVER}>")

    assert submit_reason(slack, view, "not now").status == 200  # same view: Slack's retry
    slack.approve(card)

    assert slack.wait_told(APPROVER) == (
        f"`{card.request_id}` was already denied by <@{APPROVER}>."
    )
    slack.settle()
    assert len(slack.thread_posts(card)) == 1
    assert len(slack.updates_of(card.ts)) == 1
    assert slack.bot.record(card.request_id).state is State.DENIED


@pytest.mark.parametrize("reason", ["", "   \n\t  "])
def test_submitting_an_empty_reason_keeps_the_dialog_open_with_an_error_and_changes_nothing(
    slack: Slack, reason: str
) -> None:
    card = slack.file()
    view = open_deny_dialog(slack, card)

    response = submit_reason(slack, view, reason)

    assert response.status == 200
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert answer["errors"][action_ids.DENY_REASON_BLOCK].strip()
    slack.settle()
    assert slack.stub.calls_to("chat.update") == []
    assert slack.thread_posts(card) == []
    assert slack.bot.record(card.request_id).state is State.PENDING


def test_a_non_approvers_deny_click_gets_a_refusal_and_no_dialog(slack: Slack) -> None:
    card = slack.file()

    slack.click(action_ids.DENY, card, OTHER)

    assert slack.wait_told(OTHER) == messages.not_an_approver(card.request_id)
    slack.settle()
    assert slack.stub.calls_to("views.open") == []
    assert slack.stub.calls_to("chat.update") == []
    assert slack.bot.record(card.request_id).state is State.PENDING


# -- expiry ---------------------------------------------------------------------------------


def test_an_approve_after_the_approval_ttl_is_refused_and_the_card_says_expired(
    launcher: BotLauncher, stub: SlackApiStub
) -> None:
    slack = Slack.on(launcher.start(policy={"approval_ttl": "1s"}), stub)
    card = slack.file()
    expires_at = slack.bot.record(card.request_id).expires_at
    assert expires_at is not None
    deadline = time.monotonic() + 5
    while datetime.now(UTC) <= expires_at:  # bounded by the one-second TTL
        assert time.monotonic() < deadline
        time.sleep(0.05)

    slack.approve(card)

    told = slack.wait_told(APPROVER)
    assert told == f"`{card.request_id}` expired without a decision; file it again if still needed."
    [update] = slack.stub.wait_for("chat.update", 1, timeout=WAIT)
    assert update.params["ts"] == card.ts
    assert "Expired at" in text_of(update)
    assert slack.stub.message(CHANNEL, card.ts).buttons == []
    slack.wait_reply(card, f"<@{REQUESTER}>, `{card.request_id}` expired without a decision")
    assert slack.bot.record(card.request_id).state is State.EXPIRED
    slack.settle()
    assert thread_replies_containing(slack, card, "Approved by") == []


# -- progress -------------------------------------------------------------------------------


def test_after_approval_one_status_message_is_updated_in_place_and_the_url_is_replied(
    slack: Slack,
) -> None:
    card = slack.file()

    slack.approve(card)

    final = slack.finished(card)
    slack.settle()
    head = f"`{card.request_id}` demo:"
    [status] = [c for c in slack.thread_posts(card) if text_of(c).startswith(head)]
    status_ts = str(status.response["ts"])
    updates = slack.updates_of(status_ts)
    assert updates, "the status message was never updated"
    assert all(u.ok for u in updates)
    # Every update went to the card or to the one status message.
    assert {c.params["ts"] for c in slack.stub.calls_to("chat.update")} == {card.ts, status_ts}
    shown = slack.stub.message(CHANNEL, status_ts)
    assert shown.thread_ts == card.ts
    lines = shown.text.splitlines()
    assert lines[0] == f"{head} succeeded"
    assert len(lines) > 5
    assert all(line.startswith("[p] ") for line in lines[1:]), lines  # all planned
    # The final reply: after the last redraw, mentioning the requester, with the URL.
    calls = slack.stub.calls
    assert calls.index(final) > calls.index(updates[-1])
    assert text_of(final).startswith(f"<@{REQUESTER}>")
    assert DEMO_URL in text_of(final)
    assert len(thread_replies_containing(slack, card, DEMO_URL)) == 1
    posts = slack.thread_posts(card)
    assert [c is status for c in posts] == [False, True, False]  # approved, status, final


# -- Slack faults ---------------------------------------------------------------------------


def test_a_rate_limited_card_is_posted_after_retry_after(slack: Slack) -> None:
    slack.stub.rate_limit("chat.postMessage", times=1, retry_after=1)

    card = slack.file()

    first, second = slack.stub.calls_to("chat.postMessage")
    assert first.rate_limited and first.status == 429
    assert second.ok and second is card.call
    assert second.at - first.at >= 1.0
    assert text_of(first) == text_of(second)
    assert len(slack.stub.channel_messages(CHANNEL)) == 1


# -- secrets --------------------------------------------------------------------------------


def test_secrets_never_reach_slack_or_the_log(launcher: BotLauncher, stub: SlackApiStub) -> None:
    token = "xoxb-1111-2222-TOPSECRETbottoken"
    signing_secret = "TOPSECRET-signing-5f1e2d"
    oauth_secret = "GOCSPX-TOPSECRET-oauth-client"
    stub.valid_tokens.add(token)
    bot = launcher.start(
        token=token,
        secret=signing_secret,
        env={
            "KUBEFLOW_BOT_OAUTH_CLIENT_ID": "1234-abc.apps.googleusercontent.com",
            "KUBEFLOW_BOT_OAUTH_CLIENT_SECRET": oauth_secret,
            "KUBEFLOW_BOT_LOG_LEVEL": "DEBUG",
        },
    )
    slack = Slack.on(bot, stub)
    answers: list[SentResponse] = []

    card = slack.provision()
    slack.approve(card, user=OTHER)  # refused
    slack.wait_told(OTHER)
    slack.answer("create demo --gpu nvidia-h100-80gb")  # malformed
    slack.answer("grant eve@elsewhere.test demo", user=APPROVER)  # refused
    body = slash_command_body("create other", REQUESTER, CHANNEL)
    answers += [slack.sender.bad_signature(body), slack.sender.unsigned(body)]
    stub.fail("chat.postMessage", "channel_not_found")  # the next card cannot be posted
    told = slack.answer("create broken")
    stub.wait_for("chat.postMessage", 1, timeout=WAIT, predicate=lambda c: not c.ok)
    slack.settle()
    assert bot.stop() == 0

    assert told.startswith("Could not post the request card here (channel_not_found)")
    log = bot.log()
    assert "serving Slack" in log  # the log was written, at DEBUG
    assert [a.status for a in answers] == [401, 401]
    for secret in (token, signing_secret, oauth_secret):
        for call in stub.calls:
            shown = json.dumps([call.params, call.response, call.path])
            assert secret not in shown, (secret, call.method)
        assert secret not in log, secret
        assert all(secret not in a.body for a in answers)


def test_serve_with_a_rejected_bot_token_exits_2_with_the_reason_and_no_traceback(
    launcher: BotLauncher,
) -> None:
    token = "xoxb-revoked-TOPSECRET-0001"  # not one the stub accepts: auth.test says invalid_auth
    bot = launcher.start(token=token, wait=False)

    code = bot.wait()

    log = bot.log()
    assert token not in log
    assert "Traceback" not in log, log
    assert code == 2
    assert "invalid_auth" in log or "SLACK_BOT_TOKEN" in log


# -- Pub/Sub: bot and worker as separate processes ------------------------------------------


def test_with_pubsub_the_worker_process_reports_progress_and_the_url_in_the_thread(
    launcher: BotLauncher,
    stub: SlackApiStub,
    tmp_path: Path,
    pubsub_emulator: str,
    pubsub_names: PubSubNames,
) -> None:
    env = {
        "GOOGLE_CLOUD_PROJECT": pubsub_names.project,
        "PUBSUB_TOPIC": pubsub_names.topic,
        "PUBSUB_SUBSCRIPTION": pubsub_names.subscription,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator,
    }
    shared = tmp_path / "shared.db"
    # The bot creates the topic and subscription before the worker subscribes.
    bot = launcher.start("serve", env=env, store_path=shared)
    worker = launcher.start("worker", env=env, store_path=shared)
    slack = Slack.on(bot, stub)
    card = slack.file()

    slack.approve(card)

    slack.wait_reply(card, f"Approved by <@{APPROVER}>")
    final = slack.finished(card, timeout=60)
    assert text_of(final).startswith(f"<@{REQUESTER}>")
    head = f"`{card.request_id}` demo:"
    [status] = [c for c in slack.thread_posts(card) if text_of(c).startswith(head)]
    status_ts = str(status.response["ts"])
    assert slack.updates_of(status_ts)
    assert stub.message(CHANNEL, status_ts).text.startswith(f"{head} succeeded")
    record = bot.record(card.request_id)
    assert record.state is State.SUCCEEDED
    assert record.url == DEMO_URL
    assert [e.event for e in record.history].count("queued") == 1
    assert worker.process.poll() is None, worker.log()
    assert worker.stop() == 0, worker.log()
    assert bot.stop() == 0, bot.log()
    for log in (worker.log(), bot.log()):
        assert bot.env["SLACK_BOT_TOKEN"] not in log
        assert bot.secret not in log


def test_a_failed_group_look_up_is_tried_again_on_the_next_click(
    launcher: BotLauncher, stub: SlackApiStub
) -> None:
    stub.groups["platform-team"] = ("S_PLATFORM", ["U_GROUPIE"])
    policy = {"approvers": {"groups": ["@platform-team"]}}
    slack = Slack.on(launcher.start(policy=policy), stub)
    card = slack.file()
    stub.fail("usergroups.list", "internal_error", status=500, times=3)

    slack.approve(card, user="U_GROUPIE")
    assert slack.wait_told("U_GROUPIE") == messages.not_an_approver(card.request_id)
    slack.approve(card, user="U_GROUPIE")

    slack.wait_reply(card, "Approved by <@U_GROUPIE>")


def test_a_deny_dialog_that_cannot_open_is_reported_to_the_approver(slack: Slack) -> None:
    card = slack.file()
    slack.stub.fail("views.open", "expired_trigger_id")

    slack.click(action_ids.DENY, card, APPROVER)

    assert slack.wait_told(APPROVER) == messages.DIALOG_FAILED
    assert slack.bot.record(card.request_id).state is State.PENDING
