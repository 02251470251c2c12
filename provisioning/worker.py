"""The worker: takes approved requests off the queue and runs their steps.

Built by ``bot``'s composition root, with the store, the cloud, a notifier and a clock;
its ``handle`` is the queue's message handler.  It is level-based: the message carries
identity, the record in the store is re-read and is the truth.  Step progress is saved
in the record after every change, so a redelivered message resumes where the last one
stopped; the return value tells the queue to ack or to deliver again later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from provisioning.actions import CreateAction
from provisioning.cloud import Cloud
from provisioning.engine import Clock, ManifestLoader, RunStatus, StepContext, run_steps
from provisioning.notifier import Notifier
from provisioning.oauth import OAuthClient
from provisioning.plans import steps_for
from provisioning.queue import Ack, HandleResult, Retry
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State, StepReport
from provisioning.store import LeaseHeld, RequestStore, TransitionRefused, UnknownRequest

log = logging.getLogger(__name__)

WORKER_ACTOR = "kubeflow-bot"
# Long enough for the longest stretch between two progress reports (one step's call);
# after a crash, a redelivery waits at most this long before taking over.
DEFAULT_LEASE = timedelta(minutes=5)
LEASE_RETRY_MIN_SECONDS = 5.0
# A delivery that finds the request held looks again after at most this long, not when
# the lease would run out: the holder usually lets go within a second, and the message
# both share would otherwise be put off for the rest of the lease.
LEASE_RETRY_MAX_SECONDS = 30.0
RUNNABLE = frozenset({State.APPROVED, State.QUEUED, State.RUNNING})


def _said(result: HandleResult | None) -> str:
    if result is None:
        return "failed unexpectedly"
    if isinstance(result, Retry):
        return f"looking again in {result.after_seconds:.0f} s"
    return "done"


class Worker:
    def __init__(
        self,
        store: RequestStore,
        cloud: Cloud,
        notifier: Notifier,
        clock: Clock,
        *,
        manifests: ManifestLoader | None = None,
        oauth_client: OAuthClient | None = None,
        max_parallel_steps: int = 4,
        lease: timedelta = DEFAULT_LEASE,
        max_poll_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._cloud = cloud
        self._notifier = notifier
        self._clock = clock
        self._manifests = manifests
        self._oauth_client = oauth_client
        self._max_parallel = max_parallel_steps
        self._lease = lease
        self._max_poll = max_poll_seconds
        self._identity = f"{socket.gethostname()}:{os.getpid()}"

    def handle(self, message: QueueMessage, attempt: int | None) -> HandleResult:
        """Work on one delivery, holding the request's lease in the store meanwhile.

        The lease keeps two deliveries of one request (two workers, or a redelivery
        racing the original) from acting at once; progress reports renew it, so it runs
        out only when its holder died, and then another takes over."""
        record = self._store.get(message.request_id)
        if record is None:
            log.error("queue message for unknown request %s dropped", message.request_id)
            return Ack()
        if record.state not in RUNNABLE:
            # Already finished (a duplicate delivery) or cancelled: nothing to do, and
            # nothing written.
            log.info("request %s is %s; message acknowledged", record.id, record.state)
            return Ack()
        holder = f"{self._identity}:{uuid.uuid4().hex[:8]}"
        now = self._now()
        try:
            claimed = self._store.claim(
                message.request_id, holder=holder, until=now + self._lease, at=now
            )
        except UnknownRequest:
            log.error("queue message for unknown request %s dropped", message.request_id)
            return Ack()
        except LeaseHeld as e:
            until = e.current.lease_until or now
            wait = min(
                max((until - now).total_seconds(), LEASE_RETRY_MIN_SECONDS),
                self._max_poll or LEASE_RETRY_MAX_SECONDS,
                LEASE_RETRY_MAX_SECONDS,
            )
            log.info(
                "request %s is held by %s; looking again in %.0f s",
                message.request_id,
                e.current.lease_holder,
                wait,
            )
            return Retry(wait)
        # Between these two lines this worker alone acts on the request: the lease is
        # taken before the first and given back after the second.
        log.info("request %s: working on it (delivery %s)", message.request_id, attempt or "?")
        result: HandleResult | None = None
        # A lease left behind, not given back: its holder died or stalled past it.
        took_over = record.lease_holder not in (None, holder)
        try:
            result = self._handle(claimed, holder, took_over=took_over)
            return result
        finally:
            log.info("request %s: letting go (%s)", message.request_id, _said(result))
            with contextlib.suppress(UnknownRequest):
                self._store.release(message.request_id, holder=holder, at=self._now())

    def _now(self) -> datetime:
        return self._clock()

    def _handle(self, record: RequestRecord, holder: str, *, took_over: bool) -> HandleResult:
        if record.state not in RUNNABLE:
            # Moved on while we took the lease.
            return Ack()
        if record.state is State.APPROVED:
            # The approval handler marks it queued right after publishing; whichever of
            # us is first, the other's refusal just means "queued already".
            try:
                record = self._store.transition(
                    record.id,
                    expected={State.APPROVED},
                    new=State.QUEUED,
                    actor=WORKER_ACTOR,
                    at=self._now(),
                )
            except TransitionRefused as e:
                record = e.current
        # A look at a request already running is the common case (every poll of a pending
        # step) and writes nothing here; the history notes only the start, and a takeover
        # from a holder that died.
        if record.state is not State.RUNNING or took_over:
            try:
                record = self._store.transition(
                    record.id,
                    expected={State.QUEUED, State.RUNNING},
                    new=State.RUNNING,
                    actor=WORKER_ACTOR,
                    at=self._now(),
                    detail="resumed" if record.state is State.RUNNING else "",
                )
            except TransitionRefused as e:
                log.info(
                    "request %s moved to %s meanwhile; acknowledged", record.id, e.current.state
                )
                return Ack()

        steps = steps_for(record.action)
        ctx = StepContext(
            request_id=record.id,
            requester=record.requester,
            action=record.action,
            cloud=self._cloud,
            clock=self._clock,
            manifests=self._manifests,
            oauth_client=self._oauth_client,
        )
        save = self._progress_saver(record.id, [s.name for s in steps], holder)
        result = run_steps(
            steps, ctx, {r.name: r for r in record.steps}, save, max_parallel=self._max_parallel
        )
        reports = tuple(result.reports[s.name] for s in steps)

        if result.status is RunStatus.PENDING:
            wait = result.retry_after
            if self._max_poll is not None:
                wait = min(wait, self._max_poll)
            return Retry(wait)
        try:
            if result.status is RunStatus.FAILED:
                reason = f"{result.failed_step}: {result.failure}"
                record = self._store.transition(
                    record.id,
                    expected={State.RUNNING},
                    new=State.FAILED,
                    actor=WORKER_ACTOR,
                    at=self._now(),
                    detail=reason,
                    changes={"steps": reports, "reason": reason},
                )
                self._notifier.failed(record, reason=reason, will_retry=False)
                return Ack()
            url = record.action.spec.url if isinstance(record.action, CreateAction) else None
            record = self._store.transition(
                record.id,
                expected={State.RUNNING},
                new=State.SUCCEEDED,
                actor=WORKER_ACTOR,
                at=self._now(),
                changes={"steps": reports, "url": url, "dry_run": self._cloud.dry_run},
            )
        except TransitionRefused as e:
            # Cancelled while the steps ran: the cancellation stands, nothing is announced.
            log.info("request %s became %s while running; acknowledged", record.id, e.current.state)
            return Ack()
        self._notifier.succeeded(record, dry_run=self._cloud.dry_run)
        return Ack()

    def _progress_saver(
        self, request_id: str, order: list[str], holder: str
    ) -> Callable[[dict[str, StepReport]], None]:
        renewed = self._now()

        def save(reports: dict[str, StepReport]) -> None:
            nonlocal renewed
            now = self._now()
            # Renew once half the lease is gone, not with every report: one write each.
            if now - renewed >= self._lease / 2:
                renewed = now
                try:
                    self._store.claim(request_id, holder=holder, until=now + self._lease, at=now)
                except LeaseHeld as e:
                    # We stalled past our lease and another delivery took over: it
                    # will redo what we report here, since every step is idempotent.
                    log.warning("lost the lease of %s to %s", request_id, e.current.lease_holder)
            record: RequestRecord = self._store.update(
                request_id,
                changes={"steps": tuple(reports[name] for name in order)},
                at=self._now(),
            )
            try:
                self._notifier.progress(record)
            except Exception:
                log.exception("progress report for %s failed", request_id)

        return save
