"""Behaviour of the embedded queue: delivery, flow control, retries, join and close."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning.actions import GrantAction
from provisioning.inprocess_queue import InProcessQueue, error_backoff
from provisioning.queue import Ack, HandleResult, Retry
from provisioning.queue_message import QueueMessage

WAIT = 5.0  # seconds: the bound on every wait for something that should happen
QUIET = 0.2  # seconds: how long to watch for something that should not happen


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
        self.times: list[float] = []
        self._cond = threading.Condition()

    def __call__(self, msg: QueueMessage, attempt: int | None) -> HandleResult:
        with self._cond:
            self.deliveries.append((msg.request_id, attempt))
            self.messages.append(msg)
            self.times.append(time.monotonic())
            self._cond.notify_all()
        return self.decide(msg, attempt)

    def wait_for(self, count: int, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout)


@pytest.fixture
def queue() -> Iterator[InProcessQueue]:
    q = InProcessQueue(backoff=lambda attempt: 0.01)
    yield q
    q.close(timeout=WAIT)


def test_a_published_message_reaches_the_handler_unchanged_on_attempt_one(
    queue: InProcessQueue,
) -> None:
    recorder = Recorder()
    queue.consume(recorder, max_in_flight=1)

    queue.publish(message())

    assert recorder.wait_for(1)
    assert recorder.messages == [message()]
    assert recorder.deliveries == [("kf-abc123", 1)]


def test_messages_published_before_consume_are_delivered_once_it_starts(
    queue: InProcessQueue,
) -> None:
    queue.publish(message("kf-aaaaaa"))
    queue.publish(message("kf-bbbbbb"))
    recorder = Recorder()

    queue.consume(recorder, max_in_flight=1)

    assert recorder.wait_for(2)
    assert recorder.deliveries == [("kf-aaaaaa", 1), ("kf-bbbbbb", 1)]


def test_an_acked_message_is_not_delivered_again(queue: InProcessQueue) -> None:
    recorder = Recorder()
    queue.consume(recorder, max_in_flight=2)

    queue.publish(message())

    assert queue.join(WAIT)
    assert not recorder.wait_for(2, timeout=QUIET)
    assert recorder.deliveries == [("kf-abc123", 1)]


def test_never_more_handlers_run_at_once_than_max_in_flight(queue: InProcessQueue) -> None:
    running = 0
    most = 0
    lock = threading.Lock()
    two_running = threading.Event()
    over_limit = threading.Event()
    release = threading.Event()

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
        return Ack()

    queue.consume(handler, max_in_flight=2)
    for n in range(8):
        queue.publish(message(f"kf-flow0{n}"))

    assert two_running.wait(WAIT)
    assert not over_limit.wait(QUIET)
    release.set()
    assert queue.join(WAIT)
    assert most == 2


def test_retry_delivers_again_with_the_attempt_counted_up(queue: InProcessQueue) -> None:
    recorder = Recorder(lambda m, attempt: Retry(0.01) if attempt and attempt < 3 else Ack())
    queue.consume(recorder, max_in_flight=1)

    queue.publish(message())

    assert queue.join(WAIT)
    assert recorder.deliveries == [("kf-abc123", 1), ("kf-abc123", 2), ("kf-abc123", 3)]


def test_retry_waits_about_its_delay_before_delivering_again(queue: InProcessQueue) -> None:
    recorder = Recorder(lambda m, attempt: Retry(0.05) if attempt == 1 else Ack())
    queue.consume(recorder, max_in_flight=2)

    queue.publish(message())

    assert queue.join(WAIT)
    first, second = recorder.times
    assert second - first >= 0.05


def test_a_retry_far_in_the_future_does_not_hold_up_other_messages(
    queue: InProcessQueue,
) -> None:
    recorder = Recorder(lambda m, a: Retry(3600) if m.request_id == "kf-later1" else Ack())
    queue.consume(recorder, max_in_flight=1)

    queue.publish(message("kf-later1"))
    queue.publish(message("kf-now001"))

    assert recorder.wait_for(2)
    assert recorder.deliveries == [("kf-later1", 1), ("kf-now001", 1)]
    assert not queue.join(QUIET)


def test_a_message_whose_handler_raises_is_logged_and_delivered_again(
    queue: InProcessQueue, caplog: pytest.LogCaptureFixture
) -> None:
    def fail_first(msg: QueueMessage, attempt: int | None) -> HandleResult:
        if attempt == 1:
            raise RuntimeError("the cloud is on fire")
        return Ack()

    recorder = Recorder(fail_first)
    queue.consume(recorder, max_in_flight=1)

    with caplog.at_level(logging.ERROR, logger="provisioning.inprocess_queue"):
        queue.publish(message())
        assert queue.join(WAIT)

    assert recorder.deliveries == [("kf-abc123", 1), ("kf-abc123", 2)]
    [record] = caplog.records
    assert "kf-abc123" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_a_handler_returning_neither_ack_nor_retry_gets_the_message_again(
    queue: InProcessQueue, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(lambda m, attempt: None if attempt == 1 else Ack())  # type: ignore[arg-type,return-value]
    queue.consume(recorder, max_in_flight=1)

    with caplog.at_level(logging.ERROR, logger="provisioning.inprocess_queue"):
        queue.publish(message())
        assert queue.join(WAIT)

    assert recorder.deliveries == [("kf-abc123", 1), ("kf-abc123", 2)]
    assert "neither Ack nor Retry" in caplog.text


def test_errors_back_off_exponentially_up_to_five_seconds() -> None:
    assert error_backoff(1) == pytest.approx(0.1)
    assert error_backoff(2) == pytest.approx(0.2)
    assert error_backoff(6) == pytest.approx(3.2)
    assert error_backoff(7) == 5.0
    assert error_backoff(10_000) == 5.0


def test_the_backoff_is_asked_with_the_number_of_the_failed_attempt() -> None:
    failed_attempts: list[int] = []

    def backoff(attempt: int) -> float:
        failed_attempts.append(attempt)
        return 0.0

    queue = InProcessQueue(backoff=backoff)

    def fail_twice(msg: QueueMessage, attempt: int | None) -> HandleResult:
        if attempt is not None and attempt < 3:
            raise RuntimeError("not yet")
        return Ack()

    queue.consume(fail_twice, max_in_flight=1)
    queue.publish(message())
    try:
        assert queue.join(WAIT)
    finally:
        queue.close(WAIT)
    assert failed_attempts == [1, 2]


def test_join_returns_at_once_when_nothing_was_published(queue: InProcessQueue) -> None:
    assert queue.join(0)


def test_join_times_out_while_nobody_consumes(queue: InProcessQueue) -> None:
    queue.publish(message())

    assert not queue.join(QUIET)


def test_join_waits_for_a_handler_in_progress(queue: InProcessQueue) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(msg: QueueMessage, attempt: int | None) -> HandleResult:
        started.set()
        release.wait(WAIT)
        return Ack()

    queue.consume(slow, max_in_flight=1)
    queue.publish(message())
    assert started.wait(WAIT)

    assert not queue.join(QUIET)
    release.set()
    assert queue.join(WAIT)


def test_join_without_timeout_returns_once_the_work_is_done(queue: InProcessQueue) -> None:
    recorder = Recorder(lambda m, attempt: Retry(0.01) if attempt == 1 else Ack())
    queue.consume(recorder, max_in_flight=2)
    queue.publish(message())
    finished = threading.Event()

    def join_then_signal() -> None:
        if queue.join():
            finished.set()

    joiner = threading.Thread(target=join_then_signal, daemon=True)

    joiner.start()

    assert finished.wait(WAIT)
    assert len(recorder.deliveries) == 2


def test_close_waits_for_the_message_in_hand_and_delivers_no_more() -> None:
    queue = InProcessQueue()
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
    queue.publish(message("kf-second"))
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

    assert not closer.is_alive()
    assert finished == ["kf-first1", "closed"]


def test_close_gives_up_on_a_stuck_handler_after_its_timeout() -> None:
    queue = InProcessQueue()
    started = threading.Event()
    release = threading.Event()

    def stuck(msg: QueueMessage, attempt: int | None) -> HandleResult:
        started.set()
        release.wait(WAIT)
        return Ack()

    queue.consume(stuck, max_in_flight=1)
    queue.publish(message())
    assert started.wait(WAIT)

    began = time.monotonic()
    queue.close(timeout=0.05)
    took = time.monotonic() - began
    release.set()

    assert took < 1.0


def test_a_scheduled_retry_is_not_delivered_after_close() -> None:
    queue = InProcessQueue()
    recorder = Recorder(lambda m, a: Retry(0.05))
    queue.consume(recorder, max_in_flight=1)
    queue.publish(message())
    assert recorder.wait_for(1)

    queue.close(WAIT)

    assert not recorder.wait_for(2, timeout=QUIET)


def test_publish_after_close_is_refused() -> None:
    queue = InProcessQueue()
    queue.close(WAIT)

    with pytest.raises(RuntimeError, match="closed"):
        queue.publish(message())


def test_consuming_twice_is_refused(queue: InProcessQueue) -> None:
    queue.consume(Recorder(), max_in_flight=1)

    with pytest.raises(RuntimeError, match="already"):
        queue.consume(Recorder(), max_in_flight=1)


def test_max_in_flight_below_one_is_refused(queue: InProcessQueue) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        queue.consume(Recorder(), max_in_flight=0)


def test_worker_threads_are_daemons_so_they_never_hold_up_exit(queue: InProcessQueue) -> None:
    queue.consume(Recorder(), max_in_flight=3)

    workers = [t for t in threading.enumerate() if t.name.startswith("inprocess-queue-")]

    assert len(workers) >= 3
    assert all(t.daemon for t in workers)


# What the handler does on each delivery of one message before it finally acks it.
Outcome = st.sampled_from(["retry", "raise"])


@settings(max_examples=25, deadline=None)
@given(
    plans=st.lists(st.lists(Outcome, max_size=4), min_size=1, max_size=4),
    max_in_flight=st.integers(min_value=1, max_value=3),
)
def test_every_message_is_delivered_until_acked_with_attempts_counting_from_one(
    plans: list[list[str]], max_in_flight: int
) -> None:
    ids = [f"kf-plan0{n}" for n in range(len(plans))]
    plan_of = dict(zip(ids, plans, strict=True))

    def follow_plan(msg: QueueMessage, attempt: int | None) -> HandleResult:
        assert attempt is not None
        plan = plan_of[msg.request_id]
        step = plan[attempt - 1] if attempt <= len(plan) else "ack"
        if step == "raise":
            raise RuntimeError("planned failure")
        return Retry(0.0) if step == "retry" else Ack()

    recorder = Recorder(follow_plan)
    queue = InProcessQueue(backoff=lambda attempt: 0.0)
    try:
        queue.consume(recorder, max_in_flight=max_in_flight)
        for request_id in ids:
            queue.publish(message(request_id))
        assert queue.join(WAIT)
    finally:
        queue.close(WAIT)

    for request_id, plan in plan_of.items():
        attempts = [a for rid, a in recorder.deliveries if rid == request_id]
        assert attempts == list(range(1, len(plan) + 2))
