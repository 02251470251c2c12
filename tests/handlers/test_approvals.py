"""The approval flow through the real pieces: cards, decisions, expiry, re-queueing.

Requests are filed with the real ``Commands`` on a real SQLite store, decided with the
real ``Approvals`` and ``Authz``, and published to the real in-process queue, whose
consumer counts what it is handed (or is the real worker on the dry-run cloud).  Only
the chat service and the clock are stand-ins.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from handlers import action_ids
from handlers.approvals import STALE_AFTER, STRANDED_AFTER, Approvals
from handlers.authz import Authz
from handlers.commands import Commands
from handlers.deps import Deps
from handlers.policy import Policy
from handlers.progress import ChatNotifier
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.ids import RequestId
from provisioning.inprocess_queue import InProcessQueue
from provisioning.queue import Ack, HandleResult
from provisioning.queue_message import QueueMessage
from provisioning.records import MessageRef, RequestRecord, State
from provisioning.sqlite_store import open_store
from provisioning.store import RequestStore
from provisioning.worker import Worker
from tests.support.clocks import FakeClock, FakeMonotonic
from tests.support.policies import policy
from tests.support.recording_chat import WAIT_SECONDS, RecordingChat

START = datetime(2026, 3, 2, 14, 2, 30, tzinfo=UTC)
TEAM = "C0TEAM"
APPROVALS_CHANNEL = "C0APPROVALS"
APPROVER = "U_APPROVER"
REQUESTER = "U_ALICE"
OUTSIDER = "U_MALLORY"
CREATE_DEMO = "create demo --gpu nvidia-tesla-t4:1"


class PublishFailsOnce(InProcessQueue):
    """The in-process queue, except that the first publish fails (Pub/Sub unreachable)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def publish(self, message: QueueMessage) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the queue is unreachable")
        super().publish(message)


@dataclass
class Bot:
    chat: RecordingChat
    store: RequestStore
    queue: InProcessQueue
    clock: FakeClock
    approvals: Approvals
    commands: Commands
    delivered: list[QueueMessage] = field(default_factory=list)

    def file(
        self, text: str = CREATE_DEMO, *, user: str = REQUESTER, channel: str = TEAM
    ) -> RequestRecord:
        """File a request with the slash command; returns the one new record."""
        before = {r.id for r in self.store.list()}
        self.commands.handle(user, channel, text)
        new = [r for r in self.store.list() if r.id not in before]
        assert len(new) == 1, self.chat.ephemerals(user)
        return new[0]

    def record(self, request_id: str) -> RequestRecord:
        record = self.store.get(request_id)
        assert record is not None
        return record

    def published(self) -> list[str]:
        """Ids of the messages the queue delivered, once it has drained."""
        assert self.queue.join(timeout=WAIT_SECONDS), "the queue did not drain"
        return [m.request_id for m in self.delivered]

    def card(self, record: RequestRecord) -> MessageRef:
        (ref,) = self.record(record.id).cards
        return ref


MakeBot = Callable[..., Bot]


@pytest.fixture
def make_bot(tmp_path: Path) -> Iterator[MakeBot]:
    built: list[Bot] = []

    def make(
        the_policy: Policy | None = None,
        *,
        chat: RecordingChat | None = None,
        queue: InProcessQueue | None = None,
        worker: bool = False,
        monotonic: Callable[[], float] | None = None,
    ) -> Bot:
        the_policy = the_policy or policy()
        chat = chat or RecordingChat()
        queue = queue or InProcessQueue()
        clock = FakeClock(START)
        store = open_store(f"sqlite:///{tmp_path / f'requests-{len(built)}.db'}")
        numbers = itertools.count(1)
        authz = (
            Authz(the_policy, chat, monotonic=monotonic) if monotonic else Authz(the_policy, chat)
        )
        deps = Deps(
            policy=the_policy,
            store=store,
            queue=queue,
            chat=chat,
            directory=chat,
            authz=authz,
            clock=clock,
            new_id=lambda: RequestId(f"kf-{next(numbers):06d}"),
        )
        approvals = Approvals(deps)
        bot = Bot(chat, store, queue, clock, approvals, Commands(deps, approvals))
        handler: Callable[[QueueMessage, int | None], HandleResult]
        if worker:
            notifier = ChatNotifier(chat, store, clock, min_interval=0.0)
            run = Worker(store, DryRunCloud(), notifier, clock).handle

            def handler(message: QueueMessage, attempt: int | None) -> HandleResult:
                bot.delivered.append(message)
                return run(message, attempt)
        else:

            def handler(message: QueueMessage, attempt: int | None) -> HandleResult:
                bot.delivered.append(message)
                return Ack()

        queue.consume(handler)
        built.append(bot)
        return bot

    yield make
    for bot in built:
        bot.queue.close(timeout=WAIT_SECONDS)
        bot.store.close()


