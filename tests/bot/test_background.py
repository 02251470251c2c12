"""``BackgroundPool`` with ``Foreground``: follow-ups wait for a quiet front, bounded."""

from __future__ import annotations

import threading
import time

import pytest

from bot.background import BackgroundPool, Foreground


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.naps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


def test_a_quiet_front_lets_work_start_at_once() -> None:
    clock = ManualClock()
    foreground = Foreground(clock)

    foreground.wait_until_quiet(clock.now + 1.0, quiet=0.01, sleep=clock.sleep)

    assert clock.naps == []


def test_work_waits_until_the_front_has_been_quiet_long_enough() -> None:
    clock = ManualClock()
    foreground = Foreground(clock)
    foreground.answered()
    clock.now += 0.004

    foreground.wait_until_quiet(clock.now + 1.0, quiet=0.01, sleep=clock.sleep)

    assert clock.naps == [pytest.approx(0.006, abs=1e-9)]


def test_a_front_that_never_goes_quiet_delays_work_only_until_the_deadline() -> None:
    clock = ManualClock()
    foreground = Foreground(clock)
    deadline = clock.now + 1.0

    def sleep_while_answering(seconds: float) -> None:
        clock.sleep(seconds)
        foreground.answered()  # another ack came in meanwhile

    foreground.answered()
    foreground.wait_until_quiet(deadline, quiet=0.01, sleep=sleep_while_answering)

    assert clock.now == pytest.approx(deadline, abs=1e-9)
    assert len(clock.naps) == 100


def test_the_pool_runs_work_after_the_front_goes_quiet_and_survives_failures() -> None:
    foreground = Foreground()
    pool = BackgroundPool(workers=2, foreground=foreground, quiet=0.05, max_defer=5.0)
    started: list[float] = []
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("a follow-up failed")

    def record() -> None:
        started.append(time.monotonic())
        done.set()

    foreground.answered()
    answered_at = time.monotonic()
    pool(boom)
    pool(record)

    assert done.wait(5.0)
    pool.close()
    assert started[0] - answered_at >= 0.05


def test_jobs_waiting_for_a_busy_front_run_in_order_once_it_is_quiet() -> None:
    foreground = Foreground()
    pool = BackgroundPool(workers=1, foreground=foreground, quiet=0.05, max_defer=5.0)
    ran: list[int] = []
    busy = threading.Event()

    def keep_answering() -> None:
        while not busy.wait(0.01):
            foreground.answered()

    foreground.answered()
    front = threading.Thread(target=keep_answering)
    front.start()
    for n in range(20):
        pool(lambda n=n: ran.append(n))
    time.sleep(0.2)
    assert ran == []  # the front kept answering: nothing ran meanwhile
    busy.set()
    front.join()

    pool.close()
    assert ran == list(range(20))


def test_closing_runs_what_still_waits_without_waiting_for_quiet() -> None:
    foreground = Foreground()
    pool = BackgroundPool(workers=2, foreground=foreground, quiet=60.0, max_defer=60.0)
    ran = threading.Event()
    foreground.answered()
    pool(ran.set)

    began = time.monotonic()
    pool.close()

    assert ran.is_set()
    assert time.monotonic() - began < 5.0
