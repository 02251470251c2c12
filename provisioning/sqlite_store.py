"""The SQLite request store: the embedded default implementation of ``RequestStore``.

The bot's composition root opens it with ``open_store(url)``; the command handlers and
the worker use it only through the ``RequestStore`` protocol.  One table holds each
record as JSON next to the few columns the store filters, orders and constrains on.  A
unique index on ``lock_key`` lets the database itself keep one active request per
deployment name, and every write is a compare-and-set on ``version`` inside
``BEGIN IMMEDIATE``, so two approvers clicking at once cannot both win.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

from provisioning.records import HistoryEntry, RequestRecord, State, may_follow
from provisioning.store import (
    DeploymentBusy,
    DuplicateRequest,
    LeaseHeld,
    RequestStore,
    StoreError,
    TransitionRefused,
    UnknownRequest,
)

MEMORY = ":memory:"
SQLITE_URL_PREFIX = "sqlite:///"
ACCEPTED_URLS = (
    "sqlite:///relative/path.db (relative to the working directory), "
    "sqlite:////absolute/path.db or sqlite:///:memory:"
)

# Bump together with a migration step in ``SqliteStore._migrate``.
SCHEMA_VERSION = 1
# How long a writer waits for another connection's write transaction (the worker and
# the bot may be separate processes on one file) before SQLite reports "locked".
BUSY_TIMEOUT_SECONDS = 5.0

# Fields only the store writes: ``state`` moves through ``transition`` alone, the
# history is appended from actor/event/detail, and ``version`` and ``updated_at`` are
# what the compare-and-set and the audit trail rely on.
STORE_OWNED_FIELDS = frozenset({"id", "state", "version", "history", "updated_at"})

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS requests (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        -- The deployment name while the request is active, NULL otherwise.  SQLite
        -- treats NULLs as distinct, so grants and finished requests never collide.
        lock_key TEXT,
        requester TEXT NOT NULL,
        deployment TEXT NOT NULL,
        -- Fixed-width UTC text (see _sortable), so text order is time order.
        created_at TEXT NOT NULL,
        version INTEGER NOT NULL,
        record TEXT NOT NULL
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS requests_lock_key ON requests (lock_key)",
    "CREATE INDEX IF NOT EXISTS requests_newest ON requests (created_at, id)",
    "CREATE INDEX IF NOT EXISTS requests_deployment ON requests (deployment)",
)

_INSERT = """
    INSERT INTO requests (id, state, lock_key, requester, deployment, created_at, version,
                          record)
    VALUES (:id, :state, :lock_key, :requester, :deployment, :created_at, :version, :record)
"""

# The compare-and-set: the row changes only if nobody bumped its version since we read it.
_UPDATE = """
    UPDATE requests
    SET state = :state, lock_key = :lock_key, requester = :requester,
        deployment = :deployment, created_at = :created_at, version = :version,
        record = :record
    WHERE id = :id AND version = :expected_version
"""

# One fixed statement for every filter combination: a NULL parameter switches its filter
# off, and the wanted states arrive as a JSON array, so no SQL is ever assembled from text.
_LIST = """
    SELECT record FROM requests
    WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
      AND (:deployment IS NULL OR deployment = :deployment)
      AND (:requester IS NULL OR requester = :requester)
    ORDER BY created_at DESC, id DESC
    LIMIT :limit