# Filing


def test_a_new_request_gets_a_card_with_approve_and_deny_buttons_at_the_root_of_its_thread(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()

    record = bot.file()

    (card,) = bot.chat.posts()
    assert card.channel == TEAM
    assert card.thread_ts is None
    assert record.id in card.text
    assert f"<@{REQUESTER}>" in card.text
    buttons = {button["action_id"]: button for button in card.buttons}
    assert set(buttons) == {action_ids.APPROVE, action_ids.DENY}
    assert {button["value"] for button in buttons.values()} == {record.id}
    assert record.state is State.PENDING
    assert record.thread_ts == card.ts
    assert record.cards == (card.ref,)
    assert record.expires_at == START + timedelta(hours=24)
    assert bot.published() == []


def test_a_request_whose_card_cannot_be_posted_does_not_hold_its_name(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()
    bot.chat.fail_next_posts(1)
    bot.commands.handle(REQUESTER, TEAM, CREATE_DEMO)
    (told,) = bot.chat.ephemerals(REQUESTER)
    assert told.text == (
        "Could not post the request card here (service_unavailable); nothing was filed."
    )

    bot.commands.handle(REQUESTER, TEAM, CREATE_DEMO)

    assert len(bot.chat.cards()) == 1


# Who may decide


def test_a_click_by_someone_who_is_not_an_approver_is_refused_privately_and_changes_nothing(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()
    record = bot.file()
    calls_before = len(bot.chat.snapshot())

    assert bot.approvals.approve(OUTSIDER, TEAM, record.id) is None
    assert bot.approvals.deny(OUTSIDER, TEAM, record.id, "no budget") is None

    refusals = bot.chat.ephemerals(OUTSIDER)
    assert len(refusals) == 2
    assert all("Only approvers" in r.text and record.id in r.text for r in refusals)
    assert bot.record(record.id).state is State.PENDING
    assert bot.record(record.id).version == record.version
    assert len(bot.chat.snapshot()) == calls_before + 2  # nothing but the two refusals
    assert bot.published() == []


def test_an_approver_cannot_approve_their_own_request_when_four_eyes_is_on(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()
    record = bot.file(user=APPROVER)

    assert bot.approvals.approve(APPROVER, TEAM, record.id) is None

    assert "four-eyes" in bot.chat.last_ephemeral(APPROVER)
    assert bot.record(record.id).state is State.PENDING
    assert bot.chat.updates() == []
    assert bot.published() == []


def test_an_approver_may_approve_their_own_request_when_four_eyes_is_off(
    make_bot: MakeBot,
) -> None:
    bot = make_bot(policy(four_eyes=False))
    record = bot.file(user=APPROVER)

    approved = bot.approvals.approve(APPROVER, TEAM, record.id)

    assert approved is not None
    assert approved.state is State.QUEUED
    assert approved.decided_by == APPROVER
    assert bot.published() == [record.id]


# Approving


def test_an_approval_queues_the_request_once_updates_the_card_in_place_and_tells_the_requester(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()
    record = bot.file()
    card = bot.card(record)
    bot.clock.advance(minutes=30)  # 14:32:30

    approved = bot.approvals.approve(APPROVER, TEAM, record.id)

    assert approved is not None
    assert approved.state is State.QUEUED
    assert bot.published() == [record.id]
    (message,) = bot.delivered
    assert message.approved_by == APPROVER
    assert message.action == record.action
    (update,) = bot.chat.updates()
    assert update.ref == card
    assert f"Approved by <@{APPROVER}> at 14:32" in update.text
    assert update.blocks
    assert update.action_blocks == []
    (reply,) = bot.chat.replies(card.ts)
    assert reply.channel == TEAM
    assert f"<@{REQUESTER}>" in reply.text
    assert record.id in reply.text
    assert bot.chat.ephemerals(APPROVER) == []
    stored = bot.record(record.id)
    assert (stored.decided_by, stored.decided_at) == (APPROVER, START + timedelta(minutes=30))
    decisions = [h for h in stored.history if h.event in {"approved", "queued"}]
    assert [(h.event, h.actor) for h in decisions] == [
        ("approved", APPROVER),
        ("queued", "kubeflow-bot"),
    ]


def test_a_second_approval_is_told_who_approved_and_queues_nothing_more(
    make_bot: MakeBot,
) -> None:
    bot = make_bot(policy(approvers={"users": [APPROVER, "U_SECOND"]}))
    record = bot.file()
    bot.approvals.approve(APPROVER, TEAM, record.id)

    assert bot.approvals.approve(APPROVER, TEAM, record.id) is None
    assert bot.approvals.approve("U_SECOND", TEAM, record.id) is None

    for user in (APPROVER, "U_SECOND"):
        assert f"already approved by <@{APPROVER}>" in bot.chat.last_ephemeral(user)
    assert bot.published() == [record.id]
    assert len(bot.chat.updates()) == 1


def test_twenty_simultaneous_approvals_queue_the_request_exactly_once(make_bot: MakeBot) -> None:
    approvers = [APPROVER, "U_SECOND"]
    bot = make_bot(policy(approvers={"users": approvers}))
    record = bot.file()
    clicks = 20
    barrier = threading.Barrier(clicks)
    results: list[RequestRecord | None] = []

    def click(n: int) -> None:
        barrier.wait(timeout=WAIT_SECONDS)
        results.append(bot.approvals.approve(approvers[n % 2], TEAM, record.id))

    threads = [threading.Thread(target=click, args=(n,)) for n in range(clicks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_SECONDS)

    assert len(results) == clicks
    assert bot.published() == [record.id]
    (winner,) = [r for r in results if r is not None]
    refusals = [c for c in bot.chat.ephemerals() if c.user in approvers]
    assert len(refusals) == clicks - 1
    assert all(f"already approved by <@{winner.decided_by}>" in r.text for r in refusals)
    assert len(bot.chat.updates()) == 1
    assert len(bot.chat.replies(bot.card(record).ts)) == 1
    assert [h.event for h in bot.record(record.id).history].count("approved") == 1


def test_an_approval_runs_through_the_worker_and_the_thread_gets_the_url(
    make_bot: MakeBot,
) -> None:
    bot = make_bot(worker=True)
    record = bot.file()

    bot.approvals.approve(APPROVER, TEAM, record.id)

    assert bot.published() == [record.id]
    done = bot.record(record.id)
    assert done.state is State.SUCCEEDED
    assert done.dry_run
    replies = [r.text for r in bot.chat.replies(record.thread_ts or "")]
    assert any(
        "https://demo.endpoints.demo-project.cloud.goog/" in text and f"<@{REQUESTER}>" in text
        for text in replies
    )
    # A replayed approve payload after the work is done is still only told who approved.
    assert bot.approvals.approve(APPROVER, TEAM, record.id) is None
    assert f"already approved by <@{APPROVER}>" in bot.chat.last_ephemeral(APPROVER)
    assert bot.published() == [record.id]


def test_an_approval_is_still_queued_when_the_thread_reply_and_card_update_fail(
    make_bot: MakeBot, caplog: pytest.LogCaptureFixture
) -> None:
    bot = make_bot()
    record = bot.file()
    bot.chat.fail_next_posts(1)
    bot.chat.fail_next_updates(1)

    with caplog.at_level(logging.ERROR):
        approved = bot.approvals.approve(APPROVER, TEAM, record.id)

    assert approved is not None
    assert approved.state is State.QUEUED
    assert bot.published() == [record.id]
    assert "could not update the card" in caplog.text
    assert "could not reply" in caplog.text


# Denying


def test_a_denial_with_a_reason_is_posted_in_the_thread_and_on_the_card(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()
    record = bot.file()
    card = bot.card(record)

    denied = bot.approvals.deny(APPROVER, TEAM, record.id, "  no GPU\nbudget this quarter ")

    assert denied is not None
    assert denied.state is State.DENIED
    assert denied.reason == "no GPU budget this quarter"
    (update,) = bot.chat.updates()
    assert update.ref == card
    assert f"Denied by <@{APPROVER}> at 14:02" in update.text
    assert "no GPU budget this quarter" in update.text
    assert update.action_blocks == []
    (reply,) = bot.chat.replies(card.ts)
    assert f"<@{REQUESTER}>" in reply.text
    assert "no GPU budget this quarter" in reply.text
    assert bot.published() == []
    # The name is free again, and the denied request cannot be approved afterwards.
    assert bot.approvals.approve(APPROVER, TEAM, record.id) is None
    assert f"already denied by <@{APPROVER}>" in bot.chat.last_ephemeral(APPROVER)
    assert bot.file().id != record.id


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_a_denial_without_a_reason_is_refused_and_the_request_stays_pending(
    make_bot: MakeBot, reason: str
) -> None:
    bot = make_bot()
    record = bot.file()

    assert bot.approvals.deny(APPROVER, TEAM, record.id, reason) is None

    assert "Say why" in bot.chat.last_ephemeral(APPROVER)
    assert bot.record(record.id).state is State.PENDING
    assert bot.chat.updates() == []


def test_a_denial_after_an_approval_is_told_who_approved(make_bot: MakeBot) -> None:
    bot = make_bot()
    record = bot.file()
    bot.approvals.approve(APPROVER, TEAM, record.id)

    assert bot.approvals.deny(APPROVER, TEAM, record.id, "changed my mind") is None

    assert f"already approved by <@{APPROVER}>" in bot.chat.last_ephemeral(APPROVER)
    assert bot.record(record.id).state is State.QUEUED


@pytest.mark.parametrize("request_id", ["kf-zzzzzz", "kf-nope", "KF-000001", "x' OR 1=1 --", ""])
@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_an_unknown_or_malformed_request_id_gets_no_such_request(
    make_bot: MakeBot, request_id: str, decision: str
) -> None:
    bot = make_bot()
    record = bot.file()

    if decision == "approve":
        assert bot.approvals.approve(APPROVER, TEAM, request_id) is None
    else:
        assert bot.approvals.deny(APPROVER, TEAM, request_id, "because") is None

    assert bot.chat.last_ephemeral(APPROVER).startswith("No such request")
    assert bot.record(record.id).state is State.PENDING
    assert bot.published() == []


# Expiry


def test_an_approval_after_the_ttl_is_refused_and_the_card_says_expired(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()
    record = bot.file()
    card = bot.card(record)
    bot.clock.advance(hours=24, seconds=1)

    assert bot.approvals.approve(APPROVER, TEAM, record.id) is None

    assert "expired" in bot.chat.last_ephemeral(APPROVER)
    assert bot.record(record.id).state is State.EXPIRED
    (update,) = bot.chat.updates()
    assert update.ref == card
    assert "Expired at" in update.text
    assert update.action_blocks == []
    (reply,) = bot.chat.replies(card.ts)
    assert f"<@{REQUESTER}>" in reply.text
    assert "expired" in reply.text
    assert bot.published() == []


def test_an_approval_just_before_the_ttl_still_counts(make_bot: MakeBot) -> None:
    bot = make_bot(policy(approval_ttl="30m"))
    record = bot.file()
    bot.clock.advance(minutes=29, seconds=59)

    approved = bot.approvals.approve(APPROVER, TEAM, record.id)

    assert approved is not None
    assert approved.state is State.QUEUED


def test_expire_due_expires_every_overdue_pending_request_and_counts_them(
    make_bot: MakeBot,
) -> None:
    bot = make_bot(policy(approval_ttl="1h"))
    first = bot.file("create alpha")
    bot.clock.advance(minutes=10)
    second = bot.file("create beta")
    bot.clock.advance(minutes=40)
    fresh = bot.file("create gamma")
    decided = bot.file("create delta")
    bot.approvals.approve(APPROVER, TEAM, decided.id)
    bot.clock.advance(minutes=25)  # first and second are past their hour, fresh is not

    assert bot.approvals.expire_due() == 2

    states = {r.id: r.state for r in bot.store.list()}
    assert states == {
        first.id: State.EXPIRED,
        second.id: State.EXPIRED,
        fresh.id: State.PENDING,
        decided.id: State.QUEUED,
    }
    expired_cards = {bot.card(first), bot.card(second)}
    expiry_updates = [u for u in bot.chat.updates() if "Expired at" in u.text]
    assert {u.ref for u in expiry_updates} == expired_cards
    assert bot.approvals.expire_due() == 0
    assert len(bot.chat.updates()) == 3  # two expiries and the approval


# Where cards go


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_with_an_approvals_channel_the_card_is_posted_in_both_channels_and_both_are_updated(
    make_bot: MakeBot, decision: str
) -> None:
    bot = make_bot(policy(approvals_channel=APPROVALS_CHANNEL))

    record = bot.file()

    cards = bot.chat.cards()
    assert [(c.channel, c.thread_ts) for c in cards] == [(TEAM, None), (APPROVALS_CHANNEL, None)]
    assert record.cards == tuple(c.ref for c in cards)
    assert record.thread_ts == cards[0].ts

    if decision == "approve":
        bot.approvals.approve(APPROVER, APPROVALS_CHANNEL, record.id)
        word = "Approved by"
    else:
        bot.approvals.deny(APPROVER, APPROVALS_CHANNEL, record.id, "not now")
        word = "Denied by"

    updates = bot.chat.updates()
    assert {u.ref for u in updates} == {c.ref for c in cards}
    assert all(word in u.text and u.action_blocks == [] for u in updates)
    # The decision is told in the request's own thread, not in the approvals channel.
    (reply,) = bot.chat.replies(cards[0].ts)
    assert reply.channel == TEAM
    assert bot.chat.replies(cards[1].ts) == []


def test_an_approvals_channel_that_is_the_requests_channel_gets_one_card(
    make_bot: MakeBot,
) -> None:
    bot = make_bot(policy(approvals_channel=TEAM))

    record = bot.file()

    assert len(bot.chat.cards()) == 1
    assert len(record.cards) == 1


# Approvers from the directory


def test_members_of_an_approver_user_group_may_approve(make_bot: MakeBot) -> None:
    chat = RecordingChat(groups={"platform-team": frozenset({"U_GROUPIE"})})
    bot = make_bot(policy(approvers={"groups": ["@platform-team"]}), chat=chat)
    record = bot.file()

    assert bot.approvals.approve(APPROVER, TEAM, record.id) is None
    approved = bot.approvals.approve("U_GROUPIE", TEAM, record.id)

    assert "Only approvers" in bot.chat.last_ephemeral(APPROVER)
    assert approved is not None
    assert approved.decided_by == "U_GROUPIE"
    assert bot.published() == [record.id]


def test_the_user_behind_an_approver_email_may_approve(make_bot: MakeBot) -> None:
    chat = RecordingChat(emails={"lead@example.com": "U_LEAD"})
    bot = make_bot(policy(approvers={"emails": ["lead@example.com"]}), chat=chat)
    record = bot.file()

    assert bot.approvals.approve(OUTSIDER, TEAM, record.id) is None
    approved = bot.approvals.approve("U_LEAD", TEAM, record.id)

    assert approved is not None
    assert approved.state is State.QUEUED


def test_the_directory_is_asked_once_within_the_cache_ttl_and_again_after_it(
    make_bot: MakeBot,
) -> None:
    chat = RecordingChat(
        groups={"platform-team": frozenset({"U_GROUPIE"})},
        emails={"lead@example.com": "U_LEAD"},
    )
    monotonic = FakeMonotonic()
    the_policy = policy(approvers={"groups": ["platform-team"], "emails": ["lead@example.com"]})
    bot = make_bot(the_policy, chat=chat, monotonic=monotonic)
    records = [bot.file(f"create team-{n}") for n in range(3)]

    for record in records:
        bot.approvals.approve(OUTSIDER, TEAM, record.id)
    bot.approvals.approve("U_GROUPIE", TEAM, records[0].id)
    monotonic.now += 299
    bot.approvals.approve("U_LEAD", TEAM, records[1].id)

    assert (chat.lookups["group_members"], chat.lookups["user_for_email"]) == (1, 1)

    monotonic.now += 2  # the cached answer is now 301 s old
    bot.approvals.approve("U_LEAD", TEAM, records[2].id)

    assert (chat.lookups["group_members"], chat.lookups["user_for_email"]) == (2, 2)
    assert bot.published() == [r.id for r in records]


# Recovery


def test_requeue_stranded_publishes_an_approved_request_whose_publish_failed_after_the_delay(
    make_bot: MakeBot, caplog: pytest.LogCaptureFixture
) -> None:
    bot = make_bot(queue=PublishFailsOnce())
    record = bot.file()

    with caplog.at_level(logging.ERROR):
        approved = bot.approvals.approve(APPROVER, TEAM, record.id)

    assert approved is not None
    assert approved.state is State.APPROVED
    assert f"could not queue {record.id}" in caplog.text
    replies = [r.text for r in bot.chat.replies(record.thread_ts or "")]
    assert any("could not be queued yet" in text for text in replies)
    assert bot.published() == []

    bot.clock.advance(seconds=STRANDED_AFTER.total_seconds() - 1)
    assert bot.approvals.requeue_stranded() == 0
    assert bot.published() == []

    bot.clock.advance(seconds=2)
    assert bot.approvals.requeue_stranded() == 1
    assert bot.published() == [record.id]
    assert bot.record(record.id).state is State.QUEUED

    bot.clock.advance(minutes=10)
    assert bot.approvals.requeue_stranded() == 0
    assert bot.published() == [record.id]


def test_requeue_stranded_publishes_a_queued_request_idle_with_no_live_lease_again(
    make_bot: MakeBot,
) -> None:
    bot = make_bot()
    record = bot.file()
    bot.approvals.approve(APPROVER, TEAM, record.id)
    assert bot.published() == [record.id]

    # Idle, but not long enough to be taken for lost.
    bot.clock.advance(seconds=STALE_AFTER.total_seconds() - 60)
    assert bot.approvals.requeue_stranded() == 0
    # A worker holds it (its lease outlives the idle time): not lost either.
    now = bot.clock()
    bot.store.claim(record.id, holder="w1", until=now + 2 * STALE_AFTER, at=now)
    bot.clock.advance(seconds=STALE_AFTER.total_seconds() + 60)
    assert bot.approvals.requeue_stranded() == 0
    # Its worker died: the lease ran out and nothing happened since.
    bot.clock.advance(seconds=STALE_AFTER.total_seconds())
    assert bot.approvals.requeue_stranded() == 1

    assert bot.published() == [record.id, record.id]
    assert bot.record(record.id).state is State.QUEUED
