"""Behaviour of the step engine: order, concurrency, pending, resume, failure, progress.

Steps here are small functions over a ``MemoryCloud``; time comes from an injected
monotonic clock that the steps advance themselves.  Concurrency is proven with a
``threading.Barrier`` that only opens when both steps are inside it at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from provisioning.actions import GrantAction
from provisioning.create_steps import CREATE_STEPS
from provisioning.delete_steps import DELETE_STEPS
from provisioning.engine import (
    PROGRESS_INTERVAL_SECONDS,
    Outcome,
    RunResult,
    RunStatus,
    Step,
    StepContext,
    StepResult,
    check_graph,
    run_steps,
)
from provisioning.errors import PermanentError, TemporaryError
from provisioning.records import StepReport, StepStatus
from tests.support.clocks import FakeMonotonic
from tests.support.memory_cloud import MemoryCloud

WAIT = 5.0  # seconds: the bound on every wait for something that should happen

Ensure = Callable[[StepContext], StepResult]


def context(cloud: MemoryCloud | None = None) -> StepContext:
    return StepContext(
        request_id="kf-eng001",
        requester="U0ADA",
        action=GrantAction(email="ada@example.com", deployment="ml-lab", project="ml-project-1"),
        cloud=cloud or MemoryCloud(),
        clock=lambda: datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )


class Journal:
    """Records which steps started and finished, in order, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[str] = []

    def note(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def step(self, name: str, result: StepResult | None = None) -> Ensure:
        def ensure(_ctx: StepContext) -> StepResult:
            self.note(f"start {name}")
            self.note(f"end {name}")
            return result or StepResult(Outcome.CREATED, f"{name} made")

        return ensure

    def started(self, name: str) -> bool:
        return f"start {name}" in self.events

    def index(self, event: str) -> int:
        return self.events.index(event)


def run(
    steps: tuple[Step, ...],
    reports: dict[str, StepReport] | None = None,
    *,
    ctx: StepContext | None = None,
    on_change: Callable[[dict[str, StepReport]], None] = lambda _reports: None,
    monotonic: Callable[[], float] | None = None,
) -> RunResult:
    return run_steps(
        steps, ctx or context(), reports or {}, on_change, monotonic=monotonic or time.monotonic
    )


# -- Order and concurrency -----------------------------------------------------------------


def test_a_step_starts_only_after_every_step_it_waits_for_has_finished() -> None:
    journal = Journal()
    steps = (
        Step("d", "D", journal.step("d"), ("b", "c")),
        Step("b", "B", journal.step("b"), ("a",)),
        Step("c", "C", journal.step("c"), ("a",)),
        Step("a", "A", journal.step("a")),
    )

    result = run(steps)

    assert result.status is RunStatus.DONE
    for before, after in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]:
        assert journal.index(f"end {before}") < journal.index(f"start {after}")


def test_steps_that_do_not_depend_on_each_other_run_at_the_same_time() -> None:
    barrier = threading.Barrier(2, timeout=WAIT)

    def meet(_ctx: StepContext) -> StepResult:
        # Passes only when the other step is inside the barrier too.
        barrier.wait()
        return StepResult(Outcome.CREATED, "met")

    steps = (Step("left", "Left", meet), Step("right", "Right", meet))

    result = run(steps)

    assert result.status is RunStatus.DONE
    assert {r.status for r in result.reports.values()} == {StepStatus.DONE}


def test_a_finished_run_reports_every_step_with_its_outcome_and_detail() -> None:
    journal = Journal()
    steps = (
        Step("a", "A", journal.step("a", StepResult(Outcome.UNCHANGED, "was there"))),
        Step("b", "B", journal.step("b", StepResult(Outcome.SKIPPED, "not asked")), ("a",)),
        Step("c", "C", journal.step("c", StepResult(Outcome.UPDATED, "fixed")), ("b",)),
    )

    result = run(steps)

    assert result.status is RunStatus.DONE
    assert [(r.status, r.outcome, r.detail) for r in result.reports.values()] == [
        (StepStatus.DONE, "unchanged", "was there"),
        (StepStatus.SKIPPED, "skipped", "not asked"),
        (StepStatus.DONE, "updated", "fixed"),
    ]


# -- Pending and resuming ------------------------------------------------------------------


