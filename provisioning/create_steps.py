"""The ``ensure_*`` steps that build a deployment, in the order a person would by hand.

Each observes the real state through ``Cloud``, acts only when something is missing, and
reports what it did, so running it twice is harmless.  ``CREATE_STEPS`` declares their
order by dependency; the engine runs independent ones at the same time (the static IP
and service accounts do not wait for the cluster; the GPU pool and Kubeflow do not wait
for each other).  Called by the worker through ``plans.steps_for``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from provisioning.actions import IAP_ACCESSOR_ROLE, CreateAction
from provisioning.cloud import ClusterRequest, IamPolicy, IngressState, NodePoolRequest
from provisioning.engine import Outcome, Step, StepContext, StepResult, check_graph
from provisioning.errors import PermanentError
from provisioning.gke_overlay import (
    GATEWAY_NAMESPACE,
    GATEWAY_SERVICE,
    HTTP_PORT,
    STATUS_PORT,
    backend_of,
    gke_overlay,
    has_gateway,
)
from provisioning.iam_edits import edit_project_policy, read_modify_write
from provisioning.iap_objects import BACKEND_CONFIG as IAP_BACKEND_CONFIG
from provisioning.iap_objects import CERTIFICATE as IAP_CERTIFICATE
from provisioning.iap_objects import INGRESS as IAP_INGRESS
from provisioning.iap_objects import NAMESPACE as IAP_NAMESPACE
from provisioning.iap_objects import (
    iap_objects,
    jwt_audience,
    oauth_secret,
    request_authentication,
)
from provisioning.spec import DeploymentSpec, region_of

log = logging.getLogger(__name__)

# Enabled in one batch (Service Usage takes at most 20 ids per request).
REQUIRED_APIS: tuple[str, ...] = (
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "serviceusage.googleapis.com",
    "servicemanagement.googleapis.com",
    "servicecontrol.googleapis.com",
    "endpoints.googleapis.com",
    "iap.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
)
SERVICE_USAGE_BATCH = 20
APIS_POLL_SECONDS = 10.0
CLUSTER_POLL_SECONDS = 30.0
# An Endpoints rollout takes seconds to a minute.
DNS_POLL_SECONDS = 10.0
# GKE takes minutes for the load balancer and its backends, up to an hour for the
# certificate.
IAP_POLL_SECONDS = 30.0
NODE_POOL_NAME = "gpu-pool"
RELEASE_CHANNEL = "REGULAR"

# Project roles per deployment service account (after kubeflow-distribution's policies,
# trimmed to what an API-driven install uses: no Cloud SQL, no source repos).
ACCOUNT_ROLES: dict[str, tuple[str, ...]] = {
    "vm": (
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/monitoring.viewer",
        "roles/storage.objectViewer",
    ),
    "admin": (
        "roles/servicemanagement.admin",
        "roles/compute.networkAdmin",
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/storage.admin",
    ),
    "user": (
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/storage.admin",
    ),
}
ACCOUNT_TITLES = {
    "vm": "kubeflow node service account",
    "admin": "kubeflow admin service account",
    "user": "kubeflow user service account",
}
WORKLOAD_IDENTITY_ROLE = "roles/iam.workloadIdentityUser"
# Kubernetes service accounts that impersonate each Google one (Workload Identity).
WORKLOAD_IDENTITY_KSAS: dict[str, tuple[str, ...]] = {
    "admin": (
        "kubeflow/profiles-controller-service-account",
        "kubeflow/kf-admin",
        "istio-system/kf-admin",
    ),
    "user": ("kubeflow/pipeline-runner", "kubeflow/ml-pipeline-ui"),
}


def _spec(ctx: StepContext) -> DeploymentSpec:
    assert isinstance(ctx.action, CreateAction)
    return ctx.action.spec


# IAM account ids are 6 to 30 characters.
ACCOUNT_ID_MIN = 6


def account_id(name: str, suffix: str) -> str:
    """``NAME-vm``, ``NAME-admin``, ``NAME-user`` as kubeflow-distribution names them.

    NAME has 2 to 24 characters, so ids stay within IAM's 30; only a two-letter NAME with
    ``vm`` falls short of IAM's 6, and that one becomes ``NAME-kf-vm``."""
    plain = f"{name}-{suffix}"
    return plain if len(plain) >= ACCOUNT_ID_MIN else f"{name}-kf-{suffix}"


