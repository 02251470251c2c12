"""What the Slack listeners are registered with, built by ``bot``'s composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from handlers.approvals import Approvals
from handlers.authz import Authz
from handlers.chat import Chat
from handlers.commands import Commands
from handlers.replays import ReplayGuard
from provisioning.store import RequestStore

# Runs a piece of work off the request thread (a bounded pool in ``bot``).
Background = Callable[[Callable[[], object]], None]


@dataclass(frozen=True)
class ListenerDeps:
    commands: Commands
    approvals: Approvals
    authz: Authz
    store: RequestStore
    chat: Chat
    background: Background
    replays: ReplayGuard
