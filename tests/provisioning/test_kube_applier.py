"""``KubeApplier`` against ``FakeKube``: ordering, races, errors, bodies and re-apply.

Small hand-written bundles run on a ``FakeMonotonic`` clock that the applier's sleeps
advance, so CRDs establish and Deployments become Available exactly when the test says.
The shared Kubeflow bundle is in ``test_kube_applier_kubeflow.py``.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioning.errors import PermanentError
from provisioning.kube_access import api_client
from provisioning.kube_applier import HASH_ANNOTATION, KubeApplier
from provisioning.kube_bundle import desired, scoped, wire_body
from provisioning.kube_webhook_waits import MAX_BACKEND_POLL
from tests.support.clocks import FakeMonotonic
from tests.support.fake_kube import FakeKube

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
    assert kube.requests("PATCH") == 8  # nothing met a missing namespace or kind either
    # Told after each object of so small a bundle, ending with all of them.
    assert progress == [(n, 8) for n in range(1, 9)]
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
    # /api/v1, the CRD group and the new group (not served yet), then polls of the new
    # group every 0.1 s growing by half, up to 0.5 s, until it serves Widgets at 1.5 s:
    # at 0.1, 0.25, 0.475, 0.81, 1.31, 1.81.  The CRD itself, schema and all, is never
    # read back.
    assert kube.requests("GET", "discovery") == 3 + 6
    assert kube.requests("GET", "CustomResourceDefinition") == 0


def test_a_crd_slower_than_the_settle_time_is_reported_and_its_objects_wait(
    kube: FakeKube, clock: FakeMonotonic, make_applier: Callable[..., KubeApplier]
) -> None:
    kube.crd_establish_seconds = 30
    applier = make_applier(settle_seconds=1.0)
    bundle = [*hook_stack(), namespace("app"), widget_crd(), widget(), config_map()]
    summary = applier.apply(bundle)
    assert summary.waiting_for == (
        "ValidatingWebhookConfiguration check "
        "(after every CustomResourceDefinition is established)",
        "CustomResourceDefinition widgets.example.com (to be established)",
    )
    # What needs no CRD is in; the Widget waits for its CRD, and the webhook
    # configuration for everything else.
    assert kube.find("ConfigMap", "settings", "app") is not None
    assert kube.find("Widget", "w1", "app", group="example.com") is None
    assert kube.find("ValidatingWebhookConfiguration", "check") is None
    assert summary.applied == 6

    clock.advance(30)
    summary = applier.apply(bundle)
    assert (summary.applied, summary.unchanged, summary.waiting_for) == (2, 6, ())
    assert kube.find("Widget", "w1", "app", group="example.com") is not None
    assert kube.refusals == []


def test_objects_refused_by_a_webhook_from_elsewhere_are_retried_with_backoff(
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

    # The webhook's Service and Deployment are not in this bundle: nothing to watch.
    summary = make_applier(sleep=sleep).apply([namespace("app"), config_map(), config_map("other")])
    assert summary.waiting_for == ()
    assert kube.find("ConfigMap", "settings", "app") is not None
    assert len(kube.refusals) == 2 * 3  # both ConfigMaps, three rounds
    assert waits[1] > waits[0] * 0.9 and waits[2] > waits[1] * 0.9  # backing off


def test_objects_refused_by_a_webhook_of_the_bundle_go_in_once_its_server_is_up(
    kube: FakeKube, clock: FakeMonotonic, make_applier: Callable[..., KubeApplier]
) -> None:
    kube.never_available({"hooks/hook"})
    make_applier().apply(hook_stack())
    restored_at: list[float] = []

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if clock() >= 1003.0 and not restored_at:  # three seconds into the apply
            kube.restore_availability({"hooks/hook"})
            restored_at.append(clock())

    kube.reset_counters()
    started = clock()
    summary = make_applier(sleep=sleep).apply(
        [*hook_stack(), namespace("app"), config_map(), config_map("other")]
    )
    assert started == 1000.0
    assert summary.waiting_for == ()
    assert kube.find("ConfigMap", "other", "app") is not None
    # Refused once each; retried when the webhook's Deployment was seen Available, not
    # on a blind schedule: no refusal in between, and little time lost after it.
    assert len(kube.refusals) == 2
    assert kube.requests("GET", "Deployment") >= 4  # polled while it was not
    assert clock() - restored_at[0] <= MAX_BACKEND_POLL


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


def test_a_refusal_time_does_not_cure_stops_what_has_not_started(
    kube: FakeKube, make_applier: Callable[..., KubeApplier]
) -> None:
    good = [config_map(f"good-{n}", "default") for n in range(60)]
    with pytest.raises(PermanentError) as failed:
        make_applier(max_parallel=4).apply([config_map("Bad_Name", "default"), *good])
    assert failed.value.user_message.startswith("ConfigMap default/Bad_Name: ")
    # Only what went out alongside it (four at a time), and nothing after the error.
    sent = kube.requests("PATCH", "ConfigMap")
    assert sent < 30
    time.sleep(0.2)
    assert kube.requests("PATCH", "ConfigMap") == sent


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


# -- bodies -------------------------------------------------------------------------------


def test_apply_bodies_are_json_that_reads_the_same_as_yaml(
    kube: FakeKube, applier: KubeApplier
) -> None:
    cm = config_map(enabled="yes", version="1.10", nothing="null", octal="0755")
    # An unquoted date in a manifest is a date to a YAML loader.
    cm["metadata"]["annotations"] = {"example.com/since": datetime.date(2026, 3, 2)}
    item = desired(cm)
    sent = wire_body(item)
    # The API server decodes application/apply-patch+yaml as YAML; JSON is YAML, and
    # quoted, "yes" or "0755" stay strings where a YAML dump might have left them bare.
    assert yaml.safe_load(sent) == json.loads(sent)
    assert json.loads(sent)["metadata"]["annotations"] == {
        "example.com/since": "2026-03-02",
        HASH_ANNOTATION: item.digest,
    }

    assert applier.apply([namespace("app"), cm]).applied == 2
    stored = kube.find("ConfigMap", "settings", "app")
    assert stored is not None
    assert stored["data"] == {
        "enabled": "yes",
        "version": "1.10",
        "nothing": "null",
        "octal": "0755",
    }
    assert stored["metadata"]["annotations"]["example.com/since"] == "2026-03-02"
    assert applier.apply([namespace("app"), copy.deepcopy(cm)]).unchanged == 2


def test_the_hash_is_the_one_earlier_releases_wrote() -> None:
    # sha256 of the object without server-owned metadata, status or the hash annotation,
    # as canonical JSON: what is already stored on clusters must still match.
    plain = config_map()
    plain["metadata"].update(resourceVersion="7", annotations={HASH_ANNOTATION: "old"})
    plain["status"] = {"phase": "x"}
    dated = config_map()
    dated["metadata"]["annotations"] = {"since": datetime.datetime(2026, 3, 2, 9, 0)}
    for obj, cleaned in (
        (plain, config_map()),
        (dated, {**dated, "metadata": {**dated["metadata"]}}),
    ):
        canonical = json.dumps(cleaned, sort_keys=True, separators=(",", ":"), default=str)
        assert desired(obj).digest == hashlib.sha256(canonical.encode()).hexdigest()[:32]


def test_the_hash_is_that_of_the_object_as_the_bundle_gives_it(kube: FakeKube) -> None:
    # A cluster-scoped kind given a namespace, and a namespaced one given none: what is
    # sent differs from the bundle, the hash (compared on every re-apply) does not.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "reader", "namespace": "kubeflow"},
        "rules": [],
    }
    bare = config_map(ns="")
    del bare["metadata"]["namespace"]
    for obj in (role, bare):
        item = desired(obj)
        digest = item.digest
        other_scope = scoped(item, namespaced=not item.namespace)
        assert other_scope.namespace != item.namespace
        assert other_scope.digest == digest
