"""The steps behind ``/kubeflow grant`` and ``revoke``: IAP access on the project.

Read-modify-write of the project's IAM policy with its etag; the cloud client retries
a stale etag by re-reading, so concurrent grants never lose one another.  Granting twice
reports "already has access"; revoke removes exactly ``user:EMAIL`` and nothing else.
Called by the worker through ``plans.steps_for``.
"""

from __future__ import annotations

from provisioning.actions import IAP_ACCESSOR_ROLE, GrantAction, RevokeAction
from provisioning.engine import Outcome, Step, StepContext, StepResult


def ensure_access_granted(ctx: StepContext) -> StepResult:
    assert isinstance(ctx.action, GrantAction)
    action = ctx.action
    member = f"user:{action.email}"
    policy = ctx.cloud.get_project_iam_policy(action.project)
    wanted = policy.with_members(IAP_ACCESSOR_ROLE, frozenset({member}))
    if wanted == policy:
        return StepResult(Outcome.UNCHANGED, f"{action.email} already has access")
    ctx.cloud.set_project_iam_policy(action.project, wanted)
    return ctx.acted(Outcome.UPDATED, f"{action.email} can open {action.deployment}")


def ensure_access_revoked(ctx: StepContext) -> StepResult:
    assert isinstance(ctx.action, RevokeAction)
    action = ctx.action
    member = f"user:{action.email}"
    policy = ctx.cloud.get_project_iam_policy(action.project)
    wanted = policy.without_member(IAP_ACCESSOR_ROLE, member)
    if wanted == policy:
        return StepResult(Outcome.UNCHANGED, f"{action.email} had no access")
    ctx.cloud.set_project_iam_policy(action.project, wanted)
    return ctx.acted(Outcome.UPDATED, f"{action.email} can no longer open {action.deployment}")


GRANT_STEPS = (Step("grant", "Grant IAP access", ensure_access_granted),)
REVOKE_STEPS = (Step("revoke", "Revoke IAP access", ensure_access_revoked),)