def account_email(spec: DeploymentSpec, suffix: str) -> str:
    return f"{account_id(spec.name, suffix)}@{spec.project}.iam.gserviceaccount.com"


def address_name(name: str) -> str:
    return f"{name}-ip"


def ensure_apis(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)
    enabled = ctx.cloud.enabled_services(spec.project, REQUIRED_APIS)
    missing = [api for api in REQUIRED_APIS if api not in enabled]
    if not missing:
        return StepResult(Outcome.UNCHANGED, f"{len(REQUIRED_APIS)} APIs already enabled")
    for start in range(0, len(missing), SERVICE_USAGE_BATCH):
        ctx.cloud.enable_services(spec.project, missing[start : start + SERVICE_USAGE_BATCH])
    if ctx.cloud.dry_run:
        return StepResult(Outcome.PLANNED, f"enable {len(missing)} APIs")
    # Enabling is a long operation; the steps after this one need the APIs on, so look
    # again rather than report done.
    return StepResult(Outcome.PENDING, f"enabling {len(missing)} APIs", APIS_POLL_SECONDS)


def zone_suggestion(zone: str, offering: frozenset[str]) -> str:
    """Zones that offer the GPU, those in the requested zone's region first."""
    region = region_of(zone)
    near = sorted(z for z in offering if region_of(z) == region)
    far = sorted(z for z in offering if region_of(z) != region)
    if not offering:
        return "no zone in this project offers it"
    listed = near + far
    shown = ", ".join(listed[:8]) + (f" and {len(listed) - 8} more" if len(listed) > 8 else "")
    return f"zones that offer it: {shown}"


def ensure_gpu_zone(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)
    if spec.gpu is None:
        return StepResult(Outcome.SKIPPED, "no GPU requested")
    offering = ctx.cloud.zones_offering(spec.project, spec.gpu.type)
    if offering is None:
        return StepResult(Outcome.PLANNED, f"check that {spec.zone} offers {spec.gpu.type}")
    if spec.zone not in offering:
        raise PermanentError(
            f"{spec.zone} does not offer {spec.gpu.type}; "
            f"{zone_suggestion(spec.zone, offering)}. Nothing was created: "
            "file a new request with --zone."
        )
    return StepResult(Outcome.UNCHANGED, f"{spec.zone} offers {spec.gpu.type}")


def ensure_service_accounts(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)
    created = []
    for suffix, title in ACCOUNT_TITLES.items():
        wanted_id = account_id(spec.name, suffix)
        if not ctx.cloud.service_account_exists(spec.project, wanted_id):
            ctx.cloud.create_service_account(spec.project, wanted_id, title)
            created.append(wanted_id)

    def with_roles(policy: IamPolicy) -> IamPolicy:
        for suffix, roles in ACCOUNT_ROLES.items():
            member = f"serviceAccount:{account_email(spec, suffix)}"
            for role in roles:
                policy = policy.with_members(role, frozenset({member}))
        return policy

    roles_changed = edit_project_policy(ctx, spec.project, with_roles)
    if not created and not roles_changed:
        return StepResult(Outcome.UNCHANGED, "service accounts and roles in place")
    return ctx.acted(Outcome.CREATED, f"{len(created)} service accounts, project roles for each")


def ensure_static_ip(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)
    name = address_name(spec.name)
    address = ctx.cloud.get_global_address(spec.project, name)
    if address is not None:
        return StepResult(Outcome.UNCHANGED, f"{name} is {address}")
    ctx.cloud.create_global_address(spec.project, name)
    return ctx.acted(Outcome.CREATED, f"reserve global address {name}")


def cluster_labels(ctx: StepContext) -> dict[str, str]:
    # Label values: lowercase letters, digits, _ and -, at most 63 characters.
    owner = "".join(c if c.isalnum() or c in "-_" else "_" for c in ctx.requester.lower())[:63]
    return {
        "managed-by": "kubeflow-bot",
        "kubeflow-bot-request": ctx.request_id,
        "kubeflow-bot-owner": owner,
    }


