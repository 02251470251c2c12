"""Polls that an apply runs while it waits for the cluster: timing, and nothing else.

Called by ``kube_apply_run.ApplyRun``, whose loop asks ``due`` when to wake, ``fire``s
what is due and hands back each finished poll to ``finished``.  What is polled and what
a result means are the run's: a check runs on the applier's small poll pool (so it
never queues behind applies); its result goes to ``on_result`` on the run's thread,
which says whether the wait is over; a wait not over by ``until`` (after one last poll
then) goes to ``on_expiry``.  Intervals grow by half from ``first`` to ``longest``.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class _Poll:
    check: Callable[[], Any]
    on_result: Callable[[Any], bool]
    on_expiry: Callable[[], None]
    until: float
    next_at: float
    interval: float
    longest: float
    running: bool = False


class Polls:
    """The run's polls, by key; not thread-safe (the run's thread only)."""

    def __init__(self, pool: ThreadPoolExecutor, finished: queue.SimpleQueue[Future[Any]]) -> None:
        self._pool = pool
        self._finished = finished
        self._polls: dict[Hashable, _Poll] = {}
        self._running: dict[Future[Any], Hashable] = {}

    def __bool__(self) -> bool:
        return bool(self._polls)

    def add(
        self,
        key: Hashable,
        *,
        now: float,
        check: Callable[[], Any],
        on_result: Callable[[Any], bool],
        on_expiry: Callable[[], None],
        first: float,
        longest: float,
        until: float,
    ) -> None:
        """Start polling ``key``; if it is polled already, only ``until`` can move later."""
        known = self._polls.get(key)
        if known is not None:
            known.until = max(known.until, until)
            return
        next_at = min(now + first, until)
        self._polls[key] = _Poll(check, on_result, on_expiry, until, next_at, first, longest)

    def due(self) -> float | None:
        """When the next poll is due (None: none waits to be sent)."""
        return min((p.next_at for p in self._polls.values() if not p.running), default=None)

    def busy(self) -> bool:
        """Whether a poll is out, so that ``finished`` will hear of it."""
        return bool(self._running)

    def fire(self, now: float) -> None:
        for key, poll in self._polls.items():
            if not poll.running and poll.next_at <= now:
                poll.running = True
                future = self._pool.submit(poll.check)
                self._running[future] = key
                future.add_done_callback(self._finished.put)

    def owns(self, future: Future[Any]) -> bool:
        return future in self._running

    def finished(self, future: Future[Any], now: float) -> None:
        """Hand a finished poll's result over (raising what the check raised)."""
        key = self._running.pop(future)
        poll = self._polls[key]
        poll.running = False
        if poll.on_result(future.result()):
            del self._polls[key]
        elif now >= poll.until:
            del self._polls[key]
            poll.on_expiry()
        else:
            poll.interval = min(poll.interval * 1.5, poll.longest)
            poll.next_at = min(now + poll.interval, poll.until)

    def cancel(self) -> None:
        for future in self._running:
            future.cancel()
