"""What a request asks for: create, grant, revoke or delete.

Built by the command handlers from parsed commands (after resolving a deployment name
to its project), stored with the request record, and carried in the queue message to
the worker, which dispatches on ``kind``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from provisioning.spec import DeploymentName, DeploymentSpec, Email, ProjectId, Zone

IAP_ACCESSOR_ROLE = "roles/iap.httpsResourceAccessor"


def until_text(at: datetime) -> str:
    """When a time-bound grant ends, as every message and IAM condition title says it."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class CreateAction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["create"] = "create"
    spec: DeploymentSpec
    # Granted IAP access as the last step; None when the chat could not tell us.
    requester_email: Email | None = None


class _AccessAction(BaseModel):
    """One person's IAP access to one deployment's project."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    email: Email
    deployment: DeploymentName
    project: ProjectId


class GrantAction(_AccessAction):
    """Give ``user:EMAIL`` the IAP accessor role on the deployment's project, until
    ``expires_at`` when set (an IAM condition), else until revoked."""

    kind: Literal["grant"] = "grant"
    # Fixed when the grant is filed, so approvers approve a date and every delivery of the
    # request writes the same condition.
    expires_at: AwareDatetime | None = None


class RevokeAction(_AccessAction):
    """Remove exactly the ``user:EMAIL`` member from the IAP accessor binding."""

    kind: Literal["revoke"] = "revoke"


class DeleteAction(BaseModel):
    """Tear the deployment down: its cluster, address and endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["delete"] = "delete"
    deployment: DeploymentName
    project: ProjectId
    zone: Zone


Action = Annotated[
    CreateAction | GrantAction | RevokeAction | DeleteAction, Field(discriminator="kind")
]


def deployment_of(action: Action) -> str:
    return action.spec.name if isinstance(action, CreateAction) else action.deployment


def project_of(action: Action) -> str:
    return action.spec.project if isinstance(action, CreateAction) else action.project
