"""One thread that runs callbacks at their time, for any number of them.

``threading.Timer`` costs a thread per pending call, so the threads of a worker would grow
with the requests in flight.  Called by ``pubsub_deferrals`` (the second setting of a
deferred message's deadline) and by ``handlers.progress`` (redrawing a status message
once its rate limit allows).  Callbacks run on the timer's thread one after another, so
they must be short or hand their work on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduled:
    """A pending call; ``cancel()`` keeps it from running if it has not yet."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerThread:
    """Runs each ``call_later`` callback once its delay has passed; the thread starts with
    the first call and ``close()`` stops it."""

    def __init__(self, name: str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._monotonic = monotonic
        self._cond = threading.Condition()
        # (when, tie-breaker, handle, callback)
        self._due: list[tuple[float, int, Scheduled, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay: float, callback: Callable[[], None]) -> Scheduled:
        """Run ``callback`` in ``delay`` seconds; after ``close()`` it never runs."""
        handle = Scheduled()
        with self._cond:
            if self._closed:
                handle.cancel()
                return handle
            heapq.heappush(
                self._due, (self._monotonic() + delay, next(self._order), handle, callback)
            )
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def close(self, *, run_pending: bool = False) -> None:
        """Stop the thread; with ``run_pending`` the calls still due run first, at once."""
        with self._cond:
            self._closed = True
            pending, self._due = self._due, []
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        if run_pending:
            for _, _, handle, callback in sorted(pending):
                self._call(handle, callback)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._due or self._due[0][0] > self._monotonic()):
                    self._cond.wait(self._due[0][0] - self._monotonic() if self._due else None)
                if self._closed:
                    return
                _, _, handle, callback = heapq.heappop(self._due)
            self._call(handle, callback)

    @staticmethod
    def _call(handle: Scheduled, callback: Callable[[], None]) -> None:
        if handle.cancelled:
            return
        try:
            callback()
        except Exception:
            log.exception("a timed call failed")
