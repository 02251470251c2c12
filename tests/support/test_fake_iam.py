"""FakeIam through the real google-cloud-iam ``IAMClient`` over gRPC on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.type import expr_pb2

from tests.support.fake_iam import CONCURRENT_CHANGE, EMPTY_POLICY_ETAG, FakeIam

PROJECT = "kf-proj"
ACCOUNT_ID = "demo-vm"
EMAIL = f"{ACCOUNT_ID}@{PROJECT}.iam.gserviceaccount.com"
NAME = f"projects/{PROJECT}/serviceAccounts/{EMAIL}"
ROLE = "roles/iam.workloadIdentityUser"
KSA = f"serviceAccount:{PROJECT}.svc.id.goog[kubeflow/pipeline-runner]"


@pytest.fixture
def iam() -> Iterator[FakeIam]:
    with FakeIam(projects=[PROJECT]) as fake:
        yield fake


@pytest.fixture
def client(iam: FakeIam) -> iam_admin_v1.IAMClient:
    return iam.client()


def create(
    client: iam_admin_v1.IAMClient, account_id: str = ACCOUNT_ID, project: str = PROJECT
) -> iam_admin_v1.ServiceAccount:
    return client.create_service_account(
        name=f"projects/{project}",
        account_id=account_id,
        service_account=iam_admin_v1.ServiceAccount(display_name="kubeflow node"),
        retry=None,
        timeout=5.0,
    )


def read(client: iam_admin_v1.IAMClient, version: int = 3) -> policy_pb2.Policy:
    return client.get_iam_policy(
        request=iam_policy_pb2.GetIamPolicyRequest(
            resource=NAME, options=options_pb2.GetPolicyOptions(requested_policy_version=version)
        ),
        retry=None,
        timeout=5.0,
    )


def write(client: iam_admin_v1.IAMClient, policy: policy_pb2.Policy) -> policy_pb2.Policy:
    return client.set_iam_policy(
        request=iam_policy_pb2.SetIamPolicyRequest(resource=NAME, policy=policy),
        retry=None,
        timeout=5.0,
    )


def add_member(policy: policy_pb2.Policy, role: str, member: str) -> None:
    for binding in policy.bindings:
        if binding.role == role and not binding.HasField("condition"):
            if member not in binding.members:
                binding.members.append(member)
            return
    policy.bindings.add(role=role, members=[member])


# -- service accounts ----------------------------------------------------------------------


def test_a_created_account_has_its_email_name_and_ids_and_can_be_read(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    created = create(client)

    assert created.email == EMAIL
    assert created.name == NAME
    assert created.project_id == PROJECT
    assert created.display_name == "kubeflow node"
    assert len(created.unique_id) == 21 and created.unique_id.isdigit()
    assert created.oauth2_client_id == created.unique_id
    assert client.get_service_account(name=NAME, retry=None) == created
    by_id = client.get_service_account(
        name=f"projects/-/serviceAccounts/{created.unique_id}", retry=None
    )
    assert by_id.email == EMAIL
    [sent] = iam.calls("CreateServiceAccount")
    assert (sent.name, sent.account_id) == (f"projects/{PROJECT}", ACCOUNT_ID)


def test_creating_a_duplicate_is_already_exists(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    create(client)

    with pytest.raises(exceptions.AlreadyExists) as raised:
        create(client)

    assert raised.value.message == (
        f"Service account {ACCOUNT_ID} already exists within project projects/{PROJECT}."
    )
    assert iam.requests[-1].code == grpc.StatusCode.ALREADY_EXISTS


def test_an_unknown_account_is_not_found(client: iam_admin_v1.IAMClient) -> None:
    with pytest.raises(exceptions.NotFound, match="Unknown service account"):
        client.get_service_account(name=NAME, retry=None)
    create(client)
    with pytest.raises(exceptions.NotFound):
        client.get_service_account(name=f"projects/other-proj/serviceAccounts/{EMAIL}", retry=None)
    nobody = f"projects/{PROJECT}/serviceAccounts/nobody@{PROJECT}.iam.gserviceaccount.com"
    with pytest.raises(exceptions.NotFound):
        client.get_iam_policy(resource=nobody, retry=None)


@pytest.mark.parametrize(
    "account_id",
    ["short", "a" * 31, "1starts-with-digit", "ends-with-dash-", "Upper-case", "under_score"],
)
def test_a_bad_account_id_is_invalid_argument(
    client: iam_admin_v1.IAMClient, iam: FakeIam, account_id: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="accountId"):
        create(client, account_id=account_id)
    assert iam.account(f"{account_id}@{PROJECT}.iam.gserviceaccount.com") is None


def test_account_ids_of_six_and_thirty_characters_are_accepted(
    client: iam_admin_v1.IAMClient,
) -> None:
    assert create(client, account_id="abcdef").email.startswith("abcdef@")
    thirty = "a" * 29 + "z"
    assert create(client, account_id=thirty).email == f"{thirty}@{PROJECT}.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    "name",
    [
        PROJECT,
        f"projects/{PROJECT}/serviceAccounts",
        f"organizations/{PROJECT}",
        "projects/UPPER",
    ],
)
def test_a_malformed_parent_is_invalid_argument(client: iam_admin_v1.IAMClient, name: str) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        client.create_service_account(
            name=name, account_id=ACCOUNT_ID, service_account=iam_admin_v1.ServiceAccount()
        )


@pytest.mark.parametrize(
    "name",
    [EMAIL, f"projects/{PROJECT}/accounts/{EMAIL}", f"projects/{PROJECT}/serviceAccounts/"],
)
def test_a_malformed_account_name_is_invalid_argument(
    client: iam_admin_v1.IAMClient, name: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        client.get_service_account(name=name, retry=None)


def test_an_unknown_project_is_permission_denied(client: iam_admin_v1.IAMClient) -> None:
    with pytest.raises(exceptions.PermissionDenied, match=r"iam\.serviceAccounts\.create"):
        create(client, project="other-proj")


# -- the account's IAM policy --------------------------------------------------------------


def test_a_new_accounts_policy_is_empty_with_the_real_apis_etag(
    client: iam_admin_v1.IAMClient,
) -> None:
    create(client)

    policy = read(client)

    assert list(policy.bindings) == []
    assert policy.etag == EMPTY_POLICY_ETAG


def test_read_modify_write_changes_the_etag_and_keeps_the_binding(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    create(client)
    policy = read(client)
    add_member(policy, ROLE, KSA)

    stored = write(client, policy)

    assert stored.etag and stored.etag != EMPTY_POLICY_ETAG
    assert read(client) == stored
    assert iam.members(EMAIL, ROLE) == {KSA}
    assert (iam.successful_sets, iam.blind_sets) == (1, 0)
    assert iam.calls("SetIamPolicy")[0].policy.etag == EMPTY_POLICY_ETAG


def test_a_stale_etag_is_aborted_and_changes_nothing(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    create(client)
    stale = read(client)
    fresh = read(client)
    add_member(fresh, ROLE, KSA)
    write(client, fresh)
    add_member(stale, ROLE, "user:b@example.com")

    with pytest.raises(exceptions.Aborted) as raised:
        write(client, stale)

    assert raised.value.message == CONCURRENT_CHANGE
    assert iam.members(EMAIL, ROLE) == {KSA}
    assert iam.requests[-1].code == grpc.StatusCode.ABORTED
    assert iam.successful_sets == 1


def test_a_set_without_etag_overwrites_and_is_counted(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    create(client)
    policy = read(client)
    add_member(policy, ROLE, KSA)
    write(client, policy)

    blind = policy_pb2.Policy()
    add_member(blind, ROLE, "user:b@example.com")
    write(client, blind)

    assert iam.members(EMAIL, ROLE) == {"user:b@example.com"}
    assert iam.blind_sets == 1


def test_conditional_bindings_need_version_3_and_come_back_whole_only_at_version_3(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    create(client)
    condition = expr_pb2.Expr(
        expression='request.time < timestamp("2030-01-01T00:00:00Z")',
        title="until-2030",
        description="temporary",
    )
    policy = read(client)
    policy.bindings.add(role=ROLE, members=["user:a@example.com"], condition=condition)
    with pytest.raises(exceptions.InvalidArgument, match="version 3"):
        write(client, policy)
    policy.version = 3
    stored = write(client, policy)
    assert stored.version == 3

    whole = read(client, version=3)
    [binding] = whole.bindings
    assert binding.role == ROLE
    assert binding.condition == condition

    flattened = read(client, version=1)
    assert flattened.version == 1
    [legacy] = flattened.bindings
    assert legacy.role.startswith(f"{ROLE}_withcond_")
    assert not legacy.HasField("condition")
    with pytest.raises(exceptions.InvalidArgument):
        write(client, flattened)
    assert iam.policy(EMAIL) == stored


def test_an_untitled_condition_and_a_bad_version_are_invalid_argument(
    client: iam_admin_v1.IAMClient,
) -> None:
    create(client)
    policy = read(client)
    policy.version = 3
    policy.bindings.add(role=ROLE, members=[KSA], condition=expr_pb2.Expr(expression="true"))
    with pytest.raises(exceptions.InvalidArgument, match="title"):
        write(client, policy)
    with pytest.raises(exceptions.InvalidArgument, match="version 2"):
        read(client, version=2)


def test_invalid_members_and_roles_are_invalid_argument(client: iam_admin_v1.IAMClient) -> None:
    create(client)
    policy = read(client)
    add_member(policy, ROLE, "someone@example.com")
    with pytest.raises(exceptions.InvalidArgument, match="member"):
        write(client, policy)
    policy = read(client)
    add_member(policy, "iam.workloadIdentityUser", KSA)
    with pytest.raises(exceptions.InvalidArgument, match="Role"):
        write(client, policy)


# -- faults --------------------------------------------------------------------------------


def test_injected_faults_hit_the_named_method_the_given_number_of_times(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    iam.fail_next("CreateServiceAccount", grpc.StatusCode.UNAVAILABLE, "try again", times=2)
    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable, match="try again"):
            create(client)
    assert iam.account(EMAIL) is None
    create(client)
    assert iam.account(EMAIL) is not None
    assert [r.code for r in iam.requests] == [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.OK,
    ]


def test_a_fault_with_a_reason_carries_error_info(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    iam.fail_next(
        None, grpc.StatusCode.PERMISSION_DENIED, "IAM API is disabled.", reason="SERVICE_DISABLED"
    )
    with pytest.raises(exceptions.PermissionDenied) as raised:
        client.get_service_account(name=NAME, retry=None)
    assert raised.value.reason == "SERVICE_DISABLED"


def test_other_methods_are_unimplemented(client: iam_admin_v1.IAMClient) -> None:
    with pytest.raises(exceptions.MethodNotImplemented):
        client.list_service_accounts(name=f"projects/{PROJECT}", retry=None)


def test_twenty_concurrent_read_modify_writes_lose_no_update(
    client: iam_admin_v1.IAMClient, iam: FakeIam
) -> None:
    create(client)
    members = [f"serviceAccount:{PROJECT}.svc.id.goog[ns/ksa-{i}]" for i in range(20)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(members))

    def grant(member: str) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(200):
                policy = read(client)
                add_member(policy, ROLE, member)
                try:
                    write(client, policy)
                except exceptions.Aborted:
                    continue
                return
            raise AssertionError("never landed")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=grant, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert iam.members(EMAIL, ROLE) == set(members)
    assert (iam.successful_sets, iam.blind_sets) == (20, 0)
