"""Behaviour of the ``ensure_*`` steps for create, grant, revoke and delete.

The steps run through the real engine against a ``MemoryCloud``, a run at a time the way
redeliveries of the queue message would drive them, and against the dry-run cloud
through ``planner.plan``.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from provisioning import create_steps
from provisioning.access_steps import GRANT_STEPS, REVOKE_STEPS
from provisioning.actions import (
    IAP_ACCESSOR_ROLE,
    Action,
    CreateAction,
    DeleteAction,
    GrantAction,
    RevokeAction,
)
from provisioning.cloud import IamPolicy, IngressState
from provisioning.create_steps import (
    ACCOUNT_ROLES,
    CREATE_STEPS,
    NODE_POOL_NAME,
    REQUIRED_APIS,
    WORKLOAD_IDENTITY_KSAS,
)
from provisioning.delete_steps import DELETE_STEPS
from provisioning.engine import RunResult, RunStatus, Step, StepContext, run_steps
from provisioning.errors import PermanentError
from provisioning.oauth import OAuthClient
from provisioning.planner import plan
from provisioning.records import StepReport, StepStatus
from provisioning.spec import DeploymentSpec, GpuSpec
from tests.support.memory_cloud import MemoryCloud

PROJECT = "demo-project"
ZONE = "us-central1-a"
NAME = "demo"
REQUEST_ID = "kf-crt001"
REQUESTER = "U0ADA"
EMAIL = "ada@example.com"
HOST = f"{NAME}.endpoints.{PROJECT}.cloud.goog"
T4 = "nvidia-tesla-t4"
MANIFESTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "centraldashboard", "namespace": "kubeflow"},
        "spec": {"replicas": 1},
    },
]
CREATING_CALLS = (
    "create_service_account",
    "set_project_iam_policy",
    "create_global_address",
    "create_cluster",
    "create_node_pool",
    "set_service_account_iam_policy",
    "apply_objects",
    "ensure_endpoint",
)


def spec(*, gpu: bool = True, name: str = NAME, zone: str = ZONE) -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        project=PROJECT,
        zone=zone,
        gpu=GpuSpec(type=T4, count=2, machine_type="n1-standard-8", min_nodes=0, max_nodes=3)
        if gpu
        else None,
    )


def create(*, gpu: bool = True, email: str | None = EMAIL) -> CreateAction:
    return CreateAction(spec=spec(gpu=gpu), requester_email=email)


def memory_cloud(*, apis_on: bool = True, **options: Any) -> MemoryCloud:
    """A project whose APIs are on already, unless ``apis_on`` is False: enabling them
    takes a run of its own, which most tests here are not about."""
    options.setdefault("gpu_zones", {T4: [ZONE, "us-central1-b"]})
    cloud = MemoryCloud(**options)
    if apis_on:
        cloud.enable(PROJECT, REQUIRED_APIS)
    return cloud


def context(cloud: Any, action: Action, *, requester: str = REQUESTER) -> StepContext:
    return StepContext(
        request_id=REQUEST_ID,
        requester=requester,
        action=action,
        cloud=cloud,
        clock=lambda: datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        manifests=lambda: MANIFESTS,
    )


def run_until_done(
    steps: Sequence[Step], ctx: StepContext, *, max_runs: int = 20
) -> tuple[RunResult, int]:
    """Run the steps as redeliveries would, resuming from the reports, until not pending."""
    reports: dict[str, StepReport] = {}
    for runs in range(1, max_runs + 1):
        result = run_steps(steps, ctx, reports, lambda _reports: None)
        if result.status is not RunStatus.PENDING:
            return result, runs
        reports = result.reports
    raise AssertionError(f"still pending after {max_runs} runs: {result.reports}")


def create_all(
    cloud: MemoryCloud, action: CreateAction | None = None, *, ctx: StepContext | None = None
) -> RunResult:
    result, _ = run_until_done(CREATE_STEPS, ctx or context(cloud, action or create()))
    assert result.status is RunStatus.DONE, result.failure
    return result


def outcomes(result: RunResult) -> dict[str, str]:
    return {name: report.outcome for name, report in result.reports.items()}


def roles_bound(policy: IamPolicy) -> Counter[str]:
    return Counter(binding.role for binding in policy.bindings)


def member(suffix: str) -> str:
    return f"serviceAccount:{NAME}-{suffix}@{PROJECT}.iam.gserviceaccount.com"


# -- A full create ---------------------------------------------------------------------------


def test_a_full_create_makes_exactly_one_cluster_node_pool_and_address() -> None:
    cloud = memory_cloud(cluster_polls=2, node_pool_polls=1)

    result, runs = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.DONE
    assert runs > 1
    assert cloud.mutations["create_cluster"] == 1
    assert cloud.mutations["create_node_pool"] == 1
    assert cloud.mutations["create_global_address"] == 1
    assert cloud.cluster_names(PROJECT) == [NAME]
    assert list(cloud.addresses(PROJECT)) == [f"{NAME}-ip"]
    assert cloud.endpoints(PROJECT) == {HOST: f"{NAME}-ip"}


def test_a_full_create_makes_the_three_service_accounts_once() -> None:
    cloud = memory_cloud()

    create_all(cloud)

    assert cloud.mutations["create_service_account"] == 3
    assert sorted(cloud.service_accounts(PROJECT)) == [
        f"{NAME}-admin",
        f"{NAME}-user",
        f"{NAME}-vm",
    ]


def test_a_full_create_binds_each_account_s_roles_once_with_no_duplicate_bindings() -> None:
    cloud = memory_cloud()

    create_all(cloud)

    policy = cloud.project_policy(PROJECT)
    for suffix, roles in ACCOUNT_ROLES.items():
        for role in roles:
            assert member(suffix) in policy.members_of(role), (suffix, role)
    assert all(count == 1 for count in roles_bound(policy).values()), roles_bound(policy)
    # One write for the service accounts' roles, one for the requester's IAP access.
    assert cloud.mutations["set_project_iam_policy"] == 2
    assert policy.members_of(IAP_ACCESSOR_ROLE) == {f"user:{EMAIL}"}


def test_a_full_create_binds_kubeflow_s_service_accounts_through_workload_identity() -> None:
    cloud = memory_cloud()

    create_all(cloud)

    for suffix, ksas in WORKLOAD_IDENTITY_KSAS.items():
        email = f"{NAME}-{suffix}@{PROJECT}.iam.gserviceaccount.com"
        bound = cloud.account_policy(PROJECT, email).members_of("roles/iam.workloadIdentityUser")
        assert bound == {f"serviceAccount:{PROJECT}.svc.id.goog[{ksa}]" for ksa in ksas}
    assert cloud.mutations["set_service_account_iam_policy"] == len(WORKLOAD_IDENTITY_KSAS)


def test_a_full_create_applies_kubeflow_and_the_iap_ingress_on_the_static_ip() -> None:
    cloud = memory_cloud()

    create_all(cloud)

    applied = cloud.objects(PROJECT, ZONE, NAME)
    kinds = sorted(kind for (_, kind, _, _) in applied)
    assert kinds == [
        "BackendConfig",
        "Deployment",
        "Ingress",
        "ManagedCertificate",
        "Namespace",
    ]
    ingress = next(obj for (_, kind, _, _), obj in applied.items() if kind == "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["kubernetes.io/ingress.global-static-ip-name"] == f"{NAME}-ip"


def test_the_gpu_node_pool_asks_for_the_requested_accelerator_and_autoscaling() -> None:
    cloud = memory_cloud()

    create_all(cloud)

    pool = cloud.node_pool_request(PROJECT, ZONE, NAME, NODE_POOL_NAME)
    assert pool is not None
    assert (pool.accelerator_type, pool.accelerator_count) == (T4, 2)
    assert pool.machine_type == "n1-standard-8"
    assert (pool.min_nodes, pool.max_nodes) == (0, 3)
    assert pool.service_account == f"{NAME}-vm@{PROJECT}.iam.gserviceaccount.com"


def test_the_cluster_is_labelled_as_managed_by_the_bot_for_this_request_and_owner() -> None:
    cloud = memory_cloud()

    create_all(cloud)

    request = cloud.cluster_request(PROJECT, ZONE, NAME)
    assert request is not None
    assert request.labels == {
        "managed-by": "kubeflow-bot",
        "kubeflow-bot-request": REQUEST_ID,
        "kubeflow-bot-owner": "u0ada",
    }
    assert request.workload_pool == f"{PROJECT}.svc.id.goog"
    assert request.node_service_account == f"{NAME}-vm@{PROJECT}.iam.gserviceaccount.com"


def test_the_owner_label_turns_characters_labels_refuse_into_underscores() -> None:
    cloud = memory_cloud()

    create_all_as = context(cloud, create(), requester="Ada.Lovelace@Example")
    run_until_done(CREATE_STEPS, create_all_as)

    request = cloud.cluster_request(PROJECT, ZONE, NAME)
    assert request is not None
    assert request.labels["kubeflow-bot-owner"] == "ada_lovelace_example"


def test_the_cluster_step_waits_while_the_cluster_provisions() -> None:
    cloud = memory_cloud(cluster_polls=3)
    ctx = context(cloud, create())

    first = run_steps(CREATE_STEPS, ctx, {}, lambda _r: None)
    second = run_steps(CREATE_STEPS, ctx, first.reports, lambda _r: None)

    assert first.status is second.status is RunStatus.PENDING
    assert second.retry_after == create_steps.CLUSTER_POLL_SECONDS
    assert second.reports["cluster"].detail == "cluster is provisioning"
    assert second.reports["gpu_pool"].status is StepStatus.PENDING
    assert cloud.mutations["create_cluster"] == 1


def test_running_a_finished_create_again_makes_no_mutating_call() -> None:
    cloud = memory_cloud()
    create_all(cloud)
    before = Counter(cloud.mutations)

    again, runs = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert again.status is RunStatus.DONE
    assert runs == 1
    assert cloud.mutations == before


def test_running_a_finished_create_again_reports_every_step_unchanged() -> None:
    cloud = memory_cloud()
    create_all(cloud)

    again, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert outcomes(again) == {step.name: "unchanged" for step in CREATE_STEPS}


def test_every_step_but_the_ingress_reports_unchanged_when_run_again() -> None:
    cloud = memory_cloud()
    create_all(cloud)

    again, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    rest = {name: outcome for name, outcome in outcomes(again).items() if name != "iap"}
    assert rest == {step.name: "unchanged" for step in CREATE_STEPS if step.name != "iap"}
    assert again.reports["access"].detail == f"{EMAIL} already has access"


# -- The GPU zone --------------------------------------------------------------------------


def test_a_zone_without_the_gpu_fails_permanently_naming_same_region_zones_first() -> None:
    cloud = memory_cloud(gpu_zones={T4: ["europe-west4-a", "us-central1-f", "us-central1-c"]})

    result, runs = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert runs == 1
    assert result.failed_step == "Check the zone offers the GPU"
    message = result.failure
    assert message.startswith(f"{ZONE} does not offer {T4}")
    assert message.index("us-central1-c") < message.index("us-central1-f")
    assert message.index("us-central1-f") < message.index("europe-west4-a")
    assert cloud.mutations["create_cluster"] == 0
    assert cloud.mutations["create_node_pool"] == 0


def test_a_gpu_no_zone_offers_says_so() -> None:
    cloud = memory_cloud(gpu_zones={})

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert "no zone in this project offers it" in result.failure


def test_a_long_list_of_offering_zones_is_cut_to_eight() -> None:
    zones = [f"us-east{n}-a" for n in range(1, 11)]

    shown = create_steps.zone_suggestion(ZONE, frozenset(zones))

    assert shown.endswith("and 2 more")
    assert shown.count("us-east") == 8


def test_a_zone_without_the_gpu_fails_before_anything_is_created() -> None:
    cloud = memory_cloud(gpu_zones={T4: ["us-central1-c"]})

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert "Nothing was created" in result.failure
    made = {call: cloud.mutations[call] for call in CREATING_CALLS if cloud.mutations[call]}
    assert made == {}


def test_without_a_gpu_the_gpu_steps_are_skipped_and_no_node_pool_is_made() -> None:
    cloud = memory_cloud(gpu_zones={})

    result = create_all(cloud, create(gpu=False))

    assert result.reports["gpu_zone"].status is StepStatus.SKIPPED
    assert result.reports["gpu_pool"].status is StepStatus.SKIPPED
    assert cloud.calls["zones_offering"] == 0
    assert cloud.calls["create_node_pool"] == 0
    assert cloud.mutations["create_cluster"] == 1


# -- Somebody else's cluster ---------------------------------------------------------------


def test_an_existing_cluster_managed_by_someone_else_fails_permanently() -> None:
    cloud = memory_cloud()
    cloud.add_cluster(PROJECT, ZONE, NAME, labels={"managed-by": "terraform"})

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert result.failed_step == "GKE cluster"
    assert "not managed by kubeflow-bot" in result.failure
    assert cloud.mutations["create_cluster"] == 0
    assert cloud.calls["create_node_pool"] == 0
    assert cloud.calls["apply_objects"] == 0


def test_an_existing_unlabelled_cluster_is_not_taken_over() -> None:
    cloud = memory_cloud()
    cloud.add_cluster(PROJECT, ZONE, NAME, labels={"team": "search"})

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert "not managed by kubeflow-bot" in result.failure
    assert cloud.calls["apply_objects"] == 0


def test_a_cluster_in_error_fails_permanently() -> None:
    cloud = memory_cloud()
    cloud.add_cluster(PROJECT, ZONE, NAME, status="ERROR", labels={"managed-by": "kubeflow-bot"})

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert result.failure == f"cluster {NAME} is ERROR; look at it in the console"


def test_a_quota_error_from_the_cluster_create_fails_the_request_in_its_words() -> None:
    cloud = memory_cloud()
    cloud.fail("create_cluster", PermanentError("the CPUS quota in us-central1 is used up"))

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert result.failure == "the CPUS quota in us-central1 is used up"
    assert result.failed_step == "GKE cluster"


# -- APIs ----------------------------------------------------------------------------------


def test_apis_are_enabled_in_batches_of_at_most_twenty(monkeypatch: pytest.MonkeyPatch) -> None:
    apis = tuple(f"api{n:02d}.googleapis.com" for n in range(45))
    monkeypatch.setattr(create_steps, "REQUIRED_APIS", apis)
    cloud = memory_cloud(apis_on=False)
    ctx = context(cloud, create())

    first = run_steps(CREATE_STEPS[:1], ctx, {}, lambda _r: None)
    second = run_steps(CREATE_STEPS[:1], ctx, first.reports, lambda _r: None)

    # Enabling is waited for: the steps that need the APIs run only once they are on.
    assert first.status is RunStatus.PENDING
    assert first.retry_after == create_steps.APIS_POLL_SECONDS
    assert first.reports["apis"].detail == "enabling 45 APIs"
    assert second.status is RunStatus.DONE
    assert cloud.mutations["enable_services"] == 3
    assert cloud.enabled(PROJECT) == set(apis)


def test_only_the_apis_not_yet_enabled_are_enabled() -> None:
    cloud = memory_cloud(apis_on=False)
    cloud.enable(PROJECT, create_steps.REQUIRED_APIS[:-2])

    result = run_steps(CREATE_STEPS[:1], context(cloud, create()), {}, lambda _r: None)

    assert result.reports["apis"].detail == "enabling 2 APIs"
    assert cloud.enabled(PROJECT) == set(create_steps.REQUIRED_APIS)


# -- The dry-run plan ----------------------------------------------------------------------


def planned() -> dict[str, StepReport]:
    reports = plan(create(), request_id=REQUEST_ID, requester=REQUESTER)
    return {report.name: report for report in reports}


def test_the_plan_lists_every_create_step_in_order_each_planned_with_its_calls() -> None:
    reports = plan(create(), request_id=REQUEST_ID, requester=REQUESTER)

    assert [r.name for r in reports] == [step.name for step in CREATE_STEPS]
    assert {r.name: r.status for r in reports} == {
        step.name: StepStatus.PLANNED for step in CREATE_STEPS
    }
    for report in reports:
        if report.name != "kubeflow":
            assert report.calls, report.name


def test_the_plan_creates_the_cluster_with_its_labels() -> None:
    calls = planned()["cluster"].calls

    (create_call,) = [c for c in calls if ".clusters.create " in c]
    assert create_call.startswith(
        f"container.projects.locations.clusters.create projects/{PROJECT}/locations/{ZONE} "
    )
    assert f"name={NAME}" in create_call
    assert "managed-by=kubeflow-bot" in create_call
    assert f"kubeflow-bot-request={REQUEST_ID}" in create_call


def test_the_plan_creates_the_node_pool_with_the_accelerator() -> None:
    calls = planned()["gpu_pool"].calls

    (create_call,) = [c for c in calls if "nodePools.create" in c]
    assert f"accelerator={T4}x2" in create_call
    assert "autoscaling=0..3" in create_call
    assert "machineType=n1-standard-8" in create_call


def test_the_plan_reserves_the_global_address_named_after_the_deployment() -> None:
    calls = planned()["static_ip"].calls

    (insert,) = [c for c in calls if "globalAddresses.insert" in c]
    assert f"name={NAME}-ip" in insert


def test_the_plan_enables_the_apis_and_grants_the_requester_access() -> None:
    reports = planned()

    assert any("serviceusage.services.batchEnable" in c for c in reports["apis"].calls)
    assert any("setIamPolicy" in c for c in reports["access"].calls)


def test_the_plan_for_a_requester_without_an_email_skips_the_access_step() -> None:
    reports = plan(create(email=None), request_id=REQUEST_ID, requester=REQUESTER)

    assert reports[-1].name == "access"
    assert reports[-1].status is StepStatus.SKIPPED


# -- Grant and revoke ----------------------------------------------------------------------


def grant(email: str = EMAIL) -> GrantAction:
    return GrantAction(email=email, deployment=NAME, project=PROJECT)


def revoke(email: str = EMAIL) -> RevokeAction:
    return RevokeAction(email=email, deployment=NAME, project=PROJECT)


def test_a_grant_adds_exactly_the_user_to_the_iap_accessor_role() -> None:
    cloud = memory_cloud()
    cloud.add_project_members(PROJECT, IAP_ACCESSOR_ROLE, ["user:bo@example.com"])
    cloud.add_project_members(PROJECT, "roles/viewer", ["user:cy@example.com"])
    before = cloud.project_policy(PROJECT)

    result, _ = run_until_done(GRANT_STEPS, context(cloud, grant()))

    after = cloud.project_policy(PROJECT)
    assert result.reports["grant"].outcome == "updated"
    assert after.members_of(IAP_ACCESSOR_ROLE) == {"user:bo@example.com", f"user:{EMAIL}"}
    assert after.members_of("roles/viewer") == before.members_of("roles/viewer")
    assert roles_bound(after) == roles_bound(before)


def test_a_second_grant_reports_the_user_already_has_access() -> None:
    cloud = memory_cloud()
    run_until_done(GRANT_STEPS, context(cloud, grant()))

    again, _ = run_until_done(GRANT_STEPS, context(cloud, grant()))

    assert again.reports["grant"].outcome == "unchanged"
    assert again.reports["grant"].detail == f"{EMAIL} already has access"
    assert cloud.mutations["set_project_iam_policy"] == 1


def test_a_grant_racing_another_policy_write_is_retried_and_keeps_both() -> None:
    cloud = memory_cloud()
    # Someone else writes the policy between the grant's read and its write.
    cloud.before(
        "set_project_iam_policy",
        lambda: cloud.add_project_members(PROJECT, "roles/viewer", ["user:cy@example.com"]),
    )

    result, runs = run_until_done(GRANT_STEPS, context(cloud, grant()))

    assert result.status is RunStatus.DONE
    # Re-read and re-applied within the one run, not deferred to a redelivery.
    assert runs == 1
    assert cloud.mutations["set_project_iam_policy"] == 1
    policy = cloud.project_policy(PROJECT)
    assert policy.members_of(IAP_ACCESSOR_ROLE) == {f"user:{EMAIL}"}
    assert policy.members_of("roles/viewer") == {"user:cy@example.com"}


def test_a_revoke_removes_exactly_the_user_and_keeps_the_others_in_the_binding() -> None:
    cloud = memory_cloud()
    others = {"user:bo@example.com", "group:ml@example.com"}
    cloud.add_project_members(PROJECT, IAP_ACCESSOR_ROLE, [*others, f"user:{EMAIL}"])
    cloud.add_project_members(PROJECT, "roles/viewer", [f"user:{EMAIL}"])

    result, _ = run_until_done(REVOKE_STEPS, context(cloud, revoke()))

    policy = cloud.project_policy(PROJECT)
    assert result.reports["revoke"].outcome == "updated"
    assert policy.members_of(IAP_ACCESSOR_ROLE) == others
    assert policy.members_of("roles/viewer") == {f"user:{EMAIL}"}


def test_revoking_the_last_member_drops_the_binding() -> None:
    cloud = memory_cloud()
    cloud.add_project_members(PROJECT, IAP_ACCESSOR_ROLE, [f"user:{EMAIL}"])

    run_until_done(REVOKE_STEPS, context(cloud, revoke()))

    assert roles_bound(cloud.project_policy(PROJECT))[IAP_ACCESSOR_ROLE] == 0


def test_revoking_someone_without_access_changes_nothing() -> None:
    cloud = memory_cloud()
    cloud.add_project_members(PROJECT, IAP_ACCESSOR_ROLE, ["user:bo@example.com"])
    before = cloud.project_policy(PROJECT)

    result, _ = run_until_done(REVOKE_STEPS, context(cloud, revoke()))

    assert result.reports["revoke"].outcome == "unchanged"
    assert result.reports["revoke"].detail == f"{EMAIL} had no access"
    assert cloud.project_policy(PROJECT) == before


# -- Delete --------------------------------------------------------------------------------


def delete() -> DeleteAction:
    return DeleteAction(deployment=NAME, project=PROJECT, zone=ZONE)


def test_delete_removes_the_cluster_once_and_releases_the_address() -> None:
    cloud = memory_cloud(delete_polls=2)
    create_all(cloud)

    result, runs = run_until_done(DELETE_STEPS, context(cloud, delete()))

    assert result.status is RunStatus.DONE
    assert runs > 1
    assert cloud.mutations["delete_cluster"] == 1
    assert cloud.mutations["delete_global_address"] == 1
    assert cloud.mutations["delete_endpoint"] == 1
    assert cloud.cluster_names(PROJECT) == []
    assert cloud.addresses(PROJECT) == {}
    assert cloud.endpoints(PROJECT) == {}


def test_delete_keeps_the_service_accounts() -> None:
    cloud = memory_cloud()
    create_all(cloud)

    run_until_done(DELETE_STEPS, context(cloud, delete()))

    assert len(cloud.service_accounts(PROJECT)) == 3


def test_a_second_delete_makes_no_mutating_call() -> None:
    cloud = memory_cloud()
    create_all(cloud)
    run_until_done(DELETE_STEPS, context(cloud, delete()))
    before = Counter(cloud.mutations)

    again, runs = run_until_done(DELETE_STEPS, context(cloud, delete()))

    assert again.status is RunStatus.DONE
    assert runs == 1
    assert cloud.mutations == before
    assert again.reports["cluster"].outcome == "unchanged"
    assert again.reports["address"].outcome == "unchanged"


def test_a_second_delete_reports_every_step_unchanged() -> None:
    cloud = memory_cloud()
    create_all(cloud)
    run_until_done(DELETE_STEPS, context(cloud, delete()))

    again, _ = run_until_done(DELETE_STEPS, context(cloud, delete()))

    assert outcomes(again) == {step.name: "unchanged" for step in DELETE_STEPS}


def test_a_stocked_out_cluster_fails_with_the_reason_in_plain_words() -> None:
    cloud = memory_cloud()
    cloud.break_next_cluster(f"{ZONE} has run out of the machines this cluster needs")

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert result.failed_step == "GKE cluster"
    assert result.failure == (
        f"cluster {NAME} could not be created: {ZONE} has run out of the machines this "
        "cluster needs"
    )


def test_a_stocked_out_gpu_pool_names_the_zones_that_offer_the_gpu() -> None:
    cloud = memory_cloud(gpu_zones={T4: [ZONE, "europe-west4-a", "us-central1-c"]})
    cloud.break_next_node_pool(f"{ZONE} has run out of n1-standard-8 with T4 (GCE_STOCKOUT)")

    result, _ = run_until_done(CREATE_STEPS, context(cloud, create()))

    assert result.status is RunStatus.FAILED
    assert result.failed_step == "GPU node pool"
    assert result.failure == (
        f"the GPU node pool could not be created: {ZONE} has run out of n1-standard-8 with "
        "T4 (GCE_STOCKOUT); zones that offer it: us-central1-c, europe-west4-a"
    )


# -- IAP: the URL is announced only once it works -------------------------------------------


def test_the_kubeflow_step_says_how_many_objects_are_applied_while_it_applies() -> None:
    cloud = memory_cloud()
    details: list[str] = []

    def on_change(reports: dict[str, StepReport]) -> None:
        if reports["kubeflow"].status is StepStatus.RUNNING:
            details.append(reports["kubeflow"].detail)

    reports: dict[str, StepReport] = {}
    for _ in range(10):
        result = run_steps(CREATE_STEPS, context(cloud, create()), reports, on_change)
        reports = result.reports
        if reports["kubeflow"].status is StepStatus.DONE:
            break

    assert f"1/{len(MANIFESTS)} objects applied" in details
    assert reports["kubeflow"].detail == f"{len(MANIFESTS)} objects applied"


def test_the_dns_name_is_rolled_out_while_the_cluster_is_still_being_created() -> None:
    cloud = memory_cloud(cluster_polls=5)
    ctx = context(cloud, create())

    first = run_steps(CREATE_STEPS, ctx, {}, lambda _r: None)
    second = run_steps(CREATE_STEPS, ctx, first.reports, lambda _r: None)

    # The first look started the rollout; the second found nothing left to change.
    assert first.reports["dns"].status is StepStatus.RUNNING
    assert first.reports["dns"].detail == f"pointing {HOST} at {NAME}-ip"
    assert second.reports["dns"].status is StepStatus.DONE
    assert second.reports["dns"].detail == f"{HOST} points at {NAME}-ip"
    assert second.reports["cluster"].status is StepStatus.RUNNING
    assert cloud.endpoints(PROJECT) == {HOST: f"{NAME}-ip"}
    # Done once: later looks at the request do not read the Endpoints service again.
    looks = cloud.calls["ensure_endpoint"]
    run_steps(CREATE_STEPS, ctx, second.reports, lambda _r: None)
    assert cloud.calls["ensure_endpoint"] == looks == 2


def test_the_iap_step_waits_for_the_certificate_then_finishes() -> None:
    cloud = memory_cloud()
    cloud.ingress = IngressState(
        address="34.120.0.1", backends={"k8s-be-30000--abc": "HEALTHY"}, certificate="Provisioning"
    )
    ctx = context(cloud, create())
    reports: dict[str, StepReport] = {}
    for _ in range(10):
        result = run_steps(CREATE_STEPS, ctx, reports, lambda _r: None)
        reports = result.reports
        if reports["iap"].status is StepStatus.RUNNING and "certificate" in reports["iap"].detail:
            break

    assert result.status is RunStatus.PENDING
    assert reports["iap"].detail == f"waiting for the certificate for {HOST} (Provisioning)"
    assert reports["access"].status is StepStatus.PENDING

    cloud.ingress = replace(cloud.ingress, certificate="Active")
    done = run_steps(CREATE_STEPS, ctx, reports, lambda _r: None)

    assert done.status is RunStatus.DONE
    assert done.reports["access"].status is StepStatus.DONE


@pytest.mark.parametrize(
    ("state", "waiting"),
    [
        (
            IngressState(),
            [
                "the load balancer's IP address",
                "healthy backends",
                "the certificate for h (not issued)",
            ],
        ),
        (
            IngressState(
                address="1.2.3.4", backends={"a": "HEALTHY", "b": "UNHEALTHY"}, certificate="Active"
            ),
            ["healthy backends"],
        ),
        (IngressState(address="1.2.3.4", backends={"a": "HEALTHY"}, certificate="Active"), []),
    ],
)
def test_what_an_ingress_is_waiting_for_is_said_in_words(
    state: IngressState, waiting: list[str]
) -> None:
    assert state.waiting_for("h") == waiting


# -- The GKE overlay, IAP's OAuth client and its JWT check ---------------------------------

GATEWAY: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
    "spec": {
        # As upstream Kubeflow renders it.
        "type": "ClusterIP",
        "selector": {"app": "istio-ingressgateway"},
        "ports": [
            {"name": "status-port", "port": 15021, "targetPort": 15021},
            {"name": "http2", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443},
        ],
    },
}
GATEWAY_MANIFESTS = [
    *MANIFESTS,
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
    GATEWAY,
]
CLIENT_ID = "1234-abc.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-step-test-secret-value"


def gateway_context(cloud: Any, *, oauth: OAuthClient | None = None) -> StepContext:
    return replace(
        context(cloud, create()), manifests=lambda: GATEWAY_MANIFESTS, oauth_client=oauth
    )


def applied(cloud: MemoryCloud, kind: str, name: str) -> Any:
    found = [
        obj
        for (_, k, _, n), obj in cloud.objects(PROJECT, ZONE, NAME).items()
        if (k, n) == (kind, name)
    ]
    return found[0] if found else None


def run_until_iap_waits(cloud: MemoryCloud, ctx: StepContext) -> RunResult:
    reports: dict[str, StepReport] = {}
    for _ in range(10):
        result = run_steps(CREATE_STEPS, ctx, reports, lambda _r: None)
        reports = result.reports
        if result.status is not RunStatus.PENDING or reports["iap"].detail.startswith("waiting"):
            return result
    raise AssertionError(f"the IAP step never waited: {reports['iap']}")


def test_the_kubeflow_step_applies_the_gateway_as_a_node_port_service_for_gke() -> None:
    cloud = memory_cloud()
    create_all(cloud, ctx=gateway_context(cloud))

    service = applied(cloud, "Service", "istio-ingressgateway")
    assert service["spec"]["type"] == "NodePort"
    assert service["metadata"]["annotations"] == {
        "cloud.google.com/backend-config": '{"ports": {"http2":"iap-backendconfig"}}',
        "cloud.google.com/neg": '{"ingress":false}',
    }
    # Changed in what was applied, not in the bundle.
    assert GATEWAY["spec"]["type"] == "ClusterIP"


def test_the_iap_step_waits_for_the_backend_service_then_checks_iap_s_jwt_for_it() -> None:
    cloud = memory_cloud()
    cloud.backends_in_compute = False
    ctx = gateway_context(cloud)

    waiting = run_until_iap_waits(cloud, ctx)

    ports = cloud.service_node_ports(
        PROJECT, ZONE, NAME, namespace="istio-system", name="istio-ingressgateway"
    )
    assert ports is not None
    backend = f"k8s-be-{ports['http2']}--abc"
    assert waiting.status is RunStatus.PENDING
    assert waiting.reports["iap"].detail == (
        f"waiting for the backend service {backend} in Compute Engine"
    )
    assert applied(cloud, "RequestAuthentication", "ingress-jwt") is None

    cloud.backends_in_compute = True
    done = run_steps(CREATE_STEPS, ctx, waiting.reports, lambda _r: None)

    assert done.status is RunStatus.DONE
    backend_id = cloud.backend_service_id(PROJECT, backend)
    number = cloud.project_number(PROJECT)
    assert backend_id and number.isdigit()
    policy = applied(cloud, "RequestAuthentication", "ingress-jwt")
    assert policy["apiVersion"] == "security.istio.io/v1"
    [rule] = policy["spec"]["jwtRules"]
    assert rule["audiences"] == [f"/projects/{number}/global/backendServices/{backend_id}"]
    assert rule["issuer"] == "https://cloud.google.com/iap"
    assert rule["fromHeaders"] == [{"name": "x-goog-iap-jwt-assertion"}]
    assert policy["spec"]["selector"] == {"matchLabels": {"app": "istio-ingressgateway"}}


def test_the_iap_step_waits_until_the_ingress_reports_the_gateway_s_backend() -> None:
    cloud = memory_cloud()
    # Another Service's backend only: not the gateway's http2 nodePort.
    cloud.ingress = IngressState(
        address="34.120.0.1", backends={"k8s-be-32767--abc": "HEALTHY"}, certificate="Active"
    )

    waiting = run_until_iap_waits(cloud, gateway_context(cloud))

    ports = cloud.service_node_ports(
        PROJECT, ZONE, NAME, namespace="istio-system", name="istio-ingressgateway"
    )
    assert ports is not None
    assert waiting.reports["iap"].detail == (
        f"waiting for the backend service of nodePort {ports['http2']} on the Ingress"
    )
    assert cloud.calls["backend_service_id"] == 0


def test_the_backend_config_health_check_uses_the_status_port_node_port() -> None:
    cloud = memory_cloud()
    create_all(cloud, ctx=gateway_context(cloud))

    ports = cloud.service_node_ports(
        PROJECT, ZONE, NAME, namespace="istio-system", name="istio-ingressgateway"
    )
    assert ports is not None
    config = applied(cloud, "BackendConfig", "iap-backendconfig")
    assert config["spec"]["healthCheck"]["port"] == ports["status-port"]
    assert ports["status-port"] != ports["http2"]


def test_with_a_custom_oauth_client_iap_uses_it_from_the_secret() -> None:
    cloud = memory_cloud()
    client = OAuthClient(CLIENT_ID, SecretStr(CLIENT_SECRET))
    result = create_all(cloud, ctx=gateway_context(cloud, oauth=client))

    secret = applied(cloud, "Secret", "kubeflow-oauth")
    assert secret["metadata"]["namespace"] == "istio-system"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    config = applied(cloud, "BackendConfig", "iap-backendconfig")
    assert config["spec"]["iap"]["oauthclientCredentials"] == {"secretName": "kubeflow-oauth"}
    # Not in what the checklist stores.
    for report in result.reports.values():
        assert CLIENT_SECRET not in report.model_dump_json()
        assert base64.b64encode(CLIENT_SECRET.encode()).decode() not in report.model_dump_json()


def test_without_a_custom_client_iap_uses_google_s_managed_one() -> None:
    cloud = memory_cloud()
    create_all(cloud, ctx=gateway_context(cloud))

    assert applied(cloud, "Secret", "kubeflow-oauth") is None
    config = applied(cloud, "BackendConfig", "iap-backendconfig")
    assert config["spec"]["iap"] == {"enabled": True}


def test_a_bundle_without_the_gateway_gets_no_jwt_check_and_no_health_check_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cloud = memory_cloud()
    create_all(cloud)

    assert applied(cloud, "RequestAuthentication", "ingress-jwt") is None
    config = applied(cloud, "BackendConfig", "iap-backendconfig")
    assert "port" not in config["spec"]["healthCheck"]
    assert cloud.calls["service_node_ports"] == 0
    assert "no JWT check at the ingress gateway" in caplog.text


def test_the_plan_reads_the_gateway_and_project_and_checks_iap_s_jwt() -> None:
    calls = planned()["iap"].calls

    assert any("get Service istio-system/istio-ingressgateway" in c for c in calls)
    assert f"cloudresourcemanager.projects.get projects/{PROJECT}" in calls
    assert any("(1 RequestAuthentication)" in c for c in calls)


def test_before_the_ingress_has_backends_the_iap_step_says_so_once() -> None:
    cloud = memory_cloud()
    cloud.ingress = IngressState(address="34.120.0.1", backends={}, certificate="Active")

    waiting = run_until_iap_waits(cloud, gateway_context(cloud))

    assert waiting.reports["iap"].detail == "waiting for healthy backends"
    assert applied(cloud, "RequestAuthentication", "ingress-jwt") is None
