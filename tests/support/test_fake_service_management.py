"""FakeServiceManagement through the real google-cloud-service-management gRPC client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.api import endpoint_pb2, service_pb2
from google.api_core import exceptions
from google.cloud import servicemanagement_v1 as sm
from google.protobuf import wrappers_pb2

from tests.support.clocks import FakeMonotonic
from tests.support.fake_service_management import (
    RETENTION_SECONDS,
    FakeServiceManagement,
    RolloutStatus,
)

PROJECT = "kf-proj"
HOST = f"demo.endpoints.{PROJECT}.cloud.goog"
IP = "203.0.113.10"
OTHER_IP = "203.0.113.20"


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def fake(clock: FakeMonotonic) -> Iterator[FakeServiceManagement]:
    with FakeServiceManagement(projects={PROJECT}, operation_polls=1, clock=clock) as server:
        yield server


@pytest.fixture
def client(fake: FakeServiceManagement) -> sm.ServiceManagerClient:
    return fake.client()


def polled_until_done(future: Any, polls: int = 10) -> Any:
    """The operation's result, polling without the library's one-second sleeps."""
    for _ in range(polls):
        if future.done():
            return future.result(timeout=0)
    raise AssertionError(f"operation not done after {polls} polls")


def create(client: sm.ServiceManagerClient, host: str = HOST, project: str = PROJECT) -> Any:
    future = client.create_service(
        service=sm.ManagedService(service_name=host, producer_project_id=project), retry=None
    )
    return polled_until_done(future)


def config_for(ip: str, host: str = HOST) -> service_pb2.Service:
    return service_pb2.Service(
        name=host,
        title=host,
        config_version=wrappers_pb2.UInt32Value(value=3),
        endpoints=[endpoint_pb2.Endpoint(name=host, target=ip)],
    )


def roll_out(client: sm.ServiceManagerClient, config_id: str) -> Any:
    return client.create_service_rollout(
        service_name=HOST,
        rollout=sm.Rollout(
            traffic_percent_strategy=sm.Rollout.TrafficPercentStrategy(
                percentages={config_id: 100.0}
            )
        ),
        retry=None,
    )


# -- services ------------------------------------------------------------------------------


def test_a_created_service_can_be_read(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    created = create(client)

    assert created.service_name == HOST
    assert created.producer_project_id == PROJECT
    got = client.get_service(service_name=HOST, retry=None)
    assert got.producer_project_id == PROJECT
    assert fake.exists(HOST)
    assert fake.target_of(HOST) is None


def test_an_unknown_service_is_not_found(client: sm.ServiceManagerClient) -> None:
    with pytest.raises(exceptions.NotFound):
        client.get_service(service_name=HOST, retry=None)


def test_the_create_operation_runs_until_polled(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    future = client.create_service(
        service=sm.ManagedService(service_name=HOST, producer_project_id=PROJECT), retry=None
    )

    assert future.operation.name.startswith(f"operations/services.{HOST}")
    assert not future.operation.done
    assert not future.done()  # the first poll still answers "running"
    assert future.done()
    assert fake.operation(future.operation.name).done  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("Demo.endpoints.kf-proj.cloud.goog", "not a valid DNS name"),
        ("demo..endpoints.kf-proj.cloud.goog", "not a valid DNS name"),
        ("demo.endpoints.other.cloud.goog", "NAME.endpoints.kf-proj.cloud.goog"),
        ("a.demo.endpoints.kf-proj.cloud.goog", "NAME.endpoints.kf-proj.cloud.goog"),
        ("demo.example.com", "NAME.endpoints.kf-proj.cloud.goog"),
    ],
)
def test_a_service_name_outside_the_projects_domain_is_refused(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement, host: str, words: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=words):
        create(client, host)
    assert not fake.exists(host)


def test_an_unknown_producer_project_is_permission_denied(
    client: sm.ServiceManagerClient,
) -> None:
    with pytest.raises(exceptions.PermissionDenied) as raised:
        create(client, "demo.endpoints.nope.cloud.goog", "nope")
    assert raised.value.message == (
        "Caller does not have permission 'servicemanagement.services.create' on project nope."
    )


def test_creating_a_live_service_again_is_already_exists(
    client: sm.ServiceManagerClient,
) -> None:
    create(client)
    with pytest.raises(exceptions.AlreadyExists):
        create(client)


def test_a_deleted_service_blocks_its_name_until_undeleted(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    create(client)
    [config] = [client.create_service_config(service_name=HOST, service_config=config_for(IP))]
    polled_until_done(roll_out(client, config.id))

    polled_until_done(client.delete_service(service_name=HOST, retry=None))

    assert fake.deleted(HOST)
    assert fake.target_of(HOST) is None
    with pytest.raises(exceptions.NotFound):
        client.get_service(service_name=HOST, retry=None)
    with pytest.raises(exceptions.FailedPrecondition, match="can be undeleted"):
        create(client)
    restored = polled_until_done(client.undelete_service(service_name=HOST, retry=None))
    assert restored.service.service_name == HOST
    assert fake.exists(HOST)
    assert fake.target_of(HOST) == IP  # configs and rollouts come back with it


def test_a_deleted_service_is_purged_after_thirty_days(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement, clock: FakeMonotonic
) -> None:
    create(client)
    polled_until_done(client.delete_service(service_name=HOST, retry=None))

    clock.advance(RETENTION_SECONDS)

    assert not fake.deleted(HOST)
    with pytest.raises(exceptions.NotFound):
        client.undelete_service(service_name=HOST, retry=None)
    create(client)
    assert fake.exists(HOST)


def test_undeleting_a_live_service_is_refused(client: sm.ServiceManagerClient) -> None:
    create(client)
    with pytest.raises(exceptions.FailedPrecondition, match="not deleted"):
        client.undelete_service(service_name=HOST, retry=None)


def test_deleting_an_unknown_service_is_not_found(client: sm.ServiceManagerClient) -> None:
    with pytest.raises(exceptions.NotFound):
        client.delete_service(service_name=HOST, retry=None)


# -- configs and rollouts ------------------------------------------------------------------


def test_a_rollout_points_the_host_once_its_operation_is_done(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    create(client)
    config = client.create_service_config(service_name=HOST, service_config=config_for(IP))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}r\d+", config.id)
    assert config.producer_project_id == PROJECT

    future = roll_out(client, config.id)

    assert fake.target_of(HOST) is None
    [listed] = client.list_service_rollouts(service_name=HOST, filter="status=IN_PROGRESS")
    assert listed.status == RolloutStatus.IN_PROGRESS
    rollout = polled_until_done(future)
    assert rollout.status == RolloutStatus.SUCCESS
    assert fake.target_of(HOST) == IP
    [done] = client.list_service_rollouts(service_name=HOST, filter="status=SUCCESS")
    assert dict(done.traffic_percent_strategy.percentages) == {config.id: 100.0}
    got = client.get_service_config(service_name=HOST, config_id=config.id)
    assert [(e.name, e.target) for e in got.endpoints] == [(HOST, IP)]
    assert client.get_service_rollout(service_name=HOST, rollout_id=rollout.rollout_id)


def test_configs_and_rollouts_list_newest_first(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    create(client)
    first = client.create_service_config(service_name=HOST, service_config=config_for(IP))
    polled_until_done(roll_out(client, first.id))
    second = client.create_service_config(service_name=HOST, service_config=config_for(OTHER_IP))
    polled_until_done(roll_out(client, second.id))

    configs = list(client.list_service_configs(service_name=HOST))
    assert [c.id for c in configs] == [second.id, first.id]
    rollouts = list(client.list_service_rollouts(service_name=HOST, filter="status=SUCCESS"))
    assert [next(iter(r.traffic_percent_strategy.percentages)) for r in rollouts] == [
        second.id,
        first.id,
    ]
    assert client.get_service_config(service_name=HOST).id == second.id
    assert fake.target_of(HOST) == OTHER_IP


def test_a_newer_rollout_cancels_one_in_progress(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    create(client)
    first = client.create_service_config(service_name=HOST, service_config=config_for(IP))
    roll_out(client, first.id)
    second = client.create_service_config(service_name=HOST, service_config=config_for(OTHER_IP))
    polled_until_done(roll_out(client, second.id))

    statuses = [RolloutStatus(r.status).name for r in fake.rollouts(HOST)]
    assert statuses == ["CANCELLED", "SUCCESS"]
    assert fake.target_of(HOST) == OTHER_IP


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (config_for("not-an-ip"), "is not an IPv4 address"),
        (config_for("2001:db8::1"), "is not an IPv4 address"),
        (config_for(IP, host="x.endpoints.kf-proj.cloud.goog"), "must be the service name"),
        (
            service_pb2.Service(
                name=HOST, endpoints=[endpoint_pb2.Endpoint(name="other", target=IP)]
            ),
            "must be the service name",
        ),
    ],
)
def test_a_bad_config_is_invalid(
    client: sm.ServiceManagerClient,
    fake: FakeServiceManagement,
    config: service_pb2.Service,
    words: str,
) -> None:
    create(client)
    with pytest.raises(exceptions.InvalidArgument, match=words):
        client.create_service_config(service_name=HOST, service_config=config)
    assert fake.configs(HOST) == []


def test_a_config_for_an_unknown_service_is_not_found(client: sm.ServiceManagerClient) -> None:
    with pytest.raises(exceptions.NotFound):
        client.create_service_config(service_name=HOST, service_config=config_for(IP))


def test_a_rollout_of_an_unknown_config_is_invalid(client: sm.ServiceManagerClient) -> None:
    create(client)
    with pytest.raises(exceptions.InvalidArgument, match="not found"):
        roll_out(client, "2026-01-01r99")


def test_listing_rollouts_needs_a_filter(client: sm.ServiceManagerClient) -> None:
    create(client)
    with pytest.raises(exceptions.InvalidArgument, match="filter is required"):
        list(client.list_service_rollouts(service_name=HOST, filter=""))


def test_a_failed_rollout_changes_no_target(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    create(client)
    first = client.create_service_config(service_name=HOST, service_config=config_for(IP))
    polled_until_done(roll_out(client, first.id))
    second = client.create_service_config(service_name=HOST, service_config=config_for(OTHER_IP))
    fake.fail_next_operation(grpc.StatusCode.INTERNAL, "rollout failed")

    future = roll_out(client, second.id)

    with pytest.raises(exceptions.InternalServerError, match="rollout failed"):
        polled_until_done(future)
    assert RolloutStatus(fake.rollouts(HOST)[-1].status).name == "FAILED_ROLLED_BACK"
    assert fake.target_of(HOST) == IP


def test_operations_finish_after_their_seconds(clock: FakeMonotonic) -> None:
    with FakeServiceManagement(operation_polls=0, operation_seconds=60.0, clock=clock) as fake:
        client = fake.client()
        future = client.create_service(
            service=sm.ManagedService(service_name=HOST, producer_project_id=PROJECT),
            retry=None,
        )
        assert not future.done()
        assert not future.done()
        clock.advance(60.0)
        assert future.done()


def test_an_unknown_operation_is_not_found(client: sm.ServiceManagerClient) -> None:
    with pytest.raises(exceptions.NotFound):
        client.transport.operations_client.get_operation(name="operations/nope", retry=None)


# -- faults and inspection -----------------------------------------------------------------


def test_an_injected_fault_fails_the_next_calls_and_changes_nothing(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    fake.fail_next("CreateService", grpc.StatusCode.UNAVAILABLE, "try later", times=2)

    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable, match="try later"):
            create(client)
    assert not fake.exists(HOST)
    create(client)
    assert fake.exists(HOST)
    codes = [c.code for c in fake.requests if c.method == "CreateService"]
    assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK]
    assert fake.writes() == ["CreateService"] * 3


def test_a_fault_with_a_reason_carries_error_info(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    fake.fail_next(None, grpc.StatusCode.PERMISSION_DENIED, "off", reason="SERVICE_DISABLED")
    with pytest.raises(exceptions.PermissionDenied) as raised:
        client.get_service(service_name=HOST, retry=None)
    assert raised.value.reason == "SERVICE_DISABLED"


def test_requests_are_recorded_as_sent(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    create(client)
    [sent] = fake.calls("CreateService")
    assert sent.service.service_name == HOST
    assert fake.count("GetOperation") >= 1


def test_a_seeded_deleted_service_can_be_undeleted(
    client: sm.ServiceManagerClient, fake: FakeServiceManagement
) -> None:
    fake.add_service(HOST, PROJECT, deleted=True)
    assert fake.deleted(HOST)
    polled_until_done(client.undelete_service(service_name=HOST, retry=None))
    assert fake.exists(HOST)
