"""The timer thread runs callbacks in time order on one thread, and stops cleanly."""

from __future__ import annotations

import threading
import time

from provisioning.timers import TimerThread

WAIT = 5.0


def test_callbacks_run_in_the_order_of_their_times_not_of_scheduling() -> None:
    timer = TimerThread("test-timer")
    ran: list[str] = []
    done = threading.Event()
    try:
        timer.call_later(0.3, lambda: (ran.append("late"), done.set()))
        timer.call_later(0.1, lambda: ran.append("early"))
        timer.call_later(0.2, lambda: ran.append("middle"))
        assert done.wait(WAIT)
    finally:
        timer.close()

    assert ran == ["early", "middle", "late"]


def test_a_callback_does_not_run_before_its_delay() -> None:
    timer = TimerThread("test-timer")
    ran_at: list[float] = []
    done = threading.Event()
    began = time.monotonic()
    try:
        timer.call_later(0.25, lambda: (ran_at.append(time.monotonic()), done.set()))
        assert done.wait(WAIT)
    finally:
        timer.close()

    assert ran_at[0] - began >= 0.25


def test_a_cancelled_call_never_runs() -> None:
    timer = TimerThread("test-timer")
    ran: list[str] = []
    done = threading.Event()
    try:
        timer.call_later(0.1, lambda: ran.append("cancelled")).cancel()
        timer.call_later(0.2, done.set)
        assert done.wait(WAIT)
    finally:
        timer.close()

    assert ran == []


def test_a_failing_callback_does_not_stop_the_others() -> None:
    timer = TimerThread("test-timer")
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    try:
        timer.call_later(0.05, fail)
        timer.call_later(0.1, done.set)
        assert done.wait(WAIT)
    finally:
        timer.close()


def test_many_pending_calls_take_one_thread() -> None:
    timer = TimerThread("test-timer-many")
    try:
        for _ in range(500):
            timer.call_later(60, lambda: None)
        assert sum(t.name == "test-timer-many" for t in threading.enumerate()) == 1
    finally:
        timer.close()
    assert not any(t.name == "test-timer-many" for t in threading.enumerate())


def test_closing_runs_pending_calls_only_when_asked_and_refuses_new_ones() -> None:
    kept, dropped = TimerThread("test-timer"), TimerThread("test-timer")
    ran: list[str] = []
    kept.call_later(60, lambda: ran.append("kept"))
    dropped.call_later(60, lambda: ran.append("dropped"))

    kept.close(run_pending=True)
    dropped.close()
    kept.call_later(0, lambda: ran.append("after close"))

    assert ran == ["kept"]
