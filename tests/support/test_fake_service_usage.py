"""FakeServiceUsage through the real google-cloud-service-usage gRPC client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import service_usage_v1

from tests.support.clocks import FakeMonotonic
from tests.support.fake_service_usage import (
    BILLING_REASON,
    NOOP_OPERATION,
    UNKNOWN_SERVICE_REASON,
    FakeServiceUsage,
)

PROJECT = "kf-proj"
NUMBER = 123456789012
PARENT = f"projects/{PROJECT}"
COMPUTE = "compute.googleapis.com"
CONTAINER = "container.googleapis.com"

State: Any = service_usage_v1.State


@pytest.fixture
def su() -> Iterator[FakeServiceUsage]:
    with FakeServiceUsage(
        projects={PROJECT: NUMBER, "no-billing": 222}, billing_disabled={"no-billing"}
    ) as fake:
        yield fake


@pytest.fixture
def client(su: FakeServiceUsage) -> service_usage_v1.ServiceUsageClient:
    return su.client()


def names(*services: str, project: str = PROJECT) -> list[str]:
    return [f"projects/{project}/services/{s}" for s in services]


def states(client: service_usage_v1.ServiceUsageClient, *services: str) -> dict[str, str]:
    response = client.batch_get_services(
        request={"parent": PARENT, "names": names(*services)}, retry=None
    )
    return {s.config.name: State(s.state).name for s in response.services}


def polled_until_done(future: Any, polls: int = 10) -> Any:
    """The operation's result, polling without the library's one-second sleeps."""
    for _ in range(polls):
        if future.done():
            return future.result(timeout=0)
    raise AssertionError(f"operation not done after {polls} polls")


def test_get_service_by_id_or_number_answers_with_the_number(
    client: service_usage_v1.ServiceUsageClient,
) -> None:
    by_id = client.get_service(request={"name": f"{PARENT}/services/{COMPUTE}"}, retry=None)
    by_number = client.get_service(
        request={"name": f"projects/{NUMBER}/services/{COMPUTE}"}, retry=None
    )

    assert by_id.name == by_number.name == f"projects/{NUMBER}/services/{COMPUTE}"
    assert by_id.parent == f"projects/{NUMBER}"
    assert by_id.config.name == COMPUTE
    assert by_id.state == State.DISABLED


@pytest.mark.parametrize(
    "name",
    [
        f"{PROJECT}/services/{COMPUTE}",
        f"projects/{PROJECT}/apis/{COMPUTE}",
        f"projects/{PROJECT}/services/",
        f"projects//services/{COMPUTE}",
        f"projects/{PROJECT}/services/{COMPUTE}/extra",
        f"folders/1/services/{COMPUTE}",
    ],
)
def test_malformed_names_are_invalid_argument(
    client: service_usage_v1.ServiceUsageClient, name: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="projects/\\{project}/services"):
        client.get_service(request={"name": name}, retry=None)


def test_malformed_parent_is_invalid_argument(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    for parent in (PROJECT, f"{PARENT}/services", "organizations/1"):
        with pytest.raises(exceptions.InvalidArgument, match="Invalid parent"):
            client.batch_enable_services(
                request={"parent": parent, "service_ids": [COMPUTE]}, retry=None
            )
    assert su.enabled(PROJECT) == frozenset()


def test_batch_get_names_must_share_the_parent(client: service_usage_v1.ServiceUsageClient) -> None:
    mixed = [*names(COMPUTE), *names(CONTAINER, project="no-billing")]
    with pytest.raises(exceptions.InvalidArgument, match="not under parent"):
        client.batch_get_services(request={"parent": PARENT, "names": mixed}, retry=None)
    # The project's id and number are the same parent.
    same = [*names(COMPUTE), *names(CONTAINER, project=str(NUMBER))]
    response = client.batch_get_services(request={"parent": PARENT, "names": same}, retry=None)
    assert [s.config.name for s in response.services] == [COMPUTE, CONTAINER]


def test_unknown_services_and_projects_are_permission_denied(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    with pytest.raises(exceptions.PermissionDenied) as raised:
        client.batch_enable_services(
            request={"parent": PARENT, "service_ids": [COMPUTE, "nosuch.googleapis.com"]},
            retry=None,
        )
    assert raised.value.message == (
        "Not found or permission denied for service(s): nosuch.googleapis.com."
    )
    assert raised.value.reason == UNKNOWN_SERVICE_REASON
    assert su.enabled(PROJECT) == frozenset()  # nothing changed, not even compute

    with pytest.raises(exceptions.PermissionDenied, match="Project 'other' not found"):
        client.get_service(request={"name": f"projects/other/services/{COMPUTE}"}, retry=None)
    assert su.requests[-1].code == grpc.StatusCode.PERMISSION_DENIED


def test_more_than_twenty_ids_to_enable_or_thirty_names_to_get_are_refused(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    ids = [f"svc{i:02d}.example.googleapis.com" for i in range(31)]

    with pytest.raises(exceptions.InvalidArgument, match="maximum of 20 services"):
        client.batch_enable_services(request={"parent": PARENT, "service_ids": ids[:21]})
    with pytest.raises(exceptions.InvalidArgument, match="maximum of 30 services"):
        client.batch_get_services(request={"parent": PARENT, "names": names(*ids)}, retry=None)
    with pytest.raises(exceptions.InvalidArgument, match="At least one"):
        client.batch_enable_services(request={"parent": PARENT, "service_ids": []})
    assert su.enabled(PROJECT) == frozenset()

    polled_until_done(
        client.batch_enable_services(request={"parent": PARENT, "service_ids": ids[:20]})
    )
    assert len(states(client, *ids[:30])) == 30
    assert su.enabled(PROJECT) == frozenset(ids[:20])


def test_the_operation_runs_for_the_configured_polls_then_enables() -> None:
    with FakeServiceUsage(operation_polls=3) as su:
        client = su.client()
        future = client.batch_enable_services(
            request={"parent": PARENT, "service_ids": [COMPUTE, CONTAINER]}, retry=None
        )
        assert future.operation.name.startswith(f"operations/acf.p2-{NUMBER}-")
        assert not future.operation.done
        assert future.metadata.resource_names == names(COMPUTE, CONTAINER, project=str(NUMBER))

        for _ in range(3):
            assert states(client, COMPUTE, CONTAINER) == {
                COMPUTE: "DISABLED",
                CONTAINER: "DISABLED",
            }
            assert not future.done()
        assert future.done()
        result = future.result()

        assert [s.config.name for s in result.services] == [COMPUTE, CONTAINER]
        assert all(s.state == State.ENABLED for s in result.services)
        assert states(client, COMPUTE, CONTAINER) == {COMPUTE: "ENABLED", CONTAINER: "ENABLED"}
        assert su.count("GetOperation") == 4


def test_the_operation_finishes_on_the_clock_without_being_polled() -> None:
    clock = FakeMonotonic()
    with FakeServiceUsage(operation_polls=0, operation_seconds=60.0, clock=clock) as su:
        client = su.client()
        future = client.batch_enable_services(
            request={"parent": PARENT, "service_ids": [COMPUTE]}, retry=None
        )
        clock.advance(59.0)
        assert states(client, COMPUTE) == {COMPUTE: "DISABLED"}
        assert not future.done()
        clock.advance(1.0)
        assert states(client, COMPUTE) == {COMPUTE: "ENABLED"}
        assert future.done()
        assert su.count("GetOperation") == 2


def test_enabling_enabled_services_is_a_finished_noop() -> None:
    with FakeServiceUsage(enabled={PROJECT: [COMPUTE]}, operation_polls=5) as fake:
        client = fake.client()
        future = client.batch_enable_services(
            request={"parent": PARENT, "service_ids": [COMPUTE]}, retry=None
        )
        assert future.operation.name == NOOP_OPERATION
        assert future.operation.done
        assert [s.state for s in future.result(timeout=1).services] == [State.ENABLED]
        assert fake.count("GetOperation") == 0


def test_enable_service_enables_one(client: service_usage_v1.ServiceUsageClient) -> None:
    future = client.enable_service(
        request={"name": f"projects/{NUMBER}/services/{CONTAINER}"}, retry=None
    )
    response = polled_until_done(future)

    assert response.service.name == f"projects/{NUMBER}/services/{CONTAINER}"
    assert response.service.state == State.ENABLED
    assert states(client, CONTAINER) == {CONTAINER: "ENABLED"}


def test_billing_disabled_is_failed_precondition_at_once(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    with pytest.raises(exceptions.FailedPrecondition) as raised:
        client.batch_enable_services(
            request={"parent": "projects/no-billing", "service_ids": [COMPUTE]}, retry=None
        )

    assert raised.value.message.startswith("Billing account for project '222' is not found.")
    assert raised.value.reason == BILLING_REASON
    assert su.enabled("no-billing") == frozenset()


def test_injected_faults_hit_the_next_calls_then_stop(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    su.fail_next("BatchGetServices", grpc.StatusCode.UNAVAILABLE, "blip", times=2)
    su.fail_next("BatchEnableServices", grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")

    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable, match="blip"):
            states(client, COMPUTE)
    assert states(client, COMPUTE) == {COMPUTE: "DISABLED"}
    with pytest.raises(exceptions.TooManyRequests, match="slow down"):
        client.batch_enable_services(request={"parent": PARENT, "service_ids": [COMPUTE]})
    assert su.enabled(PROJECT) == frozenset()
    codes = [(call.method, call.code) for call in su.requests]
    assert codes == [
        ("BatchGetServices", grpc.StatusCode.UNAVAILABLE),
        ("BatchGetServices", grpc.StatusCode.UNAVAILABLE),
        ("BatchGetServices", grpc.StatusCode.OK),
        ("BatchEnableServices", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]


def test_a_fault_with_a_reason_carries_error_info(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    su.fail_next(None, grpc.StatusCode.PERMISSION_DENIED, "denied", reason="IAM_PERMISSION_DENIED")

    with pytest.raises(exceptions.PermissionDenied) as raised:
        client.get_service(request={"name": f"{PARENT}/services/{COMPUTE}"}, retry=None)

    assert raised.value.reason == "IAM_PERMISSION_DENIED"


def test_a_failed_operation_enables_nothing(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    su.fail_next_operation(grpc.StatusCode.INTERNAL, "backend exploded")
    future = client.batch_enable_services(
        request={"parent": PARENT, "service_ids": [COMPUTE]}, retry=None
    )

    with pytest.raises(exceptions.InternalServerError, match="backend exploded"):
        polled_until_done(future)
    assert states(client, COMPUTE) == {COMPUTE: "DISABLED"}


def test_requests_are_recorded_as_sent(
    client: service_usage_v1.ServiceUsageClient, su: FakeServiceUsage
) -> None:
    client.batch_enable_services(request={"parent": PARENT, "service_ids": [COMPUTE, CONTAINER]})

    [sent] = su.calls("BatchEnableServices")
    assert sent.parent == PARENT
    assert list(sent.service_ids) == [COMPUTE, CONTAINER]
