"""FakeResourceManager through the real google-cloud-resource-manager gRPC client."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import resourcemanager_v3
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.type import expr_pb2

from tests.support.fake_resource_manager import CONCURRENT_CHANGE, FakeResourceManager

PROJECT = "kf-proj"
NUMBER = 123456789012
RESOURCE = f"projects/{PROJECT}"
ROLE = "roles/logging.logWriter"


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    with FakeResourceManager(projects={PROJECT: NUMBER}) as fake:
        yield fake


def add_member(policy: policy_pb2.Policy, role: str, member: str) -> None:
    for binding in policy.bindings:
        if binding.role == role:
            if member not in binding.members:
                binding.members.append(member)
            return
    policy.bindings.add(role=role, members=[member])


def grant(client: resourcemanager_v3.ProjectsClient, member: str, attempts: int = 200) -> int:
    """Read-modify-write with retry on ABORTED; returns how many attempts were aborted."""
    for aborted in range(attempts):
        policy = client.get_iam_policy(resource=RESOURCE, retry=None)
        add_member(policy, ROLE, member)
        try:
            client.set_iam_policy(request={"resource": RESOURCE, "policy": policy}, retry=None)
        except exceptions.Aborted:
            continue
        return aborted
    raise AssertionError("never landed")


def test_get_project_gives_the_number(rm: FakeResourceManager) -> None:
    client = rm.client()
    project = client.get_project(name=RESOURCE, retry=None)
    assert project.name == f"projects/{NUMBER}"
    assert project.project_id == PROJECT
    assert client.get_project(name=f"projects/{NUMBER}", retry=None).project_id == PROJECT
    with pytest.raises(exceptions.PermissionDenied):
        client.get_project(name="projects/other", retry=None)
    assert rm.requests[0].method == "GetProject"
    assert rm.requests[0].request.name == RESOURCE


def test_read_modify_write_changes_the_etag(rm: FakeResourceManager) -> None:
    client = rm.client()
    policy = client.get_iam_policy(resource=RESOURCE, retry=None)
    assert policy.etag
    old_etag = policy.etag
    add_member(policy, ROLE, "serviceAccount:kf-vm@kf-proj.iam.gserviceaccount.com")
    stored = client.set_iam_policy(request={"resource": RESOURCE, "policy": policy}, retry=None)
    assert stored.etag and stored.etag != old_etag
    assert rm.members(PROJECT, ROLE) == {"serviceAccount:kf-vm@kf-proj.iam.gserviceaccount.com"}
    assert rm.members(PROJECT, "roles/owner") == {"user:owner@example.com"}
    again = client.get_iam_policy(resource=RESOURCE, retry=None)
    assert again.etag == stored.etag
    set_call = next(r for r in rm.requests if r.method == "SetIamPolicy")
    assert set_call.request.policy.etag == old_etag


def test_stale_etag_is_aborted_and_changes_nothing(rm: FakeResourceManager) -> None:
    client = rm.client()
    stale = client.get_iam_policy(resource=RESOURCE, retry=None)
    fresh = client.get_iam_policy(resource=RESOURCE, retry=None)
    add_member(fresh, ROLE, "user:a@example.com")
    client.set_iam_policy(request={"resource": RESOURCE, "policy": fresh}, retry=None)
    add_member(stale, ROLE, "user:b@example.com")
    with pytest.raises(exceptions.Aborted, match="concurrent policy changes"):
        client.set_iam_policy(request={"resource": RESOURCE, "policy": stale}, retry=None)
    assert rm.members(PROJECT, ROLE) == {"user:a@example.com"}
    assert rm.requests[-1].code == grpc.StatusCode.ABORTED
    assert CONCURRENT_CHANGE.startswith("There were concurrent policy changes")


def test_invalid_member_is_invalid_argument(rm: FakeResourceManager) -> None:
    client = rm.client()
    policy = client.get_iam_policy(resource=RESOURCE, retry=None)
    add_member(policy, ROLE, "kf-vm@kf-proj.iam.gserviceaccount.com")
    with pytest.raises(exceptions.InvalidArgument):
        client.set_iam_policy(request={"resource": RESOURCE, "policy": policy}, retry=None)


def test_injected_fault(rm: FakeResourceManager) -> None:
    client = rm.client()
    rm.fail_next("SetIamPolicy", grpc.StatusCode.PERMISSION_DENIED, "Policy update denied.")
    policy = client.get_iam_policy(resource=RESOURCE, retry=None)
    add_member(policy, ROLE, "user:a@example.com")
    with pytest.raises(exceptions.PermissionDenied, match="Policy update denied"):
        client.set_iam_policy(request={"resource": RESOURCE, "policy": policy}, retry=None)
    client.set_iam_policy(request={"resource": RESOURCE, "policy": policy}, retry=None)
    assert rm.members(PROJECT, ROLE) == {"user:a@example.com"}


def test_twenty_concurrent_read_modify_writes_lose_no_update(rm: FakeResourceManager) -> None:
    client = rm.client()
    members = [f"serviceAccount:sa-{i}@kf-proj.iam.gserviceaccount.com" for i in range(20)]
    aborted: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(members))

    def worker(member: str) -> None:
        try:
            barrier.wait(timeout=10)
            aborted.append(grant(client, member))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert rm.members(PROJECT, ROLE) == set(members)
    assert rm.members(PROJECT, "roles/owner") == {"user:owner@example.com"}
    assert rm.successful_sets == 20
    assert rm.blind_sets == 0
    aborts = sum(1 for r in rm.requests if r.code == grpc.StatusCode.ABORTED)
    assert aborts == sum(aborted) == rm.stale_sets


# -- policy versions and conditions ------------------------------------------------------

IAP = "roles/iap.httpsResourceAccessor"
UNTIL_2030 = expr_pb2.Expr(
    expression='request.time < timestamp("2030-01-01T00:00:00Z")',
    title="until 2030",
    description="contractor access",
)


def read(client: resourcemanager_v3.ProjectsClient, version: int | None) -> policy_pb2.Policy:
    options = options_pb2.GetPolicyOptions(requested_policy_version=version or 0)
    request = iam_policy_pb2.GetIamPolicyRequest(resource=RESOURCE, options=options)
    return client.get_iam_policy(request=request, retry=None)


def write(
    client: resourcemanager_v3.ProjectsClient, policy: policy_pb2.Policy
) -> policy_pb2.Policy:
    return client.set_iam_policy(request={"resource": RESOURCE, "policy": policy}, retry=None)


def with_conditional_grant(client: resourcemanager_v3.ProjectsClient) -> policy_pb2.Policy:
    policy = read(client, 3)
    policy.version = 3
    policy.bindings.add(role=IAP, members=["user:c@example.com"], condition=UNTIL_2030)
    return write(client, policy)


def test_a_conditional_binding_is_stored_as_version_3_and_read_back_whole_at_3(
    rm: FakeResourceManager,
) -> None:
    client = rm.client()
    stored = with_conditional_grant(client)

    assert stored.version == 3
    policy = read(client, 3)
    assert policy.version == 3
    [conditional] = [b for b in policy.bindings if b.role == IAP]
    assert conditional.condition == UNTIL_2030
    assert list(conditional.members) == ["user:c@example.com"]


@pytest.mark.parametrize("version", [None, 1])
def test_a_version_1_read_renames_conditional_roles_and_they_cannot_be_written_back(
    rm: FakeResourceManager, version: int | None
) -> None:
    client = rm.client()
    with_conditional_grant(client)

    policy = read(client, version)

    assert policy.version == 1
    [mangled] = [b for b in policy.bindings if b.role.startswith(IAP)]
    assert mangled.role.startswith(f"{IAP}_withcond_")
    assert not mangled.HasField("condition")
    add_member(policy, ROLE, "user:a@example.com")
    with pytest.raises(exceptions.InvalidArgument, match="withcond"):
        write(client, policy)
    assert rm.members(PROJECT, ROLE) == set()


def test_changing_a_policy_that_holds_a_condition_needs_version_3(
    rm: FakeResourceManager,
) -> None:
    client = rm.client()
    with_conditional_grant(client)
    policy = read(client, 3)
    add_member(policy, ROLE, "user:a@example.com")

    policy.version = 1
    with pytest.raises(exceptions.InvalidArgument, match="must specify version 3"):
        write(client, policy)
    # Even a write that drops the conditional binding must say 3.
    del policy.bindings[[b.role for b in policy.bindings].index(IAP)]
    with pytest.raises(exceptions.InvalidArgument, match="must specify version 3"):
        write(client, policy)

    policy.version = 3
    assert write(client, policy).version == 1  # no condition left
    assert rm.members(PROJECT, ROLE) == {"user:a@example.com"}


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        (expr_pb2.Expr(expression="true"), "title is required"),
        (expr_pb2.Expr(expression="true", title="t" * 101), "at most 100"),
        (expr_pb2.Expr(expression="true", title="t", description="d" * 257), "at most 256"),
        (expr_pb2.Expr(title="t"), "expression"),
    ],
)
def test_conditions_need_a_title_and_an_expression_within_limits(
    rm: FakeResourceManager, condition: expr_pb2.Expr, says: str
) -> None:
    client = rm.client()
    policy = read(client, 3)
    policy.version = 3
    policy.bindings.add(role=IAP, members=["user:a@example.com"], condition=condition)

    with pytest.raises(exceptions.InvalidArgument, match=says):
        write(client, policy)


def test_invalid_policy_versions_are_refused(rm: FakeResourceManager) -> None:
    client = rm.client()
    with pytest.raises(exceptions.InvalidArgument, match="policy version 2"):
        read(client, 2)
    policy = read(client, 3)
    policy.version = 2
    with pytest.raises(exceptions.InvalidArgument, match="policy version 2"):
        write(client, policy)


def test_a_blind_version_1_write_overwrites_the_conditions_as_iam_warns(
    rm: FakeResourceManager,
) -> None:
    client = rm.client()
    with_conditional_grant(client)
    blind = policy_pb2.Policy(version=1)
    blind.bindings.add(role="roles/owner", members=["user:owner@example.com"])

    assert write(client, blind).version == 1

    assert rm.members(PROJECT, IAP) == set()
    assert rm.blind_sets == 1


@pytest.mark.parametrize("name", ["kf-proj", "projects/", "projects/kf-proj/x", "projects/KF"])
def test_get_project_refuses_a_name_that_is_not_a_project(
    rm: FakeResourceManager, name: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        rm.client().get_project(name=name, retry=None)
    assert rm.requests[-1].code is grpc.StatusCode.INVALID_ARGUMENT
