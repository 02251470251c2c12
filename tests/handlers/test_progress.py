"""The chat side of progress: one status message per request, redrawn in place.

``ChatNotifier`` runs on a real SQLite store (it remembers the status message there)
and the recording chat; the throttle's clock is injected, and the few waits for its
timer thread are bounded polls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handlers.messages import checklist
from handlers.progress import UPDATES_PER_MINUTE, ChatNotifier
from provisioning.actions import Action, CreateAction, GrantAction, RevokeAction
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.queue import Ack
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State, StepReport, StepStatus
from provisioning.spec import DeploymentSpec, GpuSpec
from provisioning.sqlite_store import SqliteStore
from provisioning.worker import Worker
from tests.support.clocks import FakeMonotonic
from tests.support.recording_chat import ChatCall, RecordingChat, eventually

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEAM = "C0TEAM"
THREAD = "1699999999.000100"
OWNER = "U_ALICE"
URL = "https://demo.endpoints.demo-project.cloud.goog/"

CREATE = CreateAction(
    spec=DeploymentSpec(
        name="demo",
        project="demo-project",
        zone="us-central1-a",
        machine_type="e2-standard-8",
        gpu=GpuSpec(type="nvidia-tesla-t4", count=1, machine_type="n1-standard-8", max_nodes=2),
        kubeflow_version="26.03",
    )
)
GRANT = GrantAction(email="ada@example.com", deployment="demo", project="demo-project")
REVOKE = RevokeAction(email="ada@example.com", deployment="demo", project="demo-project")
# Plain steps: none of them is a milestone with a thread reply of its own.
STEPS = (("apis", "Enable the project's APIs"), ("static_ip", "Static IP"), ("pool", "GPU pool"))
MILESTONE_STEPS = (("apis", "Enable the project's APIs"), ("cluster", "GKE cluster"))


def clock() -> datetime:
    return START


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "requests.db") as opened:
        yield opened


@pytest.fixture
def chat() -> RecordingChat:
    return RecordingChat()


def running(
    store: SqliteStore,
    action: Action = CREATE,
    request_id: str = "kf-abc123",
    *,
    until: State = State.RUNNING,
) -> str:
    """Store a request as the worker sees it: approved, queued and (by default) running."""
    store.add(
        RequestRecord(
            id=request_id,
            action=action,
            requester=OWNER,
            channel=TEAM,
            thread_ts=THREAD,
            created_at=START,
            updated_at=START,
        )
    )
    for before, after in (
        (State.PENDING, State.APPROVED),
        (State.APPROVED, State.QUEUED),
        (State.QUEUED, State.RUNNING),
    ):
        store.transition(request_id, expected={before}, new=after, actor="test", at=START)
        if after is until:
            break
    return request_id


def report(store: SqliteStore, request_id: str, *statuses: StepStatus) -> RequestRecord:
    """Save step progress as the worker does; returns the record it hands the notifier."""
    steps = tuple(
        StepReport(name=name, title=title, status=status, calls=(f"{name}.create demo",))
        for (name, title), status in zip(STEPS, statuses, strict=True)
    )
    return store.update(request_id, changes={"steps": steps}, at=START)


def finish(store: SqliteStore, request_id: str, state: State, **changes: object) -> RequestRecord:
    return store.transition(
        request_id, expected={State.RUNNING}, new=state, actor="test", at=START, changes=changes
    )


P, R, D, F = StepStatus.PENDING, StepStatus.RUNNING, StepStatus.DONE, StepStatus.FAILED


def status_posts(chat: RecordingChat) -> list[ChatCall]:
    """Posts in the request's thread that carry a checklist."""
    return [c for c in chat.replies(THREAD) if c.text.startswith("`kf-")]


# The status message


