"""The worker: takes approved requests off the queue and runs their steps.

Built by ``bot``'s composition root, with the store, the cloud, a notifier and a clock;
its ``handle`` is the queue's message handler.  It is level-based: the message carries
identity, the record in the store is re-read and is the truth.  Step progress is saved
in the record after every change, so a redelivered message resumes where the last one
stopped; the return value tells the queue to ack or to deliver again later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from provisioning.actions import CreateAction
from provisioning.cloud import Cloud
from provisioning.engine import Clock, ManifestLoader, RunStatus, StepContext, run_steps
from provisioning.notifier import Notifier
from provisioning.plans import steps_for
from provisioning.queue import Ack, HandleResult, Retry
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State, StepReport
from provisioning.store import RequestStore, TransitionRefused

log = logging.getLogger(__name__)

WORKER_ACTOR = "kubeflow-bot"


class Worker:
    def __init__(
        self,
        store: RequestStore,
        cloud: Cloud,
        notifier: Notifier,
        clock: Clock,
        *,
        manifests: ManifestLoader | None = None,
        max_parallel_steps: int = 4,
    ) -> None:
        self._store = store
        self._cloud = cloud
        self._notifier = notifier
        self._clock = clock
        self._manifests = manifests
        self._max_parallel = max_parallel_steps
        # One delivery of a request at a time in this process.  Across processes only
        # the store's state check stands between two deliveries for now; a lease in the
        # store is what keeps them apart for good.
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()

    def handle(self, message: QueueMessage, attempt: int | None) -> HandleResult:
        with self._busy_lock:
            if message.request_id in self._busy:
                return Retry(5.0)
            self._busy.add(message.request_id)
        try:
            return self._handle(message)
        finally:
            with self._busy_lock:
                self._busy.discard(message.request_id)

    def _now(self) -> datetime:
        return self._clock()

    def _handle(self, message: QueueMessage) -> HandleResult:
        record = self._store.get(message.request_id)
        if record is None:
            log.error("queue message for unknown request %s dropped", message.request_id)
            return Ack()
        if record.state not in (State.QUEUED, State.RUNNING, State.APPROVED):
            # Already finished (a duplicate delivery) or cancelled: nothing to do.
            log.info("request %s is %s; message acknowledged", record.id, record.state)
            return Ack()
        try:
            if record.state is State.APPROVED:
                record = self._store.transition(
                    record.id,
                    expected={State.APPROVED},
                    new=State.QUEUED,
                    actor=WORKER_ACTOR,
                    at=self._now(),
                )
            record = self._store.transition(
                record.id,
                expected={State.QUEUED, State.RUNNING},
                new=State.RUNNING,
                actor=WORKER_ACTOR,
                at=self._now(),
                detail="resumed" if record.state is State.RUNNING else "",
            )
        except TransitionRefused as e:
            log.info("request %s moved to %s meanwhile; acknowledged", record.id, e.current.state)
            return Ack()

        steps = steps_for(record.action)
        ctx = StepContext(
            request_id=record.id,
            requester=record.requester,
            action=record.action,
            cloud=self._cloud,
            clock=self._clock,
            manifests=self._manifests,
        )
        save = self._progress_saver(record.id, [s.name for s in steps])
        result = run_steps(
            steps, ctx, {r.name: r for r in record.steps}, save, max_parallel=self._max_parallel
        )
        reports = tuple(result.reports[s.name] for s in steps)

        if result.status is RunStatus.PENDING:
            return Retry(result.retry_after)
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
        self, request_id: str, order: list[str]
    ) -> Callable[[dict[str, StepReport]], None]:
        def save(reports: dict[str, StepReport]) -> None:
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
