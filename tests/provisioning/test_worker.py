"""Behaviour of the worker: claim a request, run its steps, resume, report, acknowledge.

The worker runs over a real ``SqliteStore`` under ``tmp_path``, a ``MemoryCloud`` or the
dry-run cloud, and a notifier that records its calls.  Redeliveries are further calls of
``handle``; the end-to-end tests go through the real ``InProcessQueue``, whose clock is
a fake that jumps a minute per reading, so a 30-second retry is due at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provisioning.actions import Action, CreateAction, GrantAction
from provisioning.create_steps import (
    CLUSTER_POLL_SECONDS,
    CREATE_STEPS,
    DNS_POLL_SECONDS,
    REQUIRED_APIS,
)
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.errors import PermanentError
from provisioning.inprocess_queue import InProcessQueue
from provisioning.queue import Ack, HandleResult, Retry
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State, StepStatus
from provisioning.spec import DeploymentSpec, GpuSpec
from provisioning.sqlite_store import SqliteStore
from provisioning.worker import Worker
from tests.support.memory_cloud import MemoryCloud

WAIT = 10.0  # seconds: the bound on every wait for something that should happen
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROJECT = "demo-project"
ZONE = "us-central1-a"
NAME = "demo"
REQUEST_ID = "kf-wrk001"
EMAIL = "ada@example.com"
T4 = "nvidia-tesla-t4"
MANIFESTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
]


@dataclass
class RecordingNotifier:
    """A ``Notifier`` that keeps every call as (method, record, keyword arguments)."""

    calls: list[tuple[str, RequestRecord, dict[str, object]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self, record: RequestRecord) -> None:
        with self.lock:
            self.calls.append(("progress", record, {}))

    def succeeded(self, record: RequestRecord, *, dry_run: bool) -> None:
        with self.lock:
            self.calls.append(("succeeded", record, {"dry_run": dry_run}))

    def failed(self, record: RequestRecord, *, reason: str, will_retry: bool) -> None:
        with self.lock:
            self.calls.append(("failed", record, {"reason": reason, "will_retry": will_retry}))

    def named(self, method: str) -> list[tuple[str, RequestRecord, dict[str, object]]]:
        with self.lock:
            return [call for call in self.calls if call[0] == method]


class Clock:
    """Wall-clock time that moves a second per reading, so history stays ordered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = T0

    def __call__(self) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=1)
            return self._now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "requests.db") as opened:
        yield opened


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


def create_action(*, zone: str = ZONE) -> CreateAction:
    return CreateAction(
        spec=DeploymentSpec(
            name=NAME,
            project=PROJECT,
            zone=zone,
            gpu=GpuSpec(type=T4, count=1, machine_type="n1-standard-8", max_nodes=2),
        ),
        requester_email=EMAIL,
    )


def add_request(
    store: SqliteStore,
    *,
    action: Action | None = None,
    state: State = State.QUEUED,
    request_id: str = REQUEST_ID,
) -> RequestRecord:
    record = RequestRecord(
        id=request_id,
        action=action or create_action(),
        requester="U0ADA",
        channel="C0KUBEFLOW",
        state=state,
        created_at=T0,
        updated_at=T0,
    )
    store.add(record)
    return record


def message_for(record: RequestRecord, *, action: Action | None = None) -> QueueMessage:
    return QueueMessage(
        request_id=record.id,
        action=action or record.action,
        approved_by="U0APPROVER",
        approved_at=T0,
    )


def memory_cloud(*, apis_on: bool = True, **options: Any) -> MemoryCloud:
    """A project whose APIs are on already, unless ``apis_on`` is False: enabling them
    takes a run of its own, which most tests here are not about."""
    options.setdefault("gpu_zones", {T4: [ZONE]})
    cloud = MemoryCloud(**options)
    if apis_on:
        cloud.enable(PROJECT, REQUIRED_APIS)
    return cloud


def worker(store: SqliteStore, cloud: Any, notifier: RecordingNotifier) -> Worker:
    return Worker(store, cloud, notifier, Clock(), manifests=lambda: MANIFESTS)


def current(store: SqliteStore, request_id: str = REQUEST_ID) -> RequestRecord:
    record = store.get(request_id)
    assert record is not None
    return record


