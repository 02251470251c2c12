"""Behaviour of the SQLite request store, on real files under ``tmp_path``.

Times come from a fixed base; nothing sleeps.  The concurrency tests line threads up on
a ``threading.Barrier`` so they really do hit the store at once.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest

from provisioning.actions import CreateAction, DeleteAction, GrantAction, RevokeAction
from provisioning.records import (
    HistoryEntry,
    MessageRef,
    RequestRecord,
    State,
    StepReport,
    StepStatus,
)
from provisioning.spec import DeploymentSpec, GpuSpec
from provisioning.sqlite_store import SCHEMA_VERSION, SqliteStore, open_store
from provisioning.store import (
    DeploymentBusy,
    DuplicateRequest,
    StoreError,
    TransitionRefused,
    UnknownRequest,
)

T = TypeVar("T")

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROJECT = "ml-research-1"
ZONE = "us-central1-a"


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def create_request(
    request_id: str = "kf-crt001",
    *,
    name: str = "ml-lab",
    requester: str = "U0ADA",
    created_at: datetime = T0,
    state: State = State.PENDING,
) -> RequestRecord:
    spec = DeploymentSpec(
        name=name,
        project=PROJECT,
        zone=ZONE,
        gpu=GpuSpec(type="nvidia-tesla-t4", count=2, machine_type="n1-standard-8", max_nodes=3),
    )
    return RequestRecord(
        id=request_id,
        action=CreateAction(spec=spec),
        requester=requester,
        channel="C0KUBEFLOW",
        state=state,
        created_at=created_at,
        updated_at=created_at,
    )


def grant_request(
    request_id: str = "kf-grt001", *, name: str = "ml-lab", email: str = "bo@example.com"
) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        action=GrantAction(email=email, deployment=name, project=PROJECT),
        requester="U0ADA",
        channel="C0KUBEFLOW",
        created_at=T0,
        updated_at=T0,
    )


def revoke_request(request_id: str = "kf-rvk001", *, name: str = "ml-lab") -> RequestRecord:
    return RequestRecord(
        id=request_id,
        action=RevokeAction(email="bo@example.com", deployment=name, project=PROJECT),
        requester="U0ADA",
        channel="C0KUBEFLOW",
        created_at=T0,
        updated_at=T0,
    )


def delete_request(request_id: str = "kf-del001", *, name: str = "ml-lab") -> RequestRecord:
    return RequestRecord(
        id=request_id,
        action=DeleteAction(deployment=name, project=PROJECT, zone=ZONE),
        requester="U0ADA",
        channel="C0KUBEFLOW",
        created_at=T0,
        updated_at=T0,
    )


def with_every_field(record: RequestRecord) -> RequestRecord:
    """``record`` with every optional field filled, so a round trip has much to lose."""
    return record.model_copy(
        update={
            "thread_ts": "1772442000.000100",
            "cards": (
                MessageRef(channel="D0APPROVER1", ts="1772442001.000200"),
                MessageRef(channel="D0APPROVER2", ts="1772442001.000300"),
            ),
            "status_message": MessageRef(channel="C0KUBEFLOW", ts="1772442002.000400"),
            "expires_at": minutes(60 * 24),
            "decided_by": "U0BOB",
            "decided_at": minutes(5),
            "reason": "quarterly training run",
            "url": "https://ml-lab.endpoints.ml-research-1.cloud.goog/",
            "steps": (
                StepReport(
                    name="cluster",
                    title="GKE cluster",
                    status=StepStatus.DONE,
                    outcome="created",
                    seconds=412.5,
                ),
                StepReport(name="kubeflow", title="Kubeflow", status=StepStatus.RUNNING),
            ),
            "history": (HistoryEntry(at=T0, actor="U0ADA", event="requested", detail="ml"),),
            "version": 3,
        }
    )


def run_together(count: int, work: Callable[[int], T]) -> list[Future[T]]:
    """Run ``work(0..count-1)`` on ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count, timeout=30)

    def lined_up(i: int) -> T:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [pool.submit(lined_up, i) for i in range(count)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "requests.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db_path) as opened:
        yield opened


@pytest.fixture(params=["one shared file store", "a file store per thread", "shared memory"])
def stores_for_threads(
    request: pytest.FixtureRequest, db_path: Path
) -> Iterator[Callable[[int], list[SqliteStore]]]:
    """Give each of N threads its store: one shared connection, or one connection each
    on the same file (as a separate worker process would have), or one in-memory store."""
    opened: list[SqliteStore] = []

    def stores(count: int) -> list[SqliteStore]:
        if request.param == "a file store per thread":
            opened.extend(SqliteStore(db_path) for _ in range(count))
            return opened
        opened.append(SqliteStore(":memory:" if request.param == "shared memory" else db_path))
        return opened * count

    yield stores
    for each in opened:
        each.close()


# --- reading back ------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [create_request(), grant_request(), revoke_request(), delete_request()],
    ids=lambda r: r.kind,
)
def test_a_stored_request_reads_back_exactly_as_it_was_added(
    store: SqliteStore, record: RequestRecord
) -> None:
    full = with_every_field(record)

    store.add(full)

    assert store.get(full.id) == full


