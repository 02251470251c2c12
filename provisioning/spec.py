"""The deployment spec: what a create request asks the worker to build.

Filled in by the command grammar (``handlers``) from the slash command and the policy's
defaults; carried unchanged through the store and the queue to the worker's steps.
Validation here is about what Google Cloud would accept, not about what the policy
allows (that is ``handlers``' job).
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from provisioning.gpus import machine_fits_gpu

NAME_PATTERN = r"^[a-z][-a-z0-9]{0,22}[a-z0-9]$"
# Project ids: 6 to 30 characters, lowercase letters, digits and hyphens, starting with a
# letter and not ending with a hyphen (Resource Manager's rule).
PROJECT_PATTERN = r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"
ZONE_PATTERN = r"^[a-z]+-[a-z]+[0-9]+-[a-z]$"
MACHINE_TYPE_PATTERN = r"^[a-z][a-z0-9]*-[-a-z0-9]+$"
GPU_TYPE_PATTERN = r"^nvidia-[-a-z0-9]+$"
MAX_HOST_LENGTH = 62
MAX_GPUS_PER_NODE = 8

# A syntactically valid address as IAM accepts it for ``user:`` members: one @, a dotted
# domain, no spaces or angle brackets.  Deliverability is not ours to check.
_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+$"

DeploymentName = Annotated[str, Field(pattern=NAME_PATTERN)]
ProjectId = Annotated[str, Field(pattern=PROJECT_PATTERN)]
Zone = Annotated[str, Field(pattern=ZONE_PATTERN)]
Email = Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=254)]


def endpoint_host(name: str, project: str) -> str:
    return f"{name}.endpoints.{project}.cloud.goog"


def endpoint_url(name: str, project: str) -> str:
    return f"https://{endpoint_host(name, project)}/"


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a deployment, or None when it can."""
    if re.fullmatch(NAME_PATTERN, name):
        return None
    return (
        f"`{name}` is not a valid deployment name: use 2 to 24 characters, lowercase "
        "letters, digits and hyphens, starting with a letter and ending with a letter or digit"
    )


class GpuSpec(BaseModel):
    """The GPU node pool: accelerator, count per node, machine type, autoscaling bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Annotated[str, Field(pattern=GPU_TYPE_PATTERN)]
    count: Annotated[int, Field(ge=1, le=MAX_GPUS_PER_NODE)] = 1
    machine_type: Annotated[str, Field(pattern=MACHINE_TYPE_PATTERN)]
    min_nodes: Annotated[int, Field(ge=0)] = 0
    max_nodes: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min_nodes > self.max_nodes:
            raise ValueError(
                f"min_nodes ({self.min_nodes}) is larger than max_nodes ({self.max_nodes})"
            )
        if not machine_fits_gpu(self.machine_type, self.type):
            raise ValueError(f"machine type {self.machine_type} cannot carry {self.type}")
        return self


class DeploymentSpec(BaseModel):
    """One Kubeflow deployment: a GKE cluster, an optional GPU pool, Kubeflow behind IAP."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: DeploymentName
    project: ProjectId
    zone: Zone
    machine_type: Annotated[str, Field(pattern=MACHINE_TYPE_PATTERN)] = "e2-standard-8"
    gpu: GpuSpec | None = None
    kubeflow_version: Annotated[str, Field(min_length=1, max_length=32)] = "26.03"

    @model_validator(mode="after")
    def _host_fits(self) -> Self:
        host = endpoint_host(self.name, self.project)
        if len(host) > MAX_HOST_LENGTH:
            raise ValueError(
                f"the host {host} is {len(host)} characters long; at most "
                f"{MAX_HOST_LENGTH} fit, so shorten the name"
            )
        return self

    @property
    def host(self) -> str:
        return endpoint_host(self.name, self.project)

    @property
    def url(self) -> str:
        return endpoint_url(self.name, self.project)

    @property
    def region(self) -> str:
        return region_of(self.zone)
