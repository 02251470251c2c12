"""The request record: one request's identity, payload, state and history.

Created by the command handlers, kept by a ``RequestStore``, read by ``status`` and
``list``, and advanced by the handlers (approve, deny, expire) and the worker (queued,
running, succeeded, failed).  ``TRANSITIONS`` is the one place that says which state may
follow which; the stores enforce it with compare-and-set.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from provisioning.actions import Action, CreateAction, DeleteAction, deployment_of, project_of
from provisioning.ids import REQUEST_ID_PATTERN, RequestId


class State(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.APPROVED, State.DENIED, State.EXPIRED, State.CANCELLED}),
    State.APPROVED: frozenset({State.QUEUED, State.CANCELLED}),
    # A queued request may fail before it runs (the worker cannot decode it, say).
    State.QUEUED: frozenset({State.RUNNING, State.FAILED, State.CANCELLED}),
    # RUNNING -> RUNNING is a redelivered message resuming the same request.
    State.RUNNING: frozenset({State.RUNNING, State.SUCCEEDED, State.FAILED, State.CANCELLED}),
    State.DENIED: frozenset(),
    State.EXPIRED: frozenset(),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}

# States in which a request still holds its deployment name (one at a time per name).
ACTIVE_STATES: frozenset[State] = frozenset(
    {State.PENDING, State.APPROVED, State.QUEUED, State.RUNNING}
)
FINAL_STATES: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def may_follow(current: State, new: State) -> bool:
    return new in TRANSITIONS[current]


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    PLANNED = "planned"
    SKIPPED = "skipped"
    FAILED = "failed"


class StepReport(BaseModel):
    """How far one provisioning step got, for the checklist and for resuming."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    title: str
    status: StepStatus = StepStatus.PENDING
    outcome: str = ""
    detail: str = ""
    seconds: float | None = None
    # The API calls the step made, or would make on the dry-run cloud ("method resource").
    calls: tuple[str, ...] = ()


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    at: datetime
    actor: str
    event: str
    detail: str = ""


class MessageRef(BaseModel):
    """Where a chat message lives, so it can be updated in place."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    channel: str
    ts: str


class RequestRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=REQUEST_ID_PATTERN.pattern)]
    action: Action
    requester: str
    channel: str
    thread_ts: str | None = None
    cards: tuple[MessageRef, ...] = ()
    status_message: MessageRef | None = None
    state: State = State.PENDING
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str = ""
    url: str | None = None
    # Set when the request ran on the dry-run cloud: planned, nothing created.
    dry_run: bool = False
    steps: tuple[StepReport, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    # Which delivery is working on the request, and until when: two deliveries of the
    # same request (two workers, or a redelivery racing the original) never act at once.
    lease_holder: str | None = None
    lease_until: datetime | None = None
    # Bumped by every write; stores compare it to refuse lost updates.
    version: int = 0

    @property
    def request_id(self) -> RequestId:
        return RequestId(self.id)

    @property
    def kind(self) -> str:
        return self.action.kind

    @property
    def deployment(self) -> str:
        return deployment_of(self.action)

    @property
    def project(self) -> str:
        return project_of(self.action)

    @property
    def lock_key(self) -> str | None:
        """The deployment name this request holds while active, for create and delete."""
        if isinstance(self.action, CreateAction | DeleteAction):
            return self.deployment
        return None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES
