"""``/kubeflow grant`` and ``revoke`` end to end: from the command to the project's IAM policy.

The real ``Commands``, ``Approvals``, SQLite store, in-process queue and ``Worker``; grants
and revokes run their real steps through the real ``IamClient`` and the real
google-cloud-resource-manager client against a local ``FakeResourceManager``.  The
deployment itself is provisioned on the dry-run cloud (a second worker), since only its
project and thread matter here.  Each test reads back the exact words said in the
deployment's thread, the request's audit trail (``status``), and the policy IAM holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type

from handlers.progress import ChatNotifier
from handlers.usage import USAGE
from provisioning.actions import IAP_ACCESSOR_ROLE, GrantAction
from provisioning.cloud import Cloud
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.iam_client import IamClient
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State
from provisioning.store import RequestStore
from provisioning.worker import Worker
from tests.support.clocks import FakeClock
from tests.support.command_bot import OWNER, TEAM, Bot, new_bot
from tests.support.fake_iam import FakeIam
from tests.support.fake_resource_manager import DEFAULT_OWNER, FakeResourceManager
from tests.support.iam_only_cloud import IamOnlyCloud
from tests.support.policies import policy

PROJECT = "demo-project"
ELSEWHERE = "C0ELSEWHERE"
APPROVER = "U_APPROVER"
OTHER = "U_BOB"
ADA = "ada@example.com"
AT = "2026-03-02 09:00 UTC"
TOOK = re.compile(r" \([0-9.]+s\)$")


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    with FakeResourceManager(projects={PROJECT: 123456789012}) as fake:
        yield fake


@pytest.fixture
def bot(tmp_path: Path, rm: FakeResourceManager) -> Iterator[Bot]:
    quick = Retry(predicate=if_exception_type(exceptions.ServiceUnavailable), timeout=0.05)
    with FakeIam(projects=[PROJECT]) as iam:
        client = IamClient(iam.client(), rm.client(), read_retry=quick, timeout=10.0)

        def workers(
            store: RequestStore, notifier: ChatNotifier, clock: FakeClock
        ) -> Callable[[QueueMessage], Worker]:
            # The deployment on the dry-run cloud; its grants and revokes through IAM.
            creates = Worker(store, DryRunCloud(), notifier, clock)
            access = Worker(store, cast(Cloud, IamOnlyCloud(client)), notifier, clock)
            return lambda m: access if m.action.kind in ("grant", "revoke") else creates

        built = new_bot(tmp_path / "requests.db", policy(), workers)
        yield built
        built.close()


def thread_of(bot: Bot, create: RequestRecord, request_id: str) -> list[str]:
    """What was said about ``request_id`` in the deployment's thread, in order."""
    replies = bot.chat.replies(create.thread_ts or "")
    assert {c.channel for c in replies} == {TEAM}
    return [c.text for c in replies if request_id in c.text]


def status(bot: Bot, request_id: str) -> list[str]:
    """``/kubeflow status ID`` line by line, without the steps' measured durations."""
    return [TOOK.sub("", line) for line in bot.run(OTHER, f"status {request_id}").splitlines()]


def history(*events: str) -> list[str]:
    return ["History:", *(f"{AT} {event}" for event in events)]


WORKER_EVENTS = ("queued by kubeflow-bot", "running by kubeflow-bot", "succeeded by kubeflow-bot")


# -- an approver acts directly ---------------------------------------------------------------


def test_an_approvers_grant_lands_and_is_answered_in_the_thread_and_the_history(
    bot: Bot, rm: FakeResourceManager
) -> None:
    create = bot.deploy("demo")

    grant = bot.file(APPROVER, f"grant {ADA} demo", channel=ELSEWHERE)
    bot.settle()

    assert bot.record(grant.id).state is State.SUCCEEDED
    assert thread_of(bot, create, grant.id) == [
        f"<@{APPROVER}> is an approver: `{grant.id}` queued (grant `{ADA}` access to `demo`).",
        f"<@{APPROVER}>, `{grant.id}`: {ADA} can open demo.",
    ]
    assert bot.chat.posts(channel=ELSEWHERE) == []
    assert status(bot, grant.id) == [
        f"`{grant.id}` (grant) by <@{APPROVER}>: succeeded",
        f"grant `{ADA}` access to `demo`",
        "Steps done: 1/1",
        f"[x] Grant IAP access: {ADA} can open demo",
        *history(
            f"filed by <@{APPROVER}>",
            f"approved by <@{APPROVER}> (approver acting directly)",
            *WORKER_EVENTS,
        ),
    ]
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == {f"user:{ADA}"}