def test_a_pending_step_makes_the_run_pending_with_its_retry_delay() -> None:
    journal = Journal()
    steps = (
        Step("cluster", "Cluster", journal.step("cluster", StepResult(Outcome.PENDING, "", 42.0))),
        Step("pool", "Pool", journal.step("pool"), ("cluster",)),
        Step("address", "Address", journal.step("address")),
    )

    result = run(steps)

    assert result.status is RunStatus.PENDING
    assert result.retry_after == 42.0
    assert result.reports["cluster"].status is StepStatus.RUNNING
    assert result.reports["address"].status is StepStatus.DONE


def test_steps_waiting_for_a_pending_step_are_not_started() -> None:
    journal = Journal()
    steps = (
        Step("cluster", "Cluster", journal.step("cluster", StepResult(Outcome.PENDING, "", 30.0))),
        Step("pool", "Pool", journal.step("pool"), ("cluster",)),
    )

    result = run(steps)

    assert not journal.started("pool")
    assert result.reports["pool"].status is StepStatus.PENDING


def test_the_run_looks_again_after_the_shortest_delay_of_its_pending_steps() -> None:
    steps = (
        Step("slow", "Slow", lambda _c: StepResult(Outcome.PENDING, "", 60.0)),
        Step("quick", "Quick", lambda _c: StepResult(Outcome.PENDING, "", 5.0)),
    )

    assert run(steps).retry_after == 5.0


def test_steps_already_done_in_the_given_reports_are_not_run_again() -> None:
    journal = Journal()
    steps = (
        Step("apis", "APIs", journal.step("apis")),
        Step("skipped", "Skipped", journal.step("skipped")),
        Step("cluster", "Cluster", journal.step("cluster"), ("apis", "skipped")),
    )
    earlier = {
        "apis": StepReport(name="apis", title="APIs", status=StepStatus.DONE, outcome="created"),
        "skipped": StepReport(name="skipped", title="Skipped", status=StepStatus.SKIPPED),
    }

    result = run(steps, earlier)

    assert result.status is RunStatus.DONE
    assert journal.events == ["start cluster", "end cluster"]
    assert result.reports["apis"] == earlier["apis"]


def test_a_step_pending_in_an_earlier_run_is_run_again_and_finishes() -> None:
    journal = Journal()
    steps = (
        Step("cluster", "Cluster", journal.step("cluster", StepResult(Outcome.UNCHANGED, "up"))),
        Step("pool", "Pool", journal.step("pool"), ("cluster",)),
    )
    earlier = {
        "cluster": StepReport(
            name="cluster", title="Cluster", status=StepStatus.RUNNING, outcome="pending"
        )
    }

    result = run(steps, earlier)

    assert result.status is RunStatus.DONE
    assert journal.started("cluster")
    assert journal.started("pool")


def test_a_resumed_step_keeps_the_time_and_calls_of_its_earlier_runs() -> None:
    cloud = MemoryCloud()
    clock = FakeMonotonic()

    def look(ctx: StepContext) -> StepResult:
        ctx.cloud.get_cluster("ml-project-1", "us-central1-a", "ml-lab")
        clock.advance(2.0)
        return StepResult(Outcome.UNCHANGED, "up")

    earlier = {
        "cluster": StepReport(
            name="cluster",
            title="Cluster",
            status=StepStatus.RUNNING,
            seconds=1.5,
            calls=("create_cluster ml-project-1/us-central1-a/ml-lab",),
        )
    }

    result = run((Step("cluster", "Cluster", look),), earlier, ctx=context(cloud), monotonic=clock)

    report = result.reports["cluster"]
    assert report.seconds == 3.5
    assert report.calls == (
        "create_cluster ml-project-1/us-central1-a/ml-lab",
        "get_cluster ml-project-1/us-central1-a/ml-lab",
    )


# -- Progress and reporting ----------------------------------------------------------------


