"""``Cloud`` on Google Cloud: one adapter per API, put together.

``KUBEFLOW_BOT_CLOUD=gcp`` makes ``bot``'s composition root build ``GcpCloud.connect``
with the emulator hosts from its settings (``CONTAINER_EMULATOR_HOST`` and the like):
an API with a host goes to that plaintext endpoint with anonymous credentials, any other
to Google with Application Default Credentials.  Each adapter translates its library's
errors; this class only delegates, and records every call that changes something so the
request's checklist can say what was done (the engine drains them per step).

Kubeflow on the cluster and Cloud Endpoints are not driven by this version: a step that
needs them fails permanently with that said, after the cluster and GPU pool are ready.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioning.cloud import (
    ApplySummary,
    ClusterInfo,
    ClusterRequest,
    IamPolicy,
    NodePoolRequest,
)
from provisioning.compute_client import ComputeClient
from provisioning.errors import PermanentError
from provisioning.gke_client import GkeClient
from provisioning.iam_client import IamClient
from provisioning.service_usage_client import ServiceUsage

NOT_YET = (
    "this version of kubeflow-bot creates the cluster and GPU pool but does not yet install "
    "Kubeflow or its IAP ingress; ask the bot's operators"
)


@dataclass(frozen=True)
class EmulatorHosts:
    """``host:port`` per API for local stand-ins; None means the real API."""

    container: str | None = None
    compute: str | None = None
    resourcemanager: str | None = None
    serviceusage: str | None = None
    iam: str | None = None


class GcpCloud:
    def __init__(
        self,
        service_usage: ServiceUsage,
        compute: ComputeClient,
        iam: IamClient,
        gke: GkeClient,
    ) -> None:
        self._service_usage = service_usage
        self._compute = compute
        self._iam = iam
        self._gke = gke
        # Steps run on pool threads; each drains the calls its own thread made.
        self._local = threading.local()

    @classmethod
    def connect(cls, hosts: EmulatorHosts) -> GcpCloud:
        return cls(
            ServiceUsage.connect(hosts.serviceusage),
            ComputeClient.connect(hosts.compute),
            IamClient.connect(hosts.iam, hosts.resourcemanager),
            GkeClient.connect(hosts.container),
        )

    @property
    def dry_run(self) -> bool:
        return False

    def _did(self, call: str) -> None:
        if not hasattr(self._local, "calls"):
            self._local.calls = []
        self._local.calls.append(call)

    def drain_calls(self) -> list[str]:
        calls: list[str] = getattr(self._local, "calls", None) or []
        self._local.calls = []
        return calls

    # Service Usage
    def enabled_services(self, project: str, services: Sequence[str]) -> frozenset[str]:
        return self._service_usage.enabled_services(project, services)

    def enable_services(self, project: str, services: Sequence[str]) -> None:
        self._service_usage.enable_services(project, services)
        self._did(f"serviceusage.services.batchEnable projects/{project} {len(services)} APIs")

    # Compute
    def zones_offering(self, project: str, accelerator_type: str) -> frozenset[str] | None:
        return self._compute.zones_offering(project, accelerator_type)

    def get_global_address(self, project: str, name: str) -> str | None:
        return self._compute.get_global_address(project, name)

    def create_global_address(self, project: str, name: str) -> None:
        self._compute.create_global_address(project, name)
        self._did(f"compute.globalAddresses.insert projects/{project} name={name}")

    def delete_global_address(self, project: str, name: str) -> None:
        self._compute.delete_global_address(project, name)
        self._did(f"compute.globalAddresses.delete projects/{project}/global/addresses/{name}")

    # IAM and Resource Manager
    def service_account_exists(self, project: str, account_id: str) -> bool:
        return self._iam.service_account_exists(project, account_id)

    def create_service_account(self, project: str, account_id: str, display_name: str) -> None:
        self._iam.create_service_account(project, account_id, display_name)
        self._did(f"iam.projects.serviceAccounts.create projects/{project} accountId={account_id}")

    def get_project_iam_policy(self, project: str) -> IamPolicy:
        return self._iam.get_project_iam_policy(project)

    def set_project_iam_policy(self, project: str, policy: IamPolicy) -> IamPolicy:
        written = self._iam.set_project_iam_policy(project, policy)
        self._did(f"cloudresourcemanager.projects.setIamPolicy projects/{project}")
        return written

    def get_service_account_iam_policy(self, project: str, email: str) -> IamPolicy:
        return self._iam.get_service_account_iam_policy(project, email)

    def set_service_account_iam_policy(
        self, project: str, email: str, policy: IamPolicy
    ) -> IamPolicy:
        written = self._iam.set_service_account_iam_policy(project, email, policy)
        self._did(
            f"iam.projects.serviceAccounts.setIamPolicy projects/{project}/serviceAccounts/{email}"
        )
        return written

    # GKE
    def get_cluster(self, project: str, zone: str, name: str) -> ClusterInfo | None:
        return self._gke.get_cluster(project, zone, name)

    def create_cluster(self, request: ClusterRequest) -> None:
        self._gke.create_cluster(request)
        self._did(
            f"container.projects.locations.clusters.create "
            f"projects/{request.project}/locations/{request.zone} name={request.name}"
        )

    def delete_cluster(self, project: str, zone: str, name: str) -> None:
        self._gke.delete_cluster(project, zone, name)
        self._did(
            f"container.projects.locations.clusters.delete "
            f"projects/{project}/locations/{zone}/clusters/{name}"
        )

    def get_node_pool_status(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        return self._gke.get_node_pool_status(project, zone, cluster, name)

    def create_node_pool(self, request: NodePoolRequest) -> None:
        self._gke.create_node_pool(request)
        self._did(
            f"container.projects.locations.clusters.nodePools.create "
            f"projects/{request.project}/locations/{request.zone}/clusters/{request.cluster} "
            f"name={request.name} accelerator={request.accelerator_type}"
            f"x{request.accelerator_count}"
        )

    def cluster_problem(self, project: str, zone: str, name: str) -> str | None:
        return self._gke.cluster_problem(project, zone, name)

    def node_pool_problem(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        return self._gke.node_pool_problem(project, zone, cluster, name)

    # The new cluster's Kubernetes API and Cloud Endpoints
    def apply_objects(
        self, project: str, zone: str, cluster: str, objects: Sequence[Mapping[str, Any]]
    ) -> ApplySummary:
        raise PermanentError(NOT_YET)

    def ensure_endpoint(self, project: str, host: str, address_name: str) -> bool:
        raise PermanentError(NOT_YET)

    def delete_endpoint(self, project: str, host: str) -> bool:
        # Nothing this version makes: a delete has no Endpoints service to remove.
        return False
