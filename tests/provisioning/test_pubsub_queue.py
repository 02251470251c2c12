"""Behaviour of the Pub/Sub queue against the real client library and the emulator.

Every test gets its own topic and subscription (``pubsub_names``): the emulator keeps
sending a closed stream's messages to it, so a subscription is never reused.  Queues are
built as the bot builds them (no retry policy), with a one-second failure delay so that
failed messages come back quickly.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import pubsub_v1

from provisioning.actions import GrantAction
from provisioning.pubsub_queue import PubSubQueue, QueueError, RetryBackoff
from provisioning.queue import Ack, HandleResult, Retry
from provisioning.queue_message import QueueMessage, encode
from tests.support.pubsub_emulator import PubSubNames

WAIT = 10.0  # seconds: the bound on every wait for something that should happen
QUIET = 0.5  # seconds: how long to watch for something that should not (nack ≈ 50 ms)

MakeQueue = Callable[..., PubSubQueue]


def message(request_id: str = "kf-abc123") -> QueueMessage:
    return QueueMessage(
        request_id=request_id,
        action=GrantAction(email="ada@example.com", deployment="ml-team", project="ml-project-1"),
        approved_by="U0APPROVER",
        approved_at=datetime(2026, 11, 29, 16, 0, tzinfo=UTC),
    )


class Recorder:
    """A handler that records deliveries and answers with ``decide(message, attempt)``."""

    def __init__(
        self, decide: Callable[[QueueMessage, int | None], HandleResult] = lambda m, a: Ack()
    ) -> None:
        self.decide = decide
        self.deliveries: list[tuple[str, int | None]] = []
        self.messages: list[QueueMessage] = []
        self._cond = threading.Condition()

    def __call__(self, msg: QueueMessage, attempt: int | None) -> HandleResult:
        with self._cond:
            self.deliveries.append((msg.request_id, attempt))
            self.messages.append(msg)
            self._cond.notify_all()
        return self.decide(msg, attempt)

    def wait_for(self, count: int, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout)


@pytest.fixture
def make_queue(pubsub_names: PubSubNames) -> Iterator[MakeQueue]:
    """Build queues on this test's names (overridable), closing them all at the end."""
    queues: list[PubSubQueue] = []

    def make(**overrides: Any) -> PubSubQueue:
        arguments: dict[str, Any] = {
            "project": pubsub_names.project,
            "topic": pubsub_names.topic,
            "subscription": pubsub_names.subscription,
            "max_lease_seconds": 10,
            "failure_delay_seconds": 1,
        }
        arguments.update(overrides)
        queue = PubSubQueue(**arguments)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.close(timeout=WAIT)


@pytest.fixture
def raw_publisher(pubsub_emulator: str) -> Iterator[pubsub_v1.PublisherClient]:
    publisher = pubsub_v1.PublisherClient()
    yield publisher
    publisher.stop()


@pytest.fixture
def admin(pubsub_emulator: str) -> Iterator[pubsub_v1.SubscriberClient]:
    subscriber = pubsub_v1.SubscriberClient()
    yield subscriber
    subscriber.close()


def test_a_published_message_reaches_the_handler_unchanged(make_queue: MakeQueue) -> None:
    queue = make_queue()
    recorder = Recorder()
    queue.consume(recorder, max_in_flight=1)

    queue.publish(message())

    assert recorder.wait_for(1)
    assert recorder.messages == [message()]


def test_topic_and_subscription_are_created_when_missing_with_the_given_settings(
    make_queue: MakeQueue,
    pubsub_names: PubSubNames,
    raw_publisher: pubsub_v1.PublisherClient,
    admin: pubsub_v1.SubscriberClient,
) -> None:
    queue = make_queue(
        ack_deadline_seconds=42,
        retry_backoff=RetryBackoff(minimum_seconds=5, maximum_seconds=60),
        dead_letter_topic=pubsub_names.dead_letter_topic,
        max_delivery_attempts=7,
    )

    topic = raw_publisher.get_topic(topic=queue.topic_path)
    subscription = admin.get_subscription(subscription=queue.subscription_path)
    dead_letters = raw_publisher.get_topic(
        topic=raw_publisher.topic_path(pubsub_names.project, pubsub_names.dead_letter_topic)
    )
    assert topic.name.endswith(f"/topics/{pubsub_names.topic}")
    assert dead_letters.name.endswith(f"/topics/{pubsub_names.dead_letter_topic}")
    assert subscription.topic == queue.topic_path
    assert subscription.ack_deadline_seconds == 42
    assert subscription.retry_policy.minimum_backoff.total_seconds() == 5
    assert subscription.retry_policy.maximum_backoff.total_seconds() == 60
    assert subscription.dead_letter_policy.dead_letter_topic == dead_letters.name
    assert subscription.dead_letter_policy.max_delivery_attempts == 7