def test_a_request_reads_back_after_the_store_is_reopened(db_path: Path) -> None:
    with SqliteStore(db_path) as first:
        first.add(with_every_field(create_request()))

    with SqliteStore(db_path) as second:
        assert second.get("kf-crt001") == with_every_field(create_request())


def test_getting_an_unknown_id_returns_none(store: SqliteStore) -> None:
    assert store.get("kf-zzz999") is None


def test_moving_or_updating_an_unknown_id_raises_unknown_request(store: SqliteStore) -> None:
    with pytest.raises(UnknownRequest) as refused:
        store.transition(
            "kf-zzz999", expected={State.PENDING}, new=State.APPROVED, actor="U0BOB", at=T0
        )
    assert refused.value.request_id == "kf-zzz999"

    with pytest.raises(UnknownRequest):
        store.update("kf-zzz999", changes={"reason": "x"}, at=T0)


def test_adding_a_second_request_with_the_same_id_raises_duplicate_request(
    store: SqliteStore,
) -> None:
    store.add(grant_request("kf-same01"))

    with pytest.raises(DuplicateRequest):
        store.add(grant_request("kf-same01", email="cy@example.com"))

    assert store.get("kf-same01") == grant_request("kf-same01")


def test_an_id_clash_is_reported_as_a_duplicate_even_when_the_name_is_busy_too(
    store: SqliteStore,
) -> None:
    store.add(create_request("kf-same01"))

    with pytest.raises(DuplicateRequest):
        store.add(create_request("kf-same01"))


# --- one winner among simultaneous approvers ------------------------------------------


def test_only_one_of_twenty_simultaneous_approvals_wins(
    stores_for_threads: Callable[[int], list[SqliteStore]],
) -> None:
    stores = stores_for_threads(20)
    stores[0].add(create_request("kf-race01"))

    def approve(i: int) -> RequestRecord:
        return stores[i].transition(
            "kf-race01",
            expected={State.PENDING},
            new=State.APPROVED,
            actor=f"U0APPROVER{i:02}",
            at=minutes(1),
            changes={"decided_by": f"U0APPROVER{i:02}", "decided_at": minutes(1)},
        )

    futures = run_together(20, approve)

    winners = [f.result() for f in futures if f.exception() is None]
    losers = [f.exception() for f in futures if f.exception() is not None]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(isinstance(e, TransitionRefused) for e in losers)
    winner = winners[0]
    for refused in losers:
        assert isinstance(refused, TransitionRefused)
        assert refused.current.state is State.APPROVED
        assert refused.current.decided_by == winner.decided_by
        assert refused.wanted is State.APPROVED
    stored = stores[0].get("kf-race01")
    assert stored == winner
    assert stored is not None
    assert stored.version == 1
    assert [h.event for h in stored.history] == ["approved"]


# --- one active request per deployment name -------------------------------------------


def test_a_second_active_request_for_a_deployment_is_refused_naming_the_holder(
    store: SqliteStore,
) -> None:
    store.add(create_request("kf-first1", name="ml-lab"))

    with pytest.raises(DeploymentBusy) as busy:
        store.add(create_request("kf-secnd1", name="ml-lab"))

    assert busy.value.holder == create_request("kf-first1", name="ml-lab")
    assert "kf-first1" in str(busy.value)
    assert store.get("kf-secnd1") is None


def test_a_delete_waits_for_an_active_create_of_the_same_name(store: SqliteStore) -> None:
    store.add(create_request("kf-first1", name="ml-lab"))

    with pytest.raises(DeploymentBusy) as busy:
        store.add(delete_request("kf-del001", name="ml-lab"))

    assert busy.value.holder.id == "kf-first1"


