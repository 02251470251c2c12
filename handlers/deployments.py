"""The deployments the bot manages, derived from the request records.

Used by ``list``, by ``grant``/``revoke``/``delete`` to find a deployment's project and
thread, and by ``create`` to refuse a name that is taken.  A deployment exists from its
create request's approval until a delete of it succeeds; the store holds the history,
so there is no second table to drift from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioning.actions import CreateAction, DeleteAction
from provisioning.records import RequestRecord, State
from provisioning.store import RequestStore

_SCAN_LIMIT = 10_000
_WORDS = {
    State.PENDING: "awaiting approval",
    State.APPROVED: "approved",
    State.QUEUED: "queued",
    State.RUNNING: "provisioning",
    State.SUCCEEDED: "ready",
    State.FAILED: "failed",
}


@dataclass(frozen=True)
class Deployment:
    create: RequestRecord  # the create request that made it
    state: str
    deleting: RequestRecord | None = None

    @property
    def name(self) -> str:
        return self.create.deployment

    @property
    def ready(self) -> bool:
        return self.create.state is State.SUCCEEDED


def deployments(store: RequestStore) -> dict[str, Deployment]:
    """Deployments by name: created (or being created) and not deleted since."""
    return _fold(store.list(limit=_SCAN_LIMIT))


def deployment(store: RequestStore, name: str) -> Deployment | None:
    """The deployment ``name``, from its own records only (an indexed look-up)."""
    return _fold(store.list(deployment=name, limit=_SCAN_LIMIT)).get(name)


def _fold(records: list[RequestRecord]) -> dict[str, Deployment]:
    found: dict[str, Deployment] = {}
    for record in sorted(records, key=lambda r: (r.created_at, r.id)):
        if isinstance(record.action, CreateAction) and record.state in _WORDS:
            word = _WORDS[record.state]
            if record.state is State.SUCCEEDED and record.dry_run:
                word = "planned (dry-run)"
            found[record.deployment] = Deployment(record, word)
        elif isinstance(record.action, DeleteAction) and record.deployment in found:
            current = found[record.deployment]
            if record.state is State.SUCCEEDED:
                del found[record.deployment]
            elif record.active:
                found[record.deployment] = Deployment(current.create, "deleting", record)
    return dict(sorted(found.items()))
