"""The grant and revoke steps through the real IAM client, against the fake Resource Manager.

``ensure_access_granted`` / ``ensure_access_revoked`` run as the worker runs them: the real
``IamClient`` over the real google-cloud-resource-manager gRPC client to a local
``FakeResourceManager``, which refuses stale etags and policy-version mistakes as IAM does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type
from google.iam.v1 import policy_pb2
from google.type import expr_pb2

from provisioning.access_steps import ensure_access_granted, ensure_access_revoked
from provisioning.actions import IAP_ACCESSOR_ROLE, GrantAction, RevokeAction
from provisioning.cloud import Cloud
from provisioning.engine import Action, Outcome, StepContext, StepResult
from provisioning.errors import PermanentError
from provisioning.iam_client import IamClient
from tests.support.clocks import FakeClock
from tests.support.fake_iam import FakeIam
from tests.support.fake_resource_manager import DEFAULT_OWNER, FakeResourceManager
from tests.support.iam_only_cloud import IamOnlyCloud

PROJECT = "kf-proj"
NAME = "demo"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WEEK_LATER = NOW + timedelta(days=7)
ADA = "ada@example.com"
CONTRACT = expr_pb2.Expr(
    expression='request.time < timestamp("2030-01-01T00:00:00Z")',
    title="until-2030",
    description="contractor access, ends with the contract",
)


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    with FakeResourceManager(projects={PROJECT: 123456789012}) as fake:
        yield fake


@pytest.fixture
def client(rm: FakeResourceManager) -> Iterator[IamClient]:
    quick = Retry(predicate=if_exception_type(exceptions.ServiceUnavailable), timeout=0.05)
    # The IAM Admin half is unused by these steps; it still needs a real client.
    with FakeIam(projects=[PROJECT]) as iam:
        yield IamClient(iam.client(), rm.client(), read_retry=quick, timeout=10.0)


def run(client: IamClient, action: Action, *, at: datetime = NOW) -> StepResult:
    ctx = StepContext(
        request_id="kf-acc001",
        requester="U_APPROVER",
        action=action,
        cloud=cast(Cloud, IamOnlyCloud(client)),
        clock=FakeClock(at),
    )
    if isinstance(action, GrantAction):
        return ensure_access_granted(ctx)
    return ensure_access_revoked(ctx)


def grant(email: str = ADA, until: datetime | None = None) -> GrantAction:
    return GrantAction(email=email, deployment=NAME, project=PROJECT, expires_at=until)


def revoke(email: str = ADA) -> RevokeAction:
    return RevokeAction(email=email, deployment=NAME, project=PROJECT)


def seed(rm: FakeResourceManager, *bindings: policy_pb2.Binding) -> None:
    """Bindings someone else put on the project, written as version 3."""
    raw = rm.client()
    policy = raw.get_iam_policy(
        request={"resource": f"projects/{PROJECT}", "options": {"requested_policy_version": 3}},
        retry=None,
    )
    policy.version = 3
    policy.bindings.extend(bindings)
    raw.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": policy}, retry=None)


def bindings(rm: FakeResourceManager) -> list[tuple[str, list[str], expr_pb2.Expr | None]]:
    return [
        (b.role, sorted(b.members), b.condition if b.HasField("condition") else None)
        for b in rm.policy(PROJECT).bindings
    ]


def sets(rm: FakeResourceManager) -> list[policy_pb2.Policy]:
    """The policies of the writes that landed."""
    return [
        r.request.policy
        for r in rm.requests
        if r.method == "SetIamPolicy" and r.code == grpc.StatusCode.OK
    ]


# -- fifty at once -------------------------------------------------------------------------


def test_fifty_concurrent_grants_on_one_project_all_land_through_stale_etag_retries(
    client: IamClient, rm: FakeResourceManager
) -> None:
    emails = [f"person{n:02d}@example.com" for n in range(50)]
    results: dict[str, StepResult] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(emails))

    def one(email: str) -> None:
        try:
            barrier.wait(timeout=10)
            results[email] = run(client, grant(email))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(e,)) for e in emails]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert {e: (r.outcome, r.detail) for e, r in results.items()} == {
        e: (Outcome.UPDATED, f"{e} can open {NAME}") for e in emails
    }
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == {f"user:{e}" for e in emails}
    assert rm.members(PROJECT, "roles/owner") == {DEFAULT_OWNER}
    # One write per grant landed; the others were refused for a stale etag and retried.
    assert rm.successful_sets == 50
    assert rm.stale_sets > 0
    assert rm.blind_sets == 0


# -- grant ---------------------------------------------------------------------------------


def test_granting_twice_says_already_has_access_and_writes_once(
    client: IamClient, rm: FakeResourceManager
) -> None:
    first = run(client, grant())
    # Addresses are case-insensitive: the same person, however typed.
    again = run(client, grant("Ada@Example.com"))

    assert (first.outcome, first.detail) == (Outcome.UPDATED, f"{ADA} can open {NAME}")
    assert (again.outcome, again.detail) == (
        Outcome.UNCHANGED,
        "Ada@Example.com already has access",
    )
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == {f"user:{ADA}"}
    assert rm.successful_sets == 1


def test_a_grant_keeps_other_members_roles_and_conditional_bindings_whole(
    client: IamClient, rm: FakeResourceManager
) -> None:
    seed(
        rm,
        policy_pb2.Binding(role="roles/editor", members=["group:ml@example.com"]),
        policy_pb2.Binding(
            role=IAP_ACCESSOR_ROLE, members=["user:contractor@example.com"], condition=CONTRACT
        ),
    )

    assert run(client, grant()).outcome == Outcome.UPDATED

    assert bindings(rm) == [
        ("roles/owner", [DEFAULT_OWNER], None),
        ("roles/editor", ["group:ml@example.com"], None),
        (IAP_ACCESSOR_ROLE, ["user:contractor@example.com"], CONTRACT),
        (IAP_ACCESSOR_ROLE, [f"user:{ADA}"], None),
    ]
    reads = [r.request for r in rm.requests if r.method == "GetIamPolicy"]
    assert {r.options.requested_policy_version for r in reads} == {3}
    assert [s.version for s in sets(rm)[1:]] == [3]


def test_a_grant_for_a_week_is_a_conditional_binding_saying_who_and_until_when(
    client: IamClient, rm: FakeResourceManager
) -> None:
    result = run(client, grant(until=WEEK_LATER))

    assert (result.outcome, result.detail) == (
        Outcome.UPDATED,
        f"{ADA} can open {NAME} until 2026-03-09 09:00 UTC",
    )
    stored = rm.policy(PROJECT)
    assert stored.version == 3
    assert bindings(rm) == [
        ("roles/owner", [DEFAULT_OWNER], None),
        (
            IAP_ACCESSOR_ROLE,
            [f"user:{ADA}"],
            expr_pb2.Expr(
                expression='request.time < timestamp("2026-03-09T09:00:00Z")',
                title="kubeflow-bot: demo until 2026-03-09 09:00 UTC",
                description=(
                    "IAP access to Kubeflow deployment demo granted by kubeflow-bot request "
                    "kf-acc001, asked by Slack user U_APPROVER; ends 2026-03-09 09:00 UTC."
                ),
            ),
        ),
    ]
    # No access without the condition.
    assert rm.members(PROJECT, IAP_ACCESSOR_ROLE) == {f"user:{ADA}"}
    assert f"user:{ADA}" not in {
        m for b in stored.bindings if not b.HasField("condition") for m in b.members
    }


def test_the_same_time_bound_grant_again_says_until_when_and_writes_nothing(
    client: IamClient, rm: FakeResourceManager
) -> None:
    run(client, grant(until=WEEK_LATER))

    again = run(client, grant(until=WEEK_LATER), at=NOW + timedelta(hours=1))
    shorter = run(client, grant(until=NOW + timedelta(days=1)))

    assert (again.outcome, again.detail) == (
        Outcome.UNCHANGED,
        f"{ADA} already has access until 2026-03-09 09:00 UTC",
    )
    assert (shorter.outcome, shorter.detail) == (
        Outcome.UNCHANGED,
        f"{ADA} already has access until 2026-03-09 09:00 UTC",
    )
    assert rm.successful_sets == 1


def test_a_longer_time_bound_grant_extends_the_access(
    client: IamClient, rm: FakeResourceManager
) -> None:
    run(client, grant(until=NOW + timedelta(days=1)))

    longer = run(client, grant(until=WEEK_LATER))

    assert longer.detail == f"{ADA} can open {NAME} until 2026-03-09 09:00 UTC"
    ends = sorted(b.condition.expression for b in rm.policy(PROJECT).bindings if b.condition.title)
    assert ends == [
        'request.time < timestamp("2026-03-03T09:00:00Z")',
        'request.time < timestamp("2026-03-09T09:00:00Z")',
    ]


def test_a_time_bound_grant_for_someone_with_lasting_access_says_so(
    client: IamClient, rm: FakeResourceManager
) -> None:
    run(client, grant())

    result = run(client, grant(until=WEEK_LATER))

    assert (result.outcome, result.detail) == (
        Outcome.UNCHANGED,
        f"{ADA} already has access with no end date; revoke it first to make it end",
    )
    assert rm.successful_sets == 1


def test_a_grant_whose_end_passed_before_it_ran_fails_and_writes_nothing(
    client: IamClient, rm: FakeResourceManager
) -> None:
    with pytest.raises(PermanentError) as raised:
        run(client, grant(until=NOW), at=NOW + timedelta(minutes=1))

    assert raised.value.user_message == (
        "the access was to end at 2026-03-02 09:00 UTC, which passed before it could be "
        "granted; file the grant again"
    )
    assert rm.successful_sets == 0


# -- revoke --------------------------------------------------------------------------------


def test_revoke_removes_exactly_the_member_from_lasting_and_time_bound_bindings(
    client: IamClient, rm: FakeResourceManager
) -> None:
    seed(
        rm,
        policy_pb2.Binding(role="roles/viewer", members=[f"user:{ADA}"]),
        policy_pb2.Binding(
            role=IAP_ACCESSOR_ROLE, members=["user:contractor@example.com"], condition=CONTRACT
        ),
        policy_pb2.Binding(role=IAP_ACCESSOR_ROLE, members=["user:bo@example.com"]),
    )
    run(client, grant())
    run(client, grant(until=WEEK_LATER))  # already lasting: nothing written
    seed(
        rm,
        policy_pb2.Binding(
            role=IAP_ACCESSOR_ROLE,
            members=[f"user:{ADA}", "user:cy@example.com"],
            condition=CONTRACT,
        ),
    )

    result = run(client, revoke())

    assert (result.outcome, result.detail) == (Outcome.UPDATED, f"{ADA} can no longer open {NAME}")
    assert bindings(rm) == [
        ("roles/owner", [DEFAULT_OWNER], None),
        ("roles/viewer", [f"user:{ADA}"], None),
        (IAP_ACCESSOR_ROLE, ["user:contractor@example.com"], CONTRACT),
        (IAP_ACCESSOR_ROLE, ["user:bo@example.com"], None),
        (IAP_ACCESSOR_ROLE, ["user:cy@example.com"], CONTRACT),
    ]
    assert rm.blind_sets == 0


def test_revoking_the_only_time_bound_grant_leaves_a_version_1_policy(
    client: IamClient, rm: FakeResourceManager
) -> None:
    run(client, grant(until=WEEK_LATER))

    result = run(client, revoke())

    # The write removed the last condition, so IAM wanted version 3 on it (the fake too).
    assert result.outcome == Outcome.UPDATED
    assert sets(rm)[-1].version == 3
    assert rm.policy(PROJECT).version == 1
    assert bindings(rm) == [("roles/owner", [DEFAULT_OWNER], None)]


def test_revoking_someone_without_access_says_so_and_writes_nothing(
    client: IamClient, rm: FakeResourceManager
) -> None:
    seed(rm, policy_pb2.Binding(role=IAP_ACCESSOR_ROLE, members=["user:bo@example.com"]))
    before = rm.successful_sets

    result = run(client, revoke())

    assert (result.outcome, result.detail) == (Outcome.UNCHANGED, f"{ADA} had no access")
    assert rm.successful_sets == before
