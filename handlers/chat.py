"""What the handlers need from a chat service: post, update, answer privately, look up.

``bot`` implements ``Chat`` and ``Directory`` for Slack (Web API) and for the console
(printed text, a fixed directory); the handlers and the progress notifier use only
these protocols, so the same code serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from provisioning.records import MessageRef

Blocks = Sequence[dict[str, Any]]


class ChatError(Exception):
    """The chat service refused a call; ``code`` is its reason (``not_in_channel``...).

    Adapters translate their library's errors into this, so handlers can answer
    without knowing which chat they talk to."""

    def __init__(self, method: str, code: str) -> None:
        super().__init__(f"{method} failed: {code}")
        self.method = method
        self.code = code


class Chat(Protocol):
    def post(
        self, channel: str, text: str, *, thread_ts: str | None = None, blocks: Blocks | None = None
    ) -> MessageRef:
        """Post a message (a thread reply when ``thread_ts`` is given)."""

    def update(self, ref: MessageRef, text: str, *, blocks: Blocks | None = None) -> None:
        """Replace a message the bot posted earlier."""

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        """A reply only ``user`` sees."""


class Directory(Protocol):
    """Who is who: user groups and emails, for approver rules and IAP grants."""

    def group_members(self, handle: str) -> frozenset[str]:
        """User ids in the user group with this handle (empty when unknown)."""

    def user_for_email(self, email: str) -> str | None: ...

    def email_of(self, user: str) -> str | None: ...
