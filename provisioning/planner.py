"""Dry-run plans: every API call a request's steps would make, computed in-process.

Called by the create handler for ``--dry-run`` (answered at once, nothing queued).  It
runs the same steps as the worker against a fresh ``DryRunCloud``, so the plan cannot
drift from what the worker does.
"""

from __future__ import annotations

from datetime import UTC, datetime

from provisioning.actions import Action
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.engine import StepContext, run_steps
from provisioning.plans import steps_for
from provisioning.records import StepReport


def plan(action: Action, *, request_id: str, requester: str) -> tuple[StepReport, ...]:
    steps = steps_for(action)
    ctx = StepContext(
        request_id=request_id,
        requester=requester,
        action=action,
        cloud=DryRunCloud(),
        clock=lambda: datetime.now(UTC),
    )
    result = run_steps(steps, ctx, {}, lambda _reports: None)
    return tuple(result.reports[s.name] for s in steps)
