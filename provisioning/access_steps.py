"""The steps behind ``/kubeflow grant`` and ``revoke``: IAP access on the project.

Read-modify-write of the project's IAM policy with its etag (``iam_edits``): a stale
etag is retried by re-reading, so concurrent grants never lose one another.  Granting twice
reports "already has access"; revoke removes exactly ``user:EMAIL`` and nothing else.
Called by the worker through ``plans.steps_for``.
"""

from __future__ import annotations

from provisioning.actions import IAP_ACCESSOR_ROLE, GrantAction, RevokeAction
from provisioning.engine import Outcome, Step, StepContext, StepResult
from provisioning.iam_edits import edit_project_policy


def ensure_access_granted(ctx: StepContext) -> StepResult:
    assert isinstance(ctx.action, GrantAction)
    action = ctx.action
    member = frozenset({f"user:{action.email}"})
    if not edit_project_policy(
        ctx, action.project, lambda policy: policy.with_members(IAP_ACCESSOR_ROLE, member)
    ):
        return StepResult(Outcome.UNCHANGED, f"{action.email} already has access")
    return ctx.acted(Outcome.UPDATED, f"{action.email} can open {action.deployment}")


def ensure_access_revoked(ctx: StepContext) -> StepResult:
    assert isinstance(ctx.action, RevokeAction)
    action = ctx.action
    member = f"user:{action.email}"
    if not edit_project_policy(
        ctx, action.project, lambda policy: policy.without_member(IAP_ACCESSOR_ROLE, member)
    ):
        return StepResult(Outcome.UNCHANGED, f"{action.email} had no access")
    return ctx.acted(Outcome.UPDATED, f"{action.email} can no longer open {action.deployment}")


GRANT_STEPS = (Step("grant", "Grant IAP access", ensure_access_granted),)
REVOKE_STEPS = (Step("revoke", "Revoke IAP access", ensure_access_revoked),)