def test_granting_twice_says_already_has_access(bot: Bot, rm: FakeResourceManager) -> None:
    create = bot.deploy("demo")
    bot.file(APPROVER, f"grant {ADA} demo")
    bot.settle()

    again = bot.file(APPROVER, f"grant {ADA} demo")
    bot.settle()

    assert thread_of(bot, create, again.id)[-1] == (
        f"<@{APPROVER}>, `{again.id}`: {ADA} already has access."
    )
    assert f"[x] Grant IAP access: {ADA} already has access" in status(bot, again.id)
    assert rm.successful_sets == 1


def test_an_approvers_revoke_removes_exactly_the_member_and_says_so_in_the_thread(
    bot: Bot, rm: FakeResourceManager
) -> None:
    create = bot.deploy("demo")
    bot.file(APPROVER, f"grant {ADA} demo")
    bot.file(APPROVER, "grant bo@example.com demo")
    bot.settle()

    revoke = bot.file(APPROVER, f"revoke {ADA} demo")
    bot.settle()

    assert thread_of(bot, create, revoke.id) == [
        f"<@{APPROVER}> is an approver: `{revoke.id}` queued (revoke `{ADA}`'s access to `demo`).",
        f"<@{APPROVER}>, `{revoke.id}`: {ADA} can no longer open demo.",
    ]
    assert status(bot, revoke.id)[-6:] == history(
        f"filed by <@{APPROVER}>",
        f"approved by <@{APPROVER}> (approver acting directly)",
        *WORKER_EVENTS,
    )
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == {"user:bo@example.com"}
    assert rm.members(PROJECT, "roles/owner") == {DEFAULT_OWNER}


def test_revoking_someone_without_access_says_so_plainly(bot: Bot, rm: FakeResourceManager) -> None:
    create = bot.deploy("demo")

    revoke = bot.file(APPROVER, f"revoke {ADA} demo")
    bot.settle()

    assert bot.record(revoke.id).state is State.SUCCEEDED
    assert thread_of(bot, create, revoke.id)[-1] == (
        f"<@{APPROVER}>, `{revoke.id}`: {ADA} had no access."
    )
    assert rm.successful_sets == 0


# -- others ask, an approver approves --------------------------------------------------------


def test_a_requested_grant_is_approved_then_answered_in_the_thread_and_the_history(
    bot: Bot, rm: FakeResourceManager
) -> None:
    create = bot.deploy("demo")
    grant = bot.file(OTHER, f"grant {ADA} demo", channel=ELSEWHERE)
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == set()  # nothing before approval

    assert bot.approvals.approve(APPROVER, TEAM, grant.id) is not None
    bot.settle()

    assert thread_of(bot, create, grant.id) == [
        f"Request `{grant.id}` from <@{OTHER}>: grant `{ADA}` access to `demo`. "
        "Waiting for an approver. Expires 2026-03-03 09:00 UTC if undecided.",
        f"Approved by <@{APPROVER}>. <@{OTHER}>, `{grant.id}` is queued; progress follows "
        "in this thread.",
        f"<@{OTHER}>, `{grant.id}`: {ADA} can open demo.",
    ]
    assert status(bot, grant.id)[-6:] == history(
        f"filed by <@{OTHER}>", f"approved by <@{APPROVER}>", *WORKER_EVENTS
    )
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == {f"user:{ADA}"}


def test_a_requested_grant_that_is_denied_changes_nothing(
    bot: Bot, rm: FakeResourceManager
) -> None:
    create = bot.deploy("demo")
    grant = bot.file(OTHER, f"grant {ADA} demo")

    assert bot.approvals.deny(APPROVER, TEAM, grant.id, "not on the project") is not None
    bot.settle()

    assert thread_of(bot, create, grant.id)[-1] == (
        f"<@{OTHER}>, `{grant.id}` was denied by <@{APPROVER}>: not on the project"
    )
    assert status(bot, grant.id)[-3:] == history(
        f"filed by <@{OTHER}>", f"denied by <@{APPROVER}> (not on the project)"
    )
    assert rm.successful_sets == 0


# -- --for -------------------------------------------------------------------------------------


