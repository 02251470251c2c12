"""Clocks that stand still until a test moves them: wall time and monotonic seconds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

EPOCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FakeClock:
    """A wall clock (aware UTC datetimes), as the handlers and the worker take one."""

    def __init__(self, now: datetime = EPOCH) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeMonotonic:
    """Monotonic seconds (caches, throttles, step durations); safe across threads."""

    def __init__(self, start: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self.now = start

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
