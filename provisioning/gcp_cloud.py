"""``Cloud`` on Google Cloud: one adapter per API, put together.

``KUBEFLOW_BOT_CLOUD=gcp`` makes ``bot``'s composition root build ``GcpCloud.connect``
with the emulator hosts from its settings (``CONTAINER_EMULATOR_HOST`` and the like):
an API with a host goes to that plaintext endpoint with anonymous credentials, any other
to Google with Application Default Credentials.  Each adapter translates its library's
errors; this class only delegates, and records every call that changes something so the
request's checklist can say what was done (the engine drains them per step).

Objects go onto a cluster through its own API server, at the endpoint and with the CA
certificate GKE reports for it, authenticated with an Application Default Credentials
token (``kube_access``); one ``KubeApplier`` per cluster keeps its discovery between runs.
``NAME.endpoints.PROJECT.cloud.goog`` is a Cloud Endpoints service pointing at the
deployment's global address (``endpoints_client``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioning import kube_status
from provisioning.cloud import (
    ApplyProgress,
    ApplySummary,
    ClusterInfo,
    ClusterRequest,
    IamPolicy,
    IngressState,
    NodePoolRequest,
)
from provisioning.compute_client import ComputeClient
from provisioning.endpoints_client import EndpointsClient
from provisioning.errors import TemporaryError
from provisioning.gke_client import GkeClient
from provisioning.iam_client import IamClient
from provisioning.kube_access import MAX_CACHED_CLUSTERS, AdcTokens, KubeClients
from provisioning.kube_applier import KubeApplier
from provisioning.service_usage_client import ServiceUsage

# How long one apply keeps retrying objects refused for now (a webhook not serving yet)
# before it reports them as waited for: short, so a worker told to stop stops soon; the
# step runs again anyway.
APPLY_RETRY_SECONDS = 15.0


@dataclass(frozen=True)
class EmulatorHosts:
    """``host:port`` per API for local stand-ins; None means the real API."""

    container: str | None = None
    compute: str | None = None
    resourcemanager: str | None = None
    serviceusage: str | None = None
    iam: str | None = None
    servicemanagement: str | None = None


class GcpCloud:
    def __init__(
        self,
        *,
        service_usage: ServiceUsage,
        compute: ComputeClient,
        iam: IamClient,
        gke: GkeClient,
        kube: KubeClients,
        endpoints: EndpointsClient,
    ) -> None:
        self._service_usage = service_usage
        self._compute = compute
        self._iam = iam
        self._gke = gke
        self._kube = kube
        self._endpoints = endpoints
        # As many as KubeClients keeps clients for, least recently used out first.
        self._appliers: OrderedDict[tuple[str, str], KubeApplier] = OrderedDict()
        self._appliers_lock = threading.Lock()
        # Steps run on pool threads; each drains the calls its own thread made.
        self._local = threading.local()

    @classmethod
    def connect(cls, hosts: EmulatorHosts) -> GcpCloud:
        return cls(
            service_usage=ServiceUsage.connect(hosts.serviceusage),
            compute=ComputeClient.connect(hosts.compute),
            iam=IamClient.connect(hosts.iam, hosts.resourcemanager),
            gke=GkeClient.connect(hosts.container),
            kube=KubeClients(AdcTokens()),
            endpoints=EndpointsClient.connect(hosts.servicemanagement),
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

    def backend_service_id(self, project: str, name: str) -> str | None:
        return self._compute.backend_service_id(project, name)

    # IAM and Resource Manager
    def project_number(self, project: str) -> str:
        return self._iam.project_number(project)

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
        self,
        project: str,
        zone: str,
        cluster: str,
        objects: Sequence[Mapping[str, Any]],
        *,
        on_progress: ApplyProgress | None = None,
    ) -> ApplySummary:
        endpoint, ca_certificate = self._api_address(project, zone, cluster)
        summary = self._applier(endpoint, ca_certificate).apply(objects, on_progress=on_progress)
        if summary.applied:
            self._did(f"kubernetes server-side apply {summary.applied} objects on {cluster}")
        return summary

    def _api_address(self, project: str, zone: str, cluster: str) -> tuple[str, str]:
        """The cluster's API endpoint and CA certificate, as GKE hands them out."""
        info = self._gke.get_cluster(project, zone, cluster)
        if info is None or not info.endpoint or not info.ca_certificate:
            raise TemporaryError(f"cluster {cluster} has no API endpoint yet", delay=10.0)
        return info.endpoint, info.ca_certificate

    def _applier(self, endpoint: str, ca_certificate: str) -> KubeApplier:
        with self._appliers_lock:
            key = (endpoint, ca_certificate)
            applier = self._appliers.get(key)
            if applier is None:
                applier = KubeApplier(
                    self._kube.for_cluster(endpoint, ca_certificate),
                    retry_deadline_seconds=APPLY_RETRY_SECONDS,
                )
                self._appliers[key] = applier
                while len(self._appliers) > MAX_CACHED_CLUSTERS:
                    self._appliers.popitem(last=False)
            self._appliers.move_to_end(key)
            return applier

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
        return kube_status.ingress_state(
            self._kube.for_cluster(*self._api_address(project, zone, cluster)),
            namespace=namespace,
            ingress=ingress,
            certificate=certificate,
        )

    def service_node_ports(
        self, project: str, zone: str, cluster: str, *, namespace: str, name: str
    ) -> Mapping[str, int] | None:
        return kube_status.service_node_ports(
            self._kube.for_cluster(*self._api_address(project, zone, cluster)),
            namespace=namespace,
            name=name,
        )

    def ensure_endpoint(self, project: str, host: str, address_name: str) -> bool:
        ip = self._compute.get_global_address(project, address_name)
        if ip is None:
            raise TemporaryError(f"global address {address_name} has no IP yet", delay=10.0)
        changed = self._endpoints.ensure_endpoint(project, host, ip)
        if changed:
            self._did(f"servicemanagement.services rollout {host} -> {ip}")
        return changed

    def delete_endpoint(self, project: str, host: str) -> bool:
        deleted = self._endpoints.delete_endpoint(project, host)
        if deleted:
            self._did(f"servicemanagement.services.delete {host}")
        return deleted
