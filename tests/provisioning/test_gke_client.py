"""``GkeClient`` through the real ``ClusterManagerClient`` against ``FakeGke`` on loopback.

Time moves only when a test advances the fake's clock; injected faults show how each
library exception becomes a temporary or permanent error.  The last tests drive the real
``ensure_cluster`` / ``ensure_gpu_node_pool`` steps over the client.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type
from google.cloud import container_v1

from provisioning.actions import CreateAction
from provisioning.cloud import Cloud, ClusterInfo, ClusterRequest, NodePoolRequest
from provisioning.create_steps import NODE_POOL_NAME, ensure_cluster, ensure_gpu_node_pool
from provisioning.engine import Outcome, StepContext
from provisioning.errors import PermanentError, TemporaryError
from provisioning.gke_client import GkeClient
from provisioning.spec import DeploymentSpec, GpuSpec
from tests.support.clocks import FakeClock, FakeMonotonic
from tests.support.fake_gke import DEFAULT_CA_PEM, FakeGke

PROJECT = "kf-test-project"
ZONE = "us-central1-a"
NAME = "kf"
OP_SECONDS = 300.0
LABELS = {"managed-by": "kubeflow-bot", "kubeflow-bot-request": "kf-crt001"}
QUOTA_MESSAGE = (
    'Insufficient regional quota to satisfy request: resource "CPUS": request requires '
    "'24.0' and is short '16.0'. project has a quota of '8.0' with '8.0' available."
)

ClusterStatus: Any = container_v1.Cluster.Status
DriverVersion: Any = container_v1.GPUDriverInstallationConfig.GPUDriverVersion
MetadataMode: Any = container_v1.WorkloadMetadataConfig.Mode
Channel: Any = container_v1.ReleaseChannel.Channel


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def gke(clock: FakeMonotonic) -> Iterator[FakeGke]:
    with FakeGke(operation_seconds=OP_SECONDS, clock=clock, endpoint="127.0.0.1:6443") as fake:
        yield fake


@pytest.fixture
def client(gke: FakeGke) -> GkeClient:
    # Reads retry UNAVAILABLE for at most a few hundredths of a second here.
    quick = Retry(
        predicate=if_exception_type(exceptions.ServiceUnavailable),
        initial=0.01,
        maximum=0.01,
        timeout=0.05,
    )
    return GkeClient(gke.client(), read_retry=quick, timeout=5.0)


def cluster_request(name: str = NAME) -> ClusterRequest:
    return ClusterRequest(
        project=PROJECT,
        zone=ZONE,
        name=name,
        machine_type="e2-standard-8",
        node_service_account=f"{name}-vm@{PROJECT}.iam.gserviceaccount.com",
        workload_pool=f"{PROJECT}.svc.id.goog",
        release_channel="REGULAR",
        labels=LABELS,
    )


def pool_request(
    machine_type: str = "n1-standard-8", accelerator: str = "nvidia-tesla-t4"
) -> NodePoolRequest:
    return NodePoolRequest(
        project=PROJECT,
        zone=ZONE,
        cluster=NAME,
        name="gpu-pool",
        machine_type=machine_type,
        accelerator_type=accelerator,
        accelerator_count=2,
        min_nodes=0,
        max_nodes=3,
        service_account=f"{NAME}-vm@{PROJECT}.iam.gserviceaccount.com",
    )


def running_cluster(client: GkeClient, clock: FakeMonotonic) -> None:
    client.create_cluster(cluster_request())
    clock.advance(OP_SECONDS)


# -- clusters ------------------------------------------------------------------------------


def test_a_created_cluster_is_provisioning_then_running_with_endpoint_ca_and_labels(
    client: GkeClient, clock: FakeMonotonic
) -> None:
    client.create_cluster(cluster_request())

    assert client.get_cluster(PROJECT, ZONE, NAME) == ClusterInfo(
        status="PROVISIONING", labels=LABELS
    )
    clock.advance(OP_SECONDS)
    info = client.get_cluster(PROJECT, ZONE, NAME)
    assert info is not None
    assert info.status == "RUNNING"
    assert info.endpoint == "127.0.0.1:6443"
    assert base64.b64decode(info.ca_certificate) == DEFAULT_CA_PEM
    assert dict(info.labels) == LABELS


def test_the_create_request_carries_identity_load_balancing_labels_channel_and_nodes(
    client: GkeClient, gke: FakeGke
) -> None:
    client.create_cluster(cluster_request())

    [sent] = gke.calls("CreateCluster")
    assert sent.parent == f"projects/{PROJECT}/locations/{ZONE}"
    cluster = sent.cluster
    assert cluster.name == NAME
    assert cluster.initial_node_count == 2
    assert cluster.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"
    assert "http_load_balancing" in cluster.addons_config
    assert cluster.addons_config.http_load_balancing.disabled is False
    assert dict(cluster.resource_labels) == LABELS
    assert cluster.release_channel.channel == Channel.REGULAR
    assert cluster.logging_service == "logging.googleapis.com/kubernetes"
    assert cluster.monitoring_service == "monitoring.googleapis.com/kubernetes"
    node = cluster.node_config
    assert node.machine_type == "e2-standard-8"
    assert node.service_account == f"{NAME}-vm@{PROJECT}.iam.gserviceaccount.com"
    assert list(node.oauth_scopes) == ["https://www.googleapis.com/auth/cloud-platform"]
    assert dict(node.metadata) == {"disable-legacy-endpoints": "true"}
    assert node.workload_metadata_config.mode == MetadataMode.GKE_METADATA


def test_creating_a_cluster_twice_is_quiet_and_leaves_one_cluster(
    client: GkeClient, gke: FakeGke
) -> None:
    client.create_cluster(cluster_request())
    client.create_cluster(cluster_request())

    assert gke.count("CreateCluster") == 2
    listed = gke.client().list_clusters(
        parent=f"projects/{PROJECT}/locations/-", retry=None, timeout=5.0
    )
    assert [c.name for c in listed.clusters] == [NAME]


def test_connect_reaches_an_emulator_anonymously(gke: FakeGke) -> None:
    client = GkeClient.connect(gke.target)

    assert client.get_cluster(PROJECT, ZONE, NAME) is None
    assert gke.count("GetCluster") == 1


def test_a_missing_cluster_reads_as_none(client: GkeClient) -> None:
    assert client.get_cluster(PROJECT, ZONE, "absent") is None
    assert client.cluster_problem(PROJECT, ZONE, "absent") is None
    assert client.get_node_pool_status(PROJECT, ZONE, "absent", "gpu-pool") is None


def test_deleting_a_cluster_stops_it_and_then_it_is_gone(
    client: GkeClient, clock: FakeMonotonic
) -> None:
    running_cluster(client, clock)

    client.delete_cluster(PROJECT, ZONE, NAME)
    info = client.get_cluster(PROJECT, ZONE, NAME)
    assert info is not None
    assert info.status == "STOPPING"
    clock.advance(OP_SECONDS)
    assert client.get_cluster(PROJECT, ZONE, NAME) is None
    client.delete_cluster(PROJECT, ZONE, NAME)  # already gone: quiet


def test_a_stock_out_leaves_the_cluster_in_error_and_names_the_zone(
    client: GkeClient, gke: FakeGke, clock: FakeMonotonic
) -> None:
    gke.stockout_next_operation("GCE_STOCKOUT")
    running_cluster(client, clock)

    info = client.get_cluster(PROJECT, ZONE, NAME)
    assert info is not None
    assert info.status == "ERROR"
    problem = client.cluster_problem(PROJECT, ZONE, NAME)
    assert problem is not None
    assert problem.startswith(f"{ZONE} has run out of the machines this cluster needs")
    assert "(GCE_STOCKOUT)" in problem


def test_a_healthy_cluster_has_no_problem(client: GkeClient, clock: FakeMonotonic) -> None:
    running_cluster(client, clock)

    assert client.cluster_problem(PROJECT, ZONE, NAME) is None


# -- node pools ----------------------------------------------------------------------------


def test_a_t4_pool_on_n1_asks_for_the_default_driver_and_autoscales_from_zero(
    client: GkeClient, gke: FakeGke, clock: FakeMonotonic
) -> None:
    running_cluster(client, clock)

    client.create_node_pool(pool_request())

    assert client.get_node_pool_status(PROJECT, ZONE, NAME, "gpu-pool") == "PROVISIONING"
    clock.advance(OP_SECONDS)
    assert client.get_node_pool_status(PROJECT, ZONE, NAME, "gpu-pool") == "RUNNING"
    [sent] = gke.calls("CreateNodePool")
    assert sent.parent == f"projects/{PROJECT}/locations/{ZONE}/clusters/{NAME}"
    pool = sent.node_pool
    assert pool.initial_node_count == 0
    assert pool.config.machine_type == "n1-standard-8"
    [accelerator] = pool.config.accelerators
    assert accelerator.accelerator_type == "nvidia-tesla-t4"
    assert accelerator.accelerator_count == 2
    assert accelerator.gpu_driver_installation_config.gpu_driver_version == (DriverVersion.DEFAULT)
    assert pool.config.workload_metadata_config.mode == MetadataMode.GKE_METADATA
    assert pool.config.service_account == f"{NAME}-vm@{PROJECT}.iam.gserviceaccount.com"
    assert (pool.autoscaling.enabled, pool.autoscaling.min_node_count) == (True, 0)
    assert pool.autoscaling.max_node_count == 3
    assert (pool.management.auto_repair, pool.management.auto_upgrade) == (True, True)


def test_a_stocked_out_pool_names_the_zone(
    client: GkeClient, gke: FakeGke, clock: FakeMonotonic
) -> None:
    running_cluster(client, clock)
    gke.stockout_next_operation("GCE_STOCKOUT")
    client.create_node_pool(pool_request())
    clock.advance(OP_SECONDS)

    assert client.get_node_pool_status(PROJECT, ZONE, NAME, "gpu-pool") == "ERROR"
    problem = client.node_pool_problem(PROJECT, ZONE, NAME, "gpu-pool")
    assert problem is not None
    assert problem.startswith(f"{ZONE} has run out of the machines this node pool needs")


def test_a_quota_condition_reads_as_a_quota_sentence(
    client: GkeClient, gke: FakeGke, clock: FakeMonotonic
) -> None:
    gke.stockout_next_operation("GCE_QUOTA_EXCEEDED")
    running_cluster(client, clock)

    problem = client.cluster_problem(PROJECT, ZONE, NAME)
    assert problem is not None
    assert "quota in us-central1" in problem
    assert "GCE_QUOTA_EXCEEDED" in problem


# -- errors --------------------------------------------------------------------------------


def test_unavailable_is_temporary(client: GkeClient, gke: FakeGke) -> None:
    gke.fail_next("CreateCluster", grpc.StatusCode.UNAVAILABLE, "connection reset")

    with pytest.raises(TemporaryError) as raised:
        client.create_cluster(cluster_request())

    assert raised.value.delay == 10.0
    assert "UNAVAILABLE" in str(raised.value)
    assert isinstance(raised.value.__cause__, exceptions.ServiceUnavailable)
    assert gke.count("CreateCluster") == 1


def test_reads_retry_unavailable_briefly_then_give_up_as_temporary(
    client: GkeClient, gke: FakeGke
) -> None:
    gke.fail_next("GetCluster", grpc.StatusCode.UNAVAILABLE, "blip")
    assert client.get_cluster(PROJECT, ZONE, NAME) is None

    gke.fail_next("GetCluster", grpc.StatusCode.UNAVAILABLE, "down", times=1000)
    with pytest.raises(TemporaryError):
        client.get_cluster(PROJECT, ZONE, NAME)


def test_deadline_and_internal_errors_are_temporary(client: GkeClient, gke: FakeGke) -> None:
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
        gke.fail_next("CreateCluster", code, "try later")
        with pytest.raises(TemporaryError):
            client.create_cluster(cluster_request())


def test_too_many_concurrent_operations_is_temporary(client: GkeClient, gke: FakeGke) -> None:
    gke.fail_next(
        "CreateNodePool",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Too many operations: cluster kf hits the concurrent operations quota 5",
    )

    with pytest.raises(TemporaryError):
        client.create_node_pool(pool_request())


def test_a_pool_while_the_cluster_is_being_created_waits_thirty_seconds(
    client: GkeClient, gke: FakeGke
) -> None:
    client.create_cluster(cluster_request())

    with pytest.raises(TemporaryError) as raised:
        client.create_node_pool(pool_request())

    assert raised.value.delay == 30.0
    assert isinstance(raised.value.__cause__, exceptions.FailedPrecondition)


def test_regional_quota_is_permanent_and_names_the_quota_and_region(
    client: GkeClient, gke: FakeGke
) -> None:
    gke.fail_next("CreateCluster", grpc.StatusCode.RESOURCE_EXHAUSTED, QUOTA_MESSAGE)

    with pytest.raises(PermanentError) as raised:
        client.create_cluster(cluster_request())

    message = raised.value.user_message
    assert message.startswith("GKE needs more CPUS quota in us-central1 than project")
    assert "ask for a quota increase or use a smaller machine type" in message
    assert isinstance(raised.value.__cause__, exceptions.ResourceExhausted)


def test_quota_as_permission_denied_is_still_a_quota_error(client: GkeClient, gke: FakeGke) -> None:
    gke.fail_next("CreateCluster", grpc.StatusCode.PERMISSION_DENIED, QUOTA_MESSAGE)

    with pytest.raises(PermanentError) as raised:
        client.create_cluster(cluster_request())

    assert "more CPUS quota in us-central1" in raised.value.user_message


def test_permission_denied_names_the_missing_permission(client: GkeClient, gke: FakeGke) -> None:
    gke.fail_next(
        "CreateCluster",
        grpc.StatusCode.PERMISSION_DENIED,
        f"Required 'container.clusters.create' permission for 'projects/{PROJECT}'.",
    )

    with pytest.raises(PermanentError) as raised:
        client.create_cluster(cluster_request())

    assert raised.value.user_message.startswith(
        f"the bot's service account may not create clusters in {PROJECT} "
        "(container.clusters.create)"
    )
    assert isinstance(raised.value.__cause__, exceptions.PermissionDenied)


def test_a_global_gpu_quota_is_named_as_such(client: GkeClient, gke: FakeGke) -> None:
    gke.fail_next(
        "CreateNodePool",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally.",
    )

    with pytest.raises(PermanentError) as raised:
        client.create_node_pool(pool_request())

    assert "more GPUS_ALL_REGIONS quota across all regions" in raised.value.user_message


def test_a_disabled_api_is_named(client: GkeClient, gke: FakeGke) -> None:
    gke.fail_next(
        "GetCluster",
        grpc.StatusCode.PERMISSION_DENIED,
        f"Kubernetes Engine API has not been used in project {PROJECT} before or it is disabled.",
        reason="SERVICE_DISABLED",
    )

    with pytest.raises(PermanentError) as raised:
        client.get_cluster(PROJECT, ZONE, NAME)

    assert "container.googleapis.com" in raised.value.user_message


def test_a_gpu_the_machine_cannot_carry_is_permanent_with_gkes_words(
    client: GkeClient, clock: FakeMonotonic
) -> None:
    running_cluster(client, clock)

    with pytest.raises(PermanentError) as raised:
        client.create_node_pool(pool_request(accelerator="nvidia-l4"))

    assert raised.value.user_message.startswith("GKE refused to create node pool gpu-pool")
    assert "'nvidia-l4' is not supported on machine type 'n1-standard-8'" in (
        raised.value.user_message
    )
    assert isinstance(raised.value.__cause__, exceptions.InvalidArgument)


# -- the steps over the client -------------------------------------------------------------


class GkeOnlyCloud:
    """Just enough of ``Cloud`` for the cluster and GPU steps, delegating to ``GkeClient``."""

    dry_run = False

    def __init__(self, gke: GkeClient) -> None:
        self.gke = gke
        self.get_cluster = gke.get_cluster
        self.create_cluster = gke.create_cluster
        self.get_node_pool_status = gke.get_node_pool_status
        self.create_node_pool = gke.create_node_pool

    def drain_calls(self) -> list[str]:
        return []


def test_the_steps_go_from_pending_to_unchanged_and_create_each_thing_once(
    client: GkeClient, gke: FakeGke, clock: FakeMonotonic
) -> None:
    spec = DeploymentSpec(
        name=NAME,
        project=PROJECT,
        zone=ZONE,
        gpu=GpuSpec(type="nvidia-tesla-t4", machine_type="n1-standard-8", max_nodes=2),
    )
    ctx = StepContext(
        request_id="kf-crt001",
        requester="U0ADA",
        action=CreateAction(spec=spec),
        cloud=cast(Cloud, GkeOnlyCloud(client)),
        clock=FakeClock(),
    )

    assert ensure_cluster(ctx).outcome == Outcome.PENDING
    assert ensure_cluster(ctx).outcome == Outcome.PENDING
    clock.advance(OP_SECONDS)
    assert ensure_cluster(ctx).outcome == Outcome.UNCHANGED

    assert ensure_gpu_node_pool(ctx).outcome == Outcome.PENDING
    assert ensure_gpu_node_pool(ctx).outcome == Outcome.PENDING
    clock.advance(OP_SECONDS)
    for _ in range(2):
        assert ensure_cluster(ctx).outcome == Outcome.UNCHANGED
        assert ensure_gpu_node_pool(ctx).outcome == Outcome.UNCHANGED

    assert gke.count("CreateCluster") == 1
    assert gke.count("CreateNodePool") == 1
    pool = gke.node_pool(PROJECT, ZONE, NAME, NODE_POOL_NAME)
    assert pool is not None
    assert pool.autoscaling.max_node_count == 2


def test_a_busy_cluster_surfaces_from_the_pool_step_as_temporary(
    client: GkeClient, gke: FakeGke
) -> None:
    spec = DeploymentSpec(
        name=NAME,
        project=PROJECT,
        zone=ZONE,
        gpu=GpuSpec(type="nvidia-tesla-t4", machine_type="n1-standard-8"),
    )
    ctx = StepContext(
        request_id="kf-crt001",
        requester="U0ADA",
        action=CreateAction(spec=spec),
        cloud=cast(Cloud, GkeOnlyCloud(client)),
        clock=FakeClock(),
    )
    ensure_cluster(ctx)

    with pytest.raises(TemporaryError) as raised:
        ensure_gpu_node_pool(ctx)

    assert raised.value.delay == 30.0
    assert gke.count("CreateNodePool") == 1
