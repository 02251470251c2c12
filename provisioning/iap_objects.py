"""The Kubernetes objects that put Kubeflow behind IAP at its endpoints host.

Built by the IAP step (``create_steps.ensure_iap_ingress``) and applied to the new
cluster: a BackendConfig with IAP on, a ManagedCertificate for the host, and the
Ingress on the deployment's static IP, routed to Istio's ingress gateway.  Field values
follow kubeflow-distribution's ``common/iap-ingress``.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "istio-system"
BACKEND_CONFIG = "iap-backendconfig"
CERTIFICATE = "gke-certificate"
INGRESS = "envoy-ingress"
OAUTH_SECRET = "kubeflow-oauth"  # noqa: S105 - the Secret object's name, not a value


def iap_objects(
    host: str, address_name: str, *, custom_oauth: bool = False
) -> list[dict[str, Any]]:
    """The objects for ``host``; with ``custom_oauth`` IAP uses the ``kubeflow-oauth``
    Secret's client (created separately, its values never pass through here)."""
    iap: dict[str, Any] = {"enabled": True}
    if custom_oauth:
        iap["oauthclientCredentials"] = {"secretName": OAUTH_SECRET}
    backend = {"name": "istio-ingressgateway", "port": {"number": 80}}
    return [
        {
            "apiVersion": "cloud.google.com/v1",
            "kind": "BackendConfig",
            "metadata": {"name": BACKEND_CONFIG, "namespace": NAMESPACE},
            "spec": {
                # Jupyter keeps websockets open; the default 30 s would cut them.
                "timeoutSec": 3600,
                "healthCheck": {
                    "checkIntervalSec": 2,
                    "timeoutSec": 1,
                    "healthyThreshold": 1,
                    "unhealthyThreshold": 10,
                    "type": "HTTP",
                    "requestPath": "/healthz/ready",
                },
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
