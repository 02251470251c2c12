"""The dry-run cloud: records every call the worker would make and changes nothing.

The embedded default (``KUBEFLOW_BOT_CLOUD=dry-run``, or no Google credentials) and what
``/kubeflow create ... --dry-run`` plans with.  It answers reads as an empty project
would (no APIs enabled, nothing created yet), so the recorded plan is the full list of
reads and writes a first real run makes.  Calls are recorded per thread, so steps that
run at the same time each drain only their own.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from provisioning.cloud import (
    ApplyProgress,
    ApplySummary,
    ClusterInfo,
    ClusterRequest,
    IamPolicy,
    IngressState,
    NodePoolRequest,
)


def _fields(values: Mapping[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items())


def _cluster(project: str, zone: str, name: str) -> str:
    return f"projects/{project}/locations/{zone}/clusters/{name}"


class DryRunCloud:
    """A ``Cloud`` that plans: reads see an empty project, writes are only recorded."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def dry_run(self) -> bool:
        return True

    def _record(self, call: str) -> None:
        calls: list[str] = getattr(self._local, "calls", None) or []
        calls.append(call)
        self._local.calls = calls

    def drain_calls(self) -> list[str]:
        calls: list[str] = getattr(self._local, "calls", None) or []
        self._local.calls = []
        return calls

    # Service Usage
    def enabled_services(self, project: str, services: Sequence[str]) -> frozenset[str]:
        self._record(
            f"serviceusage.services.batchGet projects/{project} ({len(services)} services)"
        )
        return frozenset()

    def enable_services(self, project: str, services: Sequence[str]) -> None:
        self._record(
            f"serviceusage.services.batchEnable projects/{project} "
            f"serviceIds=[{', '.join(services)}]"
        )

    # Compute
    def zones_offering(self, project: str, accelerator_type: str) -> frozenset[str] | None:
        self._record(
            f"compute.acceleratorTypes.aggregatedList projects/{project} "
            f"filter=name={accelerator_type}"
        )
        return None

    def get_global_address(self, project: str, name: str) -> str | None:
        self._record(f"compute.globalAddresses.get projects/{project}/global/addresses/{name}")
        return None

    def create_global_address(self, project: str, name: str) -> None:
        self._record(
            f"compute.globalAddresses.insert projects/{project}/global/addresses "
            f"name={name} addressType=EXTERNAL ipVersion=IPV4"
        )

    def delete_global_address(self, project: str, name: str) -> None:
        self._record(f"compute.globalAddresses.delete projects/{project}/global/addresses/{name}")

    def backend_service_id(self, project: str, name: str) -> str | None:
        self._record(
            f"compute.backendServices.get projects/{project}/global/backendServices/{name}"
        )
        return None

    # IAM and Resource Manager
    def project_number(self, project: str) -> str:
        self._record(f"cloudresourcemanager.projects.get projects/{project}")
        return "PROJECT_NUMBER"

    def service_account_exists(self, project: str, account_id: str) -> bool:
        self._record(
            f"iam.projects.serviceAccounts.get projects/{project}/serviceAccounts/"
            f"{account_id}@{project}.iam.gserviceaccount.com"
        )
        return False

    def create_service_account(self, project: str, account_id: str, display_name: str) -> None:
        self._record(
            f"iam.projects.serviceAccounts.create projects/{project} "
            f"accountId={account_id} displayName={display_name!r}"
        )

    def get_project_iam_policy(self, project: str) -> IamPolicy:
        self._record(f"cloudresourcemanager.projects.getIamPolicy projects/{project}")
        return IamPolicy(etag="dry-run")

    def set_project_iam_policy(self, project: str, policy: IamPolicy) -> IamPolicy:
        added = sum(len(b.members) for b in policy.bindings)
        self._record(
            f"cloudresourcemanager.projects.setIamPolicy projects/{project} "
            f"etag={policy.etag} ({len(policy.bindings)} roles, {added} members)"
        )
        return policy

    def get_service_account_iam_policy(self, project: str, email: str) -> IamPolicy:
        self._record(
            f"iam.projects.serviceAccounts.getIamPolicy projects/{project}/serviceAccounts/{email}"
        )
        return IamPolicy(etag="dry-run")

    def set_service_account_iam_policy(
        self, project: str, email: str, policy: IamPolicy
    ) -> IamPolicy:
        members = sorted(m for b in policy.bindings for m in b.members)
        self._record(
            f"iam.projects.serviceAccounts.setIamPolicy projects/{project}/serviceAccounts/"
            f"{email} roles/iam.workloadIdentityUser members=[{', '.join(members)}]"
        )
        return policy

    # GKE
    def get_cluster(self, project: str, zone: str, name: str) -> ClusterInfo | None:
        self._record(f"container.projects.locations.clusters.get {_cluster(project, zone, name)}")
        return None

    def create_cluster(self, request: ClusterRequest) -> None:
        labels = ",".join(f"{k}={v}" for k, v in sorted(request.labels.items()))
        self._record(
            f"container.projects.locations.clusters.create projects/{request.project}/locations/"
            f"{request.zone} "
            + _fields(
                {
                    "name": request.name,
                    "machineType": request.machine_type,
                    "initialNodeCount": request.initial_node_count,
                    "serviceAccount": request.node_service_account,
                    "workloadPool": request.workload_pool,
                    "httpLoadBalancing": "on",
                    "releaseChannel": request.release_channel,
                    "labels": labels,
                }
            )
        )

    def delete_cluster(self, project: str, zone: str, name: str) -> None:
        self._record(
            f"container.projects.locations.clusters.delete {_cluster(project, zone, name)}"
        )

    def get_node_pool_status(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        self._record(
            f"container.projects.locations.clusters.nodePools.get projects/{project}/locations/"
            f"{zone}/clusters/{cluster}/nodePools/{name}"
        )
        return None

    def create_node_pool(self, request: NodePoolRequest) -> None:
        self._record(
            f"container.projects.locations.clusters.nodePools.create projects/{request.project}/"
            f"locations/{request.zone}/clusters/{request.cluster} "
            + _fields(
                {
                    "name": request.name,
                    "machineType": request.machine_type,
                    "accelerator": f"{request.accelerator_type}x{request.accelerator_count}",
                    "gpuDriver": "DEFAULT",
                    "autoscaling": f"{request.min_nodes}..{request.max_nodes}",
                    "autoRepair": "true",
                    "autoUpgrade": "true",
                }
            )
        )

    def cluster_problem(self, project: str, zone: str, name: str) -> str | None:
        return None  # nothing planned ever fails

    def node_pool_problem(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        return None

    # Kubernetes and Cloud Endpoints
    def apply_objects(
        self,
        project: str,
        zone: str,
        cluster: str,
        objects: Sequence[Mapping[str, Any]],
        *,
        on_progress: ApplyProgress | None = None,
    ) -> ApplySummary:
        kinds = Counter(str(obj.get("kind", "?")) for obj in objects)
        top = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common(4))
        self._record(
            f"kubernetes server-side apply (fieldManager=kubeflow-bot) on cluster {cluster}: "
            f"{len(objects)} object{'' if len(objects) == 1 else 's'} ({top})"
        )
        return ApplySummary(applied=len(objects))

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
        self._record(
            f"kubernetes get Ingress {namespace}/{ingress}, ManagedCertificate {certificate}"
        )
        return None

    def service_node_ports(
        self, project: str, zone: str, cluster: str, *, namespace: str, name: str
    ) -> Mapping[str, int] | None:
        self._record(f"kubernetes get Service {namespace}/{name} on cluster {cluster}")
        return None

    def ensure_endpoint(self, project: str, host: str, address_name: str) -> bool:
        self._record(
            f"servicemanagement.services.create serviceName={host} producerProjectId={project}; "
            f"submitConfigSource + rollout pointing at address {address_name}"
        )
        return True

    def delete_endpoint(self, project: str, host: str) -> bool:
        self._record(f"servicemanagement.services.delete serviceName={host}")
        return True
