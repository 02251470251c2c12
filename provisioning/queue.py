"""The work queue interface between the approval handler and the worker.

``handlers`` publish a ``QueueMessage`` once a request is approved; the worker consumes
them.  Two implementations: ``inprocess_queue`` (the embedded default: one process, no
cloud) and ``pubsub_queue`` (Google Cloud Pub/Sub).  The handler's return value is the
delivery policy: ``Ack`` (done: succeeded, failed for good, or cancelled) or
``Retry`` (deliver again after about ``after_seconds``).  A handler that raises is
treated as ``Retry``: the message is redelivered, never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from provisioning.queue_message import QueueMessage


@dataclass(frozen=True)
class Ack:
    """The message is finished with; remove it from the queue."""


@dataclass(frozen=True)
class Retry:
    """Deliver the message again after about ``after_seconds``."""

    after_seconds: float = 0.0


HandleResult = Ack | Retry

# (message, delivery attempt or None when the queue does not count) -> what to do.
MessageHandler = Callable[[QueueMessage, int | None], HandleResult]


class Queue(Protocol):
    def publish(self, message: QueueMessage) -> None:
        """Send ``message``; returns once the queue has accepted it."""

    def consume(self, handler: MessageHandler, *, max_in_flight: int = 4) -> None:
        """Start delivering messages to ``handler`` on background threads, at most
        ``max_in_flight`` at once.  Returns immediately."""

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking new messages and wait up to ``timeout`` for those in hand."""