def deliver_until_acked(work: Worker, message: QueueMessage, *, limit: int = 20) -> int:
    """Deliver ``message`` again while the worker asks for a retry; the deliveries made."""
    for attempt in range(1, limit + 1):
        if isinstance(work.handle(message, attempt), Ack):
            return attempt
    raise AssertionError(f"not acknowledged after {limit} deliveries")


# -- Running to the end ----------------------------------------------------------------------


def test_a_queued_create_on_the_dry_run_cloud_succeeds_with_its_url_and_steps(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    record = add_request(store)

    result = worker(store, DryRunCloud(), notifier).handle(message_for(record), 1)

    assert result == Ack()
    done = current(store)
    assert done.state is State.SUCCEEDED
    assert done.url == f"https://{NAME}.endpoints.{PROJECT}.cloud.goog/"
    assert done.dry_run is True
    assert [s.name for s in done.steps] == [step.name for step in CREATE_STEPS]
    assert {s.status for s in done.steps} == {StepStatus.PLANNED}


def test_the_notifier_hears_progress_and_one_success(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    record = add_request(store)

    worker(store, DryRunCloud(), notifier).handle(message_for(record), 1)

    assert notifier.named("progress")
    assert [c[0] for c in notifier.calls if c[0] != "progress"] == ["succeeded"]
    (_, succeeded, kwargs) = notifier.named("succeeded")[0]
    assert succeeded.state is State.SUCCEEDED
    assert kwargs == {"dry_run": True}
    assert notifier.calls[-1][0] == "succeeded"


def test_progress_reports_show_steps_finishing_one_after_another(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    record = add_request(store)

    worker(store, DryRunCloud(), notifier).handle(message_for(record), 1)

    finished = [
        sum(s.status is StepStatus.PLANNED for s in call[1].steps)
        for call in notifier.named("progress")
    ]
    assert finished == sorted(finished)
    assert finished[-1] == len(CREATE_STEPS)


def test_an_approved_request_is_queued_then_run_and_its_history_says_so(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    record = add_request(store, state=State.APPROVED)

    worker(store, DryRunCloud(), notifier).handle(message_for(record), 1)

    events = [entry.event for entry in current(store).history]
    assert events == ["queued", "running", "succeeded"]


def test_a_grant_runs_to_success_without_a_url(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    record = add_request(store, action=GrantAction(email=EMAIL, deployment=NAME, project=PROJECT))

    result = worker(store, cloud, notifier).handle(message_for(record), 1)

    assert result == Ack()
    assert current(store).state is State.SUCCEEDED
    assert current(store).url is None
    assert cloud.project_policy(PROJECT).members_of("roles/iap.httpsResourceAccessor") == {
        f"user:{EMAIL}"
    }


# -- Pending and resuming --------------------------------------------------------------------


def test_while_the_cluster_provisions_the_worker_asks_for_a_retry_and_keeps_progress(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud(cluster_polls=2)
    record = add_request(store)

    result = worker(store, cloud, notifier).handle(message_for(record), 1)

    assert isinstance(result, Retry)
    # The sooner of the two steps still waiting: the DNS name's rollout and the cluster.
    assert result.after_seconds == min(DNS_POLL_SECONDS, CLUSTER_POLL_SECONDS)
    stored = current(store)
    assert stored.state is State.RUNNING
    statuses = {s.name: s.status for s in stored.steps}
    assert statuses["dns"] is StepStatus.RUNNING
    assert statuses["apis"] is StepStatus.DONE
    assert statuses["service_accounts"] is StepStatus.DONE
    assert statuses["static_ip"] is StepStatus.DONE
    assert statuses["cluster"] is StepStatus.RUNNING
    assert statuses["gpu_pool"] is StepStatus.PENDING
    assert notifier.named("succeeded") == notifier.named("failed") == []


def test_a_redelivery_resumes_without_running_finished_steps_again(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud(cluster_polls=2, node_pool_polls=1)
    record = add_request(store)
    work = worker(store, cloud, notifier)
    assert isinstance(work.handle(message_for(record), 1), Retry)

    deliveries = deliver_until_acked(work, message_for(record))

    assert deliveries > 1
    assert current(store).state is State.SUCCEEDED
    # The steps finished in the first delivery read the cloud only then.
    assert cloud.calls["enabled_services"] == 1
    assert cloud.calls["service_account_exists"] == 3
    assert cloud.calls["get_global_address"] == 1
    for created in ("create_cluster", "create_node_pool", "create_global_address"):
        assert cloud.mutations[created] == 1, created
    assert cloud.mutations["create_service_account"] == 3
    assert len(notifier.named("succeeded")) == 1


def test_looking_again_at_a_running_request_adds_nothing_to_its_history(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    record = add_request(store)
    work = worker(store, cloud, notifier)

    deliveries = deliver_until_acked(work, message_for(record))

    assert deliveries > 1
    assert [entry.event for entry in current(store).history] == ["running", "succeeded"]


def test_a_request_taken_over_from_a_holder_that_died_records_the_resumption(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    record = add_request(store)
    work = worker(store, cloud, notifier)
    assert isinstance(work.handle(message_for(record), 1), Retry)
    # Another worker took the lease and died with it: it ran out and was never given back.
    store.claim(record.id, holder="gone:1:dead", until=T0, at=T0)

    deliver_until_acked(work, message_for(record))

    history = current(store).history
    assert [entry.event for entry in history] == ["running", "running", "succeeded"]
    assert history[1].detail == "resumed"


def test_the_same_request_is_not_worked_on_twice_at_once(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    record = add_request(store)
    work = worker(store, cloud, notifier)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        assert release.wait(WAIT)

    cloud.before("enabled_services", hold)
    first = threading.Thread(target=work.handle, args=(message_for(record), 1))
    first.start()
    try:
        assert inside.wait(WAIT)
        second = work.handle(message_for(record), 2)
    finally:
        release.set()
        first.join(WAIT)

    assert isinstance(second, Retry)
    assert second.after_seconds > 0
    assert cloud.calls["enabled_services"] == 1


# -- Failing, and what is not the worker's to do -----------------------------------------------


def test_a_permanent_error_fails_the_request_tells_the_requester_and_acks(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    cloud.fail("create_cluster", PermanentError("the CPUS quota in us-central1 is used up"))
    record = add_request(store)

    result = worker(store, cloud, notifier).handle(message_for(record), 1)

    assert result == Ack()
    failed = current(store)
    assert failed.state is State.FAILED
    assert failed.reason == "GKE cluster: the CPUS quota in us-central1 is used up"
    assert {s.name: s.status for s in failed.steps}["cluster"] is StepStatus.FAILED
    (call,) = notifier.named("failed")
    assert call[2] == {"reason": failed.reason, "will_retry": False}
    assert call[1].state is State.FAILED
    assert notifier.named("succeeded") == []


def test_a_message_for_an_unknown_request_is_acked_and_nothing_else_happens(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    stray = RequestRecord(
        id="kf-nobody",
        action=create_action(),
        requester="U0ADA",
        channel="C0KUBEFLOW",
        created_at=T0,
        updated_at=T0,
    )

    result = worker(store, cloud, notifier).handle(message_for(stray), 1)

    assert result == Ack()
    assert store.get("kf-nobody") is None
    assert store.list() == []
    assert notifier.calls == []
    assert sum(cloud.calls.values()) == 0


def test_a_duplicate_delivery_of_a_finished_request_is_acked_quietly(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    record = add_request(store)
    work = worker(store, cloud, notifier)
    deliver_until_acked(work, message_for(record))
    finished = current(store)
    heard = list(notifier.calls)
    calls = sum(cloud.calls.values())

    result = work.handle(message_for(record), 9)

    assert result == Ack()
    assert current(store) == finished
    assert notifier.calls == heard
    assert sum(cloud.calls.values()) == calls


@pytest.mark.parametrize(
    "state", [State.CANCELLED, State.DENIED, State.EXPIRED, State.FAILED, State.PENDING]
)
def test_a_message_for_a_request_that_must_not_run_is_acked_and_left_alone(
    store: SqliteStore, notifier: RecordingNotifier, state: State
) -> None:
    cloud = memory_cloud()
    record = add_request(store, state=state)
    stored = current(store)

    result = worker(store, cloud, notifier).handle(message_for(record), 1)

    assert result == Ack()
    assert current(store) == stored
    assert notifier.calls == []
    assert sum(cloud.calls.values()) == 0


def test_a_request_cancelled_while_its_steps_run_is_acked_without_announcing_success(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud()
    record = add_request(store, action=GrantAction(email=EMAIL, deployment=NAME, project=PROJECT))
    cloud.before(
        "get_project_iam_policy",
        lambda: store.transition(
            REQUEST_ID, expected={State.RUNNING}, new=State.CANCELLED, actor="U0ADA", at=T0
        ),
    )

    result = worker(store, cloud, notifier).handle(message_for(record), 1)

    assert result == Ack()
    assert current(store).state is State.CANCELLED
    assert notifier.named("succeeded") == []


def test_the_worker_builds_what_the_stored_record_says_not_what_the_message_carries(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud(gpu_zones={T4: [ZONE, "us-central1-b"]})
    record = add_request(store)
    stale = message_for(record, action=create_action(zone="us-central1-b"))

    deliver_until_acked(worker(store, cloud, notifier), stale)

    assert cloud.cluster_names(PROJECT) == [NAME]
    assert cloud.cluster_request(PROJECT, ZONE, NAME) is not None


# -- Through the in-process queue ----------------------------------------------------------------


class TickingClock:
    """Monotonic seconds that jump a minute at every reading: a retry the worker asks
    for is due by the queue's next look at the clock, and nothing waits in real time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = 0.0

    def __call__(self) -> float:
        with self._lock:
            self._now += 60.0
            return self._now


def test_a_published_create_runs_to_success_through_the_in_process_queue(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    record = add_request(store, state=State.APPROVED)
    queue = InProcessQueue()
    queue.consume(worker(store, DryRunCloud(), notifier).handle)
    try:
        queue.publish(message_for(record))
        assert queue.join(timeout=WAIT)
    finally:
        queue.close(timeout=WAIT)

    assert current(store).state is State.SUCCEEDED
    assert len(notifier.named("succeeded")) == 1


def test_the_queue_redelivers_a_pending_create_until_the_cluster_is_up(
    store: SqliteStore, notifier: RecordingNotifier
) -> None:
    cloud = memory_cloud(cluster_polls=2, node_pool_polls=1)
    record = add_request(store)
    queue = InProcessQueue(clock=TickingClock())
    work = worker(store, cloud, notifier)
    results: list[HandleResult] = []

    def handle(message: QueueMessage, attempt: int | None) -> HandleResult:
        results.append(work.handle(message, attempt))
        return results[-1]

    queue.consume(handle)
    try:
        queue.publish(message_for(record))
        assert queue.join(timeout=WAIT)
    finally:
        queue.close(timeout=WAIT)

    done = current(store)
    assert done.state is State.SUCCEEDED
    assert done.url == f"https://{NAME}.endpoints.{PROJECT}.cloud.goog/"
    assert cloud.mutations["create_cluster"] == 1
    assert cloud.mutations["create_node_pool"] == 1
    assert len(notifier.named("succeeded")) == 1
    assert len(results) > 1
    assert all(isinstance(result, Retry) for result in results[:-1])
    assert isinstance(results[-1], Ack)


class HandlerWinsTheQueuedRace(SqliteStore):
    """A store where the approval handler marks the request queued just before the
    worker tries to: the order the in-process queue can produce."""

    def transition(self, request_id: str, **kwargs: Any) -> RequestRecord:  # type: ignore[override]
        if kwargs.get("new") is State.QUEUED and kwargs.get("actor") != "handler":
            super().transition(
                request_id, expected={State.APPROVED}, new=State.QUEUED, actor="handler", at=T0
            )
        return super().transition(request_id, **kwargs)


def test_a_worker_that_loses_the_race_to_mark_a_request_queued_still_runs_it(
    tmp_path: Path, notifier: RecordingNotifier
) -> None:
    with HandlerWinsTheQueuedRace(tmp_path / "race.db") as store:
        record = add_request(store, state=State.PENDING)
        store.transition(record.id, expected={State.PENDING}, new=State.APPROVED, actor="U", at=T0)

        answer = Worker(store, DryRunCloud(), notifier, Clock()).handle(message_for(record), 1)

        assert isinstance(answer, Ack)
        assert current(store).state is State.SUCCEEDED
        assert [h.event for h in current(store).history].count("queued") == 1
