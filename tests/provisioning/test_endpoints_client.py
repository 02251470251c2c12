"""``EndpointsClient`` through the real ``ServiceManagerClient`` against ``FakeServiceManagement``.

Operations finish at the first look unless a test gives them seconds on the fake's
clock; injected faults show how each library exception becomes a temporary or permanent
error, by the exact words the requester reads.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import NamedTuple

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry, if_exception_type
from google.auth.credentials import AnonymousCredentials
from google.cloud import servicemanagement_v1 as sm
from google.cloud.servicemanagement_v1.services.service_manager.transports import (
    ServiceManagerGrpcTransport,
)

from provisioning.endpoints_client import RATE_LIMIT_DELAY, EndpointsClient
from provisioning.errors import PermanentError, TemporaryError
from provisioning.google_calls import TRANSIENT_DELAY
from tests.support.clocks import FakeMonotonic
from tests.support.fake_service_management import FakeServiceManagement

PROJECT = "kf-proj"
HOST = f"demo.endpoints.{PROJECT}.cloud.goog"
IP = "203.0.113.10"
NEW_IP = "203.0.113.20"
OP_SECONDS = 60.0
CREATE_WRITES = ["CreateService", "CreateServiceConfig", "CreateServiceRollout"]


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def fake(clock: FakeMonotonic) -> Iterator[FakeServiceManagement]:
    with FakeServiceManagement(projects={PROJECT}, operation_polls=0, clock=clock) as server:
        yield server


def quick_client(fake: FakeServiceManagement) -> EndpointsClient:
    # Reads retry UNAVAILABLE for at most a few hundredths of a second here.
    quick = Retry(
        predicate=if_exception_type(exceptions.ServiceUnavailable),
        initial=0.01,
        maximum=0.01,
        timeout=0.05,
    )
    return EndpointsClient(fake.client(), read_retry=quick, timeout=5.0)


@pytest.fixture
def client(fake: FakeServiceManagement) -> EndpointsClient:
    return quick_client(fake)


def permanent_message(raised: pytest.ExceptionInfo[PermanentError]) -> str:
    assert isinstance(raised.value.__cause__, exceptions.GoogleAPICallError)
    return raised.value.user_message


# -- ensure_endpoint -----------------------------------------------------------------------


def test_the_first_ensure_creates_the_service_config_and_rollout(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    assert client.ensure_endpoint(PROJECT, HOST, IP) is True

    assert fake.target_of(HOST) == IP
    assert fake.writes() == CREATE_WRITES
    [created] = fake.calls("CreateService")
    assert created.service.service_name == HOST
    assert created.service.producer_project_id == PROJECT
    [config] = fake.configs(HOST)
    assert [(e.name, e.target) for e in config.endpoints] == [(HOST, IP)]
    assert config.producer_project_id == PROJECT
    assert config.config_version.value == 3


def test_a_second_ensure_with_the_same_ip_changes_nothing(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    client.ensure_endpoint(PROJECT, HOST, IP)

    assert client.ensure_endpoint(PROJECT, HOST, IP) is False

    assert fake.writes() == CREATE_WRITES
    assert fake.target_of(HOST) == IP


def test_a_new_ip_rolls_out_a_new_config(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    client.ensure_endpoint(PROJECT, HOST, IP)

    assert client.ensure_endpoint(PROJECT, HOST, NEW_IP) is True

    assert fake.target_of(HOST) == NEW_IP
    assert fake.writes() == [*CREATE_WRITES, "CreateServiceConfig", "CreateServiceRollout"]
    assert len(fake.configs(HOST)) == 2
    assert client.ensure_endpoint(PROJECT, HOST, NEW_IP) is False


def test_a_recently_deleted_service_is_undeleted_not_created(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    client.ensure_endpoint(PROJECT, HOST, IP)
    client.delete_endpoint(PROJECT, HOST)
    assert fake.deleted(HOST)

    assert client.ensure_endpoint(PROJECT, HOST, NEW_IP) is True

    assert fake.exists(HOST)
    assert fake.target_of(HOST) == NEW_IP
    assert fake.count("UndeleteService") == 1
    creates = [c.code for c in fake.requests if c.method == "CreateService"]
    assert creates == [grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION]


def test_an_undeleted_service_keeping_its_ip_needs_no_new_config(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    client.ensure_endpoint(PROJECT, HOST, IP)
    client.delete_endpoint(PROJECT, HOST)

    assert client.ensure_endpoint(PROJECT, HOST, IP) is True  # the undelete was a change

    assert fake.target_of(HOST) == IP
    assert fake.count("CreateServiceConfig") == 1
    assert client.ensure_endpoint(PROJECT, HOST, IP) is False


def test_running_operations_are_looked_at_once_and_never_waited_for(
    clock: FakeMonotonic,
) -> None:
    with FakeServiceManagement(
        projects={PROJECT}, operation_polls=0, operation_seconds=OP_SECONDS, clock=clock
    ) as fake:
        client = quick_client(fake)

        # The create is still running: nothing more this time.
        assert client.ensure_endpoint(PROJECT, HOST, IP) is True
        assert fake.writes() == ["CreateService"]
        assert fake.count("GetOperation") == 1
        # The service exists already, so the config and rollout go out; the rollout runs.
        assert client.ensure_endpoint(PROJECT, HOST, IP) is True
        assert fake.writes() == CREATE_WRITES
        assert fake.target_of(HOST) is None
        # A rollout in progress: look again later, write nothing.
        assert client.ensure_endpoint(PROJECT, HOST, IP) is True
        assert fake.writes() == CREATE_WRITES

        clock.advance(OP_SECONDS)

        assert fake.target_of(HOST) == IP
        assert client.ensure_endpoint(PROJECT, HOST, IP) is False
        assert fake.writes() == CREATE_WRITES
        assert fake.count("GetOperation") == 2


def test_a_service_created_meanwhile_is_used(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    fake.fail_next("GetService", grpc.StatusCode.NOT_FOUND, "not yet")
    fake.add_service(HOST, PROJECT)

    assert client.ensure_endpoint(PROJECT, HOST, IP) is True

    assert fake.target_of(HOST) == IP
    assert [c.code for c in fake.requests if c.method == "CreateService"] == [
        grpc.StatusCode.ALREADY_EXISTS
    ]


def test_connect_talks_plaintext_to_an_emulator(fake: FakeServiceManagement) -> None:
    client = EndpointsClient.connect(fake.target)

    assert client.ensure_endpoint(PROJECT, HOST, IP) is True
    assert fake.target_of(HOST) == IP


# -- delete_endpoint -----------------------------------------------------------------------


def test_delete_removes_the_service_then_finds_none(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    client.ensure_endpoint(PROJECT, HOST, IP)

    assert client.delete_endpoint(PROJECT, HOST) is True
    assert fake.deleted(HOST)
    assert fake.target_of(HOST) is None
    assert client.delete_endpoint(PROJECT, HOST) is False
    assert fake.count("DeleteService") == 1


def test_delete_of_a_service_never_made_is_false(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    assert client.delete_endpoint(PROJECT, HOST) is False
    assert fake.writes() == []


# -- errors --------------------------------------------------------------------------------


class Transient(NamedTuple):
    method: str
    code: grpc.StatusCode
    message: str
    words: str
    delay: float


@pytest.mark.parametrize(
    "case",
    [
        Transient(
            "CreateService",
            grpc.StatusCode.UNAVAILABLE,
            "connection reset",
            f"Service Management did not answer (UNAVAILABLE); will create the Endpoints "
            f"service {HOST} later",
            TRANSIENT_DELAY,
        ),
        Transient(
            "CreateServiceConfig",
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline",
            f"Service Management did not answer (DEADLINE_EXCEEDED); will point {HOST} at "
            f"{IP} later",
            TRANSIENT_DELAY,
        ),
        Transient(
            "CreateServiceRollout",
            grpc.StatusCode.INTERNAL,
            "backend error",
            "Service Management did not answer (INTERNAL); will roll out config ",
            TRANSIENT_DELAY,
        ),
        Transient(
            "CreateService",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Quota exceeded for quota metric 'Service management requests' and limit "
            "'Service management requests per minute' of service "
            "'servicemanagement.googleapis.com'.",
            f"Service Management is rate limiting; will create the Endpoints service {HOST} later",
            RATE_LIMIT_DELAY,
        ),
        Transient(
            "CreateService",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Too many requests",
            f"Service Management is rate limiting; will create the Endpoints service {HOST} later",
            RATE_LIMIT_DELAY,
        ),
    ],
)
def test_transient_failures_are_temporary(
    client: EndpointsClient, fake: FakeServiceManagement, case: Transient
) -> None:
    fake.fail_next(case.method, case.code, case.message)

    with pytest.raises(TemporaryError) as raised:
        client.ensure_endpoint(PROJECT, HOST, IP)

    assert str(raised.value).startswith(case.words)
    assert raised.value.delay == case.delay
    assert isinstance(raised.value.__cause__, exceptions.GoogleAPICallError)
    # The next run finishes the job.
    assert client.ensure_endpoint(PROJECT, HOST, IP) is True
    assert fake.target_of(HOST) == IP


def test_reads_that_stay_unavailable_are_temporary(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    fake.fail_next("GetService", grpc.StatusCode.UNAVAILABLE, "down", times=1000)

    with pytest.raises(TemporaryError) as raised:
        client.ensure_endpoint(PROJECT, HOST, IP)

    assert str(raised.value) == (
        f"Service Management did not answer in time to read the Endpoints service {HOST}"
    )
    assert raised.value.delay == TRANSIENT_DELAY


def test_an_unreachable_server_is_temporary() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens
    channel = grpc.insecure_channel(target)
    transport = ServiceManagerGrpcTransport(
        host=target, credentials=AnonymousCredentials(), channel=channel
    )
    library = sm.ServiceManagerClient(
        transport=transport, client_options=ClientOptions(api_endpoint=target)
    )
    client = EndpointsClient(library, read_retry=None, timeout=2.0)

    try:
        with pytest.raises(TemporaryError) as raised:
            client.delete_endpoint(PROJECT, HOST)
    finally:
        channel.close()

    assert str(raised.value) == (
        f"Service Management did not answer (UNAVAILABLE); will read the Endpoints service "
        f"{HOST} later"
    )
    assert raised.value.delay == TRANSIENT_DELAY


class Refusal(NamedTuple):
    method: str
    message: str
    reason: str | None
    words: str


@pytest.mark.parametrize(
    "case",
    [
        Refusal(
            "CreateService",
            f"Caller does not have permission 'servicemanagement.services.create' on project "
            f"{PROJECT}.",
            None,
            f"the bot's service account may not create Endpoints services in {PROJECT} "
            "(servicemanagement.services.create); ask a project owner to grant it",
        ),
        Refusal(
            "GetService",
            "The caller does not have permission",
            None,
            f"the bot's service account may not read Endpoints services in {PROJECT} "
            "(servicemanagement.services.get); ask a project owner to grant it",
        ),
        Refusal(
            "CreateServiceConfig",
            "The caller does not have permission",
            None,
            f"the bot's service account may not update Endpoints services in {PROJECT} "
            "(servicemanagement.services.update); ask a project owner to grant it",
        ),
        Refusal(
            "CreateServiceRollout",
            "The caller does not have permission",
            None,
            f"the bot's service account may not update Endpoints services in {PROJECT} "
            "(servicemanagement.services.update); ask a project owner to grant it",
        ),
        Refusal(
            "GetService",
            "Service Management API has not been used in project 123456789012 before or it "
            "is disabled.",
            "SERVICE_DISABLED",
            "the Service Management API (servicemanagement.googleapis.com) is not enabled in "
            "project 123456789012; enable it there, then try again",
        ),
        Refusal(
            "CreateService",
            "Quota exceeded for quota metric 'Managed services' of service "
            "'servicemanagement.googleapis.com'.",
            None,
            f"project {PROJECT} has used up its Service Management quota, so the bot could "
            f"not create the Endpoints service {HOST}; ask for more quota or try again "
            "tomorrow",
        ),
    ],
)
def test_refusals_are_permanent_in_plain_words(
    client: EndpointsClient, fake: FakeServiceManagement, case: Refusal
) -> None:
    fake.fail_next(case.method, grpc.StatusCode.PERMISSION_DENIED, case.message, reason=case.reason)

    with pytest.raises(PermanentError) as raised:
        client.ensure_endpoint(PROJECT, HOST, IP)

    assert permanent_message(raised) == case.words


def test_undelete_refused_names_the_delete_permission(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    fake.add_service(HOST, PROJECT, deleted=True)
    fake.fail_next("UndeleteService", grpc.StatusCode.PERMISSION_DENIED, "denied")

    with pytest.raises(PermanentError) as raised:
        client.ensure_endpoint(PROJECT, HOST, IP)

    assert permanent_message(raised) == (
        f"the bot's service account may not undelete Endpoints services in {PROJECT} "
        "(servicemanagement.services.delete); ask a project owner to grant it"
    )


def test_delete_refused_names_the_delete_permission(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    fake.add_service(HOST, PROJECT)
    fake.fail_next("DeleteService", grpc.StatusCode.PERMISSION_DENIED, "denied")

    with pytest.raises(PermanentError) as raised:
        client.delete_endpoint(PROJECT, HOST)

    assert permanent_message(raised) == (
        f"the bot's service account may not delete Endpoints services in {PROJECT} "
        "(servicemanagement.services.delete); ask a project owner to grant it"
    )


def test_bad_credentials_are_permanent(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    fake.fail_next("GetService", grpc.StatusCode.UNAUTHENTICATED, "invalid token")

    with pytest.raises(PermanentError) as raised:
        client.ensure_endpoint(PROJECT, HOST, IP)

    assert permanent_message(raised) == (
        "Google refused the bot's credentials; ask the bot's operators to check them"
    )


def test_a_target_that_is_not_an_ipv4_address_is_refused(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    with pytest.raises(PermanentError) as raised:
        client.ensure_endpoint(PROJECT, HOST, "not-an-ip")

    assert permanent_message(raised) == (
        f"Service Management refused to point {HOST} at not-an-ip: Endpoint target "
        f"'not-an-ip' of '{HOST}' is not an IPv4 address."
    )


def test_a_rollout_that_fails_at_once_is_reported(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    client.ensure_endpoint(PROJECT, HOST, IP)
    fake.fail_next_operation(grpc.StatusCode.FAILED_PRECONDITION, "config rejected")

    with pytest.raises(PermanentError) as raised:
        client.ensure_endpoint(PROJECT, HOST, NEW_IP)

    [_, config] = fake.configs(HOST)
    assert permanent_message(raised) == (
        f"Service Management could not roll out config {config.id} of {HOST}: config rejected"
    )
    assert fake.target_of(HOST) == IP


def test_a_create_refused_for_another_reason_is_not_undeleted(
    client: EndpointsClient, fake: FakeServiceManagement
) -> None:
    fake.fail_next("CreateService", grpc.StatusCode.FAILED_PRECONDITION, "project is closing")

    with pytest.raises(PermanentError) as raised:
        client.ensure_endpoint(PROJECT, HOST, IP)

    assert permanent_message(raised) == (
        f"Service Management could not create the Endpoints service {HOST}: project is closing"
    )
    assert fake.count("UndeleteService") == 0