def ensure_cluster(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)
    info = ctx.cloud.get_cluster(spec.project, spec.zone, spec.name)
    if info is None:
        ctx.cloud.create_cluster(
            ClusterRequest(
                project=spec.project,
                zone=spec.zone,
                name=spec.name,
                machine_type=spec.machine_type,
                node_service_account=account_email(spec, "vm"),
                workload_pool=f"{spec.project}.svc.id.goog",
                release_channel=RELEASE_CHANNEL,
                labels=cluster_labels(ctx),
            )
        )
        if ctx.cloud.dry_run:
            return StepResult(Outcome.PLANNED, f"create cluster {spec.name} in {spec.zone}")
        return StepResult(Outcome.PENDING, "cluster creation started", CLUSTER_POLL_SECONDS)
    if info.labels.get("managed-by") != "kubeflow-bot":
        raise PermanentError(
            f"a cluster named {spec.name} already exists in {spec.zone} and is not managed "
            "by kubeflow-bot; choose another name"
        )
    if info.status in ("PROVISIONING", "RECONCILING"):
        return StepResult(
            Outcome.PENDING, f"cluster is {info.status.lower()}", CLUSTER_POLL_SECONDS
        )
    if info.status != "RUNNING":
        problem = ctx.cloud.cluster_problem(spec.project, spec.zone, spec.name)
        if problem:
            raise PermanentError(f"cluster {spec.name} could not be created: {problem}")
        raise PermanentError(f"cluster {spec.name} is {info.status}; look at it in the console")
    return StepResult(Outcome.UNCHANGED, f"cluster {spec.name} is running")


def ensure_gpu_node_pool(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)
    if spec.gpu is None:
        return StepResult(Outcome.SKIPPED, "no GPU requested")
    gpu = spec.gpu
    status = ctx.cloud.get_node_pool_status(spec.project, spec.zone, spec.name, NODE_POOL_NAME)
    if status is None:
        ctx.cloud.create_node_pool(
            NodePoolRequest(
                project=spec.project,
                zone=spec.zone,
                cluster=spec.name,
                name=NODE_POOL_NAME,
                machine_type=gpu.machine_type,
                accelerator_type=gpu.type,
                accelerator_count=gpu.count,
                min_nodes=gpu.min_nodes,
                max_nodes=gpu.max_nodes,
                service_account=account_email(spec, "vm"),
            )
        )
        detail = (
            f"{gpu.type} x{gpu.count} on {gpu.machine_type}, {gpu.min_nodes}..{gpu.max_nodes} nodes"
        )
        if ctx.cloud.dry_run:
            return StepResult(Outcome.PLANNED, detail)
        return StepResult(Outcome.PENDING, f"creating node pool: {detail}", CLUSTER_POLL_SECONDS)
    if status in ("PROVISIONING", "RECONCILING"):
        return StepResult(Outcome.PENDING, f"node pool is {status.lower()}", CLUSTER_POLL_SECONDS)
    if status != "RUNNING":
        problem = ctx.cloud.node_pool_problem(spec.project, spec.zone, spec.name, NODE_POOL_NAME)
        if problem:
            # A stock-out is zonal: name the zones that offer this GPU instead.
            offering = ctx.cloud.zones_offering(spec.project, gpu.type) or frozenset()
            elsewhere = zone_suggestion(spec.zone, offering - {spec.zone})
            raise PermanentError(f"the GPU node pool could not be created: {problem}; {elsewhere}")
        raise PermanentError(f"GPU node pool is {status}; look at it in the console")
    return StepResult(Outcome.UNCHANGED, "GPU node pool is running")


def ensure_workload_identity(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)

    def bind(email: str, members: frozenset[str]) -> bool:
        return read_modify_write(
            lambda: ctx.cloud.get_service_account_iam_policy(spec.project, email),
            lambda policy: ctx.cloud.set_service_account_iam_policy(spec.project, email, policy),
            lambda policy: policy.with_members(WORKLOAD_IDENTITY_ROLE, members),
        )

    changed = 0
    for suffix, ksas in WORKLOAD_IDENTITY_KSAS.items():
        members = frozenset(f"serviceAccount:{spec.project}.svc.id.goog[{ksa}]" for ksa in ksas)
        changed += bind(account_email(spec, suffix), members)
    if not changed:
        return StepResult(Outcome.UNCHANGED, "Workload Identity bindings in place")
    return ctx.acted(Outcome.UPDATED, f"bind Kubeflow service accounts to {changed} Google ones")


