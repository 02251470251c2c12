"""A stateful fake of the GKE ``ClusterManager`` API, served over real gRPC on loopback.

The real ``google.cloud.container_v1.ClusterManagerClient`` talks to it through an
insecure channel (``FakeGke.client()``).  The fake decodes and encodes the library's own
proto-plus types, so whatever the client sends is what the fake sees.

Served methods: GetCluster, ListClusters, CreateCluster, DeleteCluster, GetNodePool,
ListNodePools, CreateNodePool, DeleteNodePool, GetOperation.  Any other method answers
UNIMPLEMENTED.

Behaviour, modelled on the real API:

* Names: ``parent`` / ``name`` must be ``projects/{p}/locations/{l}[/clusters/{c}
  [/nodePools/{np}]]`` (INVALID_ARGUMENT otherwise); the deprecated ``project_id`` /
  ``zone`` / ``cluster_id`` fields are accepted when ``parent`` / ``name`` is empty.
* Create/delete return an ``Operation`` (status RUNNING) and finish ``operation_seconds``
  later on the injected ``clock``.  State moves lazily, when a later request arrives:
  cluster PROVISIONING -> RUNNING (``endpoint`` and ``cluster_ca_certificate`` are filled
  in then, from the fake's attributes of the same names), node pools likewise, deletes
  STOPPING -> gone.  ``GetOperation`` answers RUNNING until then, DONE afterwards.
* Validation: cluster / node pool name pattern (lowercase, <= 40, starts with a letter);
  ``node_pools`` and ``initial_node_count`` / ``node_config`` are mutually exclusive;
  ``create_node_pool`` needs ``config.machine_type``; GPUs must fit the machine family
  (``GPU_MACHINE_FAMILIES``); autoscaling ``min <= max`` and ``max > 0``; the Workload
  Identity pool must be ``{project}.svc.id.goog``.  ALREADY_EXISTS / NOT_FOUND as usual.
* A create_node_pool / delete_node_pool / delete_cluster while another operation on that
  cluster is RUNNING fails FAILED_PRECONDITION ("Cluster is running incompatible operation
  ..."), with ErrorInfo reason ``CLUSTER_ALREADY_HAS_OPERATION`` (``exc.reason``).

Fault injection:

* ``fail_next(method, code, message, times=1, reason=None)``: the next ``times`` calls of
  ``method`` (e.g. ``"CreateCluster"``) fail with that status before touching any state.
* ``stockout_next_operation(code="GCE_STOCKOUT")``: the next create operation finishes
  DONE with ``error`` set and a ``cluster_conditions`` / ``nodepool_conditions``
  ``StatusCondition``; the cluster ends in ERROR, a node pool in ERROR.

Inspection: ``requests`` (every call as ``GrpcCall(method, request, code)``, in order),
``calls(method)``, ``count(method)``, ``cluster(...)`` / ``node_pool(...)`` snapshots and
``operation(name)``.
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import proto
from google.cloud import container_v1
from google.cloud.container_v1.services.cluster_manager.transports import (
    ClusterManagerGrpcTransport,
)
from google.rpc import code_pb2, status_pb2

from tests.support.grpc_fake import GrpcError, GrpcFake, Method

DOMAIN = "container.googleapis.com"
SERVICE = "google.container.v1.ClusterManager"

DEFAULT_CA_PEM = (
    b"-----BEGIN CERTIFICATE-----\n"
    b"RkFLRS1HS0UtQ0EtQ0VSVElGSUNBVEUtRk9SLVRFU1RT\n"
    b"-----END CERTIFICATE-----\n"
)
DEFAULT_CA_CERTIFICATE = base64.b64encode(DEFAULT_CA_PEM).decode()
MASTER_VERSION = "1.33.5-gke.1000000"

#: accelerator type -> machine families (the prefix before the first "-") it runs on.
GPU_MACHINE_FAMILIES: dict[str, frozenset[str]] = {
    "nvidia-tesla-t4": frozenset({"n1"}),
    "nvidia-tesla-v100": frozenset({"n1"}),
    "nvidia-tesla-p4": frozenset({"n1"}),
    "nvidia-tesla-p100": frozenset({"n1"}),
    "nvidia-tesla-k80": frozenset({"n1"}),
    "nvidia-l4": frozenset({"g2"}),
    "nvidia-tesla-a100": frozenset({"a2"}),
    "nvidia-a100-80gb": frozenset({"a2"}),
    "nvidia-h100-80gb": frozenset({"a3"}),
    "nvidia-h100-mega-80gb": frozenset({"a3"}),
}

STOCKOUT_MESSAGE = (
    "Try a different location, or try again later: "
    "[ZONE_RESOURCE_POOL_EXHAUSTED]: The zone 'projects/{project}/zones/{zone}' does not "
    "have enough resources available to fulfill the request."
)
QUOTA_CONDITION_MESSAGE = "Insufficient quota to satisfy the request: [GCE_QUOTA_EXCEEDED]"

_NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$")
_PROJECT_RE = re.compile(r"^[a-z0-9][-a-z0-9.:]{0,61}[a-z0-9]$")
_LOCATION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+(?:-[a-z])?$")

_SEGMENT_IDS = {
    "projects": "project",
    "locations": "location",
    "clusters": "cluster",
    "nodePools": "node_pool",
    "operations": "operation",
}

# Typed as Any: mypy sees proto-plus enum members as plain ints, not as the enum type.
Op: Any = container_v1.Operation
ClusterStatus: Any = container_v1.Cluster.Status
PoolStatus: Any = container_v1.NodePool.Status
ConditionCode: Any = container_v1.StatusCondition.Code


@dataclass
class _ClusterState:
    cluster: container_v1.Cluster
    pools: dict[str, container_v1.NodePool] = field(default_factory=dict)


@dataclass
class _OpState:
    op: container_v1.Operation
    key: tuple[str, str, str]  # project, location, cluster
    pool: str | None
    done_at: float
    stockout: str | None = None


_M = TypeVar("_M", bound=proto.Message)


def _copy(message: _M) -> _M:
    """A deep copy of a proto-plus message, so callers never share the fake's state."""
    cls: Any = type(message)
    return cls.deserialize(cls.serialize(message))


