"""The GKE-specific changes to the Kubeflow bundle, made in code before it is applied.

Called by the Kubeflow step (``create_steps.ensure_kubeflow``) on the bundle's objects,
and by the IAP step to learn whether the bundle brings Istio's ingress gateway at all.
Upstream Kubeflow makes the ``istio-ingressgateway`` Service a ClusterIP; GKE's Ingress
without NEGs needs a NodePort (its backends are ``k8s-be-<nodePort>--<hash>``, and the
health check goes to the ``status-port`` nodePort), and the annotations that put the
IAP BackendConfig on the ``http2`` port and keep NEGs off (kubeflow-distribution
``asm/options/ingressgateway-iap.yaml``; gcp-reference S12).  Changing the one Service
object here means it is applied once, with these fields, by the one field manager.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SERVICE = "istio-ingressgateway"
# The Service's ports the IAP objects refer to, by name.
HTTP_PORT = "http2"
STATUS_PORT = "status-port"
BACKEND_CONFIG_ANNOTATION = "cloud.google.com/backend-config"
NEG_ANNOTATION = "cloud.google.com/neg"


def is_gateway_service(obj: Mapping[str, Any]) -> bool:
    metadata = obj.get("metadata") or {}
    return (
        obj.get("apiVersion") == "v1"
        and obj.get("kind") == "Service"
        and metadata.get("name") == GATEWAY_SERVICE
        and metadata.get("namespace") == GATEWAY_NAMESPACE
    )


def has_gateway(objects: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the bundle brings Istio's ingress gateway Service."""
    return any(is_gateway_service(obj) for obj in objects)


def gateway_service(obj: Mapping[str, Any], backend_config: str) -> dict[str, Any]:
    """The gateway Service ``obj`` as GKE's Ingress needs it (a copy; ``obj`` stays)."""
    patched: dict[str, Any] = copy.deepcopy(dict(obj))
    metadata = patched.setdefault("metadata", {})
    annotations = dict(metadata.get("annotations") or {})
    # Spelled as kubeflow-distribution spells them; GKE parses both as JSON.
    annotations[BACKEND_CONFIG_ANNOTATION] = f'{{"ports": {{"{HTTP_PORT}":"{backend_config}"}}}}'
    annotations[NEG_ANNOTATION] = '{"ingress":false}'

    metadata["annotations"] = annotations
    spec = patched.setdefault("spec", {})
    # The API server gives each port a nodePort; the bundle names none, so re-applying
    # keeps the ones given.
    spec["type"] = "NodePort"
    return patched


def gke_overlay(
    objects: Sequence[Mapping[str, Any]], *, backend_config: str
) -> list[Mapping[str, Any]]:
    """``objects`` with the gateway Service changed for GKE; the rest are the same objects
    (not copies: the bundle is large and read once)."""
    return [
        gateway_service(obj, backend_config) if is_gateway_service(obj) else obj for obj in objects
    ]


def backend_of(backends: Mapping[str, str], node_port: int) -> str | None:
    """The backend service GKE made for ``node_port``, from the Ingress's backends
    annotation (``{"k8s-be-31380--0123456789abcdef": "HEALTHY"}``), or None yet."""
    prefix = f"k8s-be-{node_port}--"
    return next((name for name in sorted(backends) if name.startswith(prefix)), None)
