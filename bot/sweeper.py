"""A background thread that expires overdue requests and re-queues stranded ones.

Started by ``serve`` (and stopped on shutdown).  Expiry also happens lazily whenever a
request is looked at; the sweep makes the card say "expired" even if nobody looks.
"""

from __future__ import annotations

import logging
import threading

from handlers.approvals import Approvals

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, approvals: Approvals, *, every_seconds: float = 60.0) -> None:
        self._approvals = approvals
        self._every = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sweep(self) -> None:
        expired = self._approvals.expire_due()
        requeued = self._approvals.requeue_stranded()
        if expired or requeued:
            log.info("sweep: %d expired, %d re-queued", expired, requeued)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed; trying again in %.0f s", self._every)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
