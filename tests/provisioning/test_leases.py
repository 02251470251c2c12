"""Leases: one delivery of a request acts at a time, across workers and processes.

Two ``Worker``s on one store stand in for two worker processes on one subscription;
a lease left by a worker that died runs out, and then another delivery takes over.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisioning.actions import CreateAction
from provisioning.create_steps import CLUSTER_POLL_SECONDS, DNS_POLL_SECONDS, REQUIRED_APIS
from provisioning.queue import Retry
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State
from provisioning.spec import DeploymentSpec
from provisioning.sqlite_store import SqliteStore
from provisioning.store import LeaseHeld
from provisioning.worker import LEASE_RETRY_MAX_SECONDS, Worker
from tests.support.clocks import FakeClock
from tests.support.memory_cloud import MemoryCloud

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WAIT = 10.0
LEASE = timedelta(minutes=5)


class QuietNotifier:
    def progress(self, record: RequestRecord) -> None:
        pass

    def succeeded(self, record: RequestRecord, *, dry_run: bool) -> None:
        pass

    def failed(self, record: RequestRecord, *, reason: str, will_retry: bool) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "requests.db") as opened:
        yield opened


def project_with_apis_on() -> MemoryCloud:
    cloud = MemoryCloud()
    cloud.enable("demo-project", REQUIRED_APIS)
    return cloud


def queued(store: SqliteStore, request_id: str = "kf-lease1") -> QueueMessage:
    action = CreateAction(
        spec=DeploymentSpec(name="demo", project="demo-project", zone="us-central1-a")
    )
    store.add(
        RequestRecord(
            id=request_id,
            action=action,
            requester="U0ADA",
            channel="C0TEAM",
            state=State.QUEUED,
            created_at=T0,
            updated_at=T0,
        )
    )
    return QueueMessage(request_id=request_id, action=action, approved_by="U0B", approved_at=T0)


def test_a_claim_is_refused_while_another_holder_has_the_lease(store: SqliteStore) -> None:
    queued(store)
    store.claim("kf-lease1", holder="a", until=T0 + LEASE, at=T0)

    with pytest.raises(LeaseHeld) as held:
        store.claim("kf-lease1", holder="b", until=T0 + LEASE, at=T0 + timedelta(minutes=1))

    assert held.value.current.lease_holder == "a"
    # The holder itself may renew it.
    renewed = store.claim("kf-lease1", holder="a", until=T0 + 2 * LEASE, at=T0)
    assert renewed.lease_until == T0 + 2 * LEASE


def test_a_lease_that_ran_out_can_be_taken_over(store: SqliteStore) -> None:
    queued(store)
    store.claim("kf-lease1", holder="dead", until=T0 + LEASE, at=T0)

    taken = store.claim("kf-lease1", holder="alive", until=T0 + 2 * LEASE, at=T0 + LEASE)

    assert taken.lease_holder == "alive"


def test_releasing_frees_the_lease_but_never_someone_elses(store: SqliteStore) -> None:
    queued(store)
    store.claim("kf-lease1", holder="a", until=T0 + LEASE, at=T0)

    assert store.release("kf-lease1", holder="b", at=T0).lease_holder == "a"
    assert store.release("kf-lease1", holder="a", at=T0).lease_holder is None
    assert store.claim("kf-lease1", holder="b", until=T0 + LEASE, at=T0).lease_holder == "b"


def test_twenty_concurrent_claims_leave_exactly_one_holder(store: SqliteStore) -> None:
    queued(store)
    barrier = threading.Barrier(20)
    won: list[str] = []

    def claim(n: int) -> None:
        barrier.wait(WAIT)
        try:
            store.claim("kf-lease1", holder=f"w{n}", until=T0 + LEASE, at=T0)
            won.append(f"w{n}")
        except LeaseHeld:
            pass

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)

    assert len(won) == 1
    record = store.get("kf-lease1")
    assert record is not None and record.lease_holder == won[0]


def test_two_workers_never_act_on_one_request_at_once(store: SqliteStore) -> None:
    message = queued(store)
    cloud = MemoryCloud()
    first = Worker(store, cloud, QuietNotifier(), FakeClock(T0), manifests=lambda: [])
    second = Worker(store, cloud, QuietNotifier(), FakeClock(T0), manifests=lambda: [])
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        assert release.wait(WAIT)

    cloud.before("enabled_services", hold)
    busy = threading.Thread(target=first.handle, args=(message, 1))
    busy.start()
    try:
        assert inside.wait(WAIT)
        answer = second.handle(message, 2)
    finally:
        release.set()
        busy.join(WAIT)

    assert isinstance(answer, Retry)
    # Told to look again when the lease would run out, not at once.
    assert 5.0 <= answer.after_seconds <= LEASE.total_seconds()
    assert cloud.calls["enabled_services"] == 1
    record = store.get(message.request_id)
    assert record is not None and record.lease_holder is None  # released when done


def test_a_worker_that_died_holding_the_lease_is_taken_over_once_it_runs_out(
    store: SqliteStore,
) -> None:
    message = queued(store)
    # A worker took the lease, then its process died: nothing released it.
    store.claim(message.request_id, holder="host:4242:dead", until=T0 + LEASE, at=T0)
    clock = FakeClock(T0 + timedelta(minutes=1))
    cloud = project_with_apis_on()
    survivor = Worker(store, cloud, QuietNotifier(), clock, manifests=lambda: [])

    early = survivor.handle(message, 2)
    clock.advance(minutes=5)
    later = survivor.handle(message, 3)

    assert isinstance(early, Retry)
    # Not when the dead one's lease ends (4 minutes on): the holder may be alive and
    # about to let go, so the request is looked at again soon.
    assert early.after_seconds == pytest.approx(LEASE_RETRY_MAX_SECONDS)
    assert cloud.calls["enabled_services"] == 1  # nothing ran before the take-over
    # The take-over ran the steps up to the cluster, which GKE is now creating (and the
    # DNS name, whose rollout is on its way).
    assert isinstance(later, Retry)
    assert later.after_seconds == min(CLUSTER_POLL_SECONDS, DNS_POLL_SECONDS)
    assert cloud.mutations["create_cluster"] == 1
    record = store.get(message.request_id)
    assert record is not None
    assert record.state is State.RUNNING
    assert record.lease_holder is None


def test_a_long_run_renews_its_lease_once_half_of_it_is_gone(store: SqliteStore) -> None:
    message = queued(store)
    clock = FakeClock(T0)
    cloud = project_with_apis_on()
    seen: list[datetime | None] = []

    def slow_api_check() -> None:
        clock.advance(minutes=3)  # more than half of the five-minute lease

    def look_at_lease() -> None:
        record = store.get(message.request_id)
        seen.append(record.lease_until if record else None)

    cloud.before("enabled_services", slow_api_check)
    cloud.before("create_cluster", look_at_lease)
    worker = Worker(store, cloud, QuietNotifier(), clock, manifests=lambda: [])

    worker.handle(message, 1)

    assert seen == [T0 + timedelta(minutes=3) + LEASE]