def test_an_approvers_grant_for_a_week_ends_by_an_iam_condition_and_says_when(
    bot: Bot, rm: FakeResourceManager
) -> None:
    create = bot.deploy("demo")

    grant = bot.file(APPROVER, f"grant {ADA} demo --for 7d")
    bot.settle()

    assert isinstance(grant.action, GrantAction)
    assert grant.action.expires_at == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
    assert thread_of(bot, create, grant.id) == [
        f"<@{APPROVER}> is an approver: `{grant.id}` queued (grant `{ADA}` access to `demo` "
        "until 2026-03-09 09:00 UTC).",
        f"<@{APPROVER}>, `{grant.id}`: {ADA} can open demo until 2026-03-09 09:00 UTC.",
    ]
    [binding] = [b for b in rm.policy(PROJECT).bindings if b.role == IAP_ACCESSOR_ROLE]
    assert binding.condition.expression == 'request.time < timestamp("2026-03-09T09:00:00Z")'
    assert binding.condition.title == "kubeflow-bot: demo until 2026-03-09 09:00 UTC"
    assert f"Slack user {APPROVER}" in binding.condition.description


def test_a_requested_grant_for_twelve_hours_shows_its_end_on_the_card(
    bot: Bot, rm: FakeResourceManager
) -> None:
    create = bot.deploy("demo")
    bot.clock.advance(seconds=30)  # an end date is whole minutes, rounded up

    grant = bot.file(OTHER, f"grant {ADA} demo --for 12h")
    bot.approvals.approve(APPROVER, TEAM, grant.id)
    bot.settle()

    said = thread_of(bot, create, grant.id)
    assert said[0].startswith(
        f"Request `{grant.id}` from <@{OTHER}>: grant `{ADA}` access to `demo` until "
        "2026-03-02 21:01 UTC."
    )
    assert said[-1] == f"<@{OTHER}>, `{grant.id}`: {ADA} can open demo until 2026-03-02 21:01 UTC."


def test_a_grant_with_an_end_for_someone_with_lasting_access_says_so(
    bot: Bot, rm: FakeResourceManager
) -> None:
    create = bot.deploy("demo")
    bot.file(APPROVER, f"grant {ADA} demo")
    bot.settle()

    again = bot.file(APPROVER, f"grant {ADA} demo --for 2w")
    bot.settle()

    assert thread_of(bot, create, again.id)[-1] == (
        f"<@{APPROVER}>, `{again.id}`: {ADA} already has access with no end date; revoke it "
        "first to make it end."
    )
    assert rm.successful_sets == 1


# -- refusals: one private line and the usage, nothing stored or queued -----------------------


@pytest.mark.parametrize(
    ("user", "text", "answer"),
    [
        (
            APPROVER,
            "grant eve@evil.test demo",
            "eve@evil.test is not in an allowed domain; allowed domains: example.com\n"
            f"Usage: {USAGE['grant']}",
        ),
        (
            OTHER,
            "grant eve@evil.test demo --for 7d",
            "eve@evil.test is not in an allowed domain; allowed domains: example.com\n"
            f"Usage: {USAGE['grant']}",
        ),
        (
            APPROVER,
            f"grant {ADA} demo --for 7",
            "--for takes hours, days or weeks, such as 12h, 7d or 2w, not `7`\n"
            f"Usage: {USAGE['grant']}",
        ),
        (
            APPROVER,
            f"grant {ADA} demo --for 91d",
            f"--for 91d: access can last from 1h to 90d\nUsage: {USAGE['grant']}",
        ),
        (
            APPROVER,
            f"grant {ADA} demo --for 30m",
            "--for takes hours, days or weeks, such as 12h, 7d or 2w, not `30m`\n"
            f"Usage: {USAGE['grant']}",
        ),
        (
            APPROVER,
            f"grant {ADA} demo --for 0h",
            f"--for 0h: access can last from 1h to 90d\nUsage: {USAGE['grant']}",
        ),
        (
            APPROVER,
            f"revoke {ADA} demo --for 7d",
            f"unknown flag `--for`; revoke takes no flags\nUsage: {USAGE['revoke']}",
        ),
        (APPROVER, f"grant {ADA} nosuch", "No deployment named `nosuch`. Deployments: `demo`."),
        (APPROVER, f"revoke {ADA} nosuch", "No deployment named `nosuch`. Deployments: `demo`."),
        (OWNER, f"revoke {ADA} demo", "Only approvers can revoke access."),
    ],
)
def test_refusals_say_why_and_change_nothing(
    bot: Bot, rm: FakeResourceManager, user: str, text: str, answer: str
) -> None:
    bot.deploy("demo")
    before = bot.state()

    assert bot.run(user, text) == answer

    assert bot.state() == before
    assert rm.successful_sets == 0