def _invalid(message: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _split(path: str, kinds: tuple[str, ...], what: str) -> list[str]:
    """Parse ``projects/P/locations/L[/kind/X...]`` into the ids, or raise INVALID_ARGUMENT."""
    parts = path.split("/")
    expected = ("projects", "locations", *kinds)
    form = "/".join(f"{k}/{{{_SEGMENT_IDS[k]}}}" for k in expected)
    if len(parts) != 2 * len(expected) or any(
        parts[2 * i] != k or not parts[2 * i + 1] for i, k in enumerate(expected)
    ):
        raise _invalid(f"{what} must be of the form {form}; got {path!r}.")
    ids = parts[1::2]
    if not _PROJECT_RE.match(ids[0]):
        raise _invalid(f"Invalid project id {ids[0]!r} in {what}.")
    if ids[1] != "-" and not _LOCATION_RE.match(ids[1]):
        raise _invalid(f"Invalid location {ids[1]!r} in {what}.")
    return ids


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise _invalid(
            f"Invalid value for field '{kind}.name': {name!r}. Must be a match of regex "
            "'(?:[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?)' (only alphanumerics and '-' allowed, "
            "must start with a letter and end with an alphanumeric, and must be no longer "
            "than 40 characters)."
        )


def _check_node_config(config: container_v1.NodeConfig, where: str) -> None:
    family = config.machine_type.split("-", 1)[0] if config.machine_type else ""
    for acc in config.accelerators:
        families = GPU_MACHINE_FAMILIES.get(acc.accelerator_type)
        if families is None:
            raise _invalid(f"{where}: unknown accelerator type {acc.accelerator_type!r}.")
        if acc.accelerator_count < 1:
            raise _invalid(f"{where}: accelerator_count must be at least 1.")
        if family not in families:
            raise _invalid(
                f"{where}: accelerator type {acc.accelerator_type!r} is not supported on "
                f"machine type {config.machine_type or 'e2-medium'!r}; use a "
                f"{'/'.join(sorted(families)).upper()} machine type."
            )


def _check_pool(pool: container_v1.NodePool, *, require_machine_type: bool) -> None:
    _check_name("node_pool", pool.name)
    if require_machine_type and not pool.config.machine_type:
        raise _invalid(f"Node pool {pool.name!r}: config.machine_type must be specified.")
    _check_node_config(pool.config, f"Node pool {pool.name!r}")
    auto = pool.autoscaling
    if auto.enabled:
        if auto.min_node_count < 0 or auto.max_node_count <= 0:
            raise _invalid(
                f"Node pool {pool.name!r}: autoscaling requires min_node_count >= 0 and "
                "max_node_count > 0."
            )
        if auto.min_node_count > auto.max_node_count:
            raise _invalid(
                f"Node pool {pool.name!r}: autoscaling min_node_count "
                f"({auto.min_node_count}) must be <= max_node_count ({auto.max_node_count})."
            )


def _zones(location: str) -> list[str]:
    if location.count("-") >= 2:  # zonal: us-central1-a
        return [location]
    return [f"{location}-{z}" for z in "abc"]


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeGke(GrpcFake):
    """GKE ClusterManager over gRPC on 127.0.0.1; see the module docstring."""

    DOMAIN = DOMAIN

    def __init__(
        self,
        *,
        operation_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        endpoint: str = "127.0.0.1",
        ca_certificate: str = DEFAULT_CA_CERTIFICATE,
        max_workers: int = 8,
    ) -> None:
        self.operation_seconds = operation_seconds
        self.clock = clock
        self.endpoint = endpoint
        self.ca_certificate = ca_certificate
        self._lock = threading.RLock()
        self._clusters: dict[tuple[str, str, str], _ClusterState] = {}
        self._ops: dict[tuple[str, str, str], _OpState] = {}
        self._stockouts: list[str] = []
        self._ids = itertools.count(1)
        self._grpc_server(max_workers, self._lock)
        handlers: dict[str, Method] = {
            "GetCluster": (container_v1.GetClusterRequest, self._get_cluster),
            "ListClusters": (container_v1.ListClustersRequest, self._list_clusters),
            "CreateCluster": (container_v1.CreateClusterRequest, self._create_cluster),
            "DeleteCluster": (container_v1.DeleteClusterRequest, self._delete_cluster),
            "GetNodePool": (container_v1.GetNodePoolRequest, self._get_node_pool),
            "ListNodePools": (container_v1.ListNodePoolsRequest, self._list_node_pools),
            "CreateNodePool": (container_v1.CreateNodePoolRequest, self._create_node_pool),
            "DeleteNodePool": (container_v1.DeleteNodePoolRequest, self._delete_node_pool),
            "GetOperation": (container_v1.GetOperationRequest, self._get_operation),
        }
        self._serve(SERVICE, handlers)

    # -- lifecycle -------------------------------------------------------------------------

    def client(self) -> container_v1.ClusterManagerClient:
        """A real ``ClusterManagerClient`` talking to this fake (anonymous, insecure)."""
        return self._client(container_v1.ClusterManagerClient, ClusterManagerGrpcTransport)

    # -- fault injection and inspection ----------------------------------------------------

    def stockout_next_operation(self, code: str = "GCE_STOCKOUT") -> None:
        """Make the next create operation finish DONE with an error and a condition."""
        ConditionCode[code]  # validate the name early
        with self._lock:
            self._stockouts.append(code)

    def cluster(self, project: str, location: str, name: str) -> container_v1.Cluster | None:
        """A snapshot of a cluster (operations settled first), or None."""
        with self._lock:
            self._settle()
            state = self._clusters.get((project, location, name))
            return self._cluster_view(state) if state else None

    def node_pool(
        self, project: str, location: str, cluster: str, name: str
    ) -> container_v1.NodePool | None:
        with self._lock:
            self._settle()
            state = self._clusters.get((project, location, cluster))
            pool = state.pools.get(name) if state else None
            return _copy(pool) if pool else None

    def operation(self, name: str) -> container_v1.Operation | None:
        """An operation by its full ``projects/P/locations/L/operations/OP`` name."""
        p, loc, op = _split(name, ("operations",), "name")
        with self._lock:
            self._settle()
            state = self._ops.get((p, loc, op))
            return _copy(state.op) if state else None

    # -- plumbing --------------------------------------------------------------------------

    def _before_call(self) -> None:
        self._settle()

    def _settle(self) -> None:
        now = self.clock()
        for state in self._ops.values():
            if state.op.status == Op.Status.RUNNING and now >= state.done_at:
                self._finish(state)

    def _finish(self, state: _OpState) -> None:
        op = state.op
        op.status = Op.Status.DONE
        op.progress = container_v1.OperationProgress(status=Op.Status.DONE)
        op.end_time = _now_rfc3339()
        cluster_state = self._clusters.get(state.key)
        if cluster_state is None:
            return
        cluster = cluster_state.cluster
        kind = op.operation_type
        if kind == Op.Type.CREATE_CLUSTER:
            if state.stockout:
                cond = self._condition(state, state.stockout)
                op.cluster_conditions = [cond]
                cluster.status = ClusterStatus.ERROR
                cluster.status_message = cond.message
                cluster.conditions = [cond]
                for pool in cluster_state.pools.values():
                    pool.status = PoolStatus.ERROR
            else:
                cluster.status = ClusterStatus.RUNNING
                cluster.endpoint = self.endpoint
                cluster.master_auth.cluster_ca_certificate = self.ca_certificate
                cluster.current_node_count = sum(
                    p.initial_node_count * len(p.locations) for p in cluster_state.pools.values()
                )
                for pool in cluster_state.pools.values():
                    pool.status = PoolStatus.RUNNING
        elif kind == Op.Type.DELETE_CLUSTER:
            del self._clusters[state.key]
        elif kind == Op.Type.CREATE_NODE_POOL and state.pool in cluster_state.pools:
            pool = cluster_state.pools[state.pool]
            if state.stockout:
                cond = self._condition(state, state.stockout)
                op.nodepool_conditions = [cond]
                pool.status = PoolStatus.ERROR
                pool.status_message = cond.message
                pool.conditions = [cond]
            else:
                pool.status = PoolStatus.RUNNING
        elif kind == Op.Type.DELETE_NODE_POOL and state.pool:
            cluster_state.pools.pop(state.pool, None)

    def _condition(self, state: _OpState, code: str) -> container_v1.StatusCondition:
        project, location, _ = state.key
        if code == "GCE_STOCKOUT":
            message = STOCKOUT_MESSAGE.format(project=project, zone=_zones(location)[0])
            canonical = code_pb2.RESOURCE_EXHAUSTED
        elif code == "GCE_QUOTA_EXCEEDED":
            message, canonical = QUOTA_CONDITION_MESSAGE, code_pb2.RESOURCE_EXHAUSTED
        else:
            message, canonical = f"Operation failed: [{code}]", code_pb2.UNKNOWN
        state.op.error = status_pb2.Status(code=canonical, message=message)
        state.op.status_message = message
        return container_v1.StatusCondition(
            code=ConditionCode[code],
            message=message,
            canonical_code=canonical,
        )

    def _new_op(
        self, kind: Any, key: tuple[str, str, str], pool: str | None
    ) -> container_v1.Operation:
        project, location, cluster = key
        n = next(self._ids)
        op_id = f"operation-{1772442000000 + n}-{n:08x}"
        target = f"https://container.googleapis.com/v1/projects/{project}/locations/{location}"
        target += f"/clusters/{cluster}" + (f"/nodePools/{pool}" if pool else "")
        op = container_v1.Operation(
            name=op_id,
            zone=location,
            location=location,
            operation_type=kind,
            status=Op.Status.RUNNING,
            self_link=(
                f"https://container.googleapis.com/v1/projects/{project}/locations/"
                f"{location}/operations/{op_id}"
            ),
            target_link=target,
            start_time=_now_rfc3339(),
        )
        stockout = None
        if kind in (Op.Type.CREATE_CLUSTER, Op.Type.CREATE_NODE_POOL) and self._stockouts:
            stockout = self._stockouts.pop(0)
        self._ops[(project, location, op_id)] = _OpState(
            op=op,
            key=key,
            pool=pool,
            done_at=self.clock() + self.operation_seconds,
            stockout=stockout,
        )
        return _copy(op)

    def _running_op(self, key: tuple[str, str, str]) -> container_v1.Operation | None:
        for state in self._ops.values():
            if state.key == key and state.op.status == Op.Status.RUNNING:
                return state.op
        return None

    def _check_idle(self, key: tuple[str, str, str]) -> None:
        running = self._running_op(key)
        if running is not None:
            raise GrpcError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Cluster is running incompatible operation {running.name}. "
                "[CLUSTER_ALREADY_HAS_OPERATION]",
                reason="CLUSTER_ALREADY_HAS_OPERATION",
            )

    def _cluster_key(self, request: Any, *, field_name: str = "name") -> tuple[str, str, str]:
        path = getattr(request, field_name)
        if not path and request.project_id and request.zone and request.cluster_id:
            path = f"projects/{request.project_id}/locations/{request.zone}/clusters/"
            path += request.cluster_id
        p, loc, c = _split(path, ("clusters",), field_name)
        return p, loc, c

    def _existing(self, key: tuple[str, str, str]) -> _ClusterState:
        state = self._clusters.get(key)
        if state is None:
            p, loc, c = key
            raise GrpcError(
                grpc.StatusCode.NOT_FOUND,
                f"Not found: projects/{p}/locations/{loc}/clusters/{c}.",
            )
        return state

    def _pool_ref(self, request: Any) -> tuple[tuple[str, str, str], str]:
        path = request.name
        if not path and request.project_id and request.zone and request.cluster_id:
            path = (
                f"projects/{request.project_id}/locations/{request.zone}/clusters/"
                f"{request.cluster_id}/nodePools/{request.node_pool_id}"
            )
        p, loc, c, np = _split(path, ("clusters", "nodePools"), "name")
        return (p, loc, c), np

    def _existing_pool(self, key: tuple[str, str, str], name: str) -> container_v1.NodePool:
        pool = self._existing(key).pools.get(name)
        if pool is None:
            p, loc, c = key
            raise GrpcError(
                grpc.StatusCode.NOT_FOUND,
                f"Not found: projects/{p}/locations/{loc}/clusters/{c}/nodePools/{name}.",
            )
        return pool

    def _cluster_view(self, state: _ClusterState) -> container_v1.Cluster:
        view: container_v1.Cluster = _copy(state.cluster)
        view.node_pools = list(state.pools.values())
        return view

    # -- RPCs ------------------------------------------------------------------------------

    def _get_cluster(self, request: container_v1.GetClusterRequest) -> container_v1.Cluster:
        return self._cluster_view(self._existing(self._cluster_key(request)))

    def _list_clusters(
        self, request: container_v1.ListClustersRequest
    ) -> container_v1.ListClustersResponse:
        parent = request.parent
        if not parent and request.project_id and request.zone:
            parent = f"projects/{request.project_id}/locations/{request.zone}"
        project, location = _split(parent, (), "parent")
        clusters = [
            self._cluster_view(state)
            for (p, loc, _), state in sorted(self._clusters.items())
            if p == project and location in ("-", loc)
        ]
        return container_v1.ListClustersResponse(clusters=clusters)

    def _create_cluster(self, request: container_v1.CreateClusterRequest) -> container_v1.Operation:
        parent = request.parent
        if not parent and request.project_id and request.zone:
            parent = f"projects/{request.project_id}/locations/{request.zone}"
        project, location = _split(parent, (), "parent")
        if location == "-":
            raise _invalid("Location '-' is not valid for creating a cluster.")
        cluster: container_v1.Cluster = _copy(request.cluster)
        _check_name("cluster", cluster.name)
        if cluster.node_pools and (cluster.initial_node_count or "node_config" in cluster):
            raise _invalid(
                "Cluster.initial_node_count and Cluster.node_config must not be set "
                "together with Cluster.node_pools."
            )
        _check_node_config(cluster.node_config, "Cluster.node_config")
        pool_names = [p.name for p in cluster.node_pools]
        if len(set(pool_names)) != len(pool_names):
            raise _invalid("Node pool names must be unique within a cluster.")
        for pool in cluster.node_pools:
            _check_pool(pool, require_machine_type=False)
        wi_pool = cluster.workload_identity_config.workload_pool
        if wi_pool and wi_pool != f"{project}.svc.id.goog":
            raise _invalid(
                f"Workload Identity pool {wi_pool!r} is invalid; it must be "
                f"'{project}.svc.id.goog'."
            )
        key = (project, location, cluster.name)
        if key in self._clusters:
            raise GrpcError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"Already exists: projects/{project}/locations/{location}/clusters/{cluster.name}.",
            )
        base = f"https://container.googleapis.com/v1/projects/{project}/locations/{location}"
        pools = list(cluster.node_pools) or [
            container_v1.NodePool(
                name="default-pool",
                config=cluster.node_config,
                initial_node_count=cluster.initial_node_count or 3,
            )
        ]
        zones = list(cluster.locations) or _zones(location)
        state = _ClusterState(cluster=cluster)
        for pool in pools:
            if not pool.config.machine_type:
                pool.config.machine_type = "e2-medium"
            if not pool.locations:
                pool.locations = zones
            pool.status = PoolStatus.PROVISIONING
            pool.version = MASTER_VERSION
            pool.self_link = f"{base}/clusters/{cluster.name}/nodePools/{pool.name}"
            state.pools[pool.name] = pool
        cluster.node_pools = []
        cluster.status = ClusterStatus.PROVISIONING
        cluster.location = location
        cluster.zone = location
        cluster.locations = zones
        cluster.self_link = f"{base}/clusters/{cluster.name}"
        cluster.create_time = _now_rfc3339()
        cluster.current_master_version = MASTER_VERSION
        cluster.current_node_version = MASTER_VERSION
        cluster.id = f"{next(self._ids):032x}"
        cluster.network = cluster.network or "default"
        cluster.subnetwork = cluster.subnetwork or "default"
        labels = sorted(cluster.resource_labels.items())
        cluster.label_fingerprint = f"{zlib.crc32(repr(labels).encode()):08x}"
        self._clusters[key] = state
        return self._new_op(Op.Type.CREATE_CLUSTER, key, None)

    def _delete_cluster(self, request: container_v1.DeleteClusterRequest) -> container_v1.Operation:
        key = self._cluster_key(request)
        state = self._existing(key)
        self._check_idle(key)
        state.cluster.status = ClusterStatus.STOPPING
        for pool in state.pools.values():
            pool.status = PoolStatus.STOPPING
        return self._new_op(Op.Type.DELETE_CLUSTER, key, None)

    def _get_node_pool(self, request: container_v1.GetNodePoolRequest) -> container_v1.NodePool:
        key, name = self._pool_ref(request)
        return _copy(self._existing_pool(key, name))

    def _list_node_pools(
        self, request: container_v1.ListNodePoolsRequest
    ) -> container_v1.ListNodePoolsResponse:
        state = self._existing(self._cluster_key(request, field_name="parent"))
        return container_v1.ListNodePoolsResponse(node_pools=list(state.pools.values()))

    def _create_node_pool(
        self, request: container_v1.CreateNodePoolRequest
    ) -> container_v1.Operation:
        key = self._cluster_key(request, field_name="parent")
        pool: container_v1.NodePool = _copy(request.node_pool)
        _check_pool(pool, require_machine_type=True)
        state = self._existing(key)
        if pool.name in state.pools:
            p, loc, c = key
            raise GrpcError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"Already exists: projects/{p}/locations/{loc}/clusters/{c}/nodePools/{pool.name}.",
            )
        self._check_idle(key)
        if not pool.locations:
            pool.locations = list(state.cluster.locations)
        pool.status = PoolStatus.PROVISIONING
        pool.version = MASTER_VERSION
        pool.self_link = f"{state.cluster.self_link}/nodePools/{pool.name}"
        state.pools[pool.name] = pool
        return self._new_op(Op.Type.CREATE_NODE_POOL, key, pool.name)

    def _delete_node_pool(
        self, request: container_v1.DeleteNodePoolRequest
    ) -> container_v1.Operation:
        key, name = self._pool_ref(request)
        pool = self._existing_pool(key, name)
        self._check_idle(key)
        pool.status = PoolStatus.STOPPING
        return self._new_op(Op.Type.DELETE_NODE_POOL, key, name)

    def _get_operation(self, request: container_v1.GetOperationRequest) -> container_v1.Operation:
        path = request.name
        if not path and request.project_id and request.zone and request.operation_id:
            path = (
                f"projects/{request.project_id}/locations/{request.zone}/operations/"
                f"{request.operation_id}"
            )
        p, loc, op_id = _split(path, ("operations",), "name")
        state = self._ops.get((p, loc, op_id))
        if state is None:
            raise GrpcError(
                grpc.StatusCode.NOT_FOUND,
                f"Not found: projects/{p}/locations/{loc}/operations/{op_id}.",
            )
        return _copy(state.op)
