"""The pool that runs listener work after Slack has its answer, acknowledgements first.

Built by the composition root and handed to the listeners as ``background``.  Bolt's
own listener threads only acknowledge; everything that calls Slack or the store runs
here.  A failure is logged with its traceback (never its arguments, which may carry
user text) and does not take the pool down.

Acknowledgements have a hard deadline (Slack gives up after 3 seconds); the follow-up
work does not.  In one Python process the two compete for the same interpreter lock, so
a burst of commands acked while their follow-ups run gets slow acks.  ``Foreground``
records when the HTTP front last answered Slack, and a job starts only once the front has
been quiet for ``QUIET_SECONDS``, or at the latest ``MAX_DEFER_SECONDS`` after it was
handed over, so a steady stream of commands never starves the follow-ups.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

# Gaps between acks in a burst are well under a millisecond; 10 ms of silence means the
# burst is over.  An idle bot pays this once per follow-up, unnoticeable in chat.
QUIET_SECONDS = 0.01
# The most a follow-up waits for a quiet front: well inside what a person notices.
MAX_DEFER_SECONDS = 1.0


class Foreground:
    """When the front last answered Slack: called by the HTTP front after every answer,
    read by ``BackgroundPool`` before each job."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last_answer = -math.inf

    def answered(self) -> None:
        # A float store is atomic under the interpreter lock: no lock on the hot path.
        self._last_answer = self.clock()

    def wait_until_quiet(
        self, deadline: float, *, quiet: float, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        """Return once nothing was answered for ``quiet`` seconds, or at ``deadline``."""
        while True:
            now = self.clock()
            pause = min(self._last_answer + quiet, deadline) - now
            if pause <= 0:
                return
            sleep(pause)


class BackgroundPool:
    """Runs each job on one of ``workers`` threads.  With a ``foreground``, jobs wait in
    a queue that one dispatcher thread releases to the workers once the front is quiet:
    one thread watches for the quiet, however many jobs wait, so the waiting itself does
    not compete with the acknowledgements."""

    def __init__(
        self,
        workers: int,
        foreground: Foreground | None = None,
        *,
        quiet: float = QUIET_SECONDS,
        max_defer: float = MAX_DEFER_SECONDS,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="listener-work")
        self._foreground = foreground
        self._quiet = quiet
        self._max_defer = max_defer
        self._waiting: deque[tuple[Callable[[], object], float]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._dispatcher: threading.Thread | None = None
        if foreground is not None:
            self._dispatcher = threading.Thread(
                target=self._dispatch, args=(foreground,), name="listener-work-dispatch"
            )
            self._dispatcher.daemon = True
            self._dispatcher.start()

    def __call__(self, work: Callable[[], object]) -> None:
        if self._foreground is None:
            self._pool.submit(self._run, work)
            return
        with self._changed:
            self._waiting.append((work, self._foreground.clock() + self._max_defer))
            self._changed.notify()

    def _dispatch(self, foreground: Foreground) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if not self._waiting:
                    return
                oldest_deadline = self._waiting[0][1]
            # After close() the front is gone: what waits runs at once.
            if not self._closed:
                foreground.wait_until_quiet(oldest_deadline, quiet=self._quiet)
            with self._changed:
                jobs = list(self._waiting)
                self._waiting.clear()
            for work, _ in jobs:
                self._pool.submit(self._run, work)

    @staticmethod
    def _run(work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:
            log.exception("listener work failed")

    def close(self, timeout: float = 30.0) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout)
        # ThreadPoolExecutor has no join timeout; shutdown(wait=True) is bounded by the
        # work itself, which is a few Slack and store calls.
        self._pool.shutdown(wait=True, cancel_futures=False)
