"""What the handlers are built with, gathered by ``bot``'s composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from handlers.authz import Authz
from handlers.chat import Chat, Directory
from handlers.policy import Policy
from provisioning.ids import IdFactory
from provisioning.queue import Queue
from provisioning.store import RequestStore


@dataclass(frozen=True)
class Deps:
    policy: Policy
    store: RequestStore
    queue: Queue
    chat: Chat
    directory: Directory
    authz: Authz
    clock: Callable[[], datetime]
    new_id: IdFactory
