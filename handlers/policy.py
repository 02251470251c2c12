"""The policy: who may approve, what may be requested, and the defaults.

Loaded once by ``bot`` at start-up from ``KUBEFLOW_BOT_POLICY`` (``policy.example.yaml``
by default) and handed to the grammar (defaults, limits) and to ``authz`` (approvers).
A bad file stops start-up with the key path and what is wrong with it; unknown keys are
errors too, so a typo never silently loosens the policy.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Self

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from provisioning.spec import (
    EMAIL_PATTERN,
    GPU_TYPE_PATTERN,
    MACHINE_TYPE_PATTERN,
    MAX_GPUS_PER_NODE,
    PROJECT_PATTERN,
    ZONE_PATTERN,
)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and key paths."""


def parse_duration(value: object) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and int(match.group(1)) > 0:
            return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    raise ValueError(f"expected a duration such as 30m, 24h or 7d, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SlackUserId = Annotated[str, Field(pattern=r"^[UW][A-Z0-9_]{1,30}$")]
GroupHandle = Annotated[str, Field(pattern=r"^@?[a-z0-9][-a-z0-9._]{0,79}$")]
Email = Annotated[str, Field(pattern=EMAIL_PATTERN)]
Domain = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
]


class People(BaseModel):
    """A set of Slack users named by user id, user-group handle or email."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    users: tuple[SlackUserId, ...] = ()
    groups: tuple[GroupHandle, ...] = ()
    emails: tuple[Email, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.users or self.groups or self.emails)


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_gpus_per_node: Annotated[int, Field(ge=1, le=MAX_GPUS_PER_NODE)] = 4
    max_gpu_nodes: Annotated[int, Field(ge=1, le=1000)] = 4


class Defaults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    project: Annotated[str, Field(pattern=PROJECT_PATTERN)]
    zone: Annotated[str, Field(pattern=ZONE_PATTERN)]
    machine_type: Annotated[str, Field(pattern=MACHINE_TYPE_PATTERN)] = "e2-standard-8"
    gpu_count: Annotated[int, Field(ge=1, le=MAX_GPUS_PER_NODE)] = 1
    gpu_max_nodes: Annotated[int, Field(ge=1)] = 1
    kubeflow_version: Annotated[str, Field(min_length=1, max_length=32)] = "26.03"


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    approvers: People
    # Who may file requests; empty means everyone in the workspace.
    requesters: People = People()
    four_eyes: bool = True
    projects: Annotated[
        tuple[Annotated[str, Field(pattern=PROJECT_PATTERN)], ...], Field(min_length=1)
    ]
    zones: Annotated[tuple[Annotated[str, Field(pattern=ZONE_PATTERN)], ...], Field(min_length=1)]
    gpu_types: tuple[Annotated[str, Field(pattern=GPU_TYPE_PATTERN)], ...] = ()
    limits: Limits = Limits()
    # Email domains that grants may name; empty means any domain.
    grant_domains: tuple[Domain, ...] = ()
    defaults: Defaults
    approval_ttl: Duration = timedelta(hours=24)
    # Where approval cards are also posted (a channel id), besides the request's thread.
    approvals_channel: Annotated[str, Field(pattern=r"^[CG][A-Z0-9]{2,30}$")] | None = None

    @model_validator(mode="after")
    def _defaults_allowed(self) -> Self:
        if self.approvers.empty:
            raise ValueError("approvers: name at least one user, group or email")
        if self.defaults.project not in self.projects:
            raise ValueError(f"defaults.project {self.defaults.project} is not in projects")
        if self.defaults.zone not in self.zones:
            raise ValueError(f"defaults.zone {self.defaults.zone} is not in zones")
        if self.defaults.gpu_count > self.limits.max_gpus_per_node:
            raise ValueError("defaults.gpu_count is above limits.max_gpus_per_node")
        if self.defaults.gpu_max_nodes > self.limits.max_gpu_nodes:
            raise ValueError("defaults.gpu_max_nodes is above limits.max_gpu_nodes")
        return self

    def email_allowed(self, email: str) -> bool:
        if not self.grant_domains:
            return True
        domain = email.rsplit("@", 1)[-1].lower()
        return domain in self.grant_domains


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {path}: {item['msg']}")
    return "\n".join(lines)


def parse_policy(data: object, source: str = "policy") -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: expected a mapping at the top level")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(f"{source} is not a valid policy:\n{_describe(e)}") from e


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"cannot read policy file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"{path} is not valid YAML: {e}") from e
    return parse_policy(data, str(path))
