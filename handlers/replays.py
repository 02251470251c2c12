"""Remembers which Slack deliveries were handled, so a replay is acknowledged and dropped.

Used by the listeners that ``register`` functions install.  Slack retries a request it
thinks went unanswered (``X-Slack-Retry-Num``), and a payload can be replayed; each
carries the same ``trigger_id`` (or view id), so the first one acts and the rest only
ack.  The approval transition is compare-and-set anyway; this spares the duplicate
ephemeral "already approved" reply and a second card for a retried ``create``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class ReplayGuard:
    def __init__(
        self,
        *,
        ttl_seconds: float = 900.0,
        max_entries: int = 50_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, key: str | None) -> bool:
        """True the first time ``key`` is seen within the TTL (always True for None)."""
        if not key:
            return True
        now = self._monotonic()
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if now - at < self._ttl and len(self._seen) < self._max:
                    break
                del self._seen[oldest]
            if key in self._seen:
                return False
            self._seen[key] = now
            return True
