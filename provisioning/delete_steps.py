"""The steps behind ``/kubeflow delete``: the cluster, its endpoint and its address.

Each looks first and deletes only what is there, so a redelivered delete is harmless.
The service accounts are kept: deleting and re-creating one with the same id within 30
days makes IAM bindings misbehave, and they cost nothing.  Called by the worker through
``plans.steps_for``.
"""

from __future__ import annotations

from provisioning.actions import DeleteAction
from provisioning.create_steps import CLUSTER_POLL_SECONDS, address_name
from provisioning.engine import Outcome, Step, StepContext, StepResult, check_graph
from provisioning.spec import endpoint_host


def _action(ctx: StepContext) -> DeleteAction:
    assert isinstance(ctx.action, DeleteAction)
    return ctx.action


def ensure_cluster_deleted(ctx: StepContext) -> StepResult:
    action = _action(ctx)
    info = ctx.cloud.get_cluster(action.project, action.zone, action.deployment)
    if info is None:
        return StepResult(Outcome.UNCHANGED, "no cluster left")
    if info.status == "STOPPING":
        return StepResult(Outcome.PENDING, "cluster is being deleted", CLUSTER_POLL_SECONDS)
    ctx.cloud.delete_cluster(action.project, action.zone, action.deployment)
    if ctx.cloud.dry_run:
        return StepResult(Outcome.PLANNED, f"delete cluster {action.deployment}")
    return StepResult(Outcome.PENDING, "cluster deletion started", CLUSTER_POLL_SECONDS)


def ensure_endpoint_deleted(ctx: StepContext) -> StepResult:
    action = _action(ctx)
    host = endpoint_host(action.deployment, action.project)
    if not ctx.cloud.delete_endpoint(action.project, host):
        return StepResult(Outcome.UNCHANGED, f"no endpoint {host}")
    return ctx.acted(Outcome.DELETED, "endpoint removed")


def ensure_address_released(ctx: StepContext) -> StepResult:
    action = _action(ctx)
    name = address_name(action.deployment)
    if ctx.cloud.get_global_address(action.project, name) is None and not ctx.cloud.dry_run:
        return StepResult(Outcome.UNCHANGED, f"no address {name}")
    ctx.cloud.delete_global_address(action.project, name)
    return ctx.acted(Outcome.DELETED, f"released {name}")


DELETE_STEPS = (
    Step("cluster", "Delete the GKE cluster", ensure_cluster_deleted),
    Step("endpoint", "Remove the DNS name", ensure_endpoint_deleted, ("cluster",)),
    Step("address", "Release the static IP", ensure_address_released, ("cluster",)),
)
check_graph(DELETE_STEPS)