def test_a_name_stays_held_while_its_request_is_approved_queued_and_running(
    store: SqliteStore,
) -> None:
    store.add(create_request("kf-first1"))
    for i, (before, after) in enumerate(
        [
            (State.PENDING, State.APPROVED),
            (State.APPROVED, State.QUEUED),
            (State.QUEUED, State.RUNNING),
        ]
    ):
        store.transition("kf-first1", expected={before}, new=after, actor="bot", at=minutes(i))

        with pytest.raises(DeploymentBusy) as busy:
            store.add(create_request(f"kf-later{i}"))
        assert busy.value.holder.state is after


@pytest.mark.parametrize(
    "path_to_the_end",
    [
        [State.DENIED],
        [State.EXPIRED],
        [State.CANCELLED],
        [State.APPROVED, State.QUEUED, State.RUNNING, State.SUCCEEDED],
        [State.APPROVED, State.QUEUED, State.FAILED],
    ],
    ids="-".join,
)
def test_a_name_is_free_again_once_its_request_is_final(
    store: SqliteStore, path_to_the_end: list[State]
) -> None:
    store.add(create_request("kf-first1", name="ml-lab"))
    current = State.PENDING
    for i, new in enumerate(path_to_the_end):
        store.transition("kf-first1", expected={current}, new=new, actor="U0BOB", at=minutes(i))
        current = new

    store.add(create_request("kf-secnd1", name="ml-lab"))

    assert store.get("kf-secnd1") is not None
    with pytest.raises(DeploymentBusy) as busy:
        store.add(delete_request("kf-del001", name="ml-lab"))
    assert busy.value.holder.id == "kf-secnd1"


def test_grants_and_revokes_never_hold_a_deployment_name(store: SqliteStore) -> None:
    store.add(create_request("kf-crt001", name="ml-lab"))

    store.add(grant_request("kf-grt001", name="ml-lab", email="bo@example.com"))
    store.add(grant_request("kf-grt002", name="ml-lab", email="cy@example.com"))
    store.add(revoke_request("kf-rvk001", name="ml-lab"))

    assert {r.id for r in store.list(deployment="ml-lab")} == {
        "kf-crt001",
        "kf-grt001",
        "kf-grt002",
        "kf-rvk001",
    }


def test_the_database_itself_refuses_two_active_holders_of_one_name(
    store: SqliteStore, db_path: Path
) -> None:
    store.add(create_request("kf-first1", name="ml-lab"))
    raw = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError), raw:
            raw.execute(
                "INSERT INTO requests (id, state, lock_key, requester, deployment, "
                "created_at, version, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("kf-sneak1", "pending", "ml-lab", "U0EVE", "ml-lab", "x", 0, "{}"),
            )
    finally:
        raw.close()


def test_an_update_that_moves_a_request_onto_a_busy_name_is_refused(
    store: SqliteStore,
) -> None:
    store.add(create_request("kf-first1", name="ml-lab"))
    store.add(create_request("kf-secnd1", name="ml-lab-2"))
    renamed = create_request(name="ml-lab").action

    with pytest.raises(DeploymentBusy) as busy:
        store.update("kf-secnd1", changes={"action": renamed}, at=minutes(1))

    assert busy.value.holder.id == "kf-first1"
    assert store.get("kf-secnd1") == create_request("kf-secnd1", name="ml-lab-2")


# --- restarts ---------------------------------------------------------------------------


def test_pending_requests_survive_a_restart(db_path: Path) -> None:
    with SqliteStore(db_path) as before:
        before.add(create_request("kf-crt001", name="ml-lab"))
        before.add(grant_request("kf-grt001"))
        before.add(create_request("kf-crt002", name="ml-lab-2", created_at=minutes(1)))
        before.transition(
            "kf-crt002", expected={State.PENDING}, new=State.DENIED, actor="U0BOB", at=minutes(2)
        )

    with SqliteStore(db_path) as after:
        assert after.get("kf-crt001") == create_request("kf-crt001", name="ml-lab")
        pending = after.list(states={State.PENDING})
        assert [r.id for r in pending] == ["kf-grt001", "kf-crt001"]
        # The name lock survives too.
        with pytest.raises(DeploymentBusy):
            after.add(create_request("kf-crt003", name="ml-lab"))


