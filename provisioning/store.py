"""The request store interface and its errors.

The command handlers add records and make the approval transitions; the worker makes
the run transitions and records step progress.  Implementations: ``sqlite_store``
(the embedded default).  Every write is a compare-and-set on the record's version, so
two writers never lose each other's change and a state moves only along
``records.TRANSITIONS``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Protocol

from provisioning.records import RequestRecord, State


class StoreError(Exception):
    """Base class of the store's refusals."""


class UnknownRequest(StoreError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"no such request {request_id}")
        self.request_id = request_id


class DuplicateRequest(StoreError):
    """A record with this id exists already (an id collision; the caller draws another)."""


class DeploymentBusy(StoreError):
    """Another active request already holds this deployment name."""

    def __init__(self, holder: RequestRecord) -> None:
        super().__init__(
            f"deployment {holder.deployment} already has an active request "
            f"{holder.id} ({holder.state})"
        )
        self.holder = holder


class TransitionRefused(StoreError):
    """The record is not in one of the expected states (someone else moved it first)."""

    def __init__(self, current: RequestRecord, wanted: State) -> None:
        super().__init__(f"request {current.id} is {current.state}, cannot become {wanted}")
        self.current = current
        self.wanted = wanted


class LeaseHeld(StoreError):
    """Another delivery holds the request's lease until ``current.lease_until``."""

    def __init__(self, current: RequestRecord) -> None:
        super().__init__(
            f"request {current.id} is being worked on by {current.lease_holder} "
            f"until {current.lease_until}"
        )
        self.current = current


class RequestStore(Protocol):
    def add(self, record: RequestRecord) -> None:
        """Store a new record.  Raises DeploymentBusy or DuplicateRequest."""

    def get(self, request_id: str) -> RequestRecord | None: ...

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
        """Atomically move the record from one of ``expected`` to ``new``.

        Appends a history entry (event = the new state's name), applies ``changes`` to
        other fields in the same write, and returns the new record.  Raises
        UnknownRequest, or TransitionRefused when the current state is not expected or
        ``new`` may not follow it.
        """

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
        """Change fields other than ``state`` (thread, cards, steps...), retrying on
        concurrent writes; with ``event`` also appends a history entry."""

    def claim(
        self, request_id: str, *, holder: str, until: datetime, at: datetime
    ) -> RequestRecord:
        """Take (or, for the same holder, extend) the request's lease until ``until``.

        Raises LeaseHeld while another holder's lease has not run out at ``at``."""

    def release(self, request_id: str, *, holder: str, at: datetime) -> RequestRecord:
        """Give the lease up, if ``holder`` still has it."""

    def list(
        self,
        *,
        states: Collection[State] | None = None,
        deployment: str | None = None,
        requester: str | None = None,
        limit: int = 100,
    ) -> list[RequestRecord]:
        """Records matching every given filter, newest first."""

    def close(self) -> None: ...
