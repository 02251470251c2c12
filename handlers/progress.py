"""The chat side of provisioning's ``Notifier``: one status message per request.

``bot`` builds it with the chat adapter and hands it to the worker.  The first report of
a create or delete posts the checklist in the request's thread and remembers the
message in the record; later ones redraw that message in place, at most once per
``min_interval`` seconds per request, the latest state always winning.  Slack limits
``chat.update`` per workspace (Tier 3, about 50 a minute), so with many requests in
flight each one's redraws are spaced further apart, sharing ``UPDATES_PER_MINUTE``.
The held-back redraws wait on one timer thread and are drawn by a few threads of their
own (``REDRAW_THREADS``), however many requests are in flight.
Success and failure redraw at once and reply in the thread, mentioning the requester.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from handlers import messages
from handlers.chat import Chat
from provisioning.actions import CreateAction, DeleteAction
from provisioning.records import RequestRecord, StepReport, StepStatus
from provisioning.store import RequestStore
from provisioning.timers import Scheduled, TimerThread

log = logging.getLogger(__name__)

# Redraws are Slack calls, which a rate limit can hold for seconds: off the timer thread,
# and a few at a time so one slow request does not hold up the others.
REDRAW_THREADS = 4
# The redraws of all status messages together, a minute: under Slack's Tier 3 (50+).
UPDATES_PER_MINUTE = 50
# A request not heard of for this long no longer counts as in flight (another worker
# may have finished it).
IN_FLIGHT_SECONDS = 600.0


class ChatNotifier:
    def __init__(
        self,
        chat: Chat,
        store: RequestStore,
        clock: Callable[[], datetime],
        *,
        min_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chat = chat
        self._store = store
        self._clock = clock
        self._interval = min_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last_drawn: dict[str, float] = {}
        self._latest: dict[str, RequestRecord] = {}
        # Requests in flight: when each was last reported.
        self._heard: dict[str, float] = {}
        self._timers: dict[str, Scheduled] = {}
        self._timer = TimerThread("status-redraws")
        self._redraws = ThreadPoolExecutor(REDRAW_THREADS, thread_name_prefix="status-redraw")
        # Requests whose final state is drawn; a late timer must not redraw them.
        self._finished: set[str] = set()
        self._draw_locks: dict[str, threading.Lock] = {}
        self._step_status: dict[tuple[str, str], StepStatus] = {}

    @staticmethod
    def _has_checklist(record: RequestRecord) -> bool:
        return isinstance(record.action, CreateAction | DeleteAction)

    def progress(self, record: RequestRecord) -> None:
        if not self._has_checklist(record):
            return
        for step in self._milestones_reached(record):
            self._chat.post(
                record.channel, messages.milestone(record, step), thread_ts=record.thread_ts
            )
        with self._lock:
            # A redelivered request that runs again starts a fresh round of updates.
            self._finished.discard(record.id)
            self._latest[record.id] = record
            now = self._monotonic()
            self._heard[record.id] = now
            wait = self._spacing(now) - (now - self._last_drawn.get(record.id, -1e9))
            if wait > 0:
                if record.id not in self._timers:
                    self._timers[record.id] = self._timer.call_later(
                        wait, lambda: self._hand_over(record.id)
                    )
                return
        self._draw(record)

    def _spacing(self, now: float) -> float:
        """Seconds between two redraws of one status message: ``min_interval``, or more
        when the requests in flight would together exceed Slack's budget."""
        for request_id, heard in list(self._heard.items()):
            if now - heard > IN_FLIGHT_SECONDS:
                del self._heard[request_id]
        # A request alone keeps ``min_interval``; Slack allows short bursts.
        others = len(self._heard) - 1
        return max(self._interval, others * 60.0 / UPDATES_PER_MINUTE)

    def _milestones_reached(self, record: RequestRecord) -> list[StepReport]:
        """Milestone steps seen finishing in this process (not ones found done already,
        after a restart, nor planned ones on a dry run): each is announced once."""
        reached = []
        with self._lock:
            for step in record.steps:
                key = (record.id, step.name)
                before = self._step_status.get(key)
                self._step_status[key] = step.status
                if (
                    step.name in messages.MILESTONES
                    and step.status is StepStatus.DONE
                    and before in (StepStatus.PENDING, StepStatus.RUNNING)
                ):
                    reached.append(step)
        return reached

    def _hand_over(self, request_id: str) -> None:
        # On the timer thread: the Slack call is for a redraw thread.
        self._redraws.submit(self._flush, request_id)

    def _flush(self, request_id: str) -> None:
        with self._lock:
            self._timers.pop(request_id, None)
            record = self._latest.get(request_id)
            if request_id in self._finished:
                return
        if record is not None:
            self._draw(record)

    def _draw_lock(self, request_id: str) -> threading.Lock:
        with self._lock:
            return self._draw_locks.setdefault(request_id, threading.Lock())

    def _draw(self, record: RequestRecord, *, final: bool = False) -> None:
        # One drawer at a time per request, from reading the stored message reference to
        # storing it: otherwise a timer redraw racing the first post posts a second
        # status message, or lands after the final state and hides it.
        with self._draw_lock(record.id):
            with self._lock:
                if record.id in self._finished and not final:
                    return
                self._last_drawn[record.id] = self._monotonic()
            text = messages.checklist(record)
            current = self._store.get(record.id)
            ref = current.status_message if current else record.status_message
            if ref is None:
                ref = self._chat.post(record.channel, text, thread_ts=record.thread_ts)
                self._store.update(record.id, changes={"status_message": ref}, at=self._clock())
            else:
                self._chat.update(ref, text)

    def _finish(self, record: RequestRecord, reply: str) -> None:
        with self._lock:
            timer = self._timers.pop(record.id, None)
            self._latest.pop(record.id, None)
            self._heard.pop(record.id, None)
            self._finished.add(record.id)
        if timer is not None:
            timer.cancel()
        if self._has_checklist(record):
            self._draw(record, final=True)
        with self._lock:
            self._last_drawn.pop(record.id, None)
            self._draw_locks.pop(record.id, None)
            for step in record.steps:
                self._step_status.pop((record.id, step.name), None)
        self._chat.post(record.channel, reply, thread_ts=record.thread_ts)

    def close(self) -> None:
        """Stop the timer (redraws still held back are dropped: the final state is drawn
        by whichever worker finishes the request) and wait for redraws under way."""
        self._timer.close()
        self._redraws.shutdown(wait=True)

    def succeeded(self, record: RequestRecord, *, dry_run: bool) -> None:
        self._finish(record, messages.succeeded_reply(record, dry_run=dry_run))

    def failed(self, record: RequestRecord, *, reason: str, will_retry: bool) -> None:
        self._finish(record, messages.failed_reply(record, reason, will_retry=will_retry))
