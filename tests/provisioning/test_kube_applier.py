"""``KubeApplier`` against ``FakeKube``: ordering, races, errors, and fast re-apply.

Small hand-written bundles run on a ``FakeMonotonic`` clock that the applier's sleeps
advance, so CRDs establish and Deployments become Available exactly when the test says;
the shared Kubeflow bundle runs in real time with 10 ms of latency per request.
"""

from __future__ import annotations

import copy
import gzip
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioning.errors import PermanentError
from provisioning.kube_access import api_client
from provisioning.kube_applier import HASH_ANNOTATION, KubeApplier
from tests.support.clocks import FakeMonotonic
from tests.support.fake_kube import FakeKube
from tests.support.paths import SHARED_DATA

BUNDLE = SHARED_DATA / "kubeflow-26.03-example.yaml.gz"
Json = dict[str, Any]


class StaticTokens:
    def token(self) -> str:
        return "t"


# -- manifests ----------------------------------------------------------------------------


def namespace(name: str) -> Json:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def config_map(name: str = "settings", ns: str = "app", **data: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data or {"mode": "a"},
    }


def deployment(name: str, ns: str, app: str) -> Json:
    labels = {"app": app}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "example/app:1"}]},
            },
        },
    }


def widget_crd() -> Json:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }


def widget(name: str = "w1", ns: str = "app") -> Json:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"size": 3},
    }


def hook_stack() -> list[Json]:
    """A webhook refusing ConfigMaps until Deployment hooks/hook is Available."""
    return [
        namespace("hooks"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hook-svc", "namespace": "hooks"},
            "spec": {"selector": {"app": "hook"}, "ports": [{"port": 443}]},
        },
        deployment("hook", "hooks", "hook"),
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "check"},
            "webhooks": [
                {
                    "name": "check.example.com",
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {"service": {"namespace": "hooks", "name": "hook-svc"}},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                }
            ],
        },
    ]


def small_bundle() -> list[Json]:
    """Deliberately out of order: webhook configuration and CR before what they need."""
    stack = hook_stack()
    return [stack[3], widget(), config_map(), widget_crd(), namespace("app"), *stack[:3]]


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def kube(clock: FakeMonotonic) -> Iterator[FakeKube]:
    with FakeKube(clock=clock) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def make_applier(
    kube: FakeKube, clock: FakeMonotonic, tmp_path: Path
) -> Callable[..., KubeApplier]:
    def make(**options: Any) -> KubeApplier:
        api = api_client(f"127.0.0.1:{kube.port}", kube.ca_base64, StaticTokens())
        options.setdefault("clock", clock)
        options.setdefault("sleep", clock.advance)  # time passes only when the applier waits
        options.setdefault("retry_deadline_seconds", 10.0)
        return KubeApplier(api, **options)

    return make


@pytest.fixture
def applier(make_applier: Callable[..., KubeApplier]) -> KubeApplier:
    return make_applier()


# -- ordering and races ---------------------------------------------------------------------


def test_a_bundle_lands_in_dependency_order_with_webhooks_last(
    kube: FakeKube, applier: KubeApplier
) -> None:
    progress: list[tuple[int, int]] = []
    summary = applier.apply(small_bundle(), on_progress=lambda d, t: progress.append((d, t)))
    assert (summary.applied, summary.unchanged) == (8, 0)
    assert summary.waiting_for == ("deployment hooks/hook",)  # applied, not yet Available
    assert kube.find("Widget", "w1", "app", group="example.com") is not None
    assert kube.find("ConfigMap", "settings", "app") is not None
    assert kube.find("ValidatingWebhookConfiguration", "check") is not None
    # Had the webhook configuration gone in before the ConfigMap, it would have refused it.
    assert kube.refusals == []
    assert progress[-1] == (8, 8)
    stored = kube.find("ConfigMap", "settings", "app")
    assert stored is not None
    assert HASH_ANNOTATION in stored["metadata"]["annotations"]
    managers = {m["manager"] for m in stored["metadata"]["managedFields"]}
    assert managers == {"kubeflow-bot"}


