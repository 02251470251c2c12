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
import time
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

    def __call__(self, work: Callable[[], object]) -> None:
        clock = self._foreground.clock if self._foreground is not None else time.monotonic
        self._pool.submit(self._run, work, clock() + self._max_defer)

    def _run(self, work: Callable[[], object], deadline: float) -> None:
        if self._foreground is not None:
            self._foreground.wait_until_quiet(deadline, quiet=self._quiet)
        try:
            work()
        except Exception:
            log.exception("listener work failed")

    def close(self, timeout: float = 30.0) -> None:
        # ThreadPoolExecutor has no join timeout; shutdown(wait=True) is bounded by the
        # work itself, which is a few Slack and store calls.
        del timeout
        self._pool.shutdown(wait=True, cancel_futures=False)
