"""Deferring a Pub/Sub message: its ack deadline set to when it should come back, twice.

Called by ``PubSubQueue`` when a handler asks to look at a request again later.  The
client library owns the message's lease until the message is dropped, and both the drop
and our deadline travel through its request queue to a dispatcher thread, while its
lease-keeping thread renews every lease it holds (by 10 s or more) from a copy it took
earlier.  When that renewal reaches Pub/Sub after our deadline, the message comes back
up to 10 s late instead of when asked: under load, one or two of some 800 deferrals.
So a deferral shorter than a renewal has its deadline set again a moment later
(``SECOND_SETTING_AFTER``), once the renewal that was under way has landed and the drop
has taken the message out of the lease-keeping; Pub/Sub takes whole seconds, so such a
message comes back that moment later than asked.  One ``TimerThread`` does the second
settings for all messages, whatever the number of deferrals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from provisioning.timers import TimerThread

MIN_DEFER_SECONDS = 1
MAX_DEFER_SECONDS = 600
# After a renewal that was being sent when the message was dropped has landed, and short
# against the shortest deferral (1 s), which it makes this much later.
SECOND_SETTING_AFTER = 0.1
# The client renews leases by at least this much: a renewal landing after a longer
# deferral's deadline only brings the message back early, for one more look.
RENEWAL_SECONDS = 10


class Deferrable(Protocol):
    """What of a received Pub/Sub message a deferral uses."""

    def drop(self) -> None: ...

    def modify_ack_deadline(self, seconds: int) -> None: ...


class Deferrals:
    """Defers messages; ``close()`` does the second settings still due at once."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._timer = TimerThread("pubsub-deferrals", monotonic=monotonic)

    def defer(self, received: Deferrable, seconds: float) -> None:
        """Let go of ``received`` and have Pub/Sub deliver it again in ``seconds``
        (1 to 600)."""
        seconds = min(max(seconds, MIN_DEFER_SECONDS), MAX_DEFER_SECONDS)
        back_at = self._monotonic() + seconds
        received.drop()
        received.modify_ack_deadline(round(seconds))
        if seconds < RENEWAL_SECONDS:

            def set_again() -> None:
                # Whole seconds, as Pub/Sub takes them.
                remaining = back_at - self._monotonic()
                received.modify_ack_deadline(max(MIN_DEFER_SECONDS, round(remaining)))

            self._timer.call_later(SECOND_SETTING_AFTER, set_again)

    def close(self) -> None:
        self._timer.close(run_pending=True)
