"""How the worker reports progress without knowing about chat.

``bot`` implements this protocol (through ``handlers``' renderer) for Slack and for the
console; the worker calls it as a request moves.  Each call gets the current record,
whose ``steps`` hold the checklist, so an implementation can redraw one status message
in place rather than keep state of its own.
"""

from __future__ import annotations

from typing import Protocol

from provisioning.records import RequestRecord


class Notifier(Protocol):
    def progress(self, record: RequestRecord) -> None:
        """The checklist changed (a step started, finished, or is waiting)."""

    def succeeded(self, record: RequestRecord, *, dry_run: bool) -> None:
        """All steps are done; ``record.url`` is the deployment's address, if any."""

    def failed(self, record: RequestRecord, *, reason: str, will_retry: bool) -> None:
        """A step failed; ``reason`` is plain words safe to show."""
