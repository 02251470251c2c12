"""The step engine: runs ``ensure_*`` steps in dependency order, independent ones at once.

Called by the worker for each delivery of a request.  A step observes, compares, acts
and reports what it did (``Outcome``).  Steps already done in an earlier delivery are
not run again, so a redelivered or resumed request continues where it stopped.  The
engine's result is the retry policy: done, pending (look again after N seconds) or
failed (a ``PermanentError``: stop and tell the requester).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
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
from provisioning.oauth import OAuthClient
from provisioning.records import StepReport, StepStatus

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ManifestLoader = Callable[[], Sequence[Mapping[str, Any]]]
# A long step's word on how far it got (``312/503 objects applied``) is stored and shown
# at most this often: each report is a store write and a chat redraw.
PROGRESS_INTERVAL_SECONDS = 2.0


def _no_progress(_detail: str) -> None:
    """Where a step's progress goes when nothing listens (a step run on its own)."""


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
    """What a step may use: the action, who asked, the cloud, the clock, ``progress``
    to say how far a long step has got (it becomes the step's detail meanwhile), and the
    operators' OAuth client for IAP, if any."""

    request_id: str
    requester: str
    action: Action
    cloud: Cloud
    clock: Clock
    manifests: ManifestLoader | None = None
    progress: Callable[[str], None] = _no_progress
    # The custom OAuth client for IAP; None: IAP's Google-managed client.
    oauth_client: OAuthClient | None = None

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


class _Reports:
    """The reports of one run, changed by the engine loop and by steps' progress from
    their own threads: one change reported at a time, so that reports reach
    ``on_change`` in the order they were made."""

    def __init__(
        self,
        current: dict[str, StepReport],
        on_change: Callable[[dict[str, StepReport]], None],
        monotonic: Callable[[], float],
    ) -> None:
        self.current = current
        self._on_change = on_change
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._last_progress: dict[str, float] = {}

    def finished(self, name: str) -> bool:
        return self.current[name].status in _FINISHED

    def changed(self) -> None:
        with self._lock:
            self._on_change(dict(self.current))

    def start(self, names: Sequence[str]) -> None:
        """Mark the steps running, reported before they start (so before any progress of
        theirs); steps still running from an earlier delivery are not news: no write."""
        with self._lock:
            news = [name for name in names if self.current[name].status is not StepStatus.RUNNING]
            for name in news:
                self.current[name] = self.current[name].model_copy(
                    update={"status": StepStatus.RUNNING}
                )
            if news:
                self.changed()

    def set(self, name: str, report: StepReport) -> None:
        with self._lock:
            self.current[name] = report

    def progress_of(self, name: str) -> Callable[[str], None]:
        def progress(detail: str) -> None:
            now = self._monotonic()
            with self._lock:
                if self.current[name].status is not StepStatus.RUNNING:
                    return  # reported after the step ended: its result stands
                last = self._last_progress.get(name, -PROGRESS_INTERVAL_SECONDS)
                if now - last < PROGRESS_INTERVAL_SECONDS:
                    return
                self._last_progress[name] = now
                self.current[name] = self.current[name].model_copy(update={"detail": detail})
                self.changed()

        return progress


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
    state = _Reports(
        {**initial_reports(steps), **{k: v for k, v in reports.items()}}, on_change, monotonic
    )
    current, finished = state.current, state.finished
    by_name = {s.name: s for s in steps}
    pending_retry: float | None = None
    failure: tuple[str, str] | None = None
    started: set[str] = set()

    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="step") as pool:
        running: dict[Future[tuple[StepReport, float | None, str | None]], str] = {}
        while True:
            if failure is None:
                ready = [
                    step
                    for step in steps
                    if step.name not in started
                    and not finished(step.name)
                    and all(finished(dep) for dep in step.after)
                ]
                started.update(step.name for step in ready)
                state.start([step.name for step in ready])
                for step in ready:
                    step_ctx = dataclasses.replace(ctx, progress=state.progress_of(step.name))
                    running[
                        pool.submit(_run_step, step, step_ctx, current[step.name], monotonic)
                    ] = step.name
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                report, retry, error = future.result()
                state.set(name, report)
                if error is not None and failure is None:
                    failure = (name, error)
                elif retry is not None:
                    pending_retry = retry if pending_retry is None else min(pending_retry, retry)
            state.changed()

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
