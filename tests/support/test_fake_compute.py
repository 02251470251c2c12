"""FakeCompute through the real google-cloud-compute REST clients (loopback only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.api_core import exceptions
from google.cloud import compute_v1

from tests.support.clocks import FakeMonotonic
from tests.support.fake_compute import FakeCompute

PROJECT = "kf-proj"


@pytest.fixture
def compute() -> Iterator[FakeCompute]:
    with FakeCompute(
        accelerators={
            "nvidia-tesla-t4": ["us-central1-a", "us-central1-f"],
            "nvidia-l4": ["us-central1-a", "us-central1-c"],
        }
    ) as fake:
        yield fake


def gpu_zones(fake: FakeCompute, gpu: str) -> dict[str, int]:
    client = fake.accelerator_types_client()
    request = compute_v1.AggregatedListAcceleratorTypesRequest(
        project=PROJECT, filter=f'name = "{gpu}"'
    )
    zones: dict[str, int] = {}
    for scope, scoped in client.aggregated_list(request=request, retry=None):
        for accel in scoped.accelerator_types:
            assert accel.name == gpu
            assert accel.zone.endswith(f"/zones/{scope.removeprefix('zones/')}")
            zones[scope.removeprefix("zones/")] = accel.maximum_cards_per_instance
    return zones


def wait_done(fake: FakeCompute, name: str, polls: int = 10) -> compute_v1.Operation:
    ops = fake.operations_client()
    for _ in range(polls):
        op = ops.wait(project=PROJECT, operation=name, retry=None)
        if op.status == compute_v1.Operation.Status.DONE:
            return op
    raise AssertionError(f"operation {name} not DONE after {polls} polls")


def insert(fake: FakeCompute, name: str) -> str:
    op = fake.addresses_client().insert(
        project=PROJECT,
        address_resource=compute_v1.Address(
            name=name, address_type="EXTERNAL", ip_version="IPV4", description="Static IP."
        ),
        retry=None,
    )
    return str(op.name)


def test_aggregated_accelerator_types_give_the_zones_offering_a_gpu(compute: FakeCompute) -> None:
    assert gpu_zones(compute, "nvidia-tesla-t4") == {"us-central1-a": 4, "us-central1-f": 4}
    assert gpu_zones(compute, "nvidia-l4") == {"us-central1-a": 8, "us-central1-c": 8}
    assert gpu_zones(compute, "nvidia-h100-80gb") == {}
    req = compute.requests[0]
    assert (req.method, req.path) == (
        "GET",
        f"/compute/v1/projects/{PROJECT}/aggregated/acceleratorTypes",
    )
    assert req.query["filter"] == ['name = "nvidia-tesla-t4"']


def test_aggregated_list_without_filter_and_with_regex_filter(compute: FakeCompute) -> None:
    client = compute.accelerator_types_client()
    everything = {
        (scope, a.name)
        for scope, scoped in client.aggregated_list(project=PROJECT, retry=None)
        for a in scoped.accelerator_types
    }
    assert len(everything) == 4
    request = compute_v1.AggregatedListAcceleratorTypesRequest(
        project=PROJECT, filter="name eq nvidia-tesla-.*"
    )
    regex = {
        a.name
        for _, s in client.aggregated_list(request=request, retry=None)
        for a in s.accelerator_types
    }
    assert regex == {"nvidia-tesla-t4"}
    with pytest.raises(exceptions.BadRequest):
        bad = compute_v1.AggregatedListAcceleratorTypesRequest(project=PROJECT, filter="zone > 3")
        list(client.aggregated_list(request=bad, retry=None))


def test_insert_operation_wait_then_address_reserved(compute: FakeCompute) -> None:
    addresses = compute.addresses_client()
    name = insert(compute, "kf-ip")
    pending = addresses.get(project=PROJECT, address="kf-ip", retry=None)
    assert pending.status == "RESERVING"
    assert not pending.address

    op = wait_done(compute, name)
    assert op.operation_type == "insert"
    assert op.target_link.endswith(f"/projects/{PROJECT}/global/addresses/kf-ip")
    assert not op.error.errors

    got = addresses.get(project=PROJECT, address="kf-ip", retry=None)
    assert got.status == "RESERVED"
    assert got.address.startswith("34.")
    assert got.description == "Static IP."
    assert [a.name for a in addresses.list(project=PROJECT, retry=None)] == ["kf-ip"]

    post = next(r for r in compute.requests if r.method == "POST")
    assert post.path == f"/compute/v1/projects/{PROJECT}/global/addresses"
    assert post.body == {
        "name": "kf-ip",
        "addressType": "EXTERNAL",
        "ipVersion": "IPV4",
        "description": "Static IP.",
    }
    assert any(r.path.endswith(f"/global/operations/{name}/wait") for r in compute.requests)


def test_operation_completes_after_polls_or_seconds() -> None:
    clock = FakeMonotonic()
    with FakeCompute(polls_to_done=100, seconds_to_done=30, clock=clock) as fake:
        name = insert(fake, "kf-ip")
        ops = fake.operations_client()
        assert ops.get(project=PROJECT, operation=name, retry=None).status == (
            compute_v1.Operation.Status.RUNNING
        )
        clock.advance(30)
        assert ops.get(project=PROJECT, operation=name, retry=None).status == (
            compute_v1.Operation.Status.DONE
        )
    with FakeCompute(polls_to_done=3) as fake:
        name = insert(fake, "kf-ip")
        ops = fake.operations_client()
        statuses = [ops.get(project=PROJECT, operation=name, retry=None).status for _ in range(3)]
        assert statuses[-1] == compute_v1.Operation.Status.DONE
        assert compute_v1.Operation.Status.DONE not in statuses[:-1]


def test_duplicate_insert_is_conflict(compute: FakeCompute) -> None:
    wait_done(compute, insert(compute, "kf-ip"))
    with pytest.raises(exceptions.Conflict) as err:
        insert(compute, "kf-ip")
    assert "already exists" in err.value.message
    assert err.value.errors[0]["reason"] == "alreadyExists"


def test_get_missing_address_is_not_found(compute: FakeCompute) -> None:
    with pytest.raises(exceptions.NotFound):
        compute.addresses_client().get(project=PROJECT, address="nope", retry=None)


def test_bad_name_is_bad_request(compute: FakeCompute) -> None:
    with pytest.raises(exceptions.BadRequest, match=r"resource\.name"):
        insert(compute, "Kf_IP")


def test_injected_quota_error_is_forbidden(compute: FakeCompute) -> None:
    compute.fail_next("POST", 403, "quotaExceeded", "Quota 'STATIC_ADDRESSES' exceeded.")
    with pytest.raises(exceptions.Forbidden) as err:
        insert(compute, "kf-ip")
    assert "Quota 'STATIC_ADDRESSES' exceeded." in err.value.message
    assert compute.addresses(PROJECT) == {}
    wait_done(compute, insert(compute, "kf-ip"))  # one-shot: the retry succeeds
    assert compute.addresses(PROJECT)["kf-ip"]["status"] == "RESERVED"


def test_failed_operation_leaves_no_address(compute: FakeCompute) -> None:
    compute.fail_next_operation("QUOTA_EXCEEDED", "Quota 'STATIC_ADDRESSES' exceeded.")
    op = wait_done(compute, insert(compute, "kf-ip"))
    assert op.error.errors[0].code == "QUOTA_EXCEEDED"
    with pytest.raises(exceptions.NotFound):
        compute.addresses_client().get(project=PROJECT, address="kf-ip", retry=None)


def test_delete_removes_the_address_when_done(compute: FakeCompute) -> None:
    compute.put_address(PROJECT, "old-ip")
    op = compute.addresses_client().delete(project=PROJECT, address="old-ip", retry=None)
    done = wait_done(compute, str(op.name))
    assert done.operation_type == "delete"
    assert compute.addresses(PROJECT) == {}
    with pytest.raises(exceptions.NotFound):
        compute.addresses_client().delete(project=PROJECT, address="old-ip", retry=None)


def test_request_id_makes_insert_idempotent(compute: FakeCompute) -> None:
    addresses = compute.addresses_client()
    request = compute_v1.InsertGlobalAddressRequest(
        project=PROJECT, address_resource=compute_v1.Address(name="kf-ip"), request_id="r-1"
    )
    first = addresses.insert(request=request, retry=None)
    again = addresses.insert(request=request, retry=None)
    assert first.name == again.name
    assert compute.requests[0].query["requestId"] == ["r-1"]


# -- Backend services --------------------------------------------------------------------------


def test_a_seeded_backend_service_is_read_by_name_with_a_stable_id(compute: FakeCompute) -> None:
    made = compute.put_backend_service(PROJECT, "k8s-be-31380--5f1c9e3a7d2b4c60")
    client = compute.backend_services_client()

    found = client.get(project=PROJECT, backend_service="k8s-be-31380--5f1c9e3a7d2b4c60")

    assert str(found.id) == made
    assert found.name == "k8s-be-31380--5f1c9e3a7d2b4c60"
    assert compute.put_backend_service(PROJECT, "k8s-be-31380--5f1c9e3a7d2b4c60") == made
    with pytest.raises(exceptions.NotFound):
        client.get(project="other-proj", backend_service="k8s-be-31380--5f1c9e3a7d2b4c60")


def test_backend_services_appear_when_their_maker_says_so() -> None:
    made: list[str] = []
    with FakeCompute(backend_services=lambda project: made if project == PROJECT else []) as fake:
        client = fake.backend_services_client()
        with pytest.raises(exceptions.NotFound):
            client.get(project=PROJECT, backend_service="k8s-be-30001--abc")
        made.append("k8s-be-30001--abc")
        assert client.get(project=PROJECT, backend_service="k8s-be-30001--abc").id


def test_a_malformed_backend_service_name_is_refused(compute: FakeCompute) -> None:
    with pytest.raises(exceptions.BadRequest):
        compute.backend_services_client().get(project=PROJECT, backend_service="Not_A_Name")
    assert compute.requests[-1].status == 400
