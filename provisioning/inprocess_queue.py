"""The embedded work queue: one process, no cloud, messages held in memory.

``InProcessQueue`` implements the ``provisioning.queue.Queue`` protocol for the default
way to run the bot (console and single-process server): the bot's composition root builds
it, the approval handler publishes to it, and the worker consumes from it.  Messages go
through ``queue_message.encode``/``decode`` on publish, so the same serialization path as
Pub/Sub is exercised.  Nothing survives the process: a message queued or scheduled for a
retry when the process exits is lost (the store still holds the approved request).

Delivery policy, as in the protocol: ``Ack`` removes the message; ``Retry(after)``
delivers it again after ``after`` seconds with the attempt count one higher (attempts
start at 1); a handler that raises (or returns something else) is logged and the message
is retried after ``backoff(attempt)`` seconds.  Retries wait in a heap keyed by due time;
idle worker threads wait on a condition until the earliest one is due, so no thread sleeps
per message.  ``join()`` lets the console wait until all queued work is done.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from provisioning.queue import Ack, MessageHandler, Retry
from provisioning.queue_message import QueueMessage, decode, encode

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Backoff = Callable[[int], float]

ERROR_BACKOFF_BASE_SECONDS = 0.05
ERROR_BACKOFF_CAP_SECONDS = 5.0


def error_backoff(attempt: int) -> float:
    """Seconds to wait before redelivering a message whose ``attempt``-th delivery failed
    with an exception: 0.05 s doubled per attempt, capped at 5 s."""
    exponent = min(max(attempt, 0), 32)  # 2**32 * 0.05 is far past the cap already
    return min(ERROR_BACKOFF_BASE_SECONDS * 2.0**exponent, ERROR_BACKOFF_CAP_SECONDS)


@dataclass(frozen=True)
class _Delivery:
    message: QueueMessage
    attempt: int


class InProcessQueue:
    """A thread-safe in-memory queue with delayed retries.

    ``clock`` gives monotonic seconds and is used for retry due times (the queue waits in
    real time for the gap it reports, so it must advance like ``time.monotonic``);
    ``backoff`` maps the number of a failed attempt to the delay before the next one.
    """

    def __init__(self, *, clock: Clock = time.monotonic, backoff: Backoff = error_backoff) -> None:
        self._clock = clock
        self._backoff = backoff
        self._cond = threading.Condition()
        self._ready: deque[_Delivery] = deque()
        # (due time, tie-breaker, delivery): the tie-breaker keeps equal due times in
        # scheduling order and spares comparing deliveries.
        self._scheduled: list[tuple[float, int, _Delivery]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        self._workers: list[threading.Thread] = []
        self._handler: MessageHandler | None = None
        self._closed = False

    # -- Queue protocol ----------------------------------------------------------------

    def publish(self, message: QueueMessage) -> None:
        """Queue ``message`` for delivery.

        Raises ``MessageSchemaError`` if the message does not survive encoding and
        decoding, and ``RuntimeError`` after ``close()``."""
        delivered = decode(encode(message))
        with self._cond:
            if self._closed:
                raise RuntimeError("the in-process queue is closed")
            self._ready.append(_Delivery(delivered, attempt=1))
            self._cond.notify_all()

    def consume(self, handler: MessageHandler, *, max_in_flight: int = 4) -> None:
        """Start ``max_in_flight`` daemon worker threads delivering to ``handler``."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        with self._cond:
            if self._closed:
                raise RuntimeError("the in-process queue is closed")
            if self._handler is not None:
                raise RuntimeError("the in-process queue already has a consumer")
            self._handler = handler
            self._workers = [
                threading.Thread(
                    target=self._work, args=(handler,), name=f"inprocess-queue-{n}", daemon=True
                )
                for n in range(max_in_flight)
            ]
        for worker in self._workers:
            worker.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop delivering and wait up to ``timeout`` seconds for handlers in progress.

        Messages still queued or scheduled for a retry stay undelivered."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            workers = list(self._workers)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        still_running = sum(worker.is_alive() for worker in workers)
        if still_running:
            log.warning(
                "in-process queue closed with %d handler(s) still running after %.1f s",
                still_running,
                timeout,
            )

    # -- Beyond the protocol -------------------------------------------------------------

    def join(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued, in flight or scheduled for a retry.

        Returns False if ``timeout`` seconds passed first.  Without a consumer (or after
        ``close()``) queued work never drains, so only the timeout ends the wait."""
        with self._cond:
            return self._cond.wait_for(self._idle, timeout)

    # -- Workers -------------------------------------------------------------------------

    def _idle(self) -> bool:
        return not self._ready and not self._scheduled and self._in_flight == 0

    def _work(self, handler: MessageHandler) -> None:
        while True:
            delivery = self._next_delivery()
            if delivery is None:
                return
            try:
                self._deliver(handler, delivery)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _next_delivery(self) -> _Delivery | None:
        """Wait for a message to deliver and mark it in flight; None once closed."""
        with self._cond:
            while not self._closed:
                wait = self._promote_due()
                if self._ready:
                    self._in_flight += 1
                    return self._ready.popleft()
                self._cond.wait(wait)
            return None

    def _promote_due(self) -> float | None:
        """Move retries that are due to the ready queue; return the seconds until the
        next one is due (None when none is scheduled).  Call with the lock held."""
        now = self._clock()
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, delivery = heapq.heappop(self._scheduled)
            self._ready.append(delivery)
        if not self._scheduled:
            return None
        return self._scheduled[0][0] - now

    def _deliver(self, handler: MessageHandler, delivery: _Delivery) -> None:
        message, attempt = delivery.message, delivery.attempt
        try:
            result = handler(message, attempt)
        except Exception:
            delay = self._backoff(attempt)
            log.exception(
                "handler failed on %s (attempt %d); retrying in %.2f s",
                message.request_id,
                attempt,
                delay,
            )
            self._schedule(delivery, delay)
            return
        match result:
            case Ack():
                log.debug("acked %s (attempt %d)", message.request_id, attempt)
            case Retry(after_seconds=after):
                log.debug("retrying %s in %.2f s (attempt %d)", message.request_id, after, attempt)
                self._schedule(delivery, after)
            case _:
                delay = self._backoff(attempt)
                log.error(
                    "handler returned %r for %s, neither Ack nor Retry; retrying in %.2f s",
                    result,
                    message.request_id,
                    delay,
                )
                self._schedule(delivery, delay)

    def _schedule(self, delivery: _Delivery, after_seconds: float) -> None:
        again = _Delivery(delivery.message, delivery.attempt + 1)
        with self._cond:
            if after_seconds <= 0:
                self._ready.append(again)
            else:
                due = self._clock() + after_seconds
                heapq.heappush(self._scheduled, (due, next(self._sequence), again))
            self._cond.notify_all()
