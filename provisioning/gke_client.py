"""GKE's part of ``Cloud``: clusters and node pools over ``ClusterManagerClient``.

``GkeClient`` maps the plain ``ClusterRequest`` / ``NodePoolRequest`` values onto
``google.cloud.container_v1`` types, reads clusters and node pools back as plain values,
and translates the library's exceptions into ``TemporaryError`` / ``PermanentError``
here and nowhere else.  It also reads a cluster's or node pool's ``conditions`` into a
plain sentence (stock-out, quota) for the requester.  The gcp cloud, assembled by
``bot``'s composition root, delegates its GKE methods to it; ``GkeClient.connect`` builds
the library client, against the real API or a local emulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions
from google.api_core.retry import Retry
from google.cloud import container_v1
from google.cloud.container_v1.services.cluster_manager.transports import (
    ClusterManagerGrpcTransport,
)

from provisioning.cloud import ClusterInfo, ClusterRequest, NodePoolRequest
from provisioning.errors import PermanentError, TemporaryError
from provisioning.google_calls import (
    CALL_TIMEOUT,
    READ_RETRY,
    emulator_client,
    general_error,
    missing_permission,
    unanswered_error,
)
from provisioning.spec import region_of

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
NODE_METADATA = {"disable-legacy-endpoints": "true"}
LOGGING_SERVICE = "logging.googleapis.com/kubernetes"
MONITORING_SERVICE = "monitoring.googleapis.com/kubernetes"

# Seconds before the step engine tries again.
BUSY_CLUSTER_DELAY = 30.0

# Typed as Any: mypy sees proto-plus enum members as plain ints, not as the enum type.
_ClusterStatus: Any = container_v1.Cluster.Status
_PoolStatus: Any = container_v1.NodePool.Status
_ConditionCode: Any = container_v1.StatusCondition.Code
_Channel: Any = container_v1.ReleaseChannel.Channel
_MetadataMode: Any = container_v1.WorkloadMetadataConfig.Mode
_DriverVersion: Any = container_v1.GPUDriverInstallationConfig.GPUDriverVersion

_BUSY_MARKERS = ("CLUSTER_ALREADY_HAS_OPERATION", "incompatible operation", "try again")
_QUOTA_RESOURCE = re.compile(r"""resource\s+["']([A-Z0-9_]+)["']|Quota\s+'([A-Z0-9_]+)'""")
_PERMISSION = re.compile(r"\b(container\.[a-zA-Z]+\.[a-zA-Z]+)\b")
_ZONE_IN_MESSAGE = re.compile(r"zones/([a-z]+-[a-z]+[0-9]+-[a-z])")
_RATE_LIMIT = re.compile(r"concurrent operations|rate limit|too many", re.IGNORECASE)
_STOCKOUT_CODES = ("GCE_STOCKOUT", "ZONE_RESOURCE_POOL_EXHAUSTED")


@dataclass(frozen=True)
class _Call:
    """What a call was doing, in words for the requester and as an IAM permission."""

    doing: str  # "create cluster demo in us-central1-a"
    verb: str  # "create clusters"
    permission: str  # "container.clusters.create"
    project: str
    zone: str


def _location(project: str, zone: str) -> str:
    return f"projects/{project}/locations/{zone}"


def _cluster_path(project: str, zone: str, cluster: str) -> str:
    return f"{_location(project, zone)}/clusters/{cluster}"


def _quota_error(e: exceptions.GoogleAPICallError, call: _Call) -> PermanentError:
    match = _QUOTA_RESOURCE.search(e.message or "")
    resource = next((g for g in match.groups() if g), None) if match else None
    what = f"more {resource} quota" if resource else "more quota"
    worldwide = "globally" in (e.message or "") or "ALL_REGIONS" in (resource or "")
    where = "across all regions" if worldwide else f"in {region_of(call.zone)}"
    return PermanentError(
        f"GKE needs {what} {where} than project {call.project} has, to {call.doing}; "
        "ask for a quota increase or use a smaller machine type"
    )


def _permission_error(e: exceptions.GoogleAPICallError, call: _Call) -> PermanentError:
    message = e.message or ""
    if e.reason == "SERVICE_DISABLED" or "has not been used" in message:
        return PermanentError(
            f"the Kubernetes Engine API (container.googleapis.com) is not enabled in "
            f"{call.project}; enable it, then try again"
        )
    match = _PERMISSION.search(message)
    permission = match.group(1) if match else call.permission
    return missing_permission(verb=call.verb, project=call.project, permission=permission)


def _translate(e: exceptions.GoogleAPIError, call: _Call) -> Exception:
    """The error kind for a library exception raised while doing ``call``."""
    if not isinstance(e, exceptions.GoogleAPICallError):
        return unanswered_error(e, api="GKE", doing=call.doing)
    message = e.message or ""
    if isinstance(e, exceptions.FailedPrecondition) and (
        e.reason == "CLUSTER_ALREADY_HAS_OPERATION"
        or any(marker in message for marker in _BUSY_MARKERS)
    ):
        return TemporaryError(
            f"the cluster is busy with another operation; will {call.doing} later",
            delay=BUSY_CLUSTER_DELAY,
        )
    quota = "quota" in message.lower()
    concurrent = bool(_RATE_LIMIT.search(message))
    if isinstance(e, exceptions.TooManyRequests) and (concurrent or not quota):
        # 429, and RESOURCE_EXHAUSTED that is a rate limit rather than a quota.
        return TemporaryError(
            f"GKE is rate limiting; will {call.doing} later", delay=BUSY_CLUSTER_DELAY
        )
    if isinstance(e, exceptions.TooManyRequests | exceptions.PermissionDenied) and quota:
        return _quota_error(e, call)
    if isinstance(e, exceptions.PermissionDenied):
        return _permission_error(e, call)
    return general_error(e, api="GKE", doing=call.doing, message=message)


def _problem(conditions: Any, zone: str, what: str) -> str | None:
    """A plain sentence for a stock-out or quota condition, or None."""
    for condition in conditions:
        code = _ConditionCode(condition.code).name
        message = condition.message or ""
        stockout = next((c for c in _STOCKOUT_CODES if c == code or c in message), None)
        if stockout is not None:
            found = _ZONE_IN_MESSAGE.search(message)
            where = found.group(1) if found else zone
            return (
                f"{where} has run out of the machines this {what} needs ({stockout}); "
                "try another zone or try again later"
            )
        if code == "GCE_QUOTA_EXCEEDED" or "quota" in message.lower():
            return (
                f"the project has too little Compute Engine quota in {region_of(zone)} for this "
                f"{what} ({code}); ask for a quota increase or use a smaller machine type"
            )
    return None


class GkeClient:
    """Clusters and node pools in one project's zone, as the steps see them."""

    def __init__(
        self,
        client: container_v1.ClusterManagerClient,
        *,
        read_retry: Retry | None = READ_RETRY,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._client = client
        self._read_retry = read_retry
        self._timeout = timeout

    @classmethod
    def connect(cls, emulator_host: str | None) -> GkeClient:
        """A client for ``emulator_host`` (insecure, anonymous) or, if None, for GKE (ADC)."""
        if emulator_host is None:
            return cls(container_v1.ClusterManagerClient())
        return cls(
            emulator_client(
                container_v1.ClusterManagerClient, ClusterManagerGrpcTransport, emulator_host
            )
        )

    # -- clusters --------------------------------------------------------------------------

    def _read_cluster(self, project: str, zone: str, name: str) -> container_v1.Cluster | None:
        call = _Call(
            f"read cluster {name} in {zone}",
            "read clusters",
            "container.clusters.get",
            project,
            zone,
        )
        try:
            return self._client.get_cluster(
                name=_cluster_path(project, zone, name),
                retry=self._read_retry,
                timeout=self._timeout,
            )
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e

    def get_cluster(self, project: str, zone: str, name: str) -> ClusterInfo | None:
        cluster = self._read_cluster(project, zone, name)
        if cluster is None:
            return None
        return ClusterInfo(
            status=_ClusterStatus(cluster.status).name,
            endpoint=cluster.endpoint,
            ca_certificate=cluster.master_auth.cluster_ca_certificate,
            labels=dict(cluster.resource_labels),
        )

    def cluster_problem(self, project: str, zone: str, name: str) -> str | None:
        """Why the cluster failed (stock-out, quota) in plain words, or None."""
        cluster = self._read_cluster(project, zone, name)
        return None if cluster is None else _problem(cluster.conditions, zone, "cluster")

    def create_cluster(self, request: ClusterRequest) -> None:
        call = _Call(
            f"create cluster {request.name} in {request.zone}",
            "create clusters",
            "container.clusters.create",
            request.project,
            request.zone,
        )
        cluster = container_v1.Cluster(
            name=request.name,
            initial_node_count=request.initial_node_count,
            node_config=container_v1.NodeConfig(
                machine_type=request.machine_type,
                service_account=request.node_service_account,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                metadata=NODE_METADATA,
                workload_metadata_config=container_v1.WorkloadMetadataConfig(
                    mode=_MetadataMode.GKE_METADATA
                ),
            ),
            workload_identity_config=container_v1.WorkloadIdentityConfig(
                workload_pool=request.workload_pool
            ),
            addons_config=container_v1.AddonsConfig(
                http_load_balancing=container_v1.HttpLoadBalancing(disabled=False)
            ),
            release_channel=container_v1.ReleaseChannel(channel=_Channel[request.release_channel]),
            resource_labels=dict(request.labels),
            logging_service=LOGGING_SERVICE,
            monitoring_service=MONITORING_SERVICE,
        )
        try:
            self._client.create_cluster(
                parent=_location(request.project, request.zone),
                cluster=cluster,
                retry=None,
                timeout=self._timeout,
            )
        except exceptions.AlreadyExists:
            return  # the step's next observation sees it
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e

    def delete_cluster(self, project: str, zone: str, name: str) -> None:
        call = _Call(
            f"delete cluster {name} in {zone}",
            "delete clusters",
            "container.clusters.delete",
            project,
            zone,
        )
        try:
            self._client.delete_cluster(
                name=_cluster_path(project, zone, name), retry=None, timeout=self._timeout
            )
        except exceptions.NotFound:
            return
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e

    # -- node pools ------------------------------------------------------------------------

    def _read_node_pool(
        self, project: str, zone: str, cluster: str, name: str
    ) -> container_v1.NodePool | None:
        call = _Call(
            f"read node pool {name} of cluster {cluster}",
            "read node pools",
            "container.clusters.get",
            project,
            zone,
        )
        try:
            return self._client.get_node_pool(
                name=f"{_cluster_path(project, zone, cluster)}/nodePools/{name}",
                retry=self._read_retry,
                timeout=self._timeout,
            )
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e

    def get_node_pool_status(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        pool = self._read_node_pool(project, zone, cluster, name)
        return None if pool is None else str(_PoolStatus(pool.status).name)

    def node_pool_problem(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        """Why the node pool failed (stock-out, quota) in plain words, or None."""
        pool = self._read_node_pool(project, zone, cluster, name)
        return None if pool is None else _problem(pool.conditions, zone, "node pool")

    def create_node_pool(self, request: NodePoolRequest) -> None:
        call = _Call(
            f"create node pool {request.name} in cluster {request.cluster}",
            "create node pools",
            "container.clusters.update",
            request.project,
            request.zone,
        )
        accelerator = container_v1.AcceleratorConfig(
            accelerator_count=request.accelerator_count,
            accelerator_type=request.accelerator_type,
            gpu_driver_installation_config=container_v1.GPUDriverInstallationConfig(
                gpu_driver_version=_DriverVersion.DEFAULT
            ),
        )
        pool = container_v1.NodePool(
            name=request.name,
            initial_node_count=request.min_nodes,
            config=container_v1.NodeConfig(
                machine_type=request.machine_type,
                accelerators=[accelerator],
                service_account=request.service_account,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                metadata=NODE_METADATA,
                workload_metadata_config=container_v1.WorkloadMetadataConfig(
                    mode=_MetadataMode.GKE_METADATA
                ),
            ),
            autoscaling=container_v1.NodePoolAutoscaling(
                enabled=True,
                min_node_count=request.min_nodes,
                max_node_count=request.max_nodes,
            ),
            management=container_v1.NodeManagement(auto_repair=True, auto_upgrade=True),
        )
        try:
            self._client.create_node_pool(
                parent=_cluster_path(request.project, request.zone, request.cluster),
                node_pool=pool,
                retry=None,
                timeout=self._timeout,
            )
        except exceptions.AlreadyExists:
            return
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