def test_reopening_a_database_keeps_its_schema_version(db_path: Path) -> None:
    SqliteStore(db_path).close()
    SqliteStore(db_path).close()

    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_a_database_from_a_newer_bot_is_refused(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()

    with pytest.raises(StoreError, match="newer"):
        SqliteStore(db_path)


# --- transitions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path_there", "refused"),
    [
        ([State.DENIED], State.APPROVED),
        ([], State.RUNNING),
        ([], State.QUEUED),
        ([State.APPROVED], State.SUCCEEDED),
        ([State.APPROVED, State.QUEUED, State.RUNNING, State.SUCCEEDED], State.FAILED),
    ],
    ids=[
        "denied-approved",
        "pending-running",
        "pending-queued",
        "approved-succeeded",
        "succeeded-failed",
    ],
)
def test_a_transition_not_in_the_table_is_refused_even_when_expected(
    store: SqliteStore, path_there: list[State], refused: State
) -> None:
    store.add(create_request())
    current = State.PENDING
    for i, new in enumerate(path_there):
        store.transition("kf-crt001", expected={current}, new=new, actor="bot", at=minutes(i))
        current = new
    before = store.get("kf-crt001")

    with pytest.raises(TransitionRefused) as no:
        store.transition(
            "kf-crt001", expected=set(State), new=refused, actor="U0EVE", at=minutes(9)
        )

    assert no.value.current == before
    assert no.value.wanted is refused
    assert store.get("kf-crt001") == before


def test_a_transition_from_a_state_the_caller_did_not_expect_is_refused(
    store: SqliteStore,
) -> None:
    store.add(create_request())
    store.transition(
        "kf-crt001", expected={State.PENDING}, new=State.APPROVED, actor="U0BOB", at=minutes(1)
    )

    # APPROVED -> CANCELLED is in the table, but this caller still thinks it is pending.
    with pytest.raises(TransitionRefused) as no:
        store.transition(
            "kf-crt001", expected={State.PENDING}, new=State.CANCELLED, actor="U0ADA", at=T0
        )

    assert no.value.current.state is State.APPROVED


def test_a_running_request_may_be_resumed_as_running(store: SqliteStore) -> None:
    store.add(create_request())
    for i, (before, after) in enumerate(
        [
            (State.PENDING, State.APPROVED),
            (State.APPROVED, State.QUEUED),
            (State.QUEUED, State.RUNNING),
        ]
    ):
        store.transition("kf-crt001", expected={before}, new=after, actor="bot", at=minutes(i))

    resumed = store.transition(
        "kf-crt001",
        expected={State.QUEUED, State.RUNNING},
        new=State.RUNNING,
        actor="worker",
        at=minutes(5),
        detail="redelivered",
    )

    assert resumed.state is State.RUNNING
    assert resumed.version == 4


def test_a_transition_applies_its_changes_in_the_same_write(store: SqliteStore) -> None:
    store.add(create_request())

    approved = store.transition(
        "kf-crt001",
        expected={State.PENDING},
        new=State.APPROVED,
        actor="U0BOB",
        at=minutes(3),
        detail="looks fine",
        changes={"decided_by": "U0BOB", "decided_at": minutes(3)},
    )

    assert approved.state is State.APPROVED
    assert approved.decided_by == "U0BOB"
    assert approved.decided_at == minutes(3)
    assert approved.updated_at == minutes(3)
    assert approved.version == 1
    assert approved.history == (
        HistoryEntry(at=minutes(3), actor="U0BOB", event="approved", detail="looks fine"),
    )
    assert store.get("kf-crt001") == approved


@pytest.mark.parametrize(
    "changes",
    [{"url": 5}, {"no_such_field": "x"}, {"decided_at": "not a time"}, {"cards": ["x"]}],
    ids=["wrong type", "unknown field", "bad time", "bad nested"],
)
def test_changes_that_do_not_validate_are_rejected_and_nothing_is_written(
    store: SqliteStore, changes: dict[str, object]
) -> None:
    store.add(create_request())

    with pytest.raises(ValueError):
        store.transition(
            "kf-crt001",
            expected={State.PENDING},
            new=State.APPROVED,
            actor="U0BOB",
            at=minutes(1),
            changes=changes,
        )
    with pytest.raises(ValueError):
        store.update("kf-crt001", changes=changes, at=minutes(1))

    assert store.get("kf-crt001") == create_request()