def ensure_kubeflow(ctx: StepContext) -> StepResult:
    spec = _spec(ctx)
    if ctx.manifests is None:
        if ctx.cloud.dry_run:
            return StepResult(
                Outcome.PLANNED,
                f"apply Kubeflow {spec.kubeflow_version} (no bundle configured for the plan; "
                "the image carries one)",
            )
        raise PermanentError(
            "no Kubeflow manifest bundle is configured (KUBEFLOW_BOT_MANIFESTS); "
            "ask the bot's operators"
        )
    summary = ctx.cloud.apply_objects(
        spec.project,
        spec.zone,
        spec.name,
        gke_overlay(ctx.manifests(), backend_config=IAP_BACKEND_CONFIG),
        on_progress=lambda settled, total: ctx.progress(f"{settled}/{total} objects applied"),
    )
    if summary.waiting_for:
        return StepResult(
            Outcome.PENDING, f"waiting for {', '.join(summary.waiting_for[:3])}", 20.0
        )
    if summary.applied == 0:
        return StepResult(Outcome.UNCHANGED, f"{summary.unchanged} objects already applied")
    return ctx.acted(Outcome.UPDATED, f"{summary.applied} objects applied")


def ensure_dns_name(ctx: StepContext) -> StepResult:
    """The Cloud Endpoints name ``NAME.endpoints.PROJECT.cloud.goog`` on the static IP.

    Its own step, waiting only for the address: the service, its config and rollout are
    done while the cluster is still being created, and once done no later look at the
    IAP step reads them again."""
    spec = _spec(ctx)
    address = address_name(spec.name)
    changed = ctx.cloud.ensure_endpoint(spec.project, spec.host, address)
    if ctx.cloud.dry_run:
        return StepResult(Outcome.PLANNED, f"{spec.host} -> {address}")
    if changed:
        # The service, its config or its rollout is on its way: done only once a look
        # finds nothing left to change.
        return StepResult(Outcome.PENDING, f"pointing {spec.host} at {address}", DNS_POLL_SECONDS)
    return StepResult(Outcome.UNCHANGED, f"{spec.host} points at {address}")


def ensure_iap_ingress(ctx: StepContext) -> StepResult:
    """IAP in front of Istio's ingress gateway (SPEC step 9, gcp-reference S13-S15).

    Applies the IAP objects (with the custom OAuth client's Secret when one is
    configured, the health check on the gateway's ``status-port`` nodePort), waits for
    GKE's load balancer, backends and certificate, and once GKE has made the gateway's
    backend service, applies the RequestAuthentication for IAP's JWT, whose audience
    names that backend service.  Pending, with what it waits for, until all of that is."""
    spec = _spec(ctx)
    gateway = _gateway_in_bundle(ctx)
    node_ports: Mapping[str, int] | None = None
    if gateway:
        node_ports = ctx.cloud.service_node_ports(
            spec.project, spec.zone, spec.name, namespace=GATEWAY_NAMESPACE, name=GATEWAY_SERVICE
        )
        if not ctx.cloud.dry_run and not (node_ports or {}).get(STATUS_PORT):
            return StepResult(
                Outcome.PENDING,
                f"waiting for the {GATEWAY_SERVICE} Service's {STATUS_PORT} nodePort",
                IAP_POLL_SECONDS,
            )
    objects = iap_objects(
        spec.host,
        address_name(spec.name),
        custom_oauth=ctx.oauth_client is not None,
        health_check_port=(node_ports or {}).get(STATUS_PORT),
    )
    if ctx.oauth_client is not None:
        # First: the BackendConfig names it.
        objects.insert(0, oauth_secret(ctx.oauth_client))
    summary = ctx.cloud.apply_objects(spec.project, spec.zone, spec.name, objects)
    if summary.waiting_for:
        return StepResult(
            Outcome.PENDING, f"waiting for {', '.join(summary.waiting_for)}", IAP_POLL_SECONDS
        )
    if ctx.cloud.dry_run:
        if gateway:
            # What the look at the real project adds once the backend service exists.
            number = ctx.cloud.project_number(spec.project)
            audience = jwt_audience(number, "BACKEND_SERVICE_ID")
            ctx.cloud.apply_objects(
                spec.project, spec.zone, spec.name, [request_authentication(audience)]
            )
        return StepResult(Outcome.PLANNED, f"IAP ingress at {spec.host}")
    state = ctx.cloud.ingress_state(
        spec.project,
        spec.zone,
        spec.name,
        namespace=IAP_NAMESPACE,
        ingress=IAP_INGRESS,
        certificate=IAP_CERTIFICATE,
    )
    waiting = state.waiting_for(spec.host) if state is not None else []
    applied = summary.applied
    if gateway:
        jwt_waiting, jwt_applied = _ensure_jwt_check(ctx, state, (node_ports or {}).get(HTTP_PORT))
        waiting += jwt_waiting
        applied += jwt_applied
    if waiting:
        return StepResult(Outcome.PENDING, f"waiting for {', '.join(waiting)}", IAP_POLL_SECONDS)
    if applied == 0:
        return StepResult(Outcome.UNCHANGED, f"IAP ingress at {spec.host} in place")
    return StepResult(Outcome.UPDATED, f"IAP ingress at {spec.host}")