def test_a_second_queue_on_existing_topic_and_subscription_shares_them(
    make_queue: MakeQueue,
) -> None:
    consumer = make_queue()
    publisher = make_queue()
    recorder = Recorder()
    consumer.consume(recorder, max_in_flight=1)

    publisher.publish(message())

    assert recorder.wait_for(1)
    assert recorder.deliveries == [("kf-abc123", None)]


def test_an_acked_message_is_not_delivered_again_while_a_retried_one_is(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    retried_once = threading.Event()

    def decide(msg: QueueMessage, attempt: int | None) -> HandleResult:
        if msg.request_id == "kf-retry1" and not retried_once.is_set():
            retried_once.set()
            return Retry(0)
        return Ack()

    recorder = Recorder(decide)
    queue.consume(recorder, max_in_flight=2)

    queue.publish(message("kf-acked1"))
    queue.publish(message("kf-retry1"))

    assert recorder.wait_for(3)
    assert not recorder.wait_for(4, timeout=QUIET)
    assert sorted(recorder.deliveries) == [
        ("kf-acked1", None),
        ("kf-retry1", None),
        ("kf-retry1", None),
    ]


def test_retry_delivers_again_with_attempts_counted_under_a_dead_letter_policy(
    make_queue: MakeQueue, pubsub_names: PubSubNames
) -> None:
    queue = make_queue(dead_letter_topic=pubsub_names.dead_letter_topic)
    recorder = Recorder(lambda m, attempt: Retry(0) if attempt and attempt < 3 else Ack())
    queue.consume(recorder, max_in_flight=1)

    queue.publish(message())

    assert recorder.wait_for(3)
    assert not recorder.wait_for(4, timeout=QUIET)
    assert recorder.deliveries == [("kf-abc123", 1), ("kf-abc123", 2), ("kf-abc123", 3)]


def test_repeated_deferrals_each_come_back_after_their_own_delay(make_queue: MakeQueue) -> None:
    # A retry policy on the subscription would stretch each one (10 s, then more).
    queue = make_queue()
    arrivals: list[float] = []

    def defer_four_times(msg: QueueMessage, attempt: int | None) -> HandleResult:
        arrivals.append(time.monotonic())
        return Retry(1) if len(arrivals) < 5 else Ack()

    recorder = Recorder(defer_four_times)
    queue.consume(recorder, max_in_flight=1)
    queue.publish(message())

    assert recorder.wait_for(5, timeout=20)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(0.9 <= gap < 5 for gap in gaps), gaps


def test_a_message_whose_handler_raises_is_logged_and_delivered_again(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()
    failed = threading.Event()

    def fail_first(msg: QueueMessage, attempt: int | None) -> HandleResult:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("the cloud is on fire")
        return Ack()

    recorder = Recorder(fail_first)
    queue.consume(recorder, max_in_flight=1)

    with caplog.at_level(logging.ERROR, logger="provisioning.pubsub_queue"):
        queue.publish(message())
        assert recorder.wait_for(2)

    assert not recorder.wait_for(3, timeout=QUIET)
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    assert "kf-abc123" in failures[0].getMessage()
    assert isinstance(failures[0].exc_info[1], RuntimeError)  # type: ignore[index]


def test_a_message_of_an_unknown_schema_never_reaches_the_handler_and_others_still_do(
    make_queue: MakeQueue,
    raw_publisher: pubsub_v1.PublisherClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = make_queue()
    recorder = Recorder()
    queue.consume(recorder, max_in_flight=1)
    future_version = {**json.loads(encode(message("kf-future"))), "schema_version": 99}

    with caplog.at_level(logging.WARNING, logger="provisioning.pubsub_queue"):
        raw_publisher.publish(queue.topic_path, json.dumps(future_version).encode()).result(WAIT)
        queue.publish(message("kf-good01"))
        assert recorder.wait_for(1)
        assert not recorder.wait_for(2, timeout=QUIET)

    assert recorder.deliveries == [("kf-good01", None)]
    assert "schema_version 99" in caplog.text


def test_an_unreadable_message_ends_on_the_dead_letter_topic_after_the_last_attempt(
    make_queue: MakeQueue,
    pubsub_names: PubSubNames,
    raw_publisher: pubsub_v1.PublisherClient,
    admin: pubsub_v1.SubscriberClient,
) -> None:
    queue = make_queue(dead_letter_topic=pubsub_names.dead_letter_topic, max_delivery_attempts=5)
    dead_letters = admin.subscription_path(pubsub_names.project, f"{pubsub_names.subscription}-dl")
    admin.create_subscription(
        name=dead_letters,
        topic=raw_publisher.topic_path(pubsub_names.project, pubsub_names.dead_letter_topic),
    )
    dead: list[bytes] = []
    arrived = threading.Event()

    def on_dead_letter(received: Any) -> None:
        dead.append(received.data)
        received.ack()
        arrived.set()

    watcher = admin.subscribe(dead_letters, on_dead_letter)
    recorder = Recorder()
    queue.consume(recorder, max_in_flight=1)
    try:
        raw_publisher.publish(queue.topic_path, b"not json at all").result(WAIT)
        assert arrived.wait(WAIT)
    finally:
        watcher.cancel()
        watcher.result(WAIT)

    assert dead == [b"not json at all"]
    assert recorder.deliveries == []


def test_never_more_handlers_run_at_once_than_max_in_flight(make_queue: MakeQueue) -> None:
    queue = make_queue()
    running = 0
    most = 0
    lock = threading.Lock()
    two_running = threading.Event()
    over_limit = threading.Event()
    release = threading.Event()
    recorder = Recorder()

    def handler(msg: QueueMessage, attempt: int | None) -> HandleResult:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            if running == 2:
                two_running.set()
            if running > 2:
                over_limit.set()
        release.wait(WAIT)
        with lock:
            running -= 1
        return recorder(msg, attempt)

    queue.consume(handler, max_in_flight=2)
    for n in range(8):
        queue.publish(message(f"kf-flow0{n}"))

    assert two_running.wait(WAIT)
    assert not over_limit.wait(QUIET)
    release.set()
    assert recorder.wait_for(8)
    assert most == 2
    assert sorted(request_id for request_id, _ in recorder.deliveries) == [
        f"kf-flow0{n}" for n in range(8)
    ]


def test_close_waits_for_the_handler_in_progress_then_delivers_no_more(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    other = make_queue()
    started = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def slow(msg: QueueMessage, attempt: int | None) -> HandleResult:
        started.set()
        release.wait(WAIT)
        finished.append(msg.request_id)
        return Ack()

    queue.consume(slow, max_in_flight=1)
    queue.publish(message("kf-first1"))
    assert started.wait(WAIT)

    def close_then_note() -> None:
        queue.close(timeout=WAIT)
        finished.append("closed")

    closer = threading.Thread(target=close_then_note)
    closer.start()
    closer.join(QUIET)
    assert closer.is_alive()  # close() is waiting for the handler in hand
    release.set()
    closer.join(WAIT)
    other.publish(message("kf-after1"))

    assert not closer.is_alive()
    assert finished == ["kf-first1", "closed"]
    started.clear()
    assert not started.wait(QUIET)
    assert finished == ["kf-first1", "closed"]


def test_close_returns_promptly_when_nothing_is_in_hand(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.consume(Recorder(), max_in_flight=1)

    began = time.monotonic()
    queue.close(timeout=WAIT)

    assert time.monotonic() - began < 2.0


def test_publish_after_close_raises_queue_error(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.close()

    with pytest.raises(QueueError, match="closed"):
        queue.publish(message())


def test_publish_to_a_deleted_topic_raises_queue_error_chained_to_the_library_error(
    make_queue: MakeQueue, raw_publisher: pubsub_v1.PublisherClient
) -> None:
    queue = make_queue()
    raw_publisher.delete_topic(topic=queue.topic_path)

    with pytest.raises(QueueError, match="kf-abc123") as raised:
        queue.publish(message())

    assert raised.value.__cause__ is not None


def test_a_subscription_that_cannot_be_created_raises_queue_error(
    make_queue: MakeQueue,
) -> None:
    with pytest.raises(QueueError, match="subscription") as raised:
        make_queue(subscription="goog-reserved-prefix")

    assert raised.value.__cause__ is not None


@pytest.mark.parametrize("seconds", [9, 601])
def test_a_lease_extension_outside_what_pubsub_allows_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match="max_lease_seconds"):
        PubSubQueue("p", "t", "s", max_lease_seconds=seconds)


def test_a_deferred_message_comes_back_after_its_delay_and_frees_its_slot_meanwhile(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    arrivals: dict[str, list[float]] = {}

    def decide(msg: QueueMessage, attempt: int | None) -> HandleResult:
        seen = arrivals.setdefault(msg.request_id, [])
        seen.append(time.monotonic())
        # The first request waits on the cloud once: look again in 12 s.
        return Retry(12) if msg.request_id == "kf-later1" and len(seen) == 1 else Ack()

    recorder = Recorder(decide)
    queue.consume(recorder, max_in_flight=1)

    queue.publish(message("kf-later1"))
    assert recorder.wait_for(1)
    queue.publish(message("kf-other1"))
    # With one slot, the other request is handled while the first one waits.
    assert recorder.wait_for(2, timeout=5)
    assert recorder.deliveries[1][0] == "kf-other1"
    assert recorder.wait_for(3, timeout=40)

    first, again = arrivals["kf-later1"]
    assert 10 <= again - first < 30
