"""The Kubernetes objects that put Kubeflow behind IAP at its endpoints host.

Built by the IAP step (``create_steps.ensure_iap_ingress``) and applied to the new
cluster: a BackendConfig with IAP on, a ManagedCertificate for the host, and the
Ingress on the deployment's static IP, routed to Istio's ingress gateway; with a custom
OAuth client, the ``kubeflow-oauth`` Secret holding it; once GKE has made the backend
service, the ``RequestAuthentication`` that has the gateway check IAP's signed header.
Field values follow kubeflow-distribution's ``common/iap-ingress`` (gcp-reference
section 2).
"""

from __future__ import annotations

import base64
from typing import Any

from provisioning.oauth import OAuthClient

NAMESPACE = "istio-system"
BACKEND_CONFIG = "iap-backendconfig"
CERTIFICATE = "gke-certificate"
INGRESS = "envoy-ingress"
OAUTH_SECRET = "kubeflow-oauth"  # noqa: S105 - the Secret object's name, not a value
REQUEST_AUTHENTICATION = "ingress-jwt"
# What IAP signs the requests it lets through with (gcp-reference S14, section 2).
IAP_ISSUER = "https://cloud.google.com/iap"
IAP_JWKS_URI = "https://www.gstatic.com/iap/verify/public_key-jwk"
IAP_JWT_HEADER = "x-goog-iap-jwt-assertion"
# The bundle's Istio CRD serves v1 (its storage version) and v1beta1.
ISTIO_SECURITY_API = "security.istio.io/v1"


def iap_objects(
    host: str,
    address_name: str,
    *,
    custom_oauth: bool = False,
    health_check_port: int | None = None,
) -> list[dict[str, Any]]:
    """The objects for ``host``; with ``custom_oauth`` IAP uses the ``kubeflow-oauth``
    Secret's client (``oauth_secret``; its values never pass through here).

    ``health_check_port`` is the gateway's ``status-port`` nodePort (gcp-reference S15):
    the gateway answers ``/healthz/ready`` on that port (its readiness probe's), not on
    the one it serves traffic on."""
    iap: dict[str, Any] = {"enabled": True}
    if custom_oauth:
        iap["oauthclientCredentials"] = {"secretName": OAUTH_SECRET}
    health_check: dict[str, Any] = {
        "checkIntervalSec": 2,
        "timeoutSec": 1,
        "healthyThreshold": 1,
        "unhealthyThreshold": 10,
        "type": "HTTP",
        "requestPath": "/healthz/ready",
    }
    if health_check_port is not None:
        health_check["port"] = health_check_port
    backend = {"name": "istio-ingressgateway", "port": {"number": 80}}
    return [
        {
            "apiVersion": "cloud.google.com/v1",
            "kind": "BackendConfig",
            "metadata": {"name": BACKEND_CONFIG, "namespace": NAMESPACE},
            "spec": {
                # Jupyter keeps websockets open; the default 30 s would cut them.
                "timeoutSec": 3600,
                "healthCheck": health_check,
                "iap": iap,
            },
        },
        {
            "apiVersion": "networking.gke.io/v1",
            "kind": "ManagedCertificate",
            "metadata": {"name": CERTIFICATE, "namespace": NAMESPACE},
            "spec": {"domains": [host]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": INGRESS,
                "namespace": NAMESPACE,
                "annotations": {
                    "kubernetes.io/ingress.allow-http": "false",
                    "kubernetes.io/ingress.global-static-ip-name": address_name,
                    "networking.gke.io/managed-certificates": CERTIFICATE,
                },
            },
            "spec": {
                "defaultBackend": {"service": backend},
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/*",
                                    "pathType": "ImplementationSpecific",
                                    "backend": {"service": backend},
                                }
                            ]
                        },
                    }
                ],
            },
        },
    ]


def oauth_secret(client: OAuthClient) -> dict[str, Any]:
    """The ``kubeflow-oauth`` Secret IAP's BackendConfig reads the custom client from.

    The only place the client secret's value is read; the object goes straight to the
    cluster and is never logged or stored (the applier's errors name objects only).

    The applier's ``kubeflow-bot/applied-hash`` annotation stays on it, on purpose: it is
    a truncated SHA-256 of the whole body, stored on this Secret beside the values it
    hashes, so whoever can read it can read the secret itself, and it lets a re-run
    skip the write (a new secret in the settings changes the hash and is applied)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": OAUTH_SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {
            "client_id": _base64(client.client_id),
            "client_secret": _base64(client.secret_value()),
        },
    }


def _base64(value: str) -> str:
    return base64.b64encode(value.encode()).decode("ascii")


def jwt_audience(project_number: str, backend_service_id: str) -> str:
    """What IAP puts in ``aud`` of the JWT it signs for requests to that backend service."""
    return f"/projects/{project_number}/global/backendServices/{backend_service_id}"


def request_authentication(audience: str) -> dict[str, Any]:
    """Has the ingress gateway verify IAP's signed header: a request carrying a JWT not
    signed by IAP for this backend service is refused (kubeflow-distribution
    ``iap-ingress/base/policy.yaml``)."""
    return {
        "apiVersion": ISTIO_SECURITY_API,
        "kind": "RequestAuthentication",
        "metadata": {"name": REQUEST_AUTHENTICATION, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "istio-ingressgateway"}},
            "jwtRules": [
                {
                    "issuer": IAP_ISSUER,
                    "jwksUri": IAP_JWKS_URI,
                    "audiences": [audience],
                    "fromHeaders": [{"name": IAP_JWT_HEADER}],
                }
            ],
        },
    }