def test_custom_resources_wait_for_their_crd_to_be_established(
    kube: FakeKube, make_applier: Callable[..., KubeApplier]
) -> None:
    kube.crd_establish_seconds = 1.5
    summary = make_applier().apply([namespace("app"), widget_crd(), widget()])
    assert summary == type(summary)(applied=3, unchanged=0, waiting_for=())
    assert kube.find("Widget", "w1", "app", group="example.com") is not None
    # /version, /apis, /api/v1, the CRD group; refreshed once: /version, /apis, the new group.
    assert kube.requests("GET", "discovery") == 7


def test_a_crd_slower_than_the_settle_time_is_reported_and_the_rest_waits(
    kube: FakeKube, clock: FakeMonotonic, make_applier: Callable[..., KubeApplier]
) -> None:
    kube.crd_establish_seconds = 30
    applier = make_applier(settle_seconds=1.0)
    bundle = [namespace("app"), widget_crd(), widget(), config_map()]
    summary = applier.apply(bundle)
    assert summary.waiting_for == (
        "CustomResourceDefinition widgets.example.com (to be established)",
    )
    assert kube.find("ConfigMap", "settings", "app") is None

    clock.advance(30)
    summary = applier.apply(bundle)
    assert (summary.applied, summary.unchanged, summary.waiting_for) == (2, 2, ())
    assert kube.find("Widget", "w1", "app", group="example.com") is not None


def test_objects_refused_by_a_webhook_not_serving_yet_are_retried_until_they_land(
    kube: FakeKube, clock: FakeMonotonic, make_applier: Callable[..., KubeApplier]
) -> None:
    kube.never_available({"hooks/hook"})
    make_applier().apply(hook_stack())
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)
        if len(waits) == 3:
            kube.restore_availability({"hooks/hook"})

    summary = make_applier(sleep=sleep).apply(
        [*hook_stack(), namespace("app"), config_map(), config_map("other")]
    )
    assert summary.waiting_for == ()
    assert kube.find("ConfigMap", "settings", "app") is not None
    assert len(kube.refusals) == 2 * 3  # both ConfigMaps, three rounds
    assert waits[1] > waits[0] * 0.9 and waits[2] > waits[1] * 0.9  # backing off


def test_refusals_past_the_deadline_are_reported_as_waiting(
    kube: FakeKube, make_applier: Callable[..., KubeApplier]
) -> None:
    kube.never_available({"hooks/hook"})
    make_applier().apply(hook_stack())
    summary = make_applier(retry_deadline_seconds=2.0).apply(
        [*hook_stack(), namespace("app"), config_map()]
    )
    assert summary.waiting_for == (
        'ConfigMap app/settings (webhook "check.example.com" to serve)',
        "deployment hooks/hook",
    )


def test_a_kind_nobody_serves_fails_after_the_deadline(
    kube: FakeKube, make_applier: Callable[..., KubeApplier]
) -> None:
    with pytest.raises(PermanentError) as failed:
        make_applier(retry_deadline_seconds=1.0).apply([widget(ns="default")])
    assert failed.value.user_message.startswith("Widget default/w1: the cluster does not serve")


# -- errors -------------------------------------------------------------------------------


def test_an_invalid_object_fails_at_once_naming_it(kube: FakeKube, applier: KubeApplier) -> None:
    bad = config_map("Bad_Name", "default")
    with pytest.raises(PermanentError) as failed:
        applier.apply([config_map("good", "default"), bad])
    message = failed.value.user_message
    assert message.startswith('ConfigMap default/Bad_Name: ConfigMap "Bad_Name" is invalid')
    assert kube.requests("PATCH", "ConfigMap") == 2  # no retry of the invalid one


def test_refused_credentials_are_a_permanent_error(clock: FakeMonotonic, tmp_path: Path) -> None:
    with FakeKube(clock=clock, tokens={"other"}) as kube:
        api = api_client(f"127.0.0.1:{kube.port}", kube.ca_base64, StaticTokens())
        with pytest.raises(PermanentError) as refused:
            KubeApplier(api).apply([config_map(ns="default")])
    assert "credentials were refused" in refused.value.user_message
    assert "Bearer" not in refused.value.user_message


