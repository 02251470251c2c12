"""Tests of ``FakeKube`` through the real ``kubernetes`` client and kubectl.

They double as notes for the author of the Kubeflow applier: how the ``DynamicClient``
is configured for a GKE-style endpoint (CA PEM + bearer token), how server-side apply is
called, what errors look like, and how discovery caching meets CRDs that are not yet
Established.  Timed behaviour runs on a ``FakeMonotonic`` clock except in the bundle,
kubectl and latency tests, which use real time with short delays.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import urllib3
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    ConflictError,
    InternalServerError,
    NotFoundError,
    ResourceNotFoundError,
    UnauthorizedError,
    UnprocessibleEntityError,
)

from tests.support.clocks import FakeMonotonic
from tests.support.fake_kube import BUILTIN_TYPES, FakeKube
from tests.support.paths import SHARED_DATA

BUNDLE = SHARED_DATA / "kubeflow-26.03-example.yaml.gz"
MANAGER = "kubeflow-bot"
Json = dict[str, Any]


# -- helpers --------------------------------------------------------------------------


def api_client(
    kube: FakeKube,
    ca_file: str | None,
    token: str | None = "t",  # noqa: S107
) -> client.ApiClient:
    configuration = client.Configuration(host=kube.url)
    if ca_file is not None:
        configuration.ssl_ca_cert = ca_file
    if token is not None:
        configuration.api_key = {"authorization": f"Bearer {token}"}
    configuration.retries = 0  # a refused TLS handshake should fail at once
    return client.ApiClient(configuration)


def dynamic(
    kube: FakeKube,
    ca_file: str,
    tmp_path: Path,
    token: str = "t",  # noqa: S107
) -> DynamicClient:
    # cache_file: the default is /tmp/osrcp-<md5(host)>.json, shared by every client of
    # that URL; a port reused by a later fake would then start from stale discovery.
    return DynamicClient(
        api_client(kube, ca_file, token), cache_file=str(tmp_path / f"discovery-{token}.json")
    )


class Applied(NamedTuple):
    status: int
    body: Json


def apply(dyn: DynamicClient, body: Json, *, manager: str = MANAGER, force: bool = True) -> Applied:
    """Server-side apply as an applier would call it; the HTTP status and the stored object.

    ``serialize=False`` is only here to see 201 vs 200; the default returns a
    ``ResourceInstance``.  The body is read at once: an unread raw response keeps its
    connection, and the next request would open (and handshake) a new one.
    """
    resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    response = resource.server_side_apply(
        body=body,
        namespace=body["metadata"].get("namespace"),
        field_manager=manager,
        force_conflicts=force or None,
        serialize=False,
    )
    return Applied(response.status, json.loads(response.data))


def status_of(error: client.ApiException) -> Json:
    """The ``Status`` object an API error carries."""
    decoded: Json = json.loads(error.body or "{}")
    return decoded


def config_map(name: str = "settings", namespace: str = "default", **data: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data or {"mode": "a"},
    }


def namespace(name: str, **labels: str) -> Json:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def deployment(name: str, namespace: str, labels: dict[str, str], replicas: int = 1) -> Json:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "example/app:1"}]},
            },
        },
    }


def widget_crd(scope: str = "Namespaced") -> Json:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }


def condition(obj: Json, kind: str) -> str | None:
    for found in obj.get("status", {}).get("conditions", []):
        if found["type"] == kind:
            return str(found["status"])
    return None


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def kube(clock: FakeMonotonic) -> Iterator[FakeKube]:
    with FakeKube(clock=clock) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def ca_file(kube: FakeKube, tmp_path: Path) -> str:
    return kube.write_ca(tmp_path / "ca.pem")


@pytest.fixture
def dyn(kube: FakeKube, ca_file: str, tmp_path: Path) -> DynamicClient:
    return dynamic(kube, ca_file, tmp_path)


# -- TLS and auth ---------------------------------------------------------------------


def test_tls_is_verified_against_the_fake_ca(kube: FakeKube, ca_file: str) -> None:
    trusted = client.VersionApi(api_client(kube, ca_file)).get_code()
    assert trusted.git_version.startswith("v1.32")
    assert kube.url.startswith("https://127.0.0.1:")
    assert kube.ca_base64  # what a fake GKE would hand out as cluster_ca_certificate

    # Without the CA the client falls back to the system store and refuses the server.
    with pytest.raises(urllib3.exceptions.MaxRetryError) as refused:
        client.VersionApi(api_client(kube, None)).get_code()
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)

    # The refused handshake did not hurt the server.
    assert client.VersionApi(api_client(kube, ca_file)).get_code().major == "1"


def test_a_bearer_token_is_required(clock: FakeMonotonic, tmp_path: Path) -> None:
    with FakeKube(clock=clock, tokens={"good"}) as kube:
        ca_file = kube.write_ca(tmp_path / "ca.pem")
        with pytest.raises(client.ApiException) as missing:
            client.VersionApi(api_client(kube, ca_file, token=None)).get_code()
        assert missing.value.status == 401
        with pytest.raises(UnauthorizedError) as wrong:
            dynamic(kube, ca_file, tmp_path, token="bad")
        assert status_of(wrong.value)["reason"] == "Unauthorized"

        dyn = dynamic(kube, ca_file, tmp_path, token="good")
        assert apply(dyn, config_map()).status == 201
        assert set(kube.tokens_seen) == {"bad", "good"}
        assert kube.requests(kind="unauthorized") == 2


# -- server-side apply ----------------------------------------------------------------


def test_apply_creates_then_only_real_changes_bump_the_resource_version(
    kube: FakeKube, dyn: DynamicClient
) -> None:
    created = apply(dyn, config_map(mode="a"))
    assert created.status == 201
    first = created.body["metadata"]
    assert first["generation"] == 1
    assert [m["manager"] for m in first["managedFields"]] == [MANAGER]
    assert first["managedFields"][0]["fieldsV1"]["f:data"] == {"f:mode": {}}

    again = apply(dyn, config_map(mode="a"))
    assert again.status == 200
    same = again.body["metadata"]
    assert same["resourceVersion"] == first["resourceVersion"]
    assert same["uid"] == first["uid"]
    assert same["creationTimestamp"] == first["creationTimestamp"]

    changed = apply(dyn, config_map(mode="b")).body
    assert int(changed["metadata"]["resourceVersion"]) > int(first["resourceVersion"])
    assert changed["metadata"]["generation"] == 2
    assert changed["data"] == {"mode": "b"}
    assert (kube.applies_changed, kube.applies_unchanged) == (2, 1)
    assert kube.requests("PATCH", "ConfigMap") == 3

    # Reads: GET one, LIST in a namespace and across namespaces, as the API shapes them.
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    assert configmaps.get(name="settings", namespace="default").data.mode == "b"
    apply(dyn, namespace("other"))
    apply(dyn, config_map(namespace="other"))
    everywhere = configmaps.get(serialize=False)
    listed = json.loads(everywhere.data)
    assert everywhere.headers["Content-Type"] == "application/json"
    assert listed["kind"] == "ConfigMapList"
    assert int(listed["metadata"]["resourceVersion"]) >= int(changed["metadata"]["resourceVersion"])
    assert [i["metadata"]["namespace"] for i in listed["items"]] == ["default", "other"]
    assert len(configmaps.get(namespace="other").items) == 1

    configmaps.delete(name="settings", namespace="other")
    with pytest.raises(NotFoundError) as gone:
        configmaps.get(name="settings", namespace="other")
    assert status_of(gone.value)["message"] == 'configmaps "settings" not found'


def test_managers_own_fields_and_conflicts_need_force(kube: FakeKube, dyn: DynamicClient) -> None:
    apply(dyn, config_map(mode="a", size="1"))
    # Another manager sets a field of ours to another value: 409 without force.
    with pytest.raises(ConflictError) as conflict:
        apply(dyn, config_map(mode="z"), manager="someone-else", force=False)
    status = status_of(conflict.value)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "kubeflow-bot" using v1: .data.mode'
    )
    # With force the field moves to the new manager; our other field stays ours.
    taken = apply(dyn, config_map(mode="z"), manager="someone-else").body
    assert taken["data"] == {"mode": "z", "size": "1"}
    # A manager that drops a field it alone owned removes it.
    dropped = apply(dyn, config_map(mode="z")).body
    assert dropped["data"] == {"mode": "z"}
    assert {m["manager"] for m in dropped["metadata"]["managedFields"]} == {
        MANAGER,
        "someone-else",
    }


def test_a_namespaced_object_needs_its_namespace(kube: FakeKube, dyn: DynamicClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        apply(dyn, config_map(namespace="kubeflow"))
    status = status_of(missing.value)
    assert (status["code"], status["message"]) == (404, 'namespaces "kubeflow" not found')
    assert status["details"] == {"name": "kubeflow", "kind": "namespaces"}
    apply(dyn, namespace("kubeflow"))
    assert apply(dyn, config_map(namespace="kubeflow")).status == 201
    ns = kube.find("Namespace", "kubeflow")
    assert ns is not None
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "kubeflow"


def test_invalid_names_and_mismatches_are_refused(kube: FakeKube, dyn: DynamicClient) -> None:
    with pytest.raises(UnprocessibleEntityError) as invalid:
        apply(dyn, config_map(name="Bad_Name"))
    assert 'metadata.name: Invalid value: "Bad_Name"' in status_of(invalid.value)["message"]
    crd = widget_crd()
    crd["metadata"]["name"] = "widgets.other.com"
    with pytest.raises(UnprocessibleEntityError):
        apply(dyn, crd)
    # RBAC names are path segments: colons are fine.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:kubeflow-view"},
        "rules": [],
    }
    assert apply(dyn, role).status == 201
    # The body's namespace must agree with the URL's.
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(client.ApiException) as mismatch:
        dyn.request(
            "patch",
            configmaps.path(name="settings", namespace="kube-system"),
            body=config_map(),
            content_type="application/apply-patch+yaml",
            query_params=[("fieldManager", MANAGER)],
        )
    assert mismatch.value.status == 400


# -- CRDs -----------------------------------------------------------------------------


def test_crd_kinds_are_served_only_once_established(
    kube: FakeKube, dyn: DynamicClient, clock: FakeMonotonic
) -> None:
    assert apply(dyn, widget_crd()).status == 201
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {"size": 3},
    }
    # Discovery does not list the kind yet: the DynamicClient cannot even build a request.
    with pytest.raises(ResourceNotFoundError):
        dyn.resources.get(api_version="example.com/v1", kind="Widget")
    # A raw apply (what kubectl or a cached client sends) gets the API server's 404.
    with pytest.raises(NotFoundError) as early:
        dyn.request(
            "patch",
            "/apis/example.com/v1/namespaces/default/widgets/w1",
            body=widget,
            content_type="application/apply-patch+yaml",
            query_params=[("fieldManager", MANAGER)],
        )
    assert status_of(early.value)["message"] == ("the server could not find the requested resource")
    crd = kube.find("CustomResourceDefinition", "widgets.example.com")
    assert crd is not None
    assert condition(crd, "Established") is None

    clock.advance(kube.crd_establish_seconds)
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    established = crds.get(name="widgets.example.com").to_dict()
    assert condition(established, "Established") == "True"
    assert condition(established, "NamesAccepted") == "True"
    assert ("example.com/v1", "Widget") in kube.served_kinds()

    # LazyDiscoverer re-reads discovery by itself after a miss; invalidate_cache() forces
    # it (needed when a cached resource changed rather than appeared).
    dyn.resources.invalidate_cache()
    assert apply(dyn, widget).status == 201
    assert kube.find("Widget", "w1", "default", group="example.com") is not None


# -- admission webhooks and readiness --------------------------------------------------


def webhook_setup(dyn: DynamicClient, *, failure_policy: str = "Fail", **selectors: Any) -> None:
    apply(dyn, namespace("hooks"))
    apply(
        dyn,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hook-svc", "namespace": "hooks"},
            "spec": {"selector": {"app": "hook"}, "ports": [{"port": 443, "targetPort": 9443}]},
        },
    )
    hook: Json = {
        "name": "check.example.com",
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"namespace": "hooks", "name": "hook-svc", "path": "/v"}},
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["configmaps"],
            }
        ],
        **selectors,
    }
    apply(
        dyn,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "check"},
            "webhooks": [hook],
        },
    )


def test_a_webhook_refuses_until_its_deployment_is_available(
    kube: FakeKube, dyn: DynamicClient, clock: FakeMonotonic
) -> None:
    webhook_setup(dyn)
    with pytest.raises(InternalServerError) as refused:
        apply(dyn, config_map())
    status = status_of(refused.value)
    assert status["reason"] == "InternalError"
    assert status["message"] == (
        'Internal error occurred: failed calling webhook "check.example.com": failed to call '
        'webhook: Post "https://hook-svc.hooks.svc:443/v?timeout=10s": '
        'no endpoints available for service "hook-svc"'
    )
    # Objects the rules do not match pass.
    apply(dyn, deployment("other", "default", {"app": "other"}))

    apply(dyn, deployment("hook", "hooks", {"app": "hook"}))
    with pytest.raises(InternalServerError):
        apply(dyn, config_map())  # the Deployment is not Available yet
    clock.advance(kube.deployment_ready_seconds)
    assert apply(dyn, config_map()).status == 201
    assert len(kube.refusals) == 2


def test_webhook_failure_policy_ignore_and_selectors(
    kube: FakeKube, dyn: DynamicClient, tmp_path: Path
) -> None:
    webhook_setup(
        dyn,
        namespaceSelector={"matchLabels": {"checked": "yes"}},
        objectSelector={
            "matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}],
        },
    )
    apply(dyn, namespace("checked", checked="yes"))
    assert apply(dyn, config_map()).status == 201  # "default" lacks the label
    skipped = config_map(namespace="checked")
    skipped["metadata"]["labels"] = {"skip": "true"}
    assert apply(dyn, skipped).status == 201
    with pytest.raises(InternalServerError):
        apply(dyn, config_map(name="checked-too", namespace="checked"))

    with FakeKube() as other:
        ignoring = dynamic(other, other.write_ca(tmp_path / "other-ca.pem"), tmp_path / "o")
        webhook_setup(ignoring, failure_policy="Ignore")
        assert apply(ignoring, config_map()).status == 201


def test_deployments_become_available_after_the_delay(
    kube: FakeKube, dyn: DynamicClient, clock: FakeMonotonic
) -> None:
    kube.never_available({"default/stuck"})
    apply(dyn, deployment("web", "default", {"app": "web"}, replicas=2))
    apply(dyn, deployment("stuck", "default", {"app": "stuck"}))
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    early = deployments.get(name="web", namespace="default").to_dict()
    assert condition(early, "Available") == "False"
    rv_before = early["metadata"]["resourceVersion"]

    clock.advance(kube.deployment_ready_seconds)
    ready = deployments.get(name="web", namespace="default").to_dict()
    assert condition(ready, "Available") == "True"
    assert ready["status"]["availableReplicas"] == 2
    assert ready["metadata"]["resourceVersion"] != rv_before  # a watcher would see it

    stuck = deployments.get(name="stuck", namespace="default").to_dict()
    assert condition(stuck, "Available") == "False"
    kube.restore_availability({"default/stuck"})
    assert condition(deployments.get(name="stuck", namespace="default").to_dict(), "Available") == (
        "True"
    )


def test_an_ingress_gets_its_address_and_backends(
    kube: FakeKube, dyn: DynamicClient, clock: FakeMonotonic
) -> None:
    apply(dyn, namespace("istio-system"))
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "envoy-ingress",
            "namespace": "istio-system",
            "annotations": {"kubernetes.io/ingress.allow-http": "false"},
        },
        "spec": {
            "defaultBackend": {"service": {"name": "istio-ingressgateway", "port": {"number": 80}}}
        },
    }
    created = apply(dyn, ingress).body
    assert created["status"] == {"loadBalancer": {}}
    clock.advance(kube.ingress_ready_seconds)
    ingresses = dyn.resources.get(api_version="networking.k8s.io/v1", kind="Ingress")
    ready = ingresses.get(name="envoy-ingress", namespace="istio-system").to_dict()
    assert ready["status"]["loadBalancer"]["ingress"][0]["ip"] == kube.ingress_ip
    annotations = ready["metadata"]["annotations"]
    assert json.loads(annotations["ingress.kubernetes.io/backends"]) == {
        "k8s-be-30000--abc": "HEALTHY"
    }
    # Re-applying our own fields keeps the controller's annotation.
    again = apply(dyn, ingress).body
    assert "ingress.kubernetes.io/backends" in again["metadata"]["annotations"]


def test_latency_is_applied(tmp_path: Path) -> None:
    with FakeKube(latency_seconds=0.15) as kube:
        version = client.VersionApi(api_client(kube, kube.write_ca(tmp_path / "ca.pem")))
        version.get_code()  # connect and handshake outside the measurement
        started = time.monotonic()
        version.get_code()
        assert time.monotonic() - started >= 0.15


# -- the real bundle, and kubectl -------------------------------------------------------


def load_bundle() -> list[Json]:
    if not BUNDLE.exists():
        pytest.skip(f"the shared Kubeflow bundle is absent ({BUNDLE})")
    with gzip.open(BUNDLE, "rt") as f:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [doc for doc in yaml.load_all(f, Loader=loader) if doc]


def test_the_kubeflow_bundle_applies_in_a_simple_loop(tmp_path: Path) -> None:
    docs = load_bundle()
    assert len(docs) == 503
    builtin = {(t.api_version, t.kind) for t in BUILTIN_TYPES}
    crd_kinds = {
        (f"{d['spec']['group']}/{v['name']}", d["spec"]["names"]["kind"])
        for d in docs
        if d["kind"] == "CustomResourceDefinition"
        for v in d["spec"]["versions"]
    }
    assert {(d["apiVersion"], d["kind"]) for d in docs} <= builtin | crd_kinds

    with FakeKube(crd_establish_seconds=0.2, deployment_ready_seconds=0.3) as kube:
        dyn = dynamic(kube, kube.write_ca(tmp_path / "ca.pem"), tmp_path)
        first = [d for d in docs if d["kind"] in ("Namespace", "CustomResourceDefinition")]
        rest = [d for d in docs if d["kind"] not in ("Namespace", "CustomResourceDefinition")]
        for doc in first:
            apply(dyn, doc)
        crds = dyn.resources.get(
            api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
        )
        deadline = time.monotonic() + 10
        while not all(condition(c, "Established") == "True" for c in crds.get().to_dict()["items"]):
            assert time.monotonic() < deadline, "CRDs never became Established"
            time.sleep(0.05)
        dyn.resources.invalidate_cache()  # once, rather than a refetch per first miss

        pending, rounds = rest, 0
        while pending:
            rounds += 1
            assert time.monotonic() < deadline + 10, f"still refused: {len(pending)}"
            refused = []
            for doc in pending:
                try:
                    apply(dyn, doc)
                except InternalServerError:  # a webhook whose Deployment is not ready yet
                    refused.append(doc)
            pending = refused
            if pending:
                time.sleep(0.1)

        for doc in docs:
            resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            # Some cluster-scoped objects in the bundle carry a namespace; the API drops it.
            where = doc["metadata"].get("namespace") if resource.namespaced else None
            found = kube.find(doc["kind"], doc["metadata"]["name"], where, group=resource.group)
            assert found is not None, doc["metadata"]
        assert len(kube.objects()) == 503 + 4  # plus default, kube-system, kube-public, ...
        assert rounds >= 2 and kube.refusals  # the webhooks did refuse at first
        assert kube.errors == []


def test_kubectl_server_side_apply(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [namespace("kubeflow"), config_map(namespace="kubeflow", mode="kubectl")]
        )
    )
    with FakeKube() as kube:
        ca_file = kube.write_ca(tmp_path / "ca.pem")
        result = subprocess.run(
            [
                kubectl,
                f"--server={kube.url}",
                f"--certificate-authority={ca_file}",
                "--token=t",
                f"--cache-dir={tmp_path / 'kube-cache'}",
                "apply",
                "--server-side",
                "--validate=false",
                "-f",
                str(manifest),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            # No user kubeconfig may leak in; the flags carry everything.
            env={"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "HOME": str(tmp_path)},
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "configmap/settings serverside-applied" in result.stdout
        stored = kube.find("ConfigMap", "settings", "kubeflow")
        assert stored is not None
        assert stored["data"] == {"mode": "kubectl"}
        assert [m["manager"] for m in stored["metadata"]["managedFields"]] == ["kubectl"]
        assert kube.tokens_seen and set(kube.tokens_seen) == {"t"}


def test_concurrent_applies_and_namespace_deletion(kube: FakeKube, dyn: DynamicClient) -> None:
    apply(dyn, namespace("busy"))
    names = [f"cm-{i}" for i in range(40)]
    # One ApiClient is shared by the threads, as an applier with a worker pool would.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda n: apply(dyn, config_map(name=n, namespace="busy")).status, names)
        )
    assert statuses == [201] * len(names)
    assert len(kube.objects("ConfigMap", namespace="busy")) == len(names)
    versions = {o["metadata"]["resourceVersion"] for o in kube.objects("ConfigMap")}
    assert len(versions) == len(names)  # every write got its own resourceVersion

    # Deleting a namespace takes its objects with it (at once: no Terminating phase here).
    dyn.resources.get(api_version="v1", kind="Namespace").delete(name="busy")
    assert kube.objects(namespace="busy") == []


# -- NodePorts and the backends GKE names after them ----------------------------------------


def gateway_service(service_type: str = "NodePort", **extra: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {
            "type": service_type,
            "selector": {"app": "istio-ingressgateway"},
            "ports": [
                {"name": "status-port", "port": 15021, "targetPort": 15021},
                {"name": "http2", "port": 80, "targetPort": 8080, **extra},
            ],
        },
    }


def node_ports(service: Json) -> dict[str, int | None]:
    return {p["name"]: p.get("nodePort") for p in service["spec"]["ports"]}


def test_node_port_services_get_unique_node_ports_kept_across_re_applies(
    dyn: DynamicClient,
) -> None:
    apply(dyn, namespace("istio-system"))
    first = node_ports(apply(dyn, gateway_service()).body)
    other = gateway_service("LoadBalancer")
    other["metadata"]["name"] = "other-gateway"
    second = node_ports(apply(dyn, other).body)

    given = [*first.values(), *second.values()]
    assert all(isinstance(p, int) and 30000 <= p <= 32767 for p in given)
    assert len(set(given)) == len(given)
    # The applier never owns them, so re-applying without them keeps them.
    assert node_ports(apply(dyn, gateway_service()).body) == first
    services = dyn.resources.get(api_version="v1", kind="Service")
    read = services.get(name="istio-ingressgateway", namespace="istio-system").to_dict()
    assert node_ports(read) == first


def test_cluster_ip_services_get_no_node_ports_and_named_ones_are_kept(
    dyn: DynamicClient,
) -> None:
    apply(dyn, namespace("istio-system"))
    assert set(node_ports(apply(dyn, gateway_service("ClusterIP")).body).values()) == {None}
    assert node_ports(apply(dyn, gateway_service(nodePort=31380)).body)["http2"] == 31380


def test_a_ready_ingress_names_its_backend_after_the_service_s_node_port(
    kube: FakeKube, dyn: DynamicClient, clock: FakeMonotonic
) -> None:
    apply(dyn, namespace("istio-system"))
    http2 = node_ports(apply(dyn, gateway_service()).body)["http2"]
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "envoy-ingress", "namespace": "istio-system"},
        "spec": {
            "defaultBackend": {"service": {"name": "istio-ingressgateway", "port": {"number": 80}}}
        },
    }
    apply(dyn, ingress)
    clock.advance(kube.ingress_ready_seconds)

    ready = kube.find("Ingress", "envoy-ingress", "istio-system", group="networking.k8s.io")
    assert ready is not None
    backends = json.loads(ready["metadata"]["annotations"]["ingress.kubernetes.io/backends"])
    [name] = backends
    assert name.startswith(f"k8s-be-{http2}--")
    assert backends[name] == "HEALTHY"
