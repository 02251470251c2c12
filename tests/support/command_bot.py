"""The ``/kubeflow`` command side wired on real pieces, for the handler tests.

``new_bot`` builds the real ``Commands`` and ``Approvals`` over a real SQLite store and
the real in-process queue, consumed by real ``Worker``s; only the chat service (a
``RecordingChat``) and the clock are stand-ins.  Which worker takes a message is the
caller's choice: by default one on the dry-run cloud.  Used by
``tests/handlers/test_commands.py`` and ``tests/handlers/test_access_commands.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from handlers.approvals import Approvals
from handlers.authz import Authz
from handlers.commands import Commands
from handlers.deps import Deps
from handlers.policy import Policy
from handlers.progress import ChatNotifier
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.ids import RequestId
from provisioning.inprocess_queue import InProcessQueue
from provisioning.queue import HandleResult
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State
from provisioning.sqlite_store import open_store
from provisioning.store import RequestStore
from provisioning.worker import Worker
from tests.support.clocks import FakeClock
from tests.support.recording_chat import WAIT_SECONDS, RecordingChat

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEAM = "C0TEAM"
APPROVER = "U_APPROVER"
OWNER = "U_ALICE"


@dataclass
class Bot:
    chat: RecordingChat
    store: RequestStore
    queue: InProcessQueue
    clock: FakeClock
    approvals: Approvals
    commands: Commands
    delivered: list[QueueMessage] = field(default_factory=list)

    def run(self, user: str, text: str, channel: str = TEAM) -> str:
        """Type ``/kubeflow text``; returns the last private answer to ``user`` (or "")."""
        before = len(self.chat.ephemerals(user))
        self.commands.handle(user, channel, text)
        said = self.chat.ephemerals(user)
        return said[-1].text if len(said) > before else ""

    def new_records(self, user: str, text: str, channel: str = TEAM) -> list[RequestRecord]:
        before = {r.id for r in self.store.list()}
        self.commands.handle(user, channel, text)
        return [r for r in self.store.list() if r.id not in before]

    def file(self, user: str, text: str, channel: str = TEAM) -> RequestRecord:
        new = self.new_records(user, text, channel)
        assert len(new) == 1, self.chat.ephemerals(user)
        return new[0]

    def record(self, request_id: str) -> RequestRecord:
        record = self.store.get(request_id)
        assert record is not None
        return record

    def settle(self) -> list[str]:
        """Wait for the worker to finish everything queued; ids delivered so far."""
        assert self.queue.join(timeout=WAIT_SECONDS), "the queue did not drain"
        return [m.request_id for m in self.delivered]

    def deploy(self, name: str = "demo", owner: str = OWNER, flags: str = "") -> RequestRecord:
        """Create ``name`` and have it approved and provisioned (on the dry-run cloud)."""
        record = self.file(owner, f"create {name} {flags}".strip())
        assert self.approvals.approve(APPROVER, TEAM, record.id) is not None
        self.settle()
        done = self.record(record.id)
        assert done.state is State.SUCCEEDED
        return done

    def state(self) -> tuple[list[RequestRecord], int, list[str]]:
        """What a refusal must leave alone: the records, the cards, what was queued."""
        return self.store.list(), len(self.chat.cards()), self.settle()

    def close(self) -> None:
        self.queue.close(timeout=WAIT_SECONDS)
        self.store.close()


# Given the store, the notifier and the clock: the worker for each message.
WorkerChoice = Callable[[RequestStore, ChatNotifier, FakeClock], Callable[[QueueMessage], Worker]]


def dry_run_workers(
    store: RequestStore, notifier: ChatNotifier, clock: FakeClock
) -> Callable[[QueueMessage], Worker]:
    worker = Worker(store, DryRunCloud(), notifier, clock)
    return lambda _message: worker


def new_bot(
    db_path: Path, the_policy: Policy, choose_worker: WorkerChoice = dry_run_workers
) -> Bot:
    """A bot on a fresh store at ``db_path``, its queue consumed; ``close()`` it."""
    chat = RecordingChat(emails={"alice@example.com": OWNER})
    queue = InProcessQueue()
    clock = FakeClock(START)
    store = open_store(f"sqlite:///{db_path}")
    numbers = itertools.count(1)
    deps = Deps(
        policy=the_policy,
        store=store,
        queue=queue,
        chat=chat,
        directory=chat,
        authz=Authz(the_policy, chat),
        clock=clock,
        new_id=lambda: RequestId(f"kf-{next(numbers):06d}"),
    )
    approvals = Approvals(deps)
    bot = Bot(chat, store, queue, clock, approvals, Commands(deps, approvals))
    worker_for = choose_worker(store, ChatNotifier(chat, store, clock, min_interval=0.0), clock)

    def handle(message: QueueMessage, attempt: int | None) -> HandleResult:
        bot.delivered.append(message)
        return worker_for(message).handle(message, attempt)

    queue.consume(handle)
    return bot
