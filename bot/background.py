"""The pool that runs listener work after Slack has its answer.

Built by the composition root and handed to the listeners as ``background``.  Bolt's
own listener threads only acknowledge; everything that calls Slack or the store runs
here.  A failure is logged with its traceback (never its arguments, which may carry
user text) and does not take the pool down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class BackgroundPool:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="listener-work")

    def __call__(self, work: Callable[[], object]) -> None:
        self._pool.submit(self._run, work)

    @staticmethod
    def _run(work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:
            log.exception("listener work failed")

    def close(self, timeout: float = 30.0) -> None:
        # ThreadPoolExecutor has no join timeout; shutdown(wait=True) is bounded by the
        # work itself, which is a few Slack and store calls.
        del timeout
        self._pool.shutdown(wait=True, cancel_futures=False)
