"""The step engine: runs ``ensure_*`` steps in dependency order, independent ones at once.

Called by the worker for each delivery of a request.  A step observes, compares, acts
and reports what it did (``Outcome``).  Steps already done in an earlier delivery are
not run again, so a redelivered or resumed request continues where it stopped.  The
engine's result is the retry policy: done, pending (look again after N seconds) or
failed (a ``PermanentError``: stop and tell the requester).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from provisioning.actions import Action
from provisioning.cloud import Cloud
from provisioning.errors import PermanentError, TemporaryError
from provisioning.records import StepReport, StepStatus

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ManifestLoader = Callable[[], Sequence[Mapping[str, Any]]]


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    PLANNED = "planned"
    PENDING = "pending"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    detail: str = ""
    # For PENDING: when to look again.
    retry_after: float = 0.0


@dataclass(frozen=True)
class StepContext:
    """What a step may use: the action, who asked, the cloud, the clock."""

    request_id: str
    requester: str
    action: Action
    cloud: Cloud
    clock: Clock
    manifests: ManifestLoader | None = None

    def acted(self, outcome: Outcome, detail: str) -> StepResult:
        """The result of a step that changed something, or would have on a dry run."""
        return StepResult(Outcome.PLANNED if self.cloud.dry_run else outcome, detail)


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    ensure: Callable[[StepContext], StepResult]
    after: tuple[str, ...] = ()


class RunStatus(StrEnum):
    DONE = "done"
    PENDING = "pending"
    FAILED = "failed"


@dataclass
class RunResult:
    status: RunStatus
    reports: dict[str, StepReport]
    retry_after: float = 0.0
    failure: str = ""
    failed_step: str = ""
    plan: list[str] = field(default_factory=list)


_FINISHED = {StepStatus.DONE, StepStatus.PLANNED, StepStatus.SKIPPED}
_STATUS_OF = {
    Outcome.UNCHANGED: StepStatus.DONE,
    Outcome.CREATED: StepStatus.DONE,
    Outcome.UPDATED: StepStatus.DONE,
    Outcome.DELETED: StepStatus.DONE,
    Outcome.PLANNED: StepStatus.PLANNED,
    Outcome.SKIPPED: StepStatus.SKIPPED,
    Outcome.PENDING: StepStatus.RUNNING,
}


def check_graph(steps: Sequence[Step]) -> None:
    """Refuse unknown dependencies and cycles (a programming error, found at import)."""
    names = {s.name for s in steps}
    for step in steps:
        unknown = set(step.after) - names
        if unknown:
            raise ValueError(f"step {step.name} waits for unknown steps {sorted(unknown)}")
    order: set[str] = set()
    remaining = list(steps)
    while remaining:
        ready = [s for s in remaining if set(s.after) <= order]
        if not ready:
            raise ValueError(f"steps form a cycle: {[s.name for s in remaining]}")
        order |= {s.name for s in ready}
        remaining = [s for s in remaining if s.name not in order]


def initial_reports(steps: Sequence[Step]) -> dict[str, StepReport]:
    return {s.name: StepReport(name=s.name, title=s.title) for s in steps}


def _run_step(
    step: Step, ctx: StepContext, prior: StepReport, monotonic: Callable[[], float]
) -> tuple[StepReport, float | None, str | None]:
    """Run one step on a pool thread: its new report, when to look again, its failure."""
    begin = monotonic()
    error = None
    try:
        result = step.ensure(ctx)
    except TemporaryError as e:
        result = StepResult(Outcome.PENDING, str(e), retry_after=e.delay)
    except PermanentError as e:
        result = StepResult(Outcome.PENDING, e.user_message)
        error = e.user_message
    # Drained on the step's own thread: the dry-run cloud records per thread.
    calls = tuple(ctx.cloud.drain_calls())
    seconds = monotonic() - begin
    # A step that was pending in an earlier delivery keeps its time and calls so far.
    resumed = prior.status == StepStatus.RUNNING
    report = prior.model_copy(
        update={
            "status": StepStatus.FAILED if error else _STATUS_OF[result.outcome],
            "outcome": "failed" if error else result.outcome.value,
            "detail": result.detail,
            "seconds": round((prior.seconds or 0.0) + seconds, 3),
            "calls": prior.calls + calls if resumed else calls,
        }
    )
    retry = result.retry_after if result.outcome is Outcome.PENDING and not error else None
    return report, retry, error


def run_steps(
    steps: Sequence[Step],
    ctx: StepContext,
    reports: Mapping[str, StepReport],
    on_change: Callable[[dict[str, StepReport]], None],
    *,
    max_parallel: int = 4,
    monotonic: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Run every step not yet finished in ``reports``; call ``on_change`` as they move."""
    current = {**initial_reports(steps), **{k: v for k, v in reports.items()}}
    by_name = {s.name: s for s in steps}
    pending_retry: float | None = None
    failure: tuple[str, str] | None = None
    started: set[str] = set()

    def finished(name: str) -> bool:
        return current[name].status in _FINISHED

    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="step") as pool:
        running: dict[Future[tuple[StepReport, float | None, str | None]], str] = {}
        while True:
            if failure is None:
                for step in steps:
                    if step.name in started or finished(step.name):
                        continue
                    if all(finished(dep) for dep in step.after):
                        started.add(step.name)
                        current[step.name] = current[step.name].model_copy(
                            update={"status": StepStatus.RUNNING}
                        )
                        running[
                            pool.submit(_run_step, step, ctx, current[step.name], monotonic)
                        ] = step.name
                if running:
                    on_change(dict(current))
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                report, retry, error = future.result()
                current[name] = report
                if error is not None and failure is None:
                    failure = (name, error)
                elif retry is not None:
                    pending_retry = retry if pending_retry is None else min(pending_retry, retry)
            on_change(dict(current))

    plan = [call for s in steps for call in current[s.name].calls]
    if failure is not None:
        return RunResult(
            RunStatus.FAILED,
            current,
            failure=failure[1],
            failed_step=by_name[failure[0]].title,
            plan=plan,
        )
    if all(finished(s.name) for s in steps):
        return RunResult(RunStatus.DONE, current, plan=plan)
    # Something is still running in the cloud, or waits on a step that is.
    return RunResult(RunStatus.PENDING, current, retry_after=pending_retry or 10.0, plan=plan)