def test_history_records_actor_event_and_detail_in_order(store: SqliteStore) -> None:
    store.add(create_request())
    store.update(
        "kf-crt001",
        changes={"thread_ts": "1.2"},
        at=minutes(0),
        actor="bot",
        event="posted",
        detail="request card",
    )
    store.transition(
        "kf-crt001",
        expected={State.PENDING},
        new=State.APPROVED,
        actor="U0BOB",
        at=minutes(1),
        detail="ok for Q2",
    )
    store.transition(
        "kf-crt001", expected={State.APPROVED}, new=State.QUEUED, actor="bot", at=minutes(2)
    )
    store.transition(
        "kf-crt001", expected={State.QUEUED}, new=State.RUNNING, actor="worker-1", at=minutes(3)
    )
    store.update(
        "kf-crt001",
        changes={},
        at=minutes(4),
        actor="worker-1",
        event="step",
        detail="cluster created",
    )
    store.transition(
        "kf-crt001",
        expected={State.RUNNING},
        new=State.FAILED,
        actor="worker-1",
        at=minutes(5),
        detail="quota exceeded",
    )

    record = store.get("kf-crt001")

    assert record is not None
    assert [(h.at, h.actor, h.event, h.detail) for h in record.history] == [
        (minutes(0), "bot", "posted", "request card"),
        (minutes(1), "U0BOB", "approved", "ok for Q2"),
        (minutes(2), "bot", "queued", ""),
        (minutes(3), "worker-1", "running", ""),
        (minutes(4), "worker-1", "step", "cluster created"),
        (minutes(5), "worker-1", "failed", "quota exceeded"),
    ]
    assert record.version == 6


# --- update -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["state", "id", "version", "history", "updated_at"])
def test_update_refuses_fields_the_store_owns(store: SqliteStore, field: str) -> None:
    store.add(create_request())

    with pytest.raises(ValueError, match=field):
        store.update("kf-crt001", changes={field: "anything"}, at=minutes(1))
    with pytest.raises(ValueError, match=field):
        store.transition(
            "kf-crt001",
            expected={State.PENDING},
            new=State.APPROVED,
            actor="U0BOB",
            at=minutes(1),
            changes={field: "anything"},
        )

    assert store.get("kf-crt001") == create_request()


def test_update_without_an_event_changes_fields_but_not_history(store: SqliteStore) -> None:
    store.add(create_request())

    updated = store.update(
        "kf-crt001",
        changes={"status_message": MessageRef(channel="C0KUBEFLOW", ts="9.9")},
        at=minutes(2),
    )

    assert updated.status_message == MessageRef(channel="C0KUBEFLOW", ts="9.9")
    assert updated.history == ()
    assert updated.state is State.PENDING
    assert updated.updated_at == minutes(2)
    assert updated.version == 1
    assert store.get("kf-crt001") == updated


def test_update_with_an_event_but_no_actor_is_refused(store: SqliteStore) -> None:
    store.add(create_request())

    with pytest.raises(ValueError, match="actor"):
        store.update("kf-crt001", changes={}, at=minutes(1), event="posted")


def test_concurrent_updates_of_different_fields_all_land(
    stores_for_threads: Callable[[int], list[SqliteStore]],
) -> None:
    changes: list[dict[str, object]] = [
        {"thread_ts": "1772442000.000100"},
        {"status_message": MessageRef(channel="C0KUBEFLOW", ts="2.0")},
        {"cards": (MessageRef(channel="D0APPROVER1", ts="3.0"),)},
        {"expires_at": minutes(60)},
        {"reason": "training run"},
        {"url": "https://ml-lab.endpoints.ml-research-1.cloud.goog/"},
        {"steps": (StepReport(name="cluster", title="GKE cluster"),)},
        {"channel": "C0ELSEWHERE"},
    ]
    stores = stores_for_threads(len(changes))
    stores[0].add(create_request())

    futures = run_together(
        len(changes),
        lambda i: stores[i].update("kf-crt001", changes=changes[i], at=minutes(1)),
    )

    assert all(f.exception() is None for f in futures)
    record = stores[0].get("kf-crt001")
    assert record is not None
    for change in changes:
        for field, value in change.items():
            assert getattr(record, field) == value
    assert record.version == len(changes)


def test_concurrent_history_events_are_all_kept(
    stores_for_threads: Callable[[int], list[SqliteStore]],
) -> None:
    stores = stores_for_threads(10)
    stores[0].add(create_request())

    futures = run_together(
        10,
        lambda i: stores[i].update(
            "kf-crt001", changes={}, at=minutes(i), actor=f"worker-{i}", event="step"
        ),
    )

    assert all(f.exception() is None for f in futures)
    record = stores[0].get("kf-crt001")
    assert record is not None
    assert sorted(h.actor for h in record.history) == sorted(f"worker-{i}" for i in range(10))
    assert record.version == 10


