"""The GKE overlay on the Kubeflow bundle, and the IAP objects built in code.

The overlay runs on the shared rendered bundle (``/work/shared/data``), the one the
image carries, so a bundle whose gateway Service moved or changed shape shows up here.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from provisioning.gke_overlay import (
    BACKEND_CONFIG_ANNOTATION,
    NEG_ANNOTATION,
    backend_of,
    gke_overlay,
    has_gateway,
    is_gateway_service,
)
from provisioning.iap_objects import (
    BACKEND_CONFIG,
    iap_objects,
    jwt_audience,
    oauth_secret,
    request_authentication,
)
from provisioning.oauth import OAuthClient

BUNDLE = Path("/work/shared/data/kubeflow-26.03-example.yaml.gz")
SECRET = "GOCSPX-not-a-real-secret-0123456789"


@cache
def bundle() -> tuple[dict[str, Any], ...]:
    if not BUNDLE.exists():
        pytest.skip(f"{BUNDLE} is not on this machine")
    with gzip.open(BUNDLE, "rt", encoding="utf-8") as stream:
        return tuple(d for d in yaml.safe_load_all(stream) if isinstance(d, dict))


def gateway(objects: list[Any] | tuple[Any, ...]) -> Any:
    [found] = [obj for obj in objects if is_gateway_service(obj)]
    return found


def test_the_bundle_has_the_gateway_service_as_upstream_makes_it() -> None:
    service = gateway(bundle())
    assert service["spec"]["type"] == "ClusterIP"
    names = {port["name"] for port in service["spec"]["ports"]}
    assert {"http2", "status-port"} <= names
    assert not any("nodePort" in port for port in service["spec"]["ports"])


def test_the_overlay_makes_the_gateway_a_node_port_service_with_the_gke_annotations() -> None:
    service = gateway(gke_overlay(bundle(), backend_config=BACKEND_CONFIG))

    assert service["spec"]["type"] == "NodePort"
    annotations = service["metadata"]["annotations"]
    assert annotations[BACKEND_CONFIG_ANNOTATION] == '{"ports": {"http2":"iap-backendconfig"}}'
    assert annotations[NEG_ANNOTATION] == '{"ingress":false}'
    assert json.loads(annotations[BACKEND_CONFIG_ANNOTATION]) == {
        "ports": {"http2": "iap-backendconfig"}
    }
    # Ports, selector and labels as the bundle has them.
    original = gateway(bundle())
    assert service["spec"]["ports"] == original["spec"]["ports"]
    assert service["spec"]["selector"] == original["spec"]["selector"]
    assert service["metadata"]["labels"] == original["metadata"]["labels"]


def test_the_overlay_changes_only_the_gateway_and_leaves_the_bundle_as_it_was() -> None:
    before = copy.deepcopy(bundle())

    overlaid = gke_overlay(bundle(), backend_config=BACKEND_CONFIG)

    assert bundle() == before
    assert len(overlaid) == len(before)
    changed = [i for i, (a, b) in enumerate(zip(overlaid, bundle(), strict=True)) if a != b]
    assert [overlaid[i]["metadata"]["name"] for i in changed] == ["istio-ingressgateway"]
    # One gateway Service, applied once.
    assert sum(is_gateway_service(obj) for obj in overlaid) == 1


def test_a_service_of_that_name_elsewhere_is_not_the_gateway() -> None:
    other = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "kubeflow"},
        "spec": {"type": "ClusterIP"},
    }
    assert gke_overlay([other], backend_config=BACKEND_CONFIG) == [other]
    assert not has_gateway([other])
    assert has_gateway(bundle())


@pytest.mark.parametrize(
    ("backends", "found"),
    [
        ({"k8s-be-31380--5f1c": "HEALTHY", "k8s-be-30000--5f1c": "HEALTHY"}, "k8s-be-31380--5f1c"),
        ({"k8s-be-313800--5f1c": "HEALTHY"}, None),
        ({"k8s-be-30000--5f1c": "HEALTHY"}, None),
        ({}, None),
    ],
)
def test_the_gateway_backend_is_the_one_named_after_its_http2_node_port(
    backends: dict[str, str], found: str | None
) -> None:
    assert backend_of(backends, 31380) == found


def test_the_backend_config_health_check_goes_to_the_status_port_node_port() -> None:
    [config, *_] = iap_objects("h.example", "demo-ip", health_check_port=31021)
    assert config["spec"]["healthCheck"]["port"] == 31021
    assert config["spec"]["healthCheck"]["requestPath"] == "/healthz/ready"
    [without, *_] = iap_objects("h.example", "demo-ip")
    assert "port" not in without["spec"]["healthCheck"]


def test_google_s_managed_client_needs_no_credentials_in_the_backend_config() -> None:
    [managed, *_] = iap_objects("h.example", "demo-ip")
    [custom, *_] = iap_objects("h.example", "demo-ip", custom_oauth=True)
    assert managed["spec"]["iap"] == {"enabled": True}
    assert custom["spec"]["iap"] == {
        "enabled": True,
        "oauthclientCredentials": {"secretName": "kubeflow-oauth"},
    }


def test_the_oauth_secret_holds_the_client_under_the_keys_iap_reads() -> None:
    secret = oauth_secret(OAuthClient("123-abc.apps.googleusercontent.com", SecretStr(SECRET)))
    assert (secret["kind"], secret["metadata"]) == (
        "Secret",
        {"name": "kubeflow-oauth", "namespace": "istio-system"},
    )
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"client_id": "123-abc.apps.googleusercontent.com", "client_secret": SECRET}


def test_the_oauth_client_never_shows_its_secret() -> None:
    client = OAuthClient("123-abc.apps.googleusercontent.com", SecretStr(SECRET))
    assert SECRET not in repr(client)
    assert SECRET not in str(client)
    assert SECRET not in f"{client}"
    assert client.secret_value() == SECRET
    with pytest.raises(ValueError, match="secret is empty"):
        OAuthClient("id", SecretStr("  "))


def test_the_request_authentication_checks_iap_s_jwt_for_the_backend_service() -> None:
    audience = jwt_audience("271828182845", "4000000000000000123")
    assert audience == "/projects/271828182845/global/backendServices/4000000000000000123"
    policy = request_authentication(audience)
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["metadata"] == {"name": "ingress-jwt", "namespace": "istio-system"}
    assert policy["spec"] == {
        "selector": {"matchLabels": {"app": "istio-ingressgateway"}},
        "jwtRules": [
            {
                "issuer": "https://cloud.google.com/iap",
                "jwksUri": "https://www.gstatic.com/iap/verify/public_key-jwk",
                "audiences": [audience],
                "fromHeaders": [{"name": "x-goog-iap-jwt-assertion"}],
            }
        ],
    }


def test_the_bundle_s_istio_serves_the_request_authentication_version_used() -> None:
    [crd] = [
        d
        for d in bundle()
        if d.get("kind") == "CustomResourceDefinition"
        and d["metadata"]["name"] == "requestauthentications.security.istio.io"
    ]
    served = {v["name"] for v in crd["spec"]["versions"] if v.get("served")}
    version = request_authentication("a")["apiVersion"].split("/")[1]
    assert version in served