def test_the_first_progress_posts_one_status_message_in_the_thread_and_remembers_it(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    notifier = ChatNotifier(chat, store, clock, monotonic=FakeMonotonic())

    notifier.progress(report(store, request_id, R, P, P))

    (post,) = chat.posts()
    assert (post.channel, post.thread_ts) == (TEAM, THREAD)
    assert "[~] Enable the project's APIs" in post.text
    assert "[ ] Static IP" in post.text
    stored = store.get(request_id)
    assert stored is not None
    assert stored.status_message == post.ref


def test_later_progress_redraws_the_same_message_instead_of_posting_again(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    monotonic = FakeMonotonic()
    notifier = ChatNotifier(chat, store, clock, min_interval=1.0, monotonic=monotonic)

    notifier.progress(report(store, request_id, R, P, P))
    monotonic.now += 1.5
    notifier.progress(report(store, request_id, D, R, R))
    monotonic.now += 1.5
    latest = report(store, request_id, D, D, R)
    notifier.progress(latest)

    (post,) = chat.posts()
    updates = chat.updates()
    assert [u.ref for u in updates] == [post.ref, post.ref]
    assert chat.current_text(post.ref) == checklist(latest)


def test_with_many_requests_in_flight_their_redraws_share_slack_s_budget(
    store: SqliteStore, chat: RecordingChat
) -> None:
    monotonic = FakeMonotonic()
    notifier = ChatNotifier(chat, store, clock, min_interval=1.0, monotonic=monotonic)
    ids = [
        running(
            store,
            CREATE.model_copy(update={"spec": CREATE.spec.model_copy(update={"name": f"ml{n}"})}),
            request_id=f"kf-many{n:02d}",
        )
        for n in range(11)
    ]
    for request_id in ids:
        notifier.progress(report(store, request_id, R, P, P))

    # Ten others in flight: a request's status message is redrawn every 10 x 60/50 s.
    spacing = 10 * 60 / UPDATES_PER_MINUTE
    monotonic.now += spacing - 1
    notifier.progress(report(store, ids[0], D, R, P))
    assert chat.updates() == []
    monotonic.now += 1
    notifier.progress(report(store, ids[0], D, D, R))
    assert len(chat.updates()) == 1


def test_a_new_notifier_redraws_the_message_an_earlier_one_posted(
    store: SqliteStore, chat: RecordingChat
) -> None:
    """A redelivered request handled after a restart keeps its one status message."""
    request_id = running(store)
    ChatNotifier(chat, store, clock).progress(report(store, request_id, R, P, P))

    ChatNotifier(chat, store, clock).progress(report(store, request_id, D, R, P))

    (post,) = chat.posts()
    assert [u.ref for u in chat.updates()] == [post.ref]


def test_rapid_progress_is_held_back_and_the_final_state_is_drawn_once(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    notifier = ChatNotifier(chat, store, clock, min_interval=1000, monotonic=FakeMonotonic())
    notifier.progress(report(store, request_id, R, P, P))

    for statuses in ((D, R, P), (D, R, R), (D, D, R), (D, D, D)):
        notifier.progress(report(store, request_id, *statuses))

    assert chat.updates() == []  # all within the interval: held back
    done = finish(store, request_id, State.SUCCEEDED, url=URL)
    notifier.succeeded(done, dry_run=False)

    (post,) = status_posts(chat)
    (update,) = chat.updates()
    assert update.ref == post.ref
    assert update.text == checklist(done)
    assert "succeeded" in update.text.splitlines()[0]


def test_the_throttle_timer_draws_only_the_latest_state(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    notifier = ChatNotifier(chat, store, clock, min_interval=0.05, monotonic=FakeMonotonic())
    notifier.progress(report(store, request_id, R, P, P))

    notifier.progress(report(store, request_id, D, R, P))
    notifier.progress(report(store, request_id, D, R, R))
    latest = report(store, request_id, D, D, R)
    notifier.progress(latest)

    (update,) = eventually(chat.updates, what="the throttled redraw")
    assert update.text == checklist(latest)
    assert len(chat.posts()) == 1


def test_a_slow_first_post_does_not_lead_to_a_second_status_message(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    first_entered = threading.Event()
    another_post = threading.Event()

    def slow_first_post(call: ChatCall) -> None:
        if not first_entered.is_set():
            first_entered.set()
            # Slack is slow (rate-limited): held until another post arrives, or 1 s.
            another_post.wait(timeout=1.0)
        else:
            another_post.set()

    chat.before_post = slow_first_post
    notifier = ChatNotifier(chat, store, clock, min_interval=0.05, monotonic=FakeMonotonic())
    first = threading.Thread(
        target=notifier.progress, args=(report(store, request_id, R, P, P),), daemon=True
    )
    first.start()
    eventually(first_entered.is_set, what="the first post to start")

    latest = report(store, request_id, D, R, P)
    notifier.progress(latest)
    first.join(timeout=5)
    eventually(
        lambda: checklist(latest) in [c.text for c in chat.snapshot()],
        what="the latest checklist to be drawn",
    )

    assert len(status_posts(chat)) == 1


def test_a_slow_throttled_redraw_never_overwrites_the_final_state(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    first_update_entered = threading.Event()
    release = threading.Event()

    def slow_first_update(call: ChatCall) -> None:
        if not first_update_entered.is_set():
            first_update_entered.set()
            release.wait(timeout=1.0)  # Slack is slow (rate-limited) for this one

    chat.before_update = slow_first_update
    notifier = ChatNotifier(chat, store, clock, min_interval=0.05, monotonic=FakeMonotonic())
    notifier.progress(report(store, request_id, R, P, P))
    notifier.progress(report(store, request_id, D, R, P))  # held back, then flushed
    eventually(first_update_entered.is_set, what="the throttled redraw to start")

    report(store, request_id, D, D, D)
    done = finish(store, request_id, State.SUCCEEDED, url=URL)
    notifier.succeeded(done, dry_run=False)
    release.set()
    eventually(lambda: len(chat.updates()) == 2, what="both redraws")

    (status,) = status_posts(chat)
    assert chat.current_text(status.ref) == checklist(done)


# The result


def test_success_redraws_the_checklist_and_replies_with_the_url_to_the_requester(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    notifier = ChatNotifier(chat, store, clock, monotonic=FakeMonotonic())
    notifier.progress(report(store, request_id, D, R, P))
    report(store, request_id, D, D, D)

    done = finish(store, request_id, State.SUCCEEDED, url=URL)
    notifier.succeeded(done, dry_run=False)

    status, reply = chat.replies(THREAD)
    assert chat.current_text(status.ref) == checklist(done)
    assert reply.text.startswith(f"<@{OWNER}>, `demo` is ready: {URL}")
    assert "nvidia-tesla-t4" in reply.text


def test_a_dry_run_success_replies_with_the_plan_marked_dry_run(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store)
    notifier = ChatNotifier(chat, store, clock, monotonic=FakeMonotonic())
    notifier.progress(report(store, request_id, R, P, P))
    report(store, request_id, StepStatus.PLANNED, StepStatus.PLANNED, StepStatus.PLANNED)

    done = finish(store, request_id, State.SUCCEEDED, url=URL, dry_run=True)
    notifier.succeeded(done, dry_run=True)

    reply = chat.replies(THREAD)[-1]
    assert f"<@{OWNER}>" in reply.text
    assert "nothing was created" in reply.text
    assert "Plan for `demo`" in reply.text
    assert "static_ip.create demo" in reply.text
    assert f"{URL} (dry-run)" in reply.text


@pytest.mark.parametrize(
    ("will_retry", "then"),
    [(False, "will not be retried"), (True, "will try again")],
)
def test_a_failure_replies_with_the_reason_and_whether_it_will_be_retried(
    store: SqliteStore, chat: RecordingChat, will_retry: bool, then: str
) -> None:
    request_id = running(store)
    notifier = ChatNotifier(chat, store, clock, monotonic=FakeMonotonic())
    notifier.progress(report(store, request_id, D, R, P))
    report(store, request_id, D, F, P)
    reason = "GKE cluster: quota exceeded: CPUS in us-central1 (24 of 24 used)"

    failed = finish(store, request_id, State.FAILED, reason=reason)
    notifier.failed(failed, reason=reason, will_retry=will_retry)

    status, reply = chat.replies(THREAD)
    assert "[!] Static IP" in chat.current_text(status.ref)
    assert f"<@{OWNER}>" in reply.text
    assert request_id in reply.text
    assert reason in reply.text
    assert then in reply.text


@pytest.mark.parametrize("action", [GRANT, REVOKE], ids=["grant", "revoke"])
@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_grants_and_revokes_get_no_checklist_only_the_final_reply(
    store: SqliteStore, chat: RecordingChat, action: Action, outcome: str
) -> None:
    request_id = running(store, action)
    notifier = ChatNotifier(chat, store, clock, min_interval=0.0)
    step = StepReport(name="iap", title="Grant IAP access", status=StepStatus.RUNNING)

    notifier.progress(store.update(request_id, changes={"steps": (step,)}, at=START))
    assert chat.snapshot() == []

    if outcome == "succeeded":
        notifier.succeeded(finish(store, request_id, State.SUCCEEDED), dry_run=False)
    else:
        record = finish(store, request_id, State.FAILED, reason="permission missing")
        notifier.failed(record, reason="permission missing", will_retry=False)

    (reply,) = chat.snapshot()
    assert (reply.kind, reply.thread_ts) == ("post", THREAD)
    assert reply.text.startswith(f"<@{OWNER}>, `{request_id}`")
    stored = store.get(request_id)
    assert stored is not None
    assert stored.status_message is None


def test_a_worker_run_keeps_one_status_message_and_ends_with_the_url(
    store: SqliteStore, chat: RecordingChat
) -> None:
    request_id = running(store, until=State.QUEUED)
    notifier = ChatNotifier(chat, store, clock, min_interval=0.0)
    worker = Worker(store, DryRunCloud(), notifier, clock)
    message = QueueMessage(
        request_id=request_id, action=CREATE, approved_by="U_APPROVER", approved_at=START
    )

    assert worker.handle(message, 1) == Ack()

    status, reply = chat.replies(THREAD)
    assert len(chat.updates()) >= 2
    assert {u.ref for u in chat.updates()} == {status.ref}
    final = store.get(request_id)
    assert final is not None
    assert final.state is State.SUCCEEDED
    assert chat.current_text(status.ref) == checklist(final)
    assert f"{URL} (dry-run)" in reply.text
    assert f"<@{OWNER}>" in reply.text


def milestone_report(store: SqliteStore, request_id: str, *statuses: StepStatus) -> RequestRecord:
    steps = tuple(
        StepReport(name=name, title=title, status=status)
        for (name, title), status in zip(MILESTONE_STEPS, statuses, strict=True)
    )
    return store.update(request_id, changes={"steps": steps}, at=START)


def cluster_replies(chat: RecordingChat) -> list[str]:
    return [c.text for c in chat.replies(THREAD) if "the GKE cluster is running" in c.text]


def test_a_milestone_gets_one_thread_reply_when_it_is_seen_finishing(
    store: SqliteStore, chat: RecordingChat
) -> None:
    notifier = ChatNotifier(chat, store, clock, min_interval=0, monotonic=FakeMonotonic())
    request_id = running(store)

    notifier.progress(milestone_report(store, request_id, StepStatus.DONE, StepStatus.RUNNING))
    notifier.progress(milestone_report(store, request_id, StepStatus.DONE, StepStatus.DONE))
    notifier.progress(milestone_report(store, request_id, StepStatus.DONE, StepStatus.DONE))

    assert cluster_replies(chat) == [f"`{request_id}` demo: the GKE cluster is running."]


def test_milestones_found_done_already_or_only_planned_are_not_announced(
    store: SqliteStore, chat: RecordingChat
) -> None:
    notifier = ChatNotifier(chat, store, clock, min_interval=0, monotonic=FakeMonotonic())
    resumed = running(store)
    other = CreateAction(spec=CREATE.spec.model_copy(update={"name": "other"}))
    planned = running(store, other, request_id="kf-def456")

    # After a restart the cluster is found done; on a dry run it is only planned.
    notifier.progress(milestone_report(store, resumed, StepStatus.DONE, StepStatus.DONE))
    notifier.progress(milestone_report(store, planned, StepStatus.PLANNED, StepStatus.RUNNING))
    notifier.progress(milestone_report(store, planned, StepStatus.PLANNED, StepStatus.PLANNED))

    assert cluster_replies(chat) == []