def test_cluster_scoped_objects_lose_a_stray_namespace(
    kube: FakeKube, applier: KubeApplier
) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "reader", "namespace": "kubeflow"},
        "rules": [],
    }
    assert applier.apply([role]).applied == 1
    assert kube.find("ClusterRole", "reader") is not None
    assert applier.apply([role]).unchanged == 1


# -- readiness and re-apply -----------------------------------------------------------------


def test_deployments_not_available_are_waited_for_without_blocking(
    kube: FakeKube, clock: FakeMonotonic, applier: KubeApplier
) -> None:
    bundle = [namespace("app"), deployment("web", "app", "web")]
    assert applier.apply(bundle).waiting_for == ("deployment app/web",)
    clock.advance(kube.deployment_ready_seconds)
    again = applier.apply(bundle)
    assert (again.applied, again.unchanged, again.waiting_for) == (0, 2, ())


def test_reapplying_an_unchanged_bundle_writes_nothing(
    kube: FakeKube, clock: FakeMonotonic, applier: KubeApplier
) -> None:
    bundle = small_bundle()
    applier.apply(bundle)
    clock.advance(1)
    kube.reset_counters()
    summary = applier.apply(copy.deepcopy(bundle))
    assert (summary.applied, summary.unchanged, summary.waiting_for) == (0, 8, ())
    assert kube.requests("PATCH") == 0
    # One LIST per kind (Namespace, CRD, Widget, ConfigMap, Service, Deployment, webhook).
    assert kube.requests("GET") == 7
    assert kube.requests() == 7


def test_a_changed_object_is_applied_again(
    kube: FakeKube, clock: FakeMonotonic, applier: KubeApplier
) -> None:
    bundle = small_bundle()
    applier.apply(bundle)
    clock.advance(1)
    changed = [config_map(mode="b") if d["kind"] == "ConfigMap" else d for d in bundle]
    kube.reset_counters()
    summary = applier.apply(changed)
    assert (summary.applied, summary.unchanged) == (1, 7)
    assert kube.requests("PATCH") == 1
    stored = kube.find("ConfigMap", "settings", "app")
    assert stored is not None
    assert stored["data"] == {"mode": "b"}


# -- the real bundle ------------------------------------------------------------------------


def load_bundle() -> list[Json]:
    if not BUNDLE.exists():
        pytest.skip(f"the shared Kubeflow bundle is absent ({BUNDLE})")
    with gzip.open(BUNDLE, "rt") as f:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [doc for doc in yaml.load_all(f, Loader=loader) if doc]


def test_the_kubeflow_bundle_applies_and_reapplies_as_a_no_op(tmp_path: Path) -> None:
    docs = load_bundle()
    with FakeKube(
        latency_seconds=0.01, crd_establish_seconds=0.2, deployment_ready_seconds=0.3
    ) as kube:
        api = api_client(f"127.0.0.1:{kube.port}", kube.ca_base64, StaticTokens())
        applier = KubeApplier(api)

        started = time.monotonic()
        first = applier.apply(docs)
        first_seconds = time.monotonic() - started
        assert (first.applied, first.unchanged) == (503, 0)
        assert len(kube.objects()) == 503 + 4  # and default, kube-system, ...
        assert all(w.startswith("deployment ") for w in first.waiting_for)

        kube.reset_counters()
        started = time.monotonic()
        again = applier.apply(docs)
        again_seconds = time.monotonic() - started
        assert (again.applied, again.unchanged) == (0, 503)
        assert kube.requests("PATCH") == 0
        print(f"\nfirst apply {first_seconds:.2f} s, re-apply {again_seconds:.2f} s")

        time.sleep(kube.deployment_ready_seconds)
        assert applier.apply(docs).waiting_for == ()
        assert kube.errors == []
