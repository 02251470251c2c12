"""``ComputeClient`` through the real ``compute_v1`` REST clients against ``FakeCompute``.

Operations finish only when a test advances the fake's clock; injected faults show how
each library exception becomes a temporary or permanent error.  The last test drives the
real ``ensure_gpu_zone`` / ``ensure_static_ip`` steps over the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type

from provisioning.actions import CreateAction
from provisioning.cloud import Cloud
from provisioning.compute_client import ComputeClient
from provisioning.create_steps import address_name, ensure_gpu_zone, ensure_static_ip
from provisioning.engine import Outcome, StepContext
from provisioning.errors import PermanentError, TemporaryError
from provisioning.spec import DeploymentSpec, GpuSpec
from tests.support.clocks import FakeClock, FakeMonotonic
from tests.support.fake_compute import FakeCompute

PROJECT = "kf-proj"
T4 = "nvidia-tesla-t4"
T4_ZONES = ("us-central1-a", "us-central1-f", "europe-west4-a")
OP_SECONDS = 30.0
ADDRESSES = f"/compute/v1/projects/{PROJECT}/global/addresses"


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def compute(clock: FakeMonotonic) -> Iterator[FakeCompute]:
    with FakeCompute(
        accelerators={T4: T4_ZONES, "nvidia-l4": ("us-central1-c",)},
        polls_to_done=1000,
        seconds_to_done=OP_SECONDS,
        clock=clock,
    ) as fake:
        yield fake


@pytest.fixture
def client(compute: FakeCompute) -> ComputeClient:
    # Reads retry 503 for a few hundredths of a second here.
    quick = Retry(
        predicate=if_exception_type(exceptions.ServiceUnavailable),
        initial=0.01,
        maximum=0.01,
        timeout=0.05,
    )
    return ComputeClient(
        compute.accelerator_types_client(),
        compute.addresses_client(),
        compute.operations_client(),
        compute.backend_services_client(),
        read_retry=quick,
        timeout=5.0,
    )


def test_zones_offering_a_gpu_come_from_the_aggregated_list(
    client: ComputeClient, compute: FakeCompute
) -> None:
    assert sorted(client.zones_offering(PROJECT, T4)) == sorted(T4_ZONES)
    assert client.zones_offering(PROJECT, "nvidia-l4") == frozenset({"us-central1-c"})
    assert compute.requests[0].query["filter"] == [f'name = "{T4}"']


def test_an_unknown_gpu_is_offered_nowhere(client: ComputeClient) -> None:
    assert client.zones_offering(PROJECT, "nvidia-h100-80gb") == frozenset()


def test_a_new_address_has_no_ip_until_its_operation_is_done(
    client: ComputeClient, compute: FakeCompute, clock: FakeMonotonic
) -> None:
    assert client.get_global_address(PROJECT, "kf-ip") is None
    client.create_global_address(PROJECT, "kf-ip")
    assert compute.addresses(PROJECT)["kf-ip"]["status"] == "RESERVING"
    assert client.get_global_address(PROJECT, "kf-ip") is None

    clock.advance(OP_SECONDS)  # the fake settles an address's operation when it is read
    ip = client.get_global_address(PROJECT, "kf-ip")
    assert ip is not None and ip.startswith("34.")

    post = next(r for r in compute.requests if r.method == "POST")
    assert post.body is not None
    assert (post.body["addressType"], post.body["ipVersion"]) == ("EXTERNAL", "IPV4")
    assert post.body["description"]


def test_creating_twice_reserves_one_address_quietly(
    client: ComputeClient, compute: FakeCompute
) -> None:
    client.create_global_address(PROJECT, "kf-ip")
    client.create_global_address(PROJECT, "kf-ip")
    assert list(compute.addresses(PROJECT)) == ["kf-ip"]
    assert [r.status for r in compute.requests if r.method == "POST"] == [200, 409]


def test_address_quota_is_a_permanent_error_naming_the_quota(
    client: ComputeClient, compute: FakeCompute
) -> None:
    compute.fail_next("POST", 403, "quotaExceeded", "Quota 'STATIC_ADDRESSES' exceeded.")
    with pytest.raises(PermanentError) as err:
        client.create_global_address(PROJECT, "kf-ip")
    assert "STATIC_ADDRESSES" in err.value.user_message
    assert "release an address" in err.value.user_message
    assert isinstance(err.value.__cause__, exceptions.Forbidden)
    assert compute.addresses(PROJECT) == {}


def test_connect_reaches_the_emulator_host_and_an_insert_failing_at_once_is_permanent() -> None:
    with FakeCompute(polls_to_done=0) as fake:
        # As the composition root passes COMPUTE_EMULATOR_HOST: host:port, no scheme.
        client = ComputeClient.connect(fake.endpoint.removeprefix("http://"))
        assert client.zones_offering(PROJECT, T4)
        fake.fail_next_operation("QUOTA_EXCEEDED", "Quota 'STATIC_ADDRESSES' exceeded.")
        with pytest.raises(PermanentError, match="STATIC_ADDRESSES"):
            client.create_global_address(PROJECT, "kf-ip")


def test_a_missing_permission_is_named_with_the_project(
    client: ComputeClient, compute: FakeCompute
) -> None:
    compute.fail_next("POST", 403, "forbidden", "Required permission denied.")
    with pytest.raises(PermanentError) as err:
        client.create_global_address(PROJECT, "kf-ip")
    assert "compute.globalAddresses.create" in err.value.user_message
    assert PROJECT in err.value.user_message
    compute.fail_next("GET", 403, "forbidden", "Required permission denied.")
    with pytest.raises(PermanentError, match=r"compute\.acceleratorTypes\.list"):
        client.zones_offering(PROJECT, T4)


def test_unavailable_rate_limits_and_no_connection_are_temporary(
    client: ComputeClient, compute: FakeCompute
) -> None:
    compute.fail_next("POST", 503, "backendError", "Backend Error")
    with pytest.raises(TemporaryError) as err:
        client.create_global_address(PROJECT, "kf-ip")
    assert isinstance(err.value.__cause__, exceptions.ServiceUnavailable)
    compute.fail_next("GET", 503, "backendError", "Backend Error", times=1000)
    with pytest.raises(TemporaryError):
        client.get_global_address(PROJECT, "kf-ip")
    compute.fail_next("GET", 429, "rateLimitExceeded", "Rate Limit Exceeded")
    with pytest.raises(TemporaryError):
        client.zones_offering(PROJECT, T4)
    compute.stop()
    gone = ComputeClient.connect("127.0.0.1:1")
    with pytest.raises(TemporaryError, match="could not reach"):
        gone.get_global_address(PROJECT, "kf-ip")


def test_a_bad_request_carries_computes_message(client: ComputeClient) -> None:
    with pytest.raises(PermanentError, match=r"resource\.name"):
        client.create_global_address(PROJECT, "Kf_IP")


def test_delete_then_get_is_none_and_deleting_again_is_quiet(
    client: ComputeClient, compute: FakeCompute, clock: FakeMonotonic
) -> None:
    compute.put_address(PROJECT, "old-ip")
    assert client.get_global_address(PROJECT, "old-ip") == "34.120.0.99"
    client.delete_global_address(PROJECT, "old-ip")
    assert client.get_global_address(PROJECT, "old-ip") == "34.120.0.99"  # still deleting
    clock.advance(OP_SECONDS)
    assert client.get_global_address(PROJECT, "old-ip") is None
    client.delete_global_address(PROJECT, "old-ip")


class ComputeOnlyCloud:
    """Just enough of ``Cloud`` for the GPU-zone and static-IP steps, over ``ComputeClient``."""

    dry_run = False

    def __init__(self, compute: ComputeClient) -> None:
        self.zones_offering = compute.zones_offering
        self.get_global_address = compute.get_global_address
        self.create_global_address = compute.create_global_address

    def drain_calls(self) -> list[str]:
        return []


def context(client: ComputeClient, zone: str) -> StepContext:
    spec = DeploymentSpec(
        name="kf",
        project=PROJECT,
        zone=zone,
        gpu=GpuSpec(type=T4, machine_type="n1-standard-8", max_nodes=2),
    )
    return StepContext(
        request_id="kf-crt001",
        requester="U0ADA",
        action=CreateAction(spec=spec),
        cloud=cast(Cloud, ComputeOnlyCloud(client)),
        clock=FakeClock(),
    )


def test_the_steps_reserve_the_ip_once_and_refuse_a_zone_without_the_gpu(
    client: ComputeClient, compute: FakeCompute, clock: FakeMonotonic
) -> None:
    ctx = context(client, "us-central1-a")
    assert ensure_gpu_zone(ctx).outcome == Outcome.UNCHANGED
    assert ensure_static_ip(ctx).outcome == Outcome.CREATED
    assert ensure_static_ip(ctx).outcome == Outcome.CREATED  # still reserving: 409, quiet
    clock.advance(OP_SECONDS)
    again = ensure_static_ip(ctx)
    assert again.outcome == Outcome.UNCHANGED
    assert address_name("kf") in again.detail
    assert list(compute.addresses(PROJECT)) == [address_name("kf")]

    with pytest.raises(PermanentError) as err:
        ensure_gpu_zone(context(client, "us-central1-c"))
    assert "us-central1-c does not offer" in err.value.user_message
    assert "us-central1-a, us-central1-f, europe-west4-a" in err.value.user_message


# -- Backend services -------------------------------------------------------------------------


def test_a_backend_service_s_id_is_read_by_its_name(
    client: ComputeClient, compute: FakeCompute
) -> None:
    made = compute.put_backend_service(PROJECT, "k8s-be-31380--5f1c9e3a7d2b4c60")

    assert client.backend_service_id(PROJECT, "k8s-be-31380--5f1c9e3a7d2b4c60") == made
    [request] = compute.requests
    assert (request.method, request.path) == (
        "GET",
        f"/compute/v1/projects/{PROJECT}/global/backendServices/k8s-be-31380--5f1c9e3a7d2b4c60",
    )


def test_a_backend_service_gke_has_not_made_yet_has_no_id(client: ComputeClient) -> None:
    assert client.backend_service_id(PROJECT, "k8s-be-31380--5f1c9e3a7d2b4c60") is None


def test_reading_backend_services_without_permission_names_the_permission(
    client: ComputeClient, compute: FakeCompute
) -> None:
    compute.fail_next("GET", 403, "forbidden", "Required 'compute.backendServices.get'")

    with pytest.raises(PermanentError, match=r"compute\.backendServices\.get"):
        client.backend_service_id(PROJECT, "k8s-be-31380--abc")
