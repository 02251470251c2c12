"""The work queue on Google Cloud Pub/Sub, and the ``QueueError`` it raises.

``PubSubQueue`` implements the ``provisioning.queue.Queue`` protocol with the real
google-cloud-pubsub client.  The bot's composition root builds it (with the project,
topic and subscription from its settings); the approval handler publishes approved
requests to it; the worker consumes them through a streaming pull.  Against the emulator
the client library itself honours ``PUBSUB_EMULATOR_HOST``: this module never reads the
environment.  Library exceptions stop here: they become ``QueueError``, chained.

Delivery policy on Pub/Sub:

* ``Ack`` acks the message.
* ``Retry(after_seconds)`` defers it: it is dropped from the client's lease management
  and its ack deadline is set to that many seconds (1 to 600), and once more a moment
  later (``provisioning.pubsub_deferrals`` says why), so Pub/Sub redelivers it then.
  Merely not acking would not defer: the client keeps extending the lease of every
  message it holds.  ``Retry`` under a second nacks it: it comes back at once.
* A handler that raises, and a message this worker cannot decode (``MessageSchemaError``,
  e.g. a newer schema version, which a newer worker on the subscription may take), are
  logged and deferred by ``failure_delay_seconds``.  Without a dead-letter policy such a
  message keeps coming back at that pace; with ``dead_letter_topic`` it is moved there
  after ``max_delivery_attempts``.

The subscription gets no retry policy unless ``retry_backoff`` asks for one: Pub/Sub
applies it to ack deadlines that run out as well as to nacks, so it would stretch every
deferral above (a cluster looked at every 30 s would be looked at every 10 minutes after
a few looks).  The queue spaces failures itself instead.

The attempt passed to the handler is the message's ``delivery_attempt``, which Pub/Sub
counts only when the subscription has a dead-letter policy (otherwise None).

``max_lease_seconds`` bounds each lease extension the client asks for
(``FlowControl.max_duration_per_lease_extension``).  A message held by a worker that
crashed comes back after about that long instead of after the client's own choice (up to
10 minutes); it also bounds how long the emulator keeps messages on a closed stream.

Topic, subscription and policies are set only when this class creates them; an existing
subscription keeps its settings.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
from google.cloud.pubsub_v1.types import FlowControl

from provisioning.pubsub_deferrals import MAX_DEFER_SECONDS, MIN_DEFER_SECONDS, Deferrals
from provisioning.queue import Ack, MessageHandler, Retry
from provisioning.queue_message import MessageSchemaError, QueueMessage, decode, encode

log = logging.getLogger(__name__)

MIN_LEASE_EXTENSION_SECONDS = 10
MAX_LEASE_EXTENSION_SECONDS = 600
MIN_DELIVERY_ATTEMPTS = 5
MAX_DELIVERY_ATTEMPTS = 100


class QueueError(Exception):
    """Pub/Sub refused or failed an operation (creating, publishing, consuming)."""


@dataclass(frozen=True)
class RetryBackoff:
    """The subscription's retry policy: redelivery after a nack waits between
    ``minimum_seconds`` and ``maximum_seconds``, growing exponentially (0 to 600 s)."""

    minimum_seconds: float = 10.0
    maximum_seconds: float = 600.0


# How long closing waits for handlers in progress: inside the 10 to 30 s that platforms
# give a process between SIGTERM and SIGKILL.  A message still in hand then is not
# acked and comes back to another worker.
CLOSE_TIMEOUT = 10.0
# Seconds before a message whose handling failed, or that this worker cannot read, is
# delivered again.
DEFAULT_FAILURE_DELAY = 30


class PubSubQueue:
    """A topic and its subscription; creates both (and the dead-letter topic) if missing.

    ``publisher`` and ``subscriber`` default to new clients, which this queue then closes
    in ``close()``; clients passed in are left to their owner.  ``timeout_seconds`` bounds
    each administrative call and each publish.
    """

    def __init__(
        self,
        project: str,
        topic: str,
        subscription: str,
        *,
        publisher: PublisherClient | None = None,
        subscriber: SubscriberClient | None = None,
        ack_deadline_seconds: int = 60,
        max_lease_seconds: int = 30,
        retry_backoff: RetryBackoff | None = None,
        failure_delay_seconds: int = DEFAULT_FAILURE_DELAY,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = MIN_DELIVERY_ATTEMPTS,
        timeout_seconds: float = 30.0,
        create_missing: bool = True,
    ) -> None:
        if not MIN_LEASE_EXTENSION_SECONDS <= max_lease_seconds <= MAX_LEASE_EXTENSION_SECONDS:
            raise ValueError(
                f"max_lease_seconds must be between {MIN_LEASE_EXTENSION_SECONDS} and "
                f"{MAX_LEASE_EXTENSION_SECONDS}, not {max_lease_seconds}"
            )
        if not MIN_DELIVERY_ATTEMPTS <= max_delivery_attempts <= MAX_DELIVERY_ATTEMPTS:
            raise ValueError(
                f"max_delivery_attempts must be between {MIN_DELIVERY_ATTEMPTS} and "
                f"{MAX_DELIVERY_ATTEMPTS}, not {max_delivery_attempts}"
            )
        self._owns_publisher = publisher is None
        self._owns_subscriber = subscriber is None
        self._publisher = publisher if publisher is not None else PublisherClient()
        self._subscriber = subscriber if subscriber is not None else SubscriberClient()
        self._topic_path: str = self._publisher.topic_path(project, topic)
        self._subscription_path: str = self._subscriber.subscription_path(project, subscription)
        self._dead_letter_path: str | None = (
            self._publisher.topic_path(project, dead_letter_topic) if dead_letter_topic else None
        )
        self._ack_deadline_seconds = ack_deadline_seconds
        self._max_lease_seconds = max_lease_seconds
        self._retry_backoff = retry_backoff
        if not MIN_DEFER_SECONDS <= failure_delay_seconds <= MAX_DEFER_SECONDS:
            raise ValueError(
                f"failure_delay_seconds must be between {MIN_DEFER_SECONDS} and "
                f"{MAX_DEFER_SECONDS}, not {failure_delay_seconds}"
            )
        self._failure_delay = failure_delay_seconds
        self._max_delivery_attempts = max_delivery_attempts
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._streaming: StreamingPullFuture | None = None
        self._closed = False
        self._deferrals = Deferrals()
        if create_missing:
            self._ensure_topic(self._topic_path)
            if self._dead_letter_path is not None:
                self._ensure_topic(self._dead_letter_path)
            self._ensure_subscription()

    @property
    def topic_path(self) -> str:
        return self._topic_path

    @property
    def subscription_path(self) -> str:
        return self._subscription_path

    # -- Queue protocol ----------------------------------------------------------------

    def publish(self, message: QueueMessage) -> None:
        """Publish ``message`` and wait until Pub/Sub has accepted it.

        Raises ``QueueError`` when Pub/Sub refuses it or does not answer within the
        timeout (in which case it may still arrive later; the worker is idempotent)."""
        if self._closed:
            raise QueueError(f"the queue on {self._topic_path} is closed")
        try:
            future = self._publisher.publish(
                self._topic_path,
                encode(message),
                timeout=self._timeout,
                request_id=message.request_id,
                schema_version=str(message.schema_version),
            )
            message_id = future.result(timeout=self._timeout)
        except TimeoutError as e:
            raise QueueError(
                f"publishing {message.request_id} to {self._topic_path} got no answer "
                f"within {self._timeout} s"
            ) from e
        except api_exceptions.GoogleAPIError as e:
            raise QueueError(
                f"publishing {message.request_id} to {self._topic_path} failed: {e}"
            ) from e
        log.debug("published %s as message %s", message.request_id, message_id)

    def consume(self, handler: MessageHandler, *, max_in_flight: int = 4) -> None:
        """Start a streaming pull delivering to ``handler``, at most ``max_in_flight``
        messages in hand at once.  Returns immediately."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        flow_control = FlowControl(
            max_messages=max_in_flight,
            max_duration_per_lease_extension=self._max_lease_seconds,
        )
        scheduler = ThreadScheduler(
            ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="pubsub-queue")
        )
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the queue on {self._subscription_path} is closed")
            if self._streaming is not None:
                raise RuntimeError(f"already consuming {self._subscription_path}")
            try:
                self._streaming = self._subscriber.subscribe(
                    self._subscription_path,
                    lambda received: self._on_message(handler, received),
                    flow_control=flow_control,
                    scheduler=scheduler,
                    await_callbacks_on_shutdown=True,
                )
            except api_exceptions.GoogleAPIError as e:
                raise QueueError(f"cannot consume {self._subscription_path}: {e}") from e
            self._streaming.add_done_callback(self._on_stream_done)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop pulling, wait up to ``timeout`` for handlers in progress (their acks and
        nacks are still sent), and close the clients this queue created."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streaming, self._streaming = self._streaming, None
        if streaming is not None:
            streaming.cancel()
            try:
                streaming.result(timeout=timeout)
            except TimeoutError:
                log.warning(
                    "handlers on %s still running %.1f s after close",
                    self._subscription_path,
                    timeout,
                )
            except Exception:
                log.exception(
                    "the streaming pull on %s ended with an error", self._subscription_path
                )
        self._deferrals.close()
        if self._owns_publisher:
            self._publisher.stop()
        if self._owns_subscriber:
            self._subscriber.close()

    # -- Delivery ------------------------------------------------------------------------

    def _on_message(self, handler: MessageHandler, received: Message) -> None:
        try:
            message = decode(received.data)
        except MessageSchemaError as e:
            log.warning(
                "deferring Pub/Sub message %s on %s that this worker cannot read: %s",
                received.message_id,
                self._subscription_path,
                e,
            )
            self._defer(received, self._failure_delay)
            return
        attempt = received.delivery_attempt
        try:
            result = handler(message, attempt)
        except Exception:
            log.exception(
                "handler failed on %s (Pub/Sub message %s, attempt %s); again in %d s",
                message.request_id,
                received.message_id,
                attempt,
                self._failure_delay,
            )
            self._defer(received, self._failure_delay)
            return
        match result:
            case Ack():
                received.ack()
            case Retry(after_seconds=after) if after >= 1:
                self._defer(received, after)
            case Retry():
                # "Again now": a nack redelivers at once (or after the subscription's
                # retry backoff, when it has one).
                received.nack()
            case _:
                log.error(
                    "handler returned %r for %s, neither Ack nor Retry; nacking",
                    result,
                    message.request_id,
                )
                received.nack()

    def _defer(self, received: Message, seconds: float) -> None:
        # Pub/Sub redelivers it when the deadline passes; meanwhile it holds no thread
        # and no flow-control slot here.
        self._deferrals.defer(received, seconds)

    def _on_stream_done(self, future: StreamingPullFuture) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error(
                "the streaming pull on %s stopped; no more messages will be delivered: %s",
                self._subscription_path,
                error,
            )

    # -- Creation ------------------------------------------------------------------------

    def _ensure_topic(self, path: str) -> None:
        try:
            self._publisher.create_topic(name=path, timeout=self._timeout)
        except api_exceptions.AlreadyExists:
            return
        except api_exceptions.GoogleAPIError as e:
            raise QueueError(f"cannot create the Pub/Sub topic {path}: {e}") from e
        log.info("created Pub/Sub topic %s", path)

    def _ensure_subscription(self) -> None:
        request: dict[str, Any] = {
            "name": self._subscription_path,
            "topic": self._topic_path,
            "ack_deadline_seconds": self._ack_deadline_seconds,
        }
        if self._retry_backoff is not None:
            request["retry_policy"] = {
                "minimum_backoff": timedelta(seconds=self._retry_backoff.minimum_seconds),
                "maximum_backoff": timedelta(seconds=self._retry_backoff.maximum_seconds),
            }
        if self._dead_letter_path is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": self._dead_letter_path,
                "max_delivery_attempts": self._max_delivery_attempts,
            }
        try:
            self._subscriber.create_subscription(request=request, timeout=self._timeout)
        except api_exceptions.AlreadyExists:
            return
        except api_exceptions.GoogleAPIError as e:
            raise QueueError(
                f"cannot create the Pub/Sub subscription {self._subscription_path}: {e}"
            ) from e
        log.info("created Pub/Sub subscription %s", self._subscription_path)
