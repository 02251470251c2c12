"""Deferrals set a message's deadline when asked and once more a moment later."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from provisioning.pubsub_deferrals import RENEWAL_SECONDS, SECOND_SETTING_AFTER, Deferrals

WAIT = 5.0


@dataclass
class ReceivedMessage:
    """Records what is done to it, with the time, as a Pub/Sub message would be told."""

    calls: list[tuple[str, int | None, float]] = field(default_factory=list)
    second: threading.Event = field(default_factory=threading.Event)

    def drop(self) -> None:
        self.calls.append(("drop", None, time.monotonic()))

    def modify_ack_deadline(self, seconds: int) -> None:
        self.calls.append(("modack", seconds, time.monotonic()))
        if len(self.calls) == 3:
            self.second.set()


def test_a_deferred_message_is_dropped_then_given_its_deadline_twice() -> None:
    deferrals = Deferrals()
    message = ReceivedMessage()
    try:
        deferrals.defer(message, 3)
        assert message.second.wait(WAIT)
    finally:
        deferrals.close()

    assert [(name, seconds) for name, seconds, _ in message.calls] == [
        ("drop", None),
        ("modack", 3),
        ("modack", 3),  # 2.9 s left, in whole seconds
    ]
    assert message.calls[2][2] - message.calls[1][2] >= SECOND_SETTING_AFTER * 0.9


def test_a_deferral_at_least_as_long_as_a_lease_renewal_is_set_once() -> None:
    deferrals = Deferrals()
    message = ReceivedMessage()
    try:
        deferrals.defer(message, RENEWAL_SECONDS)
        time.sleep(SECOND_SETTING_AFTER * 3)
    finally:
        deferrals.close()

    assert [(name, seconds) for name, seconds, _ in message.calls] == [
        ("drop", None),
        ("modack", RENEWAL_SECONDS),
    ]


def test_deferrals_are_kept_between_one_second_and_ten_minutes() -> None:
    deferrals = Deferrals()
    short, long = ReceivedMessage(), ReceivedMessage()
    try:
        deferrals.defer(short, 0.2)
        deferrals.defer(long, 3600)
        assert short.second.wait(WAIT)
    finally:
        deferrals.close()

    assert [seconds for _, seconds, _ in short.calls[1:]] == [1, 1]
    assert [seconds for _, seconds, _ in long.calls[1:]] == [600]


def test_closing_sets_the_deadlines_still_due_at_once_and_stops_its_thread() -> None:
    deferrals = Deferrals()
    messages = [ReceivedMessage() for _ in range(20)]
    for message in messages:
        deferrals.defer(message, 5)

    deferrals.close()

    assert all(len(m.calls) == 3 for m in messages)
    assert not any(t.name == "pubsub-deferrals" for t in threading.enumerate())


def test_one_thread_serves_every_deferral() -> None:
    deferrals = Deferrals()
    messages = [ReceivedMessage() for _ in range(200)]
    try:
        for message in messages:
            deferrals.defer(message, 5)
        assert sum(t.name == "pubsub-deferrals" for t in threading.enumerate()) == 1
        assert all(m.second.wait(WAIT) for m in messages)
    finally:
        deferrals.close()
