"""``IamClient`` through the real IAM Admin and Resource Manager clients, against fakes.

``FakeIam`` and ``FakeResourceManager`` serve gRPC on loopback; injected faults show how
each library exception becomes a temporary or permanent error, with its exact words.  The
last tests drive the real service account, Workload Identity and access steps over the
client.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import cast

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type
from google.iam.v1 import policy_pb2
from google.type import expr_pb2

from provisioning.access_steps import ensure_access_granted, ensure_access_revoked
from provisioning.actions import IAP_ACCESSOR_ROLE, CreateAction, GrantAction, RevokeAction
from provisioning.cloud import Cloud, IamBinding, IamCondition, IamPolicy
from provisioning.create_steps import (
    ACCOUNT_ROLES,
    WORKLOAD_IDENTITY_ROLE,
    account_email,
    ensure_service_accounts,
    ensure_workload_identity,
)
from provisioning.engine import Action, Outcome, StepContext
from provisioning.errors import ConcurrentChange, PermanentError, TemporaryError
from provisioning.iam_client import IamClient
from provisioning.iam_edits import read_modify_write
from provisioning.spec import DeploymentSpec
from tests.support.clocks import FakeClock
from tests.support.fake_iam import EMPTY_POLICY_ETAG, FakeIam
from tests.support.fake_resource_manager import DEFAULT_OWNER, FakeResourceManager

PROJECT = "kf-proj"
NUMBER = 123456789012
ACCOUNT_ID = "kf-demo-vm"
EMAIL = f"{ACCOUNT_ID}@{PROJECT}.iam.gserviceaccount.com"
ROLE = "roles/logging.logWriter"
KSA = f"serviceAccount:{PROJECT}.svc.id.goog[kubeflow/pipeline-runner]"
CONDITION = expr_pb2.Expr(
    expression='request.time < timestamp("2030-01-01T00:00:00Z")',
    title="until-2030",
    description="contractor access, ends with the contract",
)


@pytest.fixture
def iam() -> Iterator[FakeIam]:
    with FakeIam(projects=[PROJECT]) as fake:
        yield fake


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    with FakeResourceManager(projects={PROJECT: NUMBER}) as fake:
        yield fake


@pytest.fixture
def client(iam: FakeIam, rm: FakeResourceManager) -> IamClient:
    # Reads retry UNAVAILABLE for at most a few hundredths of a second here.
    quick = Retry(
        predicate=if_exception_type(exceptions.ServiceUnavailable),
        initial=0.01,
        maximum=0.01,
        timeout=0.05,
    )
    return IamClient(iam.client(), rm.client(), read_retry=quick, timeout=5.0)


def seed_project_policy(rm: FakeResourceManager) -> policy_pb2.Policy:
    """Put an unrelated and a conditional binding on the project, as someone else would."""
    raw = rm.client()
    policy = raw.get_iam_policy(resource=f"projects/{PROJECT}", retry=None)
    policy.version = 3
    policy.bindings.add(role="roles/editor", members=["group:ml-team@example.com"])
    policy.bindings.add(
        role=IAP_ACCESSOR_ROLE, members=["user:contractor@example.com"], condition=CONDITION
    )
    return raw.set_iam_policy(
        request={"resource": f"projects/{PROJECT}", "policy": policy}, retry=None
    )


# -- service accounts ----------------------------------------------------------------------


def test_an_account_is_absent_then_created_then_present_and_creating_again_is_quiet(
    client: IamClient, iam: FakeIam
) -> None:
    assert client.service_account_exists(PROJECT, ACCOUNT_ID) is False

    client.create_service_account(PROJECT, ACCOUNT_ID, "kubeflow node service account")
    client.create_service_account(PROJECT, ACCOUNT_ID, "kubeflow node service account")

    assert client.service_account_exists(PROJECT, ACCOUNT_ID) is True
    account = iam.account(EMAIL)
    assert account is not None
    assert account.display_name == "kubeflow node service account"
    assert [r.code for r in iam.requests if r.method == "CreateServiceAccount"] == [
        grpc.StatusCode.OK,
        grpc.StatusCode.ALREADY_EXISTS,
    ]
    [first, _] = iam.calls("CreateServiceAccount")
    assert (first.name, first.account_id) == (f"projects/{PROJECT}", ACCOUNT_ID)
    assert iam.calls("GetServiceAccount")[0].name == (f"projects/{PROJECT}/serviceAccounts/{EMAIL}")


def test_connect_reaches_both_emulators_anonymously(iam: FakeIam, rm: FakeResourceManager) -> None:
    client = IamClient.connect(iam.target, rm.target)

    assert client.service_account_exists(PROJECT, ACCOUNT_ID) is False
    assert client.get_project_iam_policy(PROJECT).members_of("roles/owner") == {DEFAULT_OWNER}
    assert iam.count("GetServiceAccount") == 1
    assert [r.method for r in rm.requests] == ["GetIamPolicy"]


# -- a service account's policy ------------------------------------------------------------


def test_a_service_account_policy_round_trips_with_its_exact_etag(
    client: IamClient, iam: FakeIam
) -> None:
    client.create_service_account(PROJECT, ACCOUNT_ID, "node")

    empty = client.get_service_account_iam_policy(PROJECT, EMAIL)
    assert empty == IamPolicy(bindings=(), etag="ACAB")
    assert base64.b64decode(empty.etag) == EMPTY_POLICY_ETAG
    written = client.set_service_account_iam_policy(
        PROJECT, EMAIL, empty.with_members(WORKLOAD_IDENTITY_ROLE, frozenset({KSA}))
    )

    assert written.bindings == (IamBinding(WORKLOAD_IDENTITY_ROLE, frozenset({KSA})),)
    assert written.etag != empty.etag
    assert client.get_service_account_iam_policy(PROJECT, EMAIL) == written
    assert iam.members(EMAIL, WORKLOAD_IDENTITY_ROLE) == {KSA}
    [sent] = iam.calls("SetIamPolicy")
    assert sent.resource == f"projects/{PROJECT}/serviceAccounts/{EMAIL}"
    assert sent.policy.etag == EMPTY_POLICY_ETAG
    # Every write says version 3: IAM accepts it for a policy without conditions too.
    assert sent.policy.version == 3
    assert iam.blind_sets == 0
    assert {r.options.requested_policy_version for r in iam.calls("GetIamPolicy")} == {3}


def test_a_stale_service_account_policy_raises_concurrent_change(
    client: IamClient, iam: FakeIam
) -> None:
    client.create_service_account(PROJECT, ACCOUNT_ID, "node")
    stale = client.get_service_account_iam_policy(PROJECT, EMAIL)
    client.set_service_account_iam_policy(
        PROJECT, EMAIL, stale.with_members(WORKLOAD_IDENTITY_ROLE, frozenset({KSA}))
    )

    with pytest.raises(ConcurrentChange) as raised:
        client.set_service_account_iam_policy(
            PROJECT, EMAIL, stale.with_members(WORKLOAD_IDENTITY_ROLE, frozenset({"user:b@x.io"}))
        )

    assert str(raised.value) == (
        f"the IAM policy changed since it was read; will update the IAM policy of service "
        f"account {EMAIL} again"
    )
    assert isinstance(raised.value.__cause__, exceptions.Aborted)
    assert iam.members(EMAIL, WORKLOAD_IDENTITY_ROLE) == {KSA}


def test_the_policy_of_a_missing_account_is_a_plain_permanent_error(client: IamClient) -> None:
    with pytest.raises(PermanentError) as raised:
        client.get_service_account_iam_policy(PROJECT, EMAIL)

    assert raised.value.user_message == (
        f"service account {EMAIL} does not exist in {PROJECT}; if it was deleted, delete this "
        "deployment and request it again"
    )


# -- the project's policy ------------------------------------------------------------------


def test_a_project_policy_round_trip_keeps_unrelated_and_conditional_bindings_whole(
    client: IamClient, rm: FakeResourceManager
) -> None:
    before = seed_project_policy(rm)

    policy = client.get_project_iam_policy(PROJECT)
    assert (
        IamBinding(
            IAP_ACCESSOR_ROLE,
            frozenset({"user:contractor@example.com"}),
            IamCondition(CONDITION.expression, CONDITION.title, CONDITION.description),
        )
        in policy.bindings
    )
    assert base64.b64decode(policy.etag) == before.etag
    granted = client.set_project_iam_policy(
        PROJECT, policy.with_members(IAP_ACCESSOR_ROLE, frozenset({"user:a@example.com"}))
    )

    stored = rm.policy(PROJECT)
    by_role = {(b.role, b.HasField("condition")): b for b in stored.bindings}
    assert list(by_role[("roles/owner", False)].members) == [DEFAULT_OWNER]
    assert list(by_role[("roles/editor", False)].members) == ["group:ml-team@example.com"]
    conditional = by_role[(IAP_ACCESSOR_ROLE, True)]
    assert conditional.condition == CONDITION
    assert list(conditional.members) == ["user:contractor@example.com"]
    assert list(by_role[(IAP_ACCESSOR_ROLE, False)].members) == ["user:a@example.com"]
    [sent] = [r.request for r in rm.requests if r.method == "SetIamPolicy"][1:]
    assert sent.policy.version == 3
    assert sent.policy.etag == before.etag
    assert base64.b64decode(granted.etag) == stored.etag
    assert client.get_project_iam_policy(PROJECT) == granted

    # Removing the member keeps the conditional grant of the same role, title and all.
    client.set_project_iam_policy(
        PROJECT, granted.without_member(IAP_ACCESSOR_ROLE, "user:a@example.com")
    )
    after = rm.policy(PROJECT)
    assert [b.condition for b in after.bindings if b.role == IAP_ACCESSOR_ROLE] == [CONDITION]
    assert rm.blind_sets == 0
    reads = [r.request for r in rm.requests if r.method == "GetIamPolicy"][1:]
    assert {r.options.requested_policy_version for r in reads} == {3}


def test_a_stale_project_policy_raises_concurrent_change(
    client: IamClient, rm: FakeResourceManager
) -> None:
    stale = client.get_project_iam_policy(PROJECT)
    client.set_project_iam_policy(PROJECT, stale.with_members(ROLE, frozenset({"user:a@x.io"})))

    with pytest.raises(ConcurrentChange) as raised:
        client.set_project_iam_policy(PROJECT, stale.with_members(ROLE, frozenset({"user:b@x.io"})))

    assert str(raised.value) == (
        f"the IAM policy changed since it was read; will update the IAM policy of project "
        f"{PROJECT} again"
    )
    assert rm.members(PROJECT, ROLE) == {"user:a@x.io"}


def test_a_failed_precondition_on_the_etag_is_a_concurrent_change_and_others_are_not(
    client: IamClient, rm: FakeResourceManager
) -> None:
    policy = client.get_project_iam_policy(PROJECT).with_members(ROLE, frozenset({"user:a@x.io"}))
    rm.fail_next(
        "SetIamPolicy",
        grpc.StatusCode.FAILED_PRECONDITION,
        "The request's ETag did not match the current policy's ETag.",
    )
    with pytest.raises(ConcurrentChange):
        client.set_project_iam_policy(PROJECT, policy)

    rm.fail_next("SetIamPolicy", grpc.StatusCode.FAILED_PRECONDITION, "Project is being deleted.")
    with pytest.raises(PermanentError) as raised:
        client.set_project_iam_policy(PROJECT, policy)
    assert raised.value.user_message == (
        f"Resource Manager could not update the IAM policy of project {PROJECT}: "
        "Project is being deleted."
    )


def test_a_policy_without_an_etag_is_never_sent(client: IamClient, rm: FakeResourceManager) -> None:
    blind = IamPolicy((IamBinding(ROLE, frozenset({"user:a@x.io"})),))

    with pytest.raises(ValueError, match="without the etag"):
        client.set_project_iam_policy(PROJECT, blind)

    assert [r.method for r in rm.requests] == []


def test_fifty_concurrent_grants_through_the_client_all_land_without_blind_writes(
    client: IamClient, rm: FakeResourceManager
) -> None:
    members = [f"serviceAccount:sa-{i:02d}@{PROJECT}.iam.gserviceaccount.com" for i in range(50)]
    errors: list[BaseException] = []
    changed: list[bool] = []
    barrier = threading.Barrier(len(members))

    def grant(member: str) -> None:
        try:
            barrier.wait(timeout=10)
            changed.append(
                read_modify_write(
                    lambda: client.get_project_iam_policy(PROJECT),
                    lambda policy: client.set_project_iam_policy(PROJECT, policy),
                    lambda policy: policy.with_members(ROLE, frozenset({member})),
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=grant, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert changed == [True] * 50
    assert rm.members(PROJECT, ROLE) == set(members)
    assert rm.members(PROJECT, "roles/owner") == {DEFAULT_OWNER}
    assert rm.successful_sets == 50
    assert rm.blind_sets == 0
    sets = [r.request for r in rm.requests if r.method == "SetIamPolicy"]
    assert all(s.policy.etag for s in sets)


# -- errors --------------------------------------------------------------------------------


def test_unavailable_on_a_create_is_temporary(client: IamClient, iam: FakeIam) -> None:
    iam.fail_next("CreateServiceAccount", grpc.StatusCode.UNAVAILABLE, "connection reset")

    with pytest.raises(TemporaryError) as raised:
        client.create_service_account(PROJECT, ACCOUNT_ID, "node")

    assert str(raised.value) == (
        f"IAM did not answer (UNAVAILABLE); will create service account {ACCOUNT_ID} in "
        f"{PROJECT} later"
    )
    assert raised.value.delay == 10.0
    assert isinstance(raised.value.__cause__, exceptions.ServiceUnavailable)
    assert iam.count("CreateServiceAccount") == 1


def test_reads_retry_unavailable_briefly_then_give_up_as_temporary(
    client: IamClient, iam: FakeIam
) -> None:
    iam.fail_next("GetServiceAccount", grpc.StatusCode.UNAVAILABLE, "blip")
    assert client.service_account_exists(PROJECT, ACCOUNT_ID) is False

    iam.fail_next("GetServiceAccount", grpc.StatusCode.UNAVAILABLE, "down", times=1000)
    with pytest.raises(TemporaryError) as raised:
        client.service_account_exists(PROJECT, ACCOUNT_ID)
    assert str(raised.value) == (
        f"IAM did not answer in time to look up service account {ACCOUNT_ID} in {PROJECT}"
    )


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN]
)
def test_deadline_internal_and_unknown_are_temporary(
    client: IamClient, rm: FakeResourceManager, code: grpc.StatusCode
) -> None:
    policy = client.get_project_iam_policy(PROJECT)
    rm.fail_next("SetIamPolicy", code, "backend error")

    with pytest.raises(TemporaryError) as raised:
        client.set_project_iam_policy(PROJECT, policy.with_members(ROLE, frozenset({KSA})))

    assert not isinstance(raised.value, ConcurrentChange)
    assert str(raised.value) == (
        f"Resource Manager did not answer ({code.name}); will update the IAM policy of "
        f"project {PROJECT} later"
    )


def test_a_server_that_is_gone_is_temporary(iam: FakeIam, rm: FakeResourceManager) -> None:
    # Its own channels: stopping the fake closes the channels it handed out.
    client = IamClient.connect(iam.target, rm.target)
    iam.stop()

    with pytest.raises(TemporaryError) as raised:
        client.create_service_account(PROJECT, ACCOUNT_ID, "node")

    assert str(raised.value) == (
        f"IAM did not answer (UNAVAILABLE); will create service account {ACCOUNT_ID} in "
        f"{PROJECT} later"
    )


def test_a_rate_limit_is_temporary_for_thirty_seconds(client: IamClient, iam: FakeIam) -> None:
    iam.fail_next(
        "CreateServiceAccount",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Quota exceeded for quota metric 'Write requests' per minute.",
    )

    with pytest.raises(TemporaryError) as raised:
        client.create_service_account(PROJECT, ACCOUNT_ID, "node")

    assert str(raised.value) == (
        f"IAM is rate limiting; will create service account {ACCOUNT_ID} in {PROJECT} later"
    )
    assert raised.value.delay == 30.0


def test_the_service_account_limit_is_permanent(client: IamClient, iam: FakeIam) -> None:
    iam.fail_next(
        "CreateServiceAccount",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Maximum number of service accounts on project reached.",
    )

    with pytest.raises(PermanentError) as raised:
        client.create_service_account(PROJECT, ACCOUNT_ID, "node")

    assert raised.value.user_message == (
        f"project {PROJECT} has reached its limit on service accounts, so the bot could not "
        f"create service account {ACCOUNT_ID} in {PROJECT}; delete unused service accounts "
        "or ask for a quota increase"
    )


def test_a_missing_permission_is_named(client: IamClient, iam: FakeIam) -> None:
    iam.fail_next(
        "CreateServiceAccount",
        grpc.StatusCode.PERMISSION_DENIED,
        f"Permission 'iam.serviceAccounts.create' denied on resource projects/{PROJECT}.",
    )

    with pytest.raises(PermanentError) as raised:
        client.create_service_account(PROJECT, ACCOUNT_ID, "node")

    assert raised.value.user_message == (
        f"the bot's service account may not create service accounts in {PROJECT} "
        "(iam.serviceAccounts.create); ask a project owner to grant it"
    )
    assert isinstance(raised.value.__cause__, exceptions.PermissionDenied)


def test_a_denied_policy_write_names_the_permission_the_call_needs(
    client: IamClient, iam: FakeIam, rm: FakeResourceManager
) -> None:
    client.create_service_account(PROJECT, ACCOUNT_ID, "node")
    account_policy = client.get_service_account_iam_policy(PROJECT, EMAIL)
    project_policy = client.get_project_iam_policy(PROJECT)
    iam.fail_next("SetIamPolicy", grpc.StatusCode.PERMISSION_DENIED, "Policy update denied.")
    rm.fail_next("SetIamPolicy", grpc.StatusCode.PERMISSION_DENIED, "The caller lacks access.")

    with pytest.raises(PermanentError) as on_account:
        client.set_service_account_iam_policy(
            PROJECT, EMAIL, account_policy.with_members(WORKLOAD_IDENTITY_ROLE, frozenset({KSA}))
        )
    with pytest.raises(PermanentError) as on_project:
        client.set_project_iam_policy(PROJECT, project_policy.with_members(ROLE, frozenset({KSA})))

    assert on_account.value.user_message == (
        f"the bot's service account may not change service accounts' IAM policies in {PROJECT} "
        "(iam.serviceAccounts.setIamPolicy); ask a project owner to grant it"
    )
    assert on_project.value.user_message == (
        f"the bot's service account may not change the project's IAM policy in {PROJECT} "
        "(resourcemanager.projects.setIamPolicy); ask a project owner to grant it"
    )


def test_an_unknown_project_may_be_missing_or_hidden(client: IamClient) -> None:
    with pytest.raises(PermanentError) as raised:
        client.get_project_iam_policy("other-proj")

    assert raised.value.user_message == (
        "the bot's service account may not read the project's IAM policy in other-proj "
        "(resourcemanager.projects.getIamPolicy), or the project does not exist; check the "
        "project id, or ask a project owner to grant it"
    )


def test_a_disabled_api_is_named(client: IamClient, iam: FakeIam, rm: FakeResourceManager) -> None:
    iam.fail_next(
        "GetServiceAccount",
        grpc.StatusCode.PERMISSION_DENIED,
        f"Identity and Access Management (IAM) API has not been used in project {PROJECT} "
        "before or it is disabled.",
        reason="SERVICE_DISABLED",
    )
    rm.fail_next(
        "GetIamPolicy",
        grpc.StatusCode.PERMISSION_DENIED,
        f"Cloud Resource Manager API has not been used in project {PROJECT} before or it is "
        "disabled.",
    )

    with pytest.raises(PermanentError) as iam_off:
        client.service_account_exists(PROJECT, ACCOUNT_ID)
    with pytest.raises(PermanentError) as rm_off:
        client.get_project_iam_policy(PROJECT)

    assert iam_off.value.user_message == (
        f"the Identity and Access Management (IAM) API (iam.googleapis.com) is not enabled in "
        f"{PROJECT}; enable it, then try again"
    )
    assert rm_off.value.user_message == (
        "the Cloud Resource Manager API (cloudresourcemanager.googleapis.com) is not enabled "
        f"in {PROJECT}; enable it, then try again"
    )


def test_refused_credentials_are_permanent_and_not_repeated(
    client: IamClient, iam: FakeIam
) -> None:
    iam.fail_next(
        "GetServiceAccount",
        grpc.StatusCode.UNAUTHENTICATED,
        "Request had invalid authentication credentials: ya29.secret-token",
    )

    with pytest.raises(PermanentError) as raised:
        client.service_account_exists(PROJECT, ACCOUNT_ID)

    assert raised.value.user_message == (
        "Google refused the bot's credentials; ask the bot's operators to check them"
    )


def test_an_invalid_account_id_is_permanent_with_iams_words(client: IamClient) -> None:
    with pytest.raises(PermanentError) as raised:
        client.create_service_account(PROJECT, "kf-vm", "node")

    assert raised.value.user_message == (
        f"IAM refused to create service account kf-vm in {PROJECT}: Invalid value for field "
        "'accountId': 'kf-vm'. Must be 6 to 30 characters and a match of regex "
        "'[a-z]([-a-z0-9]*[a-z0-9])'."
    )
    assert isinstance(raised.value.__cause__, exceptions.InvalidArgument)


def test_a_new_account_not_yet_known_to_the_project_policy_is_temporary(
    client: IamClient, rm: FakeResourceManager
) -> None:
    policy = client.get_project_iam_policy(PROJECT)
    rm.fail_next(
        "SetIamPolicy",
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Service account {EMAIL} does not exist.",
    )

    with pytest.raises(TemporaryError) as raised:
        client.set_project_iam_policy(
            PROJECT, policy.with_members(ROLE, frozenset({f"serviceAccount:{EMAIL}"}))
        )

    assert str(raised.value) == (
        "IAM does not know a new service account everywhere yet; will update the IAM policy "
        f"of project {PROJECT} later"
    )


def test_other_invalid_policies_are_permanent(client: IamClient, rm: FakeResourceManager) -> None:
    policy = client.get_project_iam_policy(PROJECT)

    with pytest.raises(PermanentError) as raised:
        client.set_project_iam_policy(PROJECT, policy.with_members(ROLE, frozenset({"a@x.io"})))

    assert raised.value.user_message == (
        f"Resource Manager refused to update the IAM policy of project {PROJECT}: "
        "Invalid member type for member 'a@x.io'."
    )


# -- the steps over the client -------------------------------------------------------------


class IamOnlyCloud:
    """Just enough of ``Cloud`` for the IAM steps, delegating to ``IamClient``."""

    dry_run = False

    def __init__(self, iam: IamClient) -> None:
        self.service_account_exists = iam.service_account_exists
        self.create_service_account = iam.create_service_account
        self.get_project_iam_policy = iam.get_project_iam_policy
        self.set_project_iam_policy = iam.set_project_iam_policy
        self.get_service_account_iam_policy = iam.get_service_account_iam_policy
        self.set_service_account_iam_policy = iam.set_service_account_iam_policy

    def drain_calls(self) -> list[str]:
        return []


def context(client: IamClient, action: Action) -> StepContext:
    return StepContext(
        request_id="kf-crt001",
        requester="U0ADA",
        action=action,
        cloud=cast(Cloud, IamOnlyCloud(client)),
        clock=FakeClock(),
    )


def test_the_create_steps_make_accounts_roles_and_bindings_once(
    client: IamClient, iam: FakeIam, rm: FakeResourceManager
) -> None:
    spec = DeploymentSpec(name="kf-demo", project=PROJECT, zone="us-central1-a")
    ctx = context(client, CreateAction(spec=spec))

    assert ensure_service_accounts(ctx).outcome == Outcome.CREATED
    assert ensure_service_accounts(ctx).outcome == Outcome.UNCHANGED
    assert ensure_workload_identity(ctx).outcome == Outcome.UPDATED
    assert ensure_workload_identity(ctx).outcome == Outcome.UNCHANGED

    for suffix in ("vm", "admin", "user"):
        assert iam.account(account_email(spec, suffix)) is not None
    assert iam.count("CreateServiceAccount") == 3
    for suffix, roles in ACCOUNT_ROLES.items():
        member = f"serviceAccount:{account_email(spec, suffix)}"
        for role in roles:
            assert member in rm.members(PROJECT, role)
    assert rm.members(PROJECT, "roles/owner") == {DEFAULT_OWNER}
    assert iam.members(account_email(spec, "user"), WORKLOAD_IDENTITY_ROLE) == {
        f"serviceAccount:{PROJECT}.svc.id.goog[kubeflow/pipeline-runner]",
        f"serviceAccount:{PROJECT}.svc.id.goog[kubeflow/ml-pipeline-ui]",
    }
    assert len(iam.members(account_email(spec, "admin"), WORKLOAD_IDENTITY_ROLE)) == 3
    assert (rm.successful_sets, iam.successful_sets) == (1, 2)
    assert (rm.blind_sets, iam.blind_sets) == (0, 0)


def test_a_two_letter_deployment_name_gets_account_ids_iam_accepts(
    client: IamClient, iam: FakeIam
) -> None:
    # The spec allows names of two characters; "kf-vm" would be shorter than IAM's six.
    spec = DeploymentSpec(name="kf", project=PROJECT, zone="us-central1-a")

    assert ensure_service_accounts(context(client, CreateAction(spec=spec))).outcome == (
        Outcome.CREATED
    )

    assert account_email(spec, "vm") == f"kf-kf-vm@{PROJECT}.iam.gserviceaccount.com"
    for suffix in ("vm", "admin", "user"):
        assert iam.account(account_email(spec, suffix)) is not None


def test_grant_and_revoke_go_updated_then_unchanged_and_keep_other_bindings(
    client: IamClient, rm: FakeResourceManager
) -> None:
    seed_project_policy(rm)
    who = {"email": "alice@example.com", "deployment": "kf-demo", "project": PROJECT}
    grant = context(client, GrantAction(**who))
    revoke = context(client, RevokeAction(**who))

    assert ensure_access_granted(grant).outcome == Outcome.UPDATED
    assert ensure_access_granted(grant).outcome == Outcome.UNCHANGED
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == {
        "user:alice@example.com",
        "user:contractor@example.com",
    }
    assert ensure_access_revoked(revoke).outcome == Outcome.UPDATED
    assert ensure_access_revoked(revoke).outcome == Outcome.UNCHANGED

    stored = rm.policy(PROJECT)
    assert [(b.role, list(b.members), b.condition) for b in stored.bindings] == [
        ("roles/owner", [DEFAULT_OWNER], expr_pb2.Expr()),
        ("roles/editor", ["group:ml-team@example.com"], expr_pb2.Expr()),
        (IAP_ACCESSOR_ROLE, ["user:contractor@example.com"], CONDITION),
    ]
    assert rm.blind_sets == 0


# -- The project's number -------------------------------------------------------------------


def test_the_project_number_comes_from_the_project_s_resource_name(
    client: IamClient, rm: FakeResourceManager
) -> None:
    assert client.project_number(PROJECT) == str(NUMBER)
    [request] = rm.requests
    assert (request.method, request.request.name) == ("GetProject", f"projects/{PROJECT}")


def test_a_project_the_bot_cannot_see_is_said_so(client: IamClient) -> None:
    with pytest.raises(PermanentError, match=r"resourcemanager\.projects\.get"):
        client.project_number("other-project")
