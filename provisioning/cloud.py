"""The cloud interface the ``ensure_*`` steps drive, and the plain values it speaks.

Steps observe and act only through ``Cloud``; implementations translate to Google's
client libraries (``KUBEFLOW_BOT_CLOUD=gcp``, a later layer) or record what they would
do (``dryrun_cloud``, the embedded default).  No third-party types cross this line:
values here are plain dataclasses, so steps and tests stay library-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Told ``(objects settled so far, objects in all)`` while a bundle is being applied.
ApplyProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class IamCondition:
    """An IAM condition, whole: IAM wants the title and description back as they were."""

    expression: str  # CEL, such as request.time < timestamp("2026-03-09T09:00:00Z")
    title: str
    description: str = ""


@dataclass(frozen=True)
class IamBinding:
    role: str
    members: frozenset[str]
    # Only when ``condition`` holds does the binding grant the role (time-bound grants).
    condition: IamCondition | None = None


@dataclass(frozen=True)
class IamPolicy:
    """An IAM policy as read, with the etag that makes the write a compare-and-set."""

    bindings: tuple[IamBinding, ...] = ()
    etag: str = ""

    def members_of(self, role: str, condition: IamCondition | None = None) -> frozenset[str]:
        """The members of ``role``'s binding with exactly ``condition`` (unconditional by
        default)."""
        found: set[str] = set()
        for binding in self.bindings:
            if binding.role == role and binding.condition == condition:
                found |= binding.members
        return frozenset(found)

    def conditions_of(self, role: str, member: str) -> tuple[IamCondition, ...]:
        """The conditions under which ``member`` holds ``role`` (not the unconditional grant)."""
        return tuple(
            b.condition
            for b in self.bindings
            if b.role == role and b.condition is not None and member in b.members
        )

    def with_members(
        self, role: str, members: frozenset[str], condition: IamCondition | None = None
    ) -> IamPolicy:
        """This policy with ``members`` added to ``role``'s binding with ``condition``
        (the unconditional one by default); other bindings stay exactly as they are."""
        missing = members - self.members_of(role, condition)
        if not missing:
            return self
        bindings = list(self.bindings)
        for i, binding in enumerate(bindings):
            if binding.role == role and binding.condition == condition:
                bindings[i] = IamBinding(role, binding.members | missing, condition)
                break
        else:
            bindings.append(IamBinding(role, frozenset(missing), condition))
        return IamPolicy(tuple(bindings), self.etag)

    def without_member(self, role: str, member: str) -> IamPolicy:
        """This policy with exactly ``member`` removed from ``role``'s bindings, conditional
        ones included; a binding left with no member goes."""
        bindings = []
        for binding in self.bindings:
            if binding.role == role and member in binding.members:
                rest = binding.members - {member}
                if rest:
                    bindings.append(IamBinding(role, rest, binding.condition))
            else:
                bindings.append(binding)
        return IamPolicy(tuple(bindings), self.etag)


@dataclass(frozen=True)
class ClusterRequest:
    """What the cluster step asks GKE for (mapped onto ``container_v1.Cluster``)."""

    project: str
    zone: str
    name: str
    machine_type: str
    node_service_account: str
    workload_pool: str
    release_channel: str
    labels: Mapping[str, str]
    initial_node_count: int = 2


@dataclass(frozen=True)
class NodePoolRequest:
    """What the GPU step asks GKE for (mapped onto ``container_v1.NodePool``)."""

    project: str
    zone: str
    cluster: str
    name: str
    machine_type: str
    accelerator_type: str
    accelerator_count: int
    min_nodes: int
    max_nodes: int
    service_account: str


@dataclass(frozen=True)
class ClusterInfo:
    """What the steps need to know of an existing cluster."""

    status: str  # PROVISIONING, RUNNING, RECONCILING, STOPPING, ERROR, DEGRADED
    endpoint: str = ""
    ca_certificate: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngressState:
    """How far GKE is with an Ingress: its load balancer's address, the health of its
    backends (from ``ingress.kubernetes.io/backends``), and its managed certificate."""

    address: str | None = None
    backends: Mapping[str, str] = field(default_factory=dict)
    certificate: str | None = None  # ManagedCertificate status: Provisioning, Active, ...

    def waiting_for(self, host: str) -> list[str]:
        """What is not ready yet, in words for the checklist; empty when all is."""
        waiting = []
        if not self.address:
            waiting.append("the load balancer's IP address")
        if not self.backends or any(v != "HEALTHY" for v in self.backends.values()):
            waiting.append("healthy backends")
        if self.certificate != "Active":
            waiting.append(f"the certificate for {host} ({self.certificate or 'not issued'})")
        return waiting


@dataclass(frozen=True)
class ApplySummary:
    applied: int
    unchanged: int = 0
    waiting_for: tuple[str, ...] = ()


class Cloud(Protocol):
    """Everything the steps read or change in Google Cloud and on the new cluster."""

    @property
    def dry_run(self) -> bool:
        """True when calls are only recorded: acting steps report "planned"."""

    def drain_calls(self) -> list[str]:
        """The calls made since the last drain, as "api.method resource {key fields}"."""

    # Service Usage
    def enabled_services(self, project: str, services: Sequence[str]) -> frozenset[str]: ...
    def enable_services(self, project: str, services: Sequence[str]) -> None: ...

    # Compute
    def zones_offering(self, project: str, accelerator_type: str) -> frozenset[str] | None:
        """Zones that offer the accelerator; None when the cloud cannot know (dry run)."""

    def get_global_address(self, project: str, name: str) -> str | None: ...
    def create_global_address(self, project: str, name: str) -> None: ...
    def delete_global_address(self, project: str, name: str) -> None: ...
    def backend_service_id(self, project: str, name: str) -> str | None:
        """The numeric id of the global backend service ``name``; None while it does not
        exist (GKE's ingress controller makes it) or on a dry run."""

    # IAM and Resource Manager
    def service_account_exists(self, project: str, account_id: str) -> bool: ...
    def create_service_account(self, project: str, account_id: str, display_name: str) -> None: ...
    def project_number(self, project: str) -> str:
        """The project's number (Resource Manager ``projects.get``), as digits."""

    def get_project_iam_policy(self, project: str) -> IamPolicy: ...
    def set_project_iam_policy(self, project: str, policy: IamPolicy) -> IamPolicy: ...
    def get_service_account_iam_policy(self, project: str, email: str) -> IamPolicy: ...
    def set_service_account_iam_policy(
        self, project: str, email: str, policy: IamPolicy
    ) -> IamPolicy: ...

    # GKE
    def get_cluster(self, project: str, zone: str, name: str) -> ClusterInfo | None: ...
    def create_cluster(self, request: ClusterRequest) -> None: ...
    def delete_cluster(self, project: str, zone: str, name: str) -> None: ...
    def get_node_pool_status(
        self, project: str, zone: str, cluster: str, name: str
    ) -> str | None: ...
    def create_node_pool(self, request: NodePoolRequest) -> None: ...
    def cluster_problem(self, project: str, zone: str, name: str) -> str | None:
        """Why a cluster in ERROR failed (stock-out, quota), in plain words, or None."""

    def node_pool_problem(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        """Why a node pool in ERROR failed, in plain words, or None."""

    # The new cluster's Kubernetes API and Cloud Endpoints
    def apply_objects(
        self,
        project: str,
        zone: str,
        cluster: str,
        objects: Sequence[Mapping[str, Any]],
        *,
        on_progress: ApplyProgress | None = None,
    ) -> ApplySummary: ...
    def ingress_state(
        self,
        project: str,
        zone: str,
        cluster: str,
        *,
        namespace: str,
        ingress: str,
        certificate: str,
    ) -> IngressState | None:
        """The Ingress and its ManagedCertificate as GKE reports them; None on a dry run."""

    def service_node_ports(
        self, project: str, zone: str, cluster: str, *, namespace: str, name: str
    ) -> Mapping[str, int] | None:
        """The nodePorts the cluster gave the Service's ports, by port name; None when the
        Service is not there (yet) or on a dry run."""

    def ensure_endpoint(self, project: str, host: str, address_name: str) -> bool:
        """Point ``host`` at the address; True when something had to change."""

    def delete_endpoint(self, project: str, host: str) -> bool:
        """Remove the Endpoints service; False when there was none."""