# --- list ---------------------------------------------------------------------------------


@pytest.fixture
def filled(store: SqliteStore) -> SqliteStore:
    """Five requests filed a minute apart by two people for two deployments."""
    store.add(create_request("kf-aaa001", name="ml-lab", requester="U0ADA", created_at=minutes(0)))
    store.add(create_request("kf-aaa002", name="nlp", requester="U0BOB", created_at=minutes(1)))
    store.add(grant_request("kf-aaa003", name="ml-lab"))  # also at minute 0, id breaks the tie
    store.add(create_request("kf-aaa004", name="vision", requester="U0BOB", created_at=minutes(3)))
    store.add(delete_request("kf-aaa005", name="old-lab"))
    store.transition(
        "kf-aaa002", expected={State.PENDING}, new=State.DENIED, actor="U0ADA", at=minutes(4)
    )
    return store


def ids(records: list[RequestRecord]) -> list[str]:
    return [r.id for r in records]


def test_list_returns_newest_first_breaking_ties_by_id(filled: SqliteStore) -> None:
    assert ids(filled.list()) == ["kf-aaa004", "kf-aaa002", "kf-aaa005", "kf-aaa003", "kf-aaa001"]


def test_list_filters_by_state(filled: SqliteStore) -> None:
    assert ids(filled.list(states={State.DENIED})) == ["kf-aaa002"]
    assert ids(filled.list(states=[State.DENIED, State.PENDING])) == ids(filled.list())
    assert filled.list(states={State.RUNNING}) == []
    assert filled.list(states=()) == []


def test_list_filters_by_deployment_and_requester_together(filled: SqliteStore) -> None:
    assert ids(filled.list(deployment="ml-lab")) == ["kf-aaa003", "kf-aaa001"]
    assert ids(filled.list(requester="U0BOB")) == ["kf-aaa004", "kf-aaa002"]
    assert ids(filled.list(requester="U0BOB", states={State.PENDING})) == ["kf-aaa004"]
    assert filled.list(requester="U0BOB", deployment="ml-lab") == []


def test_list_stops_at_the_limit(filled: SqliteStore) -> None:
    assert ids(filled.list(limit=2)) == ["kf-aaa004", "kf-aaa002"]
    assert filled.list(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        filled.list(limit=-1)


def test_list_orders_by_instant_whatever_the_time_zone(store: SqliteStore) -> None:
    tokyo = timezone(timedelta(hours=9))
    # 17:30 in Tokyo is 08:30 UTC: earlier than T0 although its clock reads later.
    store.add(
        create_request(
            "kf-tok001", name="tokyo-lab", created_at=datetime(2026, 3, 2, 17, 30, tzinfo=tokyo)
        )
    )
    store.add(create_request("kf-utc001", name="utc-lab", created_at=T0))

    assert ids(store.list()) == ["kf-utc001", "kf-tok001"]


# --- open_store -----------------------------------------------------------------------------


def test_open_store_opens_a_private_memory_store() -> None:
    first = open_store("sqlite:///:memory:")
    second = open_store("sqlite:///:memory:")
    try:
        first.add(create_request())
        assert first.get("kf-crt001") == create_request()
        assert second.get("kf-crt001") is None
    finally:
        first.close()
        second.close()


def test_open_store_creates_the_parent_directories_of_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    opened = open_store("sqlite:///var/data/requests.db")
    opened.add(create_request())
    opened.close()

    with SqliteStore(tmp_path / "var" / "data" / "requests.db") as reopened:
        assert reopened.get("kf-crt001") == create_request()


def test_open_store_accepts_an_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "requests.db"

    opened = open_store(f"sqlite:///{path}")
    opened.add(create_request())
    opened.close()

    assert path.is_absolute()
    with SqliteStore(path) as reopened:
        assert reopened.get("kf-crt001") == create_request()


@pytest.mark.parametrize(
    "url",
    [
        "firestore://my-project",
        "postgres://user:hunter2@db/requests",
        "sqlite://requests.db",
        "sqlite:///",
        "requests.db",
        "",
        "sqlite:///requests.db?mode=ro",
    ],
)
def test_open_store_refuses_other_urls_naming_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        open_store(url)

    message = str(refused.value)
    assert "hunter2" not in message
    if "?" not in url:
        assert "sqlite:///:memory:" in message
        assert "sqlite:////absolute/path.db" in message