def test_a_long_step_s_progress_becomes_its_detail_at_most_every_interval() -> None:
    clock = FakeMonotonic()
    seen: list[str] = []

    def apply(ctx: StepContext) -> StepResult:
        for settled in range(1, 11):
            ctx.progress(f"{settled}/10 objects applied")
            clock.advance(PROGRESS_INTERVAL_SECONDS / 2)
        return StepResult(Outcome.UPDATED, "10 objects applied")

    result = run(
        (Step("kubeflow", "Kubeflow", apply),),
        on_change=lambda reports: seen.append(reports["kubeflow"].detail),
        monotonic=clock,
    )

    # Every other report (half an interval apart), then the step's own result.
    assert seen == [
        "",
        "1/10 objects applied",
        "3/10 objects applied",
        "5/10 objects applied",
        "7/10 objects applied",
        "9/10 objects applied",
        "10 objects applied",
    ]
    assert result.reports["kubeflow"].detail == "10 objects applied"


def test_progress_from_a_step_that_is_no_longer_running_is_ignored() -> None:
    late: list[Callable[[str], None]] = []
    seen: list[str] = []

    def quick(ctx: StepContext) -> StepResult:
        late.append(ctx.progress)
        return StepResult(Outcome.UNCHANGED, "done")

    result = run((Step("a", "A", quick),), on_change=lambda r: seen.append(r["a"].detail))
    late[0]("1/2 objects applied")

    assert result.reports["a"].detail == "done"
    assert seen == ["", "done"]


def test_a_step_still_running_from_an_earlier_delivery_is_reported_once_it_moves() -> None:
    changes: list[dict[str, StepReport]] = []
    earlier = {
        "cluster": StepReport(
            name="cluster", title="Cluster", status=StepStatus.RUNNING, detail="provisioning"
        )
    }

    def still(_ctx: StepContext) -> StepResult:
        return StepResult(Outcome.PENDING, "provisioning", retry_after=30.0)

    run((Step("cluster", "Cluster", still),), earlier, on_change=changes.append)

    # Nothing new when it starts again: one report, when the look is done.
    assert len(changes) == 1


# -- Errors --------------------------------------------------------------------------------


def test_a_temporary_error_makes_the_step_pending_for_the_error_s_delay() -> None:
    def busy(_ctx: StepContext) -> StepResult:
        raise TemporaryError("the API is rate limited", delay=7.0)

    result = run((Step("apis", "APIs", busy),))

    assert result.status is RunStatus.PENDING
    assert result.retry_after == 7.0
    assert result.reports["apis"].status is StepStatus.RUNNING
    assert result.reports["apis"].detail == "the API is rate limited"


def test_a_permanent_error_fails_the_run_with_its_message_and_the_step_s_title() -> None:
    def quota(_ctx: StepContext) -> StepResult:
        raise PermanentError("the CPUS quota in us-central1 is used up")

    result = run((Step("cluster", "GKE cluster", quota),))

    assert result.status is RunStatus.FAILED
    assert result.failure == "the CPUS quota in us-central1 is used up"
    assert result.failed_step == "GKE cluster"
    assert result.reports["cluster"].status is StepStatus.FAILED
    assert result.reports["cluster"].outcome == "failed"


def test_after_a_permanent_error_running_steps_still_report_and_nothing_new_starts() -> None:
    journal = Journal()
    barrier = threading.Barrier(2, timeout=WAIT)
    failure_seen = threading.Event()

    def quota(_ctx: StepContext) -> StepResult:
        barrier.wait()
        raise PermanentError("out of quota")

    def address(_ctx: StepContext) -> StepResult:
        barrier.wait()
        # Finish only once the engine has taken in the other step's failure.
        assert failure_seen.wait(WAIT)
        return StepResult(Outcome.CREATED, "reserved")

    def watch(reports: dict[str, StepReport]) -> None:
        if reports["cluster"].status is StepStatus.FAILED:
            failure_seen.set()

    steps = (
        Step("cluster", "GKE cluster", quota),
        Step("address", "Static IP", address),
        Step("ingress", "Ingress", journal.step("ingress"), ("address",)),
        Step("pool", "GPU pool", journal.step("pool"), ("cluster",)),
    )

    result = run(steps, on_change=watch)

    assert result.status is RunStatus.FAILED
    assert result.failed_step == "GKE cluster"
    assert result.reports["address"].status is StepStatus.DONE
    assert result.reports["address"].outcome == "created"
    assert journal.events == []
    assert result.reports["ingress"].status is StepStatus.PENDING
    assert result.reports["pool"].status is StepStatus.PENDING


def test_an_unexpected_exception_in_a_step_propagates_rather_than_being_swallowed() -> None:
    def broken(_ctx: StepContext) -> StepResult:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run((Step("apis", "APIs", broken),))