def _gateway_in_bundle(ctx: StepContext) -> bool:
    """Whether the bundle brings Istio's ingress gateway, which the IAP objects route to.

    A bundle without it has nothing for the health check or the JWT check to point at:
    the IAP objects then go on without either.  With no bundle (a plan), as the image's."""
    if ctx.manifests is None:
        return True
    found = has_gateway(ctx.manifests())
    if not found:
        log.warning(
            "the Kubeflow bundle has no Service %s/%s: no JWT check at the ingress gateway",
            GATEWAY_NAMESPACE,
            GATEWAY_SERVICE,
        )
    return found


def _ensure_jwt_check(
    ctx: StepContext, state: IngressState | None, http_node_port: int | None
) -> tuple[list[str], int]:
    """Apply the RequestAuthentication once its audience is known: (what it still waits
    for, in the checklist's words; how many objects changed)."""
    spec = _spec(ctx)
    if http_node_port is None:
        return [f"the {GATEWAY_SERVICE} Service's {HTTP_PORT} nodePort"], 0
    backends = state.backends if state is not None else {}
    backend = backend_of(backends, http_node_port)
    if backend is None:
        # No backends at all is already "healthy backends" in the Ingress's words.
        said = bool(state is not None and not backends)
        return (
            [] if said else [f"the backend service of nodePort {http_node_port} on the Ingress"]
        ), 0
    backend_id = ctx.cloud.backend_service_id(spec.project, backend)
    if backend_id is None:
        return [f"the backend service {backend} in Compute Engine"], 0
    audience = jwt_audience(ctx.cloud.project_number(spec.project), backend_id)
    summary = ctx.cloud.apply_objects(
        spec.project, spec.zone, spec.name, [request_authentication(audience)]
    )
    return list(summary.waiting_for), summary.applied


def ensure_requester_access(ctx: StepContext) -> StepResult:
    assert isinstance(ctx.action, CreateAction)
    spec = ctx.action.spec
    email = ctx.action.requester_email
    if email is None:
        return StepResult(
            Outcome.SKIPPED, "requester's email unknown: use /kubeflow grant to add people"
        )
    member = frozenset({f"user:{email}"})
    if not edit_project_policy(
        ctx, spec.project, lambda policy: policy.with_members(IAP_ACCESSOR_ROLE, member)
    ):
        return StepResult(Outcome.UNCHANGED, f"{email} already has access")
    return ctx.acted(Outcome.UPDATED, f"grant {email} IAP access")


CREATE_STEPS: tuple[Step, ...] = (
    Step("apis", "Enable the project's APIs", ensure_apis),
    Step("gpu_zone", "Check the zone offers the GPU", ensure_gpu_zone, ("apis",)),
    # Both wait for the GPU check, so a zone without the GPU creates nothing at all; they
    # do not wait for the cluster.
    Step(
        "service_accounts",
        "Service accounts and IAM roles",
        ensure_service_accounts,
        ("gpu_zone",),
    ),
    Step("static_ip", "Static IP for the ingress", ensure_static_ip, ("gpu_zone",)),
    Step("cluster", "GKE cluster", ensure_cluster, ("apis", "gpu_zone", "service_accounts")),
    Step("gpu_pool", "GPU node pool", ensure_gpu_node_pool, ("cluster",)),
    Step("workload_identity", "Workload Identity bindings", ensure_workload_identity, ("cluster",)),
    Step("kubeflow", "Kubeflow manifests", ensure_kubeflow, ("cluster", "workload_identity")),
    Step("dns", "DNS name on the static IP", ensure_dns_name, ("static_ip",)),
    # After the DNS name: the certificate is issued only once the name resolves to the IP.
    Step("iap", "IAP, certificate and ingress", ensure_iap_ingress, ("kubeflow", "dns")),
    Step("access", "Access for the requester", ensure_requester_access, ("iap",)),
)
check_graph(CREATE_STEPS)
