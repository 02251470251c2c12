"""The commands `/kubeflow` understands, as typed values: what the grammar returns.

``handlers.grammar`` builds them from slash-command text (and writes them back as text);
the command handler in ``handlers/`` acts on them, for Slack and the console alike.
Policy limits are the grammar's to check; these models only insist on values that are
well-formed in themselves.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from handlers.usage import Subcommand
from provisioning.spec import DeploymentName, DeploymentSpec, Email


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CreateCommand(_Command):
    kind: Literal["create"] = "create"
    spec: DeploymentSpec
    dry_run: bool = False


class GrantCommand(_Command):
    kind: Literal["grant"] = "grant"
    email: Email
    name: DeploymentName | None = None
    # `--for`: how long the access lasts; None for until revoked.
    duration: timedelta | None = None


class RevokeCommand(_Command):
    kind: Literal["revoke"] = "revoke"
    email: Email
    name: DeploymentName | None = None


class StatusCommand(_Command):
    kind: Literal["status"] = "status"
    # A deployment name or a request id: provisioning.ids.is_request_id tells which, since
    # the grammar refuses to create deployments whose names look like request ids.
    target: DeploymentName | None = None


class ListCommand(_Command):
    kind: Literal["list"] = "list"


class DeleteCommand(_Command):
    kind: Literal["delete"] = "delete"
    name: DeploymentName


class HelpCommand(_Command):
    kind: Literal["help"] = "help"
    topic: Subcommand | None = None


Command = Annotated[
    CreateCommand
    | GrantCommand
    | RevokeCommand
    | StatusCommand
    | ListCommand
    | DeleteCommand
    | HelpCommand,
    Field(discriminator="kind"),
]