# -- The graph -----------------------------------------------------------------------------


def test_check_graph_rejects_a_step_waiting_for_an_unknown_step() -> None:
    steps = (Step("cluster", "Cluster", Journal().step("c"), ("apis", "network")),)

    with pytest.raises(ValueError, match=r"cluster waits for unknown steps \['apis', 'network'\]"):
        check_graph(steps)


def test_check_graph_rejects_a_cycle() -> None:
    ensure = Journal().step("x")
    steps = (
        Step("start", "Start", ensure),
        Step("a", "A", ensure, ("start", "c")),
        Step("b", "B", ensure, ("a",)),
        Step("c", "C", ensure, ("b",)),
    )

    with pytest.raises(ValueError, match="cycle") as raised:
        check_graph(steps)
    assert "start" not in str(raised.value)
    assert all(name in str(raised.value) for name in "abc")


def test_check_graph_rejects_a_step_that_waits_for_itself() -> None:
    with pytest.raises(ValueError, match="cycle"):
        check_graph((Step("a", "A", Journal().step("a"), ("a",)),))


def test_check_graph_accepts_the_create_and_delete_steps() -> None:
    check_graph(CREATE_STEPS)
    check_graph(DELETE_STEPS)


# -- Progress and timing -------------------------------------------------------------------


def test_on_change_sees_progress_grow_until_every_step_is_done() -> None:
    snapshots: list[dict[str, StepReport]] = []
    journal = Journal()
    steps = (
        Step("a", "A", journal.step("a")),
        Step("b", "B", journal.step("b"), ("a",)),
        Step("c", "C", journal.step("c"), ("b",)),
    )

    run(steps, on_change=snapshots.append)

    done_counts = [
        sum(r.status is StepStatus.DONE for r in snapshot.values()) for snapshot in snapshots
    ]
    assert done_counts == sorted(done_counts)
    assert done_counts[0] == 0
    assert done_counts[-1] == 3
    assert snapshots[0]["a"].status is StepStatus.RUNNING
    assert any(s["b"].status is StepStatus.RUNNING for s in snapshots)


def test_on_change_gets_copies_that_later_progress_does_not_alter() -> None:
    snapshots: list[dict[str, StepReport]] = []
    journal = Journal()
    steps = (Step("a", "A", journal.step("a")), Step("b", "B", journal.step("b"), ("a",)))

    run(steps, on_change=snapshots.append)

    assert snapshots[0]["b"].status is StepStatus.PENDING
    assert snapshots[-1]["b"].status is StepStatus.DONE


def test_each_step_s_duration_comes_from_the_injected_monotonic_clock() -> None:
    clock = FakeMonotonic()

    def taking(seconds: float) -> Ensure:
        def ensure(_ctx: StepContext) -> StepResult:
            clock.advance(seconds)
            return StepResult(Outcome.CREATED, "")

        return ensure

    steps = (
        Step("apis", "APIs", taking(3.25)),
        Step("cluster", "Cluster", taking(412.0), ("apis",)),
    )

    result = run(steps, monotonic=clock)

    assert result.reports["apis"].seconds == 3.25
    assert result.reports["cluster"].seconds == 412.0


def test_each_step_reports_only_the_cloud_calls_it_made_itself() -> None:
    cloud = MemoryCloud()
    barrier = threading.Barrier(2, timeout=WAIT)

    def address(ctx: StepContext) -> StepResult:
        barrier.wait()
        ctx.cloud.get_global_address("ml-project-1", "ml-lab-ip")
        return StepResult(Outcome.UNCHANGED, "")

    def account(ctx: StepContext) -> StepResult:
        barrier.wait()
        ctx.cloud.service_account_exists("ml-project-1", "ml-lab-vm")
        return StepResult(Outcome.UNCHANGED, "")

    steps = (Step("address", "Address", address), Step("account", "Account", account))

    result = run(steps, ctx=context(cloud))

    assert result.reports["address"].calls == (
        "get_global_address projects/ml-project-1/global/addresses/ml-lab-ip",
    )
    assert result.reports["account"].calls == (
        "service_account_exists projects/ml-project-1/serviceAccounts/ml-lab-vm",
    )
    assert result.plan == [*result.reports["address"].calls, *result.reports["account"].calls]