"""


class SqliteStore:
    """A ``RequestStore`` on one SQLite file, or on a private in-memory database.

    Connection handling: one connection shared by every thread, guarded by a lock
    (``check_same_thread=False``).  An in-memory database exists only inside the
    connection that created it, so the console's ephemeral mode needs exactly one
    connection; using the same design for files keeps one code path.  SQLite admits one
    writer at a time whatever we do, and at chat-ops rates (a few requests a minute) the
    concurrent reads that per-thread connections would allow buy nothing, while they
    would leave a connection behind for every short-lived thread.  Other processes on the
    same file (a separate worker) are kept apart by SQLite's own locking: WAL,
    ``busy_timeout`` and ``BEGIN IMMEDIATE`` on every write.
    """

    def __init__(self, path: str | Path) -> None:
        self._memory = str(path) == MEMORY
        self._lock = threading.Lock()
        # isolation_level=None: the module opens no implicit transactions; every write
        # below states its own BEGIN IMMEDIATE ... COMMIT.
        self._conn = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, record: RequestRecord) -> None:
        with self._transaction() as conn:
            try:
                conn.execute(_INSERT, _columns(record))
            except sqlite3.IntegrityError as e:
                if _read(conn, record.id) is not None:
                    raise DuplicateRequest(f"a request with id {record.id} exists already") from e
                _raise_busy(conn, record, e)

    def get(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            return _read(self._conn, request_id)

    def transition(
        self,
        request_id: str,
        *,
        expected: Collection[State],
        new: State,
        actor: str,
        at: datetime,
        detail: str = "",
        changes: Mapping[str, object] | None = None,
    ) -> RequestRecord:
        changes = changes or {}
        _check_changes(changes)
        expected = frozenset(expected)

        def moved(current: RequestRecord) -> RequestRecord:
            if current.state not in expected or not may_follow(current.state, new):
                raise TransitionRefused(current, new)
            entry = HistoryEntry(at=at, actor=actor, event=new.value, detail=detail)
            return _revised(current, changes, at=at, entry=entry, state=new)

        return self._write(request_id, moved)

    def update(
        self,
        request_id: str,
        *,
        changes: Mapping[str, object],
        at: datetime,
        actor: str | None = None,
        event: str | None = None,
        detail: str = "",
    ) -> RequestRecord:
        _check_changes(changes)
        if event is not None and actor is None:
            raise ValueError(f"the history event {event!r} needs an actor")

        def changed(current: RequestRecord) -> RequestRecord:
            entry = None
            if event is not None and actor is not None:
                entry = HistoryEntry(at=at, actor=actor, event=event, detail=detail)
            return _revised(current, changes, at=at, entry=entry)

        return self._write(request_id, changed)

    def claim(
        self, request_id: str, *, holder: str, until: datetime, at: datetime
    ) -> RequestRecord:
        def claimed(current: RequestRecord) -> RequestRecord:
            held = (
                current.lease_holder not in (None, holder)
                and current.lease_until is not None
                and current.lease_until > at
            )
            if held:
                raise LeaseHeld(current)
            return _revised(
                current, {"lease_holder": holder, "lease_until": until}, at=at, entry=None
            )

        return self._write(request_id, claimed)

    def release(self, request_id: str, *, holder: str, at: datetime) -> RequestRecord:
        def released(current: RequestRecord) -> RequestRecord:
            if current.lease_holder != holder:
                return current  # someone took over after ours ran out; leave theirs
            return _revised(current, {"lease_holder": None, "lease_until": None}, at=at, entry=None)

        return self._write(request_id, released)

    def list(
        self,
        *,
        states: Collection[State] | None = None,
        deployment: str | None = None,
        requester: str | None = None,
        limit: int = 100,
    ) -> list[RequestRecord]:
        if limit < 0:
            # SQLite reads a negative LIMIT as "no limit"; that is never what a caller means.
            raise ValueError(f"limit must be zero or more, not {limit}")
        params = {
            "states": None if states is None else json.dumps([State(s).value for s in states]),
            "deployment": deployment,
            "requester": requester,
            "limit": limit,
        }
        with self._lock:
            rows = self._conn.execute(_LIST, params).fetchall()
        return [RequestRecord.model_validate_json(record) for (record,) in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _configure(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        if not self._memory:
            # WAL lets readers (a status command) go on while a writer commits, and keeps
            # a crash mid-write from leaving a half-written page behind.
            self._conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit can
            # be lost to a power cut (never to a crash of the bot), and the file is never
            # corrupted.  Every request write no longer waits for a disk flush.
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def _migrate(self) -> None:
        # Inside BEGIN IMMEDIATE, so two processes opening a new file at once do not
        # both try to create the schema.
        with self._transaction() as conn:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"the request database has schema version {found}, newer than this "
                    f"bot's {SCHEMA_VERSION}; upgrade the bot before opening it"
                )
            # Version 0 is a new, empty file.  Later versions add their steps here,
            # each guarded by ``if found < N``.
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: commits on return, rolls back on any exception.

        BEGIN IMMEDIATE takes SQLite's write lock before the first read, so what a
        write decides from its read (the current state, the version) still holds when
        it writes; another process waits up to ``busy_timeout`` rather than failing.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                # Some errors (a full disk, say) make SQLite roll back by itself.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _write(
        self, request_id: str, revise: Callable[[RequestRecord], RequestRecord]
    ) -> RequestRecord:
        """Read the record, let ``revise`` build its successor, and compare-and-set it."""
        with self._transaction() as conn:
            current = _read(conn, request_id)
            if current is None:
                raise UnknownRequest(request_id)
            revised = revise(current)
            try:
                cursor = conn.execute(
                    _UPDATE, {**_columns(revised), "expected_version": current.version}
                )
            except sqlite3.IntegrityError as e:
                # Only a change of ``action`` can move the lock onto a busy name.
                _raise_busy(conn, revised, e)
            if cursor.rowcount != 1:
                # The write lock is held since the read, so no other writer can have
                # bumped the version: the row's version column disagrees with its JSON.
                raise StoreError(
                    f"request {request_id}: stored version column does not match the "
                    f"record's version {current.version}; the database was edited by hand"
                )
            return revised


def open_store(url: str) -> RequestStore:
    """Open the request store that ``url`` names.

    Accepts ``sqlite:///:memory:`` (ephemeral, for the console), ``sqlite:///rel/path.db``
    and ``sqlite:////abs/path.db``; the file's parent directories are created.
    """
    if not url.startswith(SQLITE_URL_PREFIX):
        scheme, sep, _ = url.partition("://")
        # Show only the scheme of a foreign URL: it may carry a password.
        shown = f"{scheme}://..." if sep else repr(url)
        raise ValueError(f"unsupported store URL {shown}: use {ACCEPTED_URLS}")
    path = url.removeprefix(SQLITE_URL_PREFIX)
    if not path:
        raise ValueError(f"the store URL {url!r} names no file: use {ACCEPTED_URLS}")
    if "?" in path:
        raise ValueError(f"the store URL {url!r} has options, which are not supported")
    if path == MEMORY:
        return SqliteStore(MEMORY)
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(file)


def _check_changes(changes: Mapping[str, object]) -> None:
    owned = sorted(STORE_OWNED_FIELDS & changes.keys())
    if owned:
        raise ValueError(
            f"cannot change {', '.join(owned)} directly: the store sets them "
            "(use transition() to change the state)"
        )


def _revised(
    current: RequestRecord,
    changes: Mapping[str, object],
    *,
    at: datetime,
    entry: HistoryEntry | None,
    state: State | None = None,
) -> RequestRecord:
    """``current`` with ``changes`` applied, validated as a whole, and version bumped."""
    update: dict[str, object] = {**changes, "updated_at": at, "version": current.version + 1}
    if state is not None:
        update["state"] = state
    if entry is not None:
        update["history"] = (*current.history, entry)
    # model_copy(update=...) would skip validation, so the merged fields go through
    # model_validate instead: a wrong type or unknown field fails here, before any write.
    return RequestRecord.model_validate({**current.model_dump(), **update})


def _columns(record: RequestRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "state": record.state.value,
        "lock_key": record.lock_key if record.active else None,
        "requester": record.requester,
        "deployment": record.deployment,
        "created_at": _sortable(record.created_at),
        "version": record.version,
        "record": record.model_dump_json(),
    }


def _sortable(at: datetime) -> str:
    """``at`` as fixed-width UTC text; a naive time is taken to be UTC already."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _read(conn: sqlite3.Connection, request_id: str) -> RequestRecord | None:
    row = conn.execute("SELECT record FROM requests WHERE id = ?", (request_id,)).fetchone()
    return None if row is None else RequestRecord.model_validate_json(row[0])


def _raise_busy(
    conn: sqlite3.Connection, record: RequestRecord, error: sqlite3.IntegrityError
) -> NoReturn:
    """Turn a clash on ``lock_key`` into DeploymentBusy naming the active holder.

    Called inside the failed write's transaction, so the holder found is the row the
    unique index just compared against.
    """
    row = conn.execute(
        "SELECT record FROM requests WHERE lock_key = ? AND id != ?",
        (record.lock_key, record.id),
    ).fetchone()
    if row is None:
        raise error
    raise DeploymentBusy(RequestRecord.model_validate_json(row[0])) from error
