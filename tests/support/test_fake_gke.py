"""Tests of ``FakeGke`` through the real ``google.cloud.container_v1.ClusterManagerClient``.

Every call passes ``retry=None`` and a short timeout, so an injected error reaches the test
at once instead of being retried by the library's default policy.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import container_v1

from tests.support.clocks import FakeMonotonic
from tests.support.fake_gke import DEFAULT_CA_PEM, FakeGke

PROJECT = "kf-test-project"
LOCATION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
CLUSTER = f"{PARENT}/clusters/kf"
OP_SECONDS = 300.0
CALL: dict[str, Any] = {"retry": None, "timeout": 5.0}

Op: Any = container_v1.Operation
ClusterStatus: Any = container_v1.Cluster.Status
PoolStatus: Any = container_v1.NodePool.Status


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def gke(clock: FakeMonotonic) -> Iterator[FakeGke]:
    with FakeGke(operation_seconds=OP_SECONDS, clock=clock, endpoint="127.0.0.1:6443") as fake:
        yield fake


@pytest.fixture
def client(gke: FakeGke) -> container_v1.ClusterManagerClient:
    return gke.client()


def kf_cluster(name: str = "kf") -> container_v1.Cluster:
    return container_v1.Cluster(
        name=name,
        initial_node_count=2,
        node_config=container_v1.NodeConfig(machine_type="e2-standard-8"),
        resource_labels={"kf-name": name, "mesh_id": "proj-123"},
        workload_identity_config=container_v1.WorkloadIdentityConfig(
            workload_pool=f"{PROJECT}.svc.id.goog"
        ),
    )


def gpu_pool(
    machine_type: str = "g2-standard-8", accelerator: str = "nvidia-l4"
) -> container_v1.NodePool:
    return container_v1.NodePool(
        name="gpu-pool",
        initial_node_count=1,
        config=container_v1.NodeConfig(
            machine_type=machine_type,
            accelerators=[
                container_v1.AcceleratorConfig(accelerator_type=accelerator, accelerator_count=1)
            ],
        ),
        autoscaling=container_v1.NodePoolAutoscaling(
            enabled=True, min_node_count=0, max_node_count=5
        ),
        management=container_v1.NodeManagement(auto_repair=True, auto_upgrade=True),
    )


def op_path(op: container_v1.Operation) -> str:
    return f"{PARENT}/operations/{op.name}"


def poll(client: container_v1.ClusterManagerClient, op: container_v1.Operation) -> Any:
    return client.get_operation(name=op_path(op), **CALL)


def create_running_cluster(
    client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> container_v1.Operation:
    op = client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL)
    clock.advance(OP_SECONDS)
    assert poll(client, op).status == Op.Status.DONE
    return op


def test_create_cluster_runs_after_the_operation_time(
    gke: FakeGke, client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> None:
    op = client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL)

    assert op.status == Op.Status.RUNNING
    assert op.operation_type == Op.Type.CREATE_CLUSTER
    assert op.name.startswith("operation-")
    assert op.location == LOCATION
    assert op.target_link.endswith(f"/projects/{PROJECT}/locations/{LOCATION}/clusters/kf")
    assert op.self_link.endswith(op_path(op))

    provisioning = client.get_cluster(name=CLUSTER, **CALL)
    assert provisioning.status == ClusterStatus.PROVISIONING
    assert provisioning.endpoint == ""

    clock.advance(OP_SECONDS - 1)
    assert poll(client, op).status == Op.Status.RUNNING
    clock.advance(1)
    done = poll(client, op)
    assert done.status == Op.Status.DONE
    assert "error" not in done
    assert list(done.cluster_conditions) == []

    cluster = client.get_cluster(name=CLUSTER, **CALL)
    assert cluster.status == ClusterStatus.RUNNING
    assert cluster.endpoint == "127.0.0.1:6443"
    assert base64.b64decode(cluster.master_auth.cluster_ca_certificate) == DEFAULT_CA_PEM
    assert dict(cluster.resource_labels) == {"kf-name": "kf", "mesh_id": "proj-123"}
    assert cluster.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"
    assert [(p.name, p.status) for p in cluster.node_pools] == [
        ("default-pool", PoolStatus.RUNNING)
    ]
    assert cluster.node_pools[0].config.machine_type == "e2-standard-8"

    listed = client.list_clusters(parent=f"projects/{PROJECT}/locations/-", **CALL)
    assert [c.name for c in listed.clusters] == ["kf"]
    assert gke.count("CreateCluster") == 1
    created = gke.calls("CreateCluster")[0]
    assert isinstance(created, container_v1.CreateClusterRequest)
    assert created.parent == PARENT


def test_duplicate_cluster_is_already_exists(
    gke: FakeGke, client: container_v1.ClusterManagerClient
) -> None:
    client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL)
    with pytest.raises(exceptions.AlreadyExists):
        client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL)
    assert gke.count("CreateCluster") == 2


@pytest.mark.parametrize(
    ("parent", "cluster"),
    [
        (f"projects/{PROJECT}/zones/{LOCATION}", kf_cluster()),
        (f"projects/{PROJECT}", kf_cluster()),
        (f"{PARENT}/clusters/kf", kf_cluster()),
        (PARENT, kf_cluster("Kubeflow")),
        (PARENT, kf_cluster("1kf")),
        (PARENT, kf_cluster("k" * 41)),
        (
            PARENT,
            container_v1.Cluster(
                name="kf",
                workload_identity_config=container_v1.WorkloadIdentityConfig(
                    workload_pool="other-project.svc.id.goog"
                ),
            ),
        ),
    ],
)
def test_malformed_create_is_invalid_argument(
    gke: FakeGke,
    client: container_v1.ClusterManagerClient,
    parent: str,
    cluster: container_v1.Cluster,
) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        client.create_cluster(parent=parent, cluster=cluster, **CALL)
    assert gke.cluster(PROJECT, LOCATION, cluster.name) is None


def test_forty_character_name_is_accepted(client: container_v1.ClusterManagerClient) -> None:
    op = client.create_cluster(parent=PARENT, cluster=kf_cluster("k" * 40), **CALL)
    assert op.status == Op.Status.RUNNING


@pytest.mark.parametrize(
    ("machine_type", "accelerator"),
    [
        ("n1-standard-8", "nvidia-l4"),
        ("g2-standard-8", "nvidia-tesla-t4"),
        ("n1-standard-8", "nvidia-tesla-a100"),
        ("a2-highgpu-1g", "nvidia-h100-80gb"),
        ("a3-highgpu-8g", "nvidia-made-up"),
    ],
)
def test_gpu_must_fit_machine_family(
    client: container_v1.ClusterManagerClient,
    clock: FakeMonotonic,
    machine_type: str,
    accelerator: str,
) -> None:
    create_running_cluster(client, clock)
    with pytest.raises(exceptions.InvalidArgument) as err:
        client.create_node_pool(
            parent=CLUSTER, node_pool=gpu_pool(machine_type, accelerator), **CALL
        )
    assert accelerator in err.value.message


def test_node_pool_validation(
    client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> None:
    create_running_cluster(client, clock)
    no_machine = gpu_pool()
    no_machine.config.machine_type = ""
    no_machine.config.accelerators = []
    with pytest.raises(exceptions.InvalidArgument, match="machine_type"):
        client.create_node_pool(parent=CLUSTER, node_pool=no_machine, **CALL)
    inverted = gpu_pool()
    inverted.autoscaling.min_node_count = 6
    with pytest.raises(exceptions.InvalidArgument, match="min_node_count"):
        client.create_node_pool(parent=CLUSTER, node_pool=inverted, **CALL)
    with pytest.raises(exceptions.InvalidArgument):
        client.create_node_pool(parent=f"{PARENT}/cluster/kf", node_pool=gpu_pool(), **CALL)


def test_gpu_node_pool_lifecycle(
    gke: FakeGke, client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> None:
    create_running_cluster(client, clock)
    pool_name = f"{CLUSTER}/nodePools/gpu-pool"
    op = client.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(), **CALL)
    assert op.operation_type == Op.Type.CREATE_NODE_POOL
    assert op.target_link.endswith(pool_name)
    assert client.get_node_pool(name=pool_name, **CALL).status == PoolStatus.PROVISIONING
    with pytest.raises(exceptions.AlreadyExists):
        client.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(), **CALL)

    clock.advance(OP_SECONDS)
    assert poll(client, op).status == Op.Status.DONE
    pool = client.get_node_pool(name=pool_name, **CALL)
    assert pool.status == PoolStatus.RUNNING
    assert pool.config.accelerators[0].accelerator_type == "nvidia-l4"
    assert pool.autoscaling.max_node_count == 5
    assert pool.management.auto_repair
    pools = client.list_node_pools(parent=CLUSTER, **CALL).node_pools
    assert sorted(p.name for p in pools) == ["default-pool", "gpu-pool"]

    delete = client.delete_node_pool(name=pool_name, **CALL)
    assert delete.operation_type == Op.Type.DELETE_NODE_POOL
    assert client.get_node_pool(name=pool_name, **CALL).status == PoolStatus.STOPPING
    clock.advance(OP_SECONDS)
    with pytest.raises(exceptions.NotFound):
        client.get_node_pool(name=pool_name, **CALL)
    assert gke.count("CreateNodePool") == 2


def test_node_pool_while_cluster_creates_is_failed_precondition(
    gke: FakeGke, client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> None:
    op = client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL)
    with pytest.raises(exceptions.FailedPrecondition) as err:
        client.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(), **CALL)
    assert "CLUSTER_ALREADY_HAS_OPERATION" in err.value.message
    assert op.name in err.value.message
    assert err.value.reason == "CLUSTER_ALREADY_HAS_OPERATION"
    with pytest.raises(exceptions.FailedPrecondition):
        client.delete_cluster(name=CLUSTER, **CALL)

    clock.advance(OP_SECONDS)
    client.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(), **CALL)
    assert gke.node_pool(PROJECT, LOCATION, "kf", "gpu-pool") is not None


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, exceptions.ResourceExhausted),
        (grpc.StatusCode.PERMISSION_DENIED, exceptions.PermissionDenied),
    ],
)
def test_injected_quota_error_arrives_with_its_message(
    gke: FakeGke,
    client: container_v1.ClusterManagerClient,
    code: grpc.StatusCode,
    exc_type: type[exceptions.GoogleAPICallError],
) -> None:
    message = (
        'Insufficient regional quota to satisfy request: resource "CPUS": '
        "request requires '48.0' and is short '24.0'."
    )
    gke.fail_next("CreateCluster", code, message)
    with pytest.raises(exc_type) as err:
        client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL)
    assert err.value.message == message
    assert gke.cluster(PROJECT, LOCATION, "kf") is None
    # Only the next call fails.
    assert client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL).name
    assert gke.count("CreateCluster") == 2


def test_injected_unavailable_with_retry_none_fails_fast(
    gke: FakeGke, client: container_v1.ClusterManagerClient
) -> None:
    gke.fail_next("GetCluster", grpc.StatusCode.UNAVAILABLE, "try again", times=2)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable):
            client.get_cluster(name=CLUSTER, **CALL)
    assert time.monotonic() - started < 3
    with pytest.raises(exceptions.NotFound):
        client.get_cluster(name=CLUSTER, **CALL)


def test_stockout_finishes_operation_with_error_and_condition(
    gke: FakeGke, client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> None:
    gke.stockout_next_operation()
    op = client.create_cluster(parent=PARENT, cluster=kf_cluster(), **CALL)
    assert poll(client, op).status == Op.Status.RUNNING
    clock.advance(OP_SECONDS)
    done = poll(client, op)
    assert done.status == Op.Status.DONE
    assert done.error.code != 0
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in done.error.message
    [condition] = done.cluster_conditions
    assert condition.code == container_v1.StatusCondition.Code.GCE_STOCKOUT
    assert condition.message.startswith("Try a different location")
    assert client.get_cluster(name=CLUSTER, **CALL).status == ClusterStatus.ERROR


def test_stockout_on_node_pool(
    gke: FakeGke, client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> None:
    create_running_cluster(client, clock)
    gke.stockout_next_operation()
    op = client.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(), **CALL)
    clock.advance(OP_SECONDS)
    done = poll(client, op)
    assert done.status == Op.Status.DONE
    assert done.error.message
    [condition] = done.nodepool_conditions
    assert condition.code == container_v1.StatusCondition.Code.GCE_STOCKOUT
    pool = client.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-pool", **CALL)
    assert pool.status == PoolStatus.ERROR


def test_missing_things_are_not_found(client: container_v1.ClusterManagerClient) -> None:
    with pytest.raises(exceptions.NotFound):
        client.get_cluster(name=CLUSTER, **CALL)
    with pytest.raises(exceptions.NotFound):
        client.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-pool", **CALL)
    with pytest.raises(exceptions.NotFound):
        client.delete_cluster(name=CLUSTER, **CALL)
    with pytest.raises(exceptions.NotFound):
        client.get_operation(name=f"{PARENT}/operations/operation-123", **CALL)
    with pytest.raises(exceptions.InvalidArgument):
        client.get_operation(name="operations/operation-123", **CALL)


def test_delete_cluster_stops_then_disappears(
    gke: FakeGke, client: container_v1.ClusterManagerClient, clock: FakeMonotonic
) -> None:
    create_running_cluster(client, clock)
    op = client.delete_cluster(name=CLUSTER, **CALL)
    assert op.operation_type == Op.Type.DELETE_CLUSTER
    assert op.status == Op.Status.RUNNING
    assert client.get_cluster(name=CLUSTER, **CALL).status == ClusterStatus.STOPPING
    clock.advance(OP_SECONDS)
    assert poll(client, op).status == Op.Status.DONE
    with pytest.raises(exceptions.NotFound):
        client.get_cluster(name=CLUSTER, **CALL)
    assert client.list_clusters(parent=PARENT, **CALL).clusters == []
    assert [call.method for call in gke.requests].count("DeleteCluster") == 1


def test_deprecated_zone_fields_and_concurrent_requests(
    gke: FakeGke, client: container_v1.ClusterManagerClient
) -> None:
    op = client.create_cluster(
        request=container_v1.CreateClusterRequest(
            project_id=PROJECT, zone="us-central1-a", cluster=kf_cluster()
        ),
        **CALL,
    )
    assert op.zone == "us-central1-a"
    name = f"projects/{PROJECT}/locations/us-central1-a/clusters/kf"
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda _: client.get_cluster(name=name, **CALL).name, range(20)))
    assert got == ["kf"] * 20
    assert gke.count("GetCluster") == 20
