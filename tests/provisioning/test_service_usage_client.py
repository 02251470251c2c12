"""``ServiceUsage`` through the real ``ServiceUsageClient`` against ``FakeServiceUsage``.

Enable operations finish only when a test advances the fake's clock; injected faults
show how each library exception becomes a temporary or permanent error, by the exact
words the requester reads.  The last test drives the real ``ensure_apis`` step over the
client.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import cast

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth.credentials import AnonymousCredentials
from google.cloud import service_usage_v1
from google.cloud.service_usage_v1.services.service_usage.transports import (
    ServiceUsageGrpcTransport,
)

from provisioning.actions import CreateAction
from provisioning.cloud import Cloud
from provisioning.create_steps import APIS_POLL_SECONDS, REQUIRED_APIS, ensure_apis
from provisioning.engine import Outcome, StepContext
from provisioning.errors import PermanentError, TemporaryError
from provisioning.service_usage_client import ServiceUsage
from provisioning.spec import DeploymentSpec
from tests.support.clocks import FakeClock, FakeMonotonic
from tests.support.fake_service_usage import FakeServiceUsage

PROJECT = "kf-proj"
NUMBER = 123456789012
OP_SECONDS = 60.0
COMPUTE = "compute.googleapis.com"
CONTAINER = "container.googleapis.com"
IAM = "iam.googleapis.com"
MANY = [f"svc{i:02d}.example.googleapis.com" for i in range(45)]


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def su(clock: FakeMonotonic) -> Iterator[FakeServiceUsage]:
    with FakeServiceUsage(
        projects={PROJECT: NUMBER, "no-billing": 222},
        enabled={PROJECT: [IAM]},
        billing_disabled={"no-billing"},
        operation_polls=0,
        operation_seconds=OP_SECONDS,
        clock=clock,
    ) as fake:
        yield fake


@pytest.fixture
def client(su: FakeServiceUsage) -> ServiceUsage:
    # Reads retry UNAVAILABLE for at most a few hundredths of a second here.
    quick = Retry(
        predicate=if_exception_type(exceptions.ServiceUnavailable),
        initial=0.01,
        maximum=0.01,
        timeout=0.05,
    )
    return ServiceUsage(su.client(), read_retry=quick, timeout=5.0)


def permanent_message(raised: pytest.ExceptionInfo[PermanentError]) -> str:
    assert isinstance(raised.value.__cause__, exceptions.GoogleAPICallError)
    return raised.value.user_message


# -- reading and enabling ------------------------------------------------------------------


def test_enabled_services_reads_the_state(client: ServiceUsage, su: FakeServiceUsage) -> None:
    assert client.enabled_services(PROJECT, [COMPUTE, IAM, CONTAINER]) == frozenset({IAM})

    [sent] = su.calls("BatchGetServices")
    assert sent.parent == f"projects/{PROJECT}"
    assert list(sent.names) == [
        f"projects/{PROJECT}/services/{s}" for s in (COMPUTE, IAM, CONTAINER)
    ]


def test_enabled_services_of_nothing_asks_nothing(
    client: ServiceUsage, su: FakeServiceUsage
) -> None:
    assert client.enabled_services(PROJECT, []) == frozenset()
    client.enable_services(PROJECT, [])
    assert su.requests == []


def test_enable_starts_the_operation_and_a_later_read_sees_the_services(
    client: ServiceUsage, su: FakeServiceUsage, clock: FakeMonotonic
) -> None:
    client.enable_services(PROJECT, [COMPUTE, CONTAINER])

    [sent] = su.calls("BatchEnableServices")
    assert sent.parent == f"projects/{PROJECT}"
    assert list(sent.service_ids) == [COMPUTE, CONTAINER]
    # One look at the operation, no waiting for it.
    assert su.count("GetOperation") == 1
    assert client.enabled_services(PROJECT, [COMPUTE, CONTAINER]) == frozenset()
    clock.advance(OP_SECONDS)
    assert client.enabled_services(PROJECT, [COMPUTE, CONTAINER, IAM]) == frozenset(
        {COMPUTE, CONTAINER, IAM}
    )
    assert su.count("GetOperation") == 1


def test_enabling_an_enabled_service_is_quiet(client: ServiceUsage, su: FakeServiceUsage) -> None:
    client.enable_services(PROJECT, [IAM])

    assert su.count("BatchEnableServices") == 1
    assert su.count("GetOperation") == 0  # the no-op answer is already done
    assert su.enabled(PROJECT) == frozenset({IAM})


def test_more_than_twenty_services_go_in_batches_of_twenty(
    client: ServiceUsage, su: FakeServiceUsage, clock: FakeMonotonic
) -> None:
    client.enable_services(PROJECT, [*MANY, MANY[0]])
    clock.advance(OP_SECONDS)
    enabled = client.enabled_services(PROJECT, [*MANY, COMPUTE])

    assert enabled == frozenset(MANY)
    enables = [list(r.service_ids) for r in su.calls("BatchEnableServices")]
    assert enables == [MANY[:20], MANY[20:40], MANY[40:]]
    gets = [[n.rsplit("/", 1)[-1] for n in r.names] for r in su.calls("BatchGetServices")]
    assert gets == [MANY[:20], MANY[20:40], [*MANY[40:], COMPUTE]]


def test_connect_reaches_an_emulator_anonymously(su: FakeServiceUsage) -> None:
    client = ServiceUsage.connect(su.target)

    assert client.enabled_services(PROJECT, [IAM]) == frozenset({IAM})
    assert su.count("BatchGetServices") == 1


# -- temporary errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL],
)
def test_unanswered_enables_are_temporary(
    client: ServiceUsage, su: FakeServiceUsage, code: grpc.StatusCode
) -> None:
    su.fail_next("BatchEnableServices", code, "backend trouble")

    with pytest.raises(TemporaryError) as raised:
        client.enable_services(PROJECT, [COMPUTE])

    assert str(raised.value) == (
        f"Service Usage did not answer ({code.name}); will enable {COMPUTE} in {PROJECT} later"
    )
    assert raised.value.delay == 10.0
    assert su.count("BatchEnableServices") == 1  # mutations are not retried here


def test_reads_retry_unavailable_briefly_then_give_up_as_temporary(
    client: ServiceUsage, su: FakeServiceUsage
) -> None:
    su.fail_next("BatchGetServices", grpc.StatusCode.UNAVAILABLE, "blip")
    assert client.enabled_services(PROJECT, [IAM]) == frozenset({IAM})

    su.fail_next("BatchGetServices", grpc.StatusCode.UNAVAILABLE, "down", times=1000)
    with pytest.raises(TemporaryError) as raised:
        client.enabled_services(PROJECT, [IAM])

    assert str(raised.value) == (
        f"Service Usage did not answer in time to check which APIs are enabled in {PROJECT}"
    )
    assert isinstance(raised.value.__cause__, exceptions.RetryError)


def test_a_refused_connection_is_temporary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        channel = grpc.insecure_channel(target)
        transport = ServiceUsageGrpcTransport(
            host=target, credentials=AnonymousCredentials(), channel=channel
        )
        client = ServiceUsage(
            service_usage_v1.ServiceUsageClient(transport=transport), read_retry=None, timeout=2.0
        )
        with pytest.raises(TemporaryError) as raised:
            client.enabled_services(PROJECT, [IAM])
        channel.close()

    assert str(raised.value) == (
        f"Service Usage did not answer (UNAVAILABLE); will check which APIs are enabled in "
        f"{PROJECT} later"
    )


def test_a_per_minute_limit_is_a_rate_limit(client: ServiceUsage, su: FakeServiceUsage) -> None:
    su.fail_next(
        "BatchEnableServices",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Quota exceeded for quota metric 'Mutate requests' and limit 'Mutate requests per "
        "minute' of service 'serviceusage.googleapis.com' for consumer 'project_number:1'.",
    )

    with pytest.raises(TemporaryError) as raised:
        client.enable_services(PROJECT, [COMPUTE, CONTAINER])

    assert str(raised.value) == (
        f"Service Usage is rate limiting; will enable 2 APIs ({COMPUTE}, {CONTAINER}) in "
        f"{PROJECT} later"
    )
    assert raised.value.delay == 30.0


def test_an_operation_that_failed_at_once_is_reported() -> None:
    # Operations here finish at the first look, so the one look sees their error.
    with FakeServiceUsage(operation_polls=0) as quick:
        fast = ServiceUsage(quick.client(), read_retry=None, timeout=5.0)
        quick.fail_next_operation(grpc.StatusCode.UNAVAILABLE, "try again")
        with pytest.raises(TemporaryError) as temporary:
            fast.enable_services(PROJECT, [COMPUTE])
        quick.fail_next_operation(
            grpc.StatusCode.PERMISSION_DENIED, "Permission denied to enable service [compute]"
        )
        with pytest.raises(PermanentError) as permanent:
            fast.enable_services(PROJECT, [COMPUTE])

    assert str(temporary.value) == (
        f"Service Usage did not answer (UNAVAILABLE); will enable {COMPUTE} in {PROJECT} later"
    )
    assert permanent_message(permanent) == (
        f"the bot's service account may not enable APIs in {PROJECT} "
        "(serviceusage.services.enable); ask a project owner to grant it"
    )
    assert quick.count("GetOperation") == 2


# -- permanent errors ----------------------------------------------------------------------


def test_permission_denied_to_read_names_the_get_permission(
    client: ServiceUsage, su: FakeServiceUsage
) -> None:
    su.fail_next(
        "BatchGetServices",
        grpc.StatusCode.PERMISSION_DENIED,
        f"Permission denied to get service [{COMPUTE}]",
        reason="AUTH_PERMISSION_DENIED",
    )

    with pytest.raises(PermanentError) as raised:
        client.enabled_services(PROJECT, [COMPUTE])

    assert permanent_message(raised) == (
        f"the bot's service account may not read the project's APIs in {PROJECT} "
        "(serviceusage.services.get); ask a project owner to grant it"
    )


def test_permission_denied_to_enable_names_the_enable_permission(
    client: ServiceUsage, su: FakeServiceUsage
) -> None:
    su.fail_next(
        "BatchEnableServices",
        grpc.StatusCode.PERMISSION_DENIED,
        f"Permission 'serviceusage.services.enable' denied on resource 'projects/{PROJECT}'.",
    )

    with pytest.raises(PermanentError) as raised:
        client.enable_services(PROJECT, [COMPUTE])

    assert permanent_message(raised) == (
        f"the bot's service account may not enable APIs in {PROJECT} "
        "(serviceusage.services.enable); ask a project owner to grant it"
    )


def test_billing_not_enabled_asks_for_billing(client: ServiceUsage, su: FakeServiceUsage) -> None:
    with pytest.raises(PermanentError) as raised:
        client.enable_services("no-billing", [COMPUTE, CONTAINER])

    assert permanent_message(raised) == (
        "project no-billing has no billing account, so its APIs cannot be enabled; "
        "enable billing on project no-billing, then try again"
    )
    assert isinstance(raised.value.__cause__, exceptions.FailedPrecondition)
    assert su.enabled("no-billing") == frozenset()


def test_an_unknown_service_is_named(client: ServiceUsage, su: FakeServiceUsage) -> None:
    with pytest.raises(PermanentError) as raised:
        client.enable_services(PROJECT, [COMPUTE, "nosuch.googleapis.com"])

    assert permanent_message(raised) == (
        f"Service Usage does not know nosuch.googleapis.com, or will not let the bot use it in "
        f"{PROJECT}; check the API name, or ask a project owner to grant the bot "
        "serviceusage.services.enable"
    )


def test_a_used_up_daily_quota_is_permanent(client: ServiceUsage, su: FakeServiceUsage) -> None:
    su.fail_next(
        "BatchEnableServices",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Quota exceeded for quota metric 'Mutate requests' and limit 'Mutate requests per "
        "day' of service 'serviceusage.googleapis.com' for consumer 'project_number:1'.",
    )

    with pytest.raises(PermanentError) as raised:
        client.enable_services(PROJECT, [COMPUTE])

    assert permanent_message(raised) == (
        f"project {PROJECT} has used up the Service Usage quota 'Mutate requests per day', "
        f"so the bot could not enable {COMPUTE} in {PROJECT}; ask for more quota or try "
        "again tomorrow"
    )


def test_a_disabled_service_usage_api_is_named(client: ServiceUsage, su: FakeServiceUsage) -> None:
    su.fail_next(
        "BatchGetServices",
        grpc.StatusCode.PERMISSION_DENIED,
        "Service Usage API has not been used in project 987654321 before or it is disabled. "
        "Enable it by visiting https://console.developers.google.com/apis/api/"
        "serviceusage.googleapis.com/overview?project=987654321 then retry.",
        reason="SERVICE_DISABLED",
    )

    with pytest.raises(PermanentError) as raised:
        client.enabled_services(PROJECT, [COMPUTE])

    assert permanent_message(raised) == (
        "the Service Usage API (serviceusage.googleapis.com) is not enabled in project "
        "987654321; enable it there, then try again"
    )


def test_an_invalid_argument_quotes_the_api(client: ServiceUsage) -> None:
    with pytest.raises(PermanentError) as raised:
        client.enable_services("bad/project", [COMPUTE])

    assert permanent_message(raised) == (
        f"Service Usage refused to enable {COMPUTE} in bad/project: Invalid parent "
        "'projects/bad/project': expected 'projects/{project}'."
    )


def test_refused_credentials_are_permanent(client: ServiceUsage, su: FakeServiceUsage) -> None:
    su.fail_next(None, grpc.StatusCode.UNAUTHENTICATED, "Request had invalid credentials.")

    with pytest.raises(PermanentError) as raised:
        client.enabled_services(PROJECT, [COMPUTE])

    assert permanent_message(raised) == (
        "Google refused the bot's credentials; ask the bot's operators to check them"
    )


# -- the step over the client --------------------------------------------------------------


class ServiceUsageOnlyCloud:
    """Just enough of ``Cloud`` for the APIs step, delegating to ``ServiceUsage``."""

    dry_run = False

    def __init__(self, service_usage: ServiceUsage) -> None:
        self.enabled_services = service_usage.enabled_services
        self.enable_services = service_usage.enable_services

    def drain_calls(self) -> list[str]:
        return []


def test_the_apis_step_waits_while_enabling_then_reports_unchanged(
    client: ServiceUsage, su: FakeServiceUsage, clock: FakeMonotonic
) -> None:
    ctx = StepContext(
        request_id="kf-crt001",
        requester="U0ADA",
        action=CreateAction(spec=DeploymentSpec(name="kf", project=PROJECT, zone="us-central1-a")),
        cloud=cast(Cloud, ServiceUsageOnlyCloud(client)),
        clock=FakeClock(),
    )
    missing = [api for api in REQUIRED_APIS if api != IAM]

    first = ensure_apis(ctx)
    assert (first.outcome, first.detail) == (Outcome.PENDING, f"enabling {len(missing)} APIs")
    assert first.retry_after == APIS_POLL_SECONDS
    # Still running: the step asks again, which is harmless.
    assert ensure_apis(ctx).outcome == Outcome.PENDING
    clock.advance(OP_SECONDS)
    for _ in range(2):
        again = ensure_apis(ctx)
        assert (again.outcome, again.detail) == (
            Outcome.UNCHANGED,
            f"{len(REQUIRED_APIS)} APIs already enabled",
        )

    enables = [list(r.service_ids) for r in su.calls("BatchEnableServices")]
    assert enables == [missing, missing]
    assert su.enabled(PROJECT) >= frozenset(REQUIRED_APIS)
