"""A stand-in chat service for handler tests: records what the bot says, answers lookups.

``RecordingChat`` implements both ``handlers.chat.Chat`` and ``handlers.chat.Directory``.
Every post, update and ephemeral reply is kept as a ``ChatCall`` (thread-safe, since the
worker and the progress notifier's timers call it from their own threads); posts get
increasing timestamps, as Slack's do.  The directory part is configured with user groups
and emails and counts the lookups made, so tests can check what is cached.  It can be
told to fail the next posts or updates, to show that a chat outage loses nothing.
Tests read the calls back through the small query methods, and wait for background
threads with ``eventually``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from handlers.chat import ChatError
from provisioning.records import MessageRef

Kind = Literal["post", "update", "ephemeral"]
T = TypeVar("T")

WAIT_SECONDS = 5.0  # the bound on every wait for a background thread


class ChatUnavailable(ChatError):
    """What the recording chat raises when told to fail, as the Slack adapter would."""


@dataclass(frozen=True)
class ChatCall:
    kind: Kind
    channel: str
    text: str
    # post: the new message's ts; update: the ts of the message replaced; ephemeral: "".
    ts: str = ""
    thread_ts: str | None = None
    blocks: tuple[dict[str, Any], ...] | None = None
    user: str | None = None  # ephemeral replies: who sees it

    @property
    def ref(self) -> MessageRef:
        return MessageRef(channel=self.channel, ts=self.ts)

    @property
    def action_blocks(self) -> list[dict[str, Any]]:
        return [b for b in self.blocks or () if b.get("type") == "actions"]

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [e for b in self.action_blocks for e in b.get("elements", ())]


@dataclass
class RecordingChat:
    """Chat and Directory in one; configure ``groups``, ``emails`` (email -> user id)."""

    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    emails: Mapping[str, str] = field(default_factory=dict)
    calls: list[ChatCall] = field(default_factory=list)
    lookups: Counter[str] = field(default_factory=Counter)
    # Called (outside the lock) with each post or update before it is recorded: a test
    # can block or slow one down to open a race window.
    before_post: Callable[[ChatCall], None] | None = None
    before_update: Callable[[ChatCall], None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._failing_posts = 0
        self._failing_updates = 0

    # -- Chat ----------------------------------------------------------------------------

    def post(
        self,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        blocks: Sequence[dict[str, Any]] | None = None,
    ) -> MessageRef:
        with self._lock:
            if self._failing_posts:
                self._failing_posts -= 1
                raise ChatUnavailable("chat.postMessage", "service_unavailable")
            ts = f"{1_700_000_000 + next(self._ts)}.000100"
        call = ChatCall("post", channel, text, ts=ts, thread_ts=thread_ts, blocks=_frozen(blocks))
        if self.before_post is not None:
            self.before_post(call)
        with self._lock:
            self.calls.append(call)
        return call.ref

    def update(
        self, ref: MessageRef, text: str, *, blocks: Sequence[dict[str, Any]] | None = None
    ) -> None:
        with self._lock:
            if self._failing_updates:
                self._failing_updates -= 1
                raise ChatUnavailable("chat.update", "service_unavailable")
        call = ChatCall("update", ref.channel, text, ts=ref.ts, blocks=_frozen(blocks))
        if self.before_update is not None:
            self.before_update(call)
        with self._lock:
            self.calls.append(call)

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        with self._lock:
            self.calls.append(ChatCall("ephemeral", channel, text, user=user))

    # -- Directory -----------------------------------------------------------------------

    def group_members(self, handle: str) -> frozenset[str]:
        with self._lock:
            self.lookups["group_members"] += 1
        return frozenset(self.groups.get(handle, frozenset()))

    def user_for_email(self, email: str) -> str | None:
        with self._lock:
            self.lookups["user_for_email"] += 1
        return self.emails.get(email)

    def email_of(self, user: str) -> str | None:
        with self._lock:
            self.lookups["email_of"] += 1
        return next((e for e, u in self.emails.items() if u == user), None)

    # -- Failures ------------------------------------------------------------------------

    def fail_next_posts(self, count: int = 1) -> None:
        with self._lock:
            self._failing_posts = count

    def fail_next_updates(self, count: int = 1) -> None:
        with self._lock:
            self._failing_updates = count

    # -- Reading back --------------------------------------------------------------------

    def snapshot(self) -> list[ChatCall]:
        with self._lock:
            return list(self.calls)

    def posts(self, *, channel: str | None = None) -> list[ChatCall]:
        return [
            c
            for c in self.snapshot()
            if c.kind == "post" and (channel is None or c.channel == channel)
        ]

    def roots(self) -> list[ChatCall]:
        """Posts that start a thread."""
        return [c for c in self.posts() if c.thread_ts is None]

    def replies(self, thread_ts: str) -> list[ChatCall]:
        """Posts in the thread whose root has ``thread_ts``."""
        return [c for c in self.posts() if c.thread_ts == thread_ts]

    def updates(self, ref: MessageRef | None = None) -> list[ChatCall]:
        return [c for c in self.snapshot() if c.kind == "update" and (ref is None or c.ref == ref)]

    def ephemerals(self, user: str | None = None) -> list[ChatCall]:
        return [
            c for c in self.snapshot() if c.kind == "ephemeral" and (user is None or c.user == user)
        ]

    def last_ephemeral(self, user: str) -> str:
        said = self.ephemerals(user)
        assert said, f"nothing was said privately to {user}"
        return said[-1].text

    def cards(self) -> list[ChatCall]:
        """Posts that carry Approve / Deny buttons."""
        return [c for c in self.posts() if c.action_blocks]

    def current_text(self, ref: MessageRef) -> str:
        """What the message at ``ref`` says now: its post, or its latest update."""
        text = None
        for call in self.snapshot():
            if call.ref == ref and call.kind in ("post", "update"):
                text = call.text
        assert text is not None, f"no message at {ref}"
        return text

    def everything_said(self) -> str:
        """All recorded text and blocks, for checks that something never appears."""
        return "\n".join(f"{c.text}\n{c.blocks!r}" for c in self.snapshot())


def _frozen(blocks: Sequence[dict[str, Any]] | None) -> tuple[dict[str, Any], ...] | None:
    return None if blocks is None else tuple(blocks)


def eventually(
    probe: Callable[[], T | None], *, timeout: float = WAIT_SECONDS, what: str = "a condition"
) -> T:
    """Poll ``probe`` until it returns something truthy (returned), or fail at ``timeout``.

    For waiting on background threads (the queue's workers, the notifier's timers);
    never for letting time pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(0.005)
