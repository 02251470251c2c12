"""The steps behind ``/kubeflow grant`` and ``revoke``: IAP access on the project.

Read-modify-write of the project's IAM policy with its etag (``iam_edits``): a stale
etag is retried by re-reading, so concurrent grants never lose one another.  Granting twice
reports "already has access"; a grant with an end date (``--for``) puts the member in a
binding with an IAM condition ``request.time < timestamp(...)``; revoke removes exactly
``user:EMAIL`` from the role's bindings, conditional ones included, and nothing else.
Called by the worker through ``plans.steps_for``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from provisioning.actions import IAP_ACCESSOR_ROLE, GrantAction, RevokeAction, until_text
from provisioning.cloud import IamCondition, IamPolicy
from provisioning.engine import Outcome, Step, StepContext, StepResult
from provisioning.errors import PermanentError
from provisioning.iam_edits import edit_project_policy

# IAM's limits on a condition's title and description.
_MAX_TITLE = 100
_MAX_DESCRIPTION = 256
# The expression this module writes, read back to tell until when a member has access.
_EXPIRY = re.compile(r'request\.time < timestamp\("([0-9T:Z-]+)"\)')


def member_of(email: str) -> str:
    # Google account addresses are case-insensitive: one member, however it was typed.
    return f"user:{email.lower()}"


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expiry_condition(ctx: StepContext, action: GrantAction, until: datetime) -> IamCondition:
    """The condition of a grant that ends at ``until``: who asked and when it ends, for
    whoever reads the project's IAM policy later.  The same request always gets the
    same condition, so a redelivered grant finds its own binding."""
    title = f"kubeflow-bot: {action.deployment} until {until_text(until)}"
    description = (
        f"IAP access to Kubeflow deployment {action.deployment} granted by kubeflow-bot "
        f"request {ctx.request_id}, asked by Slack user {ctx.requester}; "
        f"ends {until_text(until)}."
    )
    return IamCondition(
        expression=f'request.time < timestamp("{_stamp(until)}")',
        title=title[:_MAX_TITLE],
        description=description[:_MAX_DESCRIPTION],
    )


def _latest_end(policy: IamPolicy, member: str) -> datetime | None:
    """The latest end among ``member``'s time-bound grants of the role, as written here."""
    ends = []
    for condition in policy.conditions_of(IAP_ACCESSOR_ROLE, member):
        match = _EXPIRY.fullmatch(condition.expression.strip())
        if match:
            ends.append(datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC))
    return max(ends, default=None)


def ensure_access_granted(ctx: StepContext) -> StepResult:
    assert isinstance(ctx.action, GrantAction)
    action = ctx.action
    member = member_of(action.email)
    until = action.expires_at
    if until is None:
        if not edit_project_policy(
            ctx,
            action.project,
            lambda policy: policy.with_members(IAP_ACCESSOR_ROLE, frozenset({member})),
        ):
            return StepResult(Outcome.UNCHANGED, f"{action.email} already has access")
        return ctx.acted(Outcome.UPDATED, f"{action.email} can open {action.deployment}")

    if until <= ctx.clock():
        raise PermanentError(
            f"the access was to end at {until_text(until)}, which passed before it could be "
            "granted; file the grant again"
        )
    condition = expiry_condition(ctx, action, until)
    # What the last read showed, to word the answer when nothing had to change.
    seen: list[IamPolicy] = []

    def grant_until(policy: IamPolicy) -> IamPolicy:
        seen[:] = [policy]
        if member in policy.members_of(IAP_ACCESSOR_ROLE):
            return policy  # access with no end date already covers it
        latest = _latest_end(policy, member)
        if latest is not None and latest >= until:
            return policy
        return policy.with_members(IAP_ACCESSOR_ROLE, frozenset({member}), condition)

    if edit_project_policy(ctx, action.project, grant_until):
        return ctx.acted(
            Outcome.UPDATED,
            f"{action.email} can open {action.deployment} until {until_text(until)}",
        )
    policy = seen[-1]
    if member in policy.members_of(IAP_ACCESSOR_ROLE):
        return StepResult(
            Outcome.UNCHANGED,
            f"{action.email} already has access with no end date; revoke it first to make it end",
        )
    latest = _latest_end(policy, member) or until
    return StepResult(
        Outcome.UNCHANGED, f"{action.email} already has access until {until_text(latest)}"
    )


def ensure_access_revoked(ctx: StepContext) -> StepResult:
    assert isinstance(ctx.action, RevokeAction)
    action = ctx.action
    member = member_of(action.email)
    if not edit_project_policy(
        ctx, action.project, lambda policy: policy.without_member(IAP_ACCESSOR_ROLE, member)
    ):
        return StepResult(Outcome.UNCHANGED, f"{action.email} had no access")
    return ctx.acted(Outcome.UPDATED, f"{action.email} can no longer open {action.deployment}")


GRANT_STEPS = (Step("grant", "Grant IAP access", ensure_access_granted),)
REVOKE_STEPS = (Step("revoke", "Revoke IAP access", ensure_access_revoked),)
