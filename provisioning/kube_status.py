"""What GKE reports about an Ingress on a cluster: address, backend health, certificate;
and the nodePorts the cluster gave a Service.

Called by the gcp cloud's ``ingress_state`` and ``service_node_ports`` for the IAP step,
with an ``ApiClient`` from ``kube_access``.  GKE's ingress controller writes the load
balancer's address into the Ingress status and each backend's health into the
``ingress.kubernetes.io/backends`` annotation; the ManagedCertificate's
``status.certificateStatus`` says when Google has issued the certificate (gcp-reference
S13).  Errors are translated here.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, NetworkingV1Api
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from provisioning.cloud import IngressState
from provisioning.errors import PermanentError, TemporaryError
from provisioning.google_calls import TRANSIENT_DELAY

BACKENDS_ANNOTATION = "ingress.kubernetes.io/backends"
_CERTIFICATES = ("networking.gke.io", "v1", "managedcertificates")
_TIMEOUT = (10.0, 30.0)


def ingress_state(
    api_client: ApiClient, *, namespace: str, ingress: str, certificate: str
) -> IngressState:
    """The Ingress ``namespace/ingress`` and the ManagedCertificate ``certificate`` now."""
    found = _read(
        f"Ingress {namespace}/{ingress}",
        lambda: NetworkingV1Api(api_client).read_namespaced_ingress(
            ingress, namespace, _request_timeout=_TIMEOUT
        ),
    )
    address = None
    backends: dict[str, str] = {}
    if found is not None:
        points = (
            found.status and found.status.load_balancer and found.status.load_balancer.ingress
        ) or []
        address = next((p.ip or p.hostname for p in points if p.ip or p.hostname), None)
        raw = (found.metadata.annotations or {}).get(BACKENDS_ANNOTATION)
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {}
            backends = (
                {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
            )
    group, version, plural = _CERTIFICATES
    cert = _read(
        f"ManagedCertificate {namespace}/{certificate}",
        lambda: CustomObjectsApi(api_client).get_namespaced_custom_object(
            group, version, namespace, plural, certificate, _request_timeout=_TIMEOUT
        ),
    )
    status = (cert or {}).get("status") or {}
    return IngressState(
        address=address,
        backends=backends,
        certificate=status.get("certificateStatus") if isinstance(status, dict) else None,
    )


def service_node_ports(
    api_client: ApiClient, *, namespace: str, name: str
) -> dict[str, int] | None:
    """``{port name: nodePort}`` of the Service ``namespace/name``; None when absent."""
    found = _read(
        f"Service {namespace}/{name}",
        lambda: CoreV1Api(api_client).read_namespaced_service(
            name, namespace, _request_timeout=_TIMEOUT
        ),
    )
    if found is None:
        return None
    ports = (found.spec and found.spec.ports) or []
    return {p.name: int(p.node_port) for p in ports if p.name and p.node_port}


def _backends(raw: str | None) -> dict[str, str]:
    """``{"k8s-be-30000--abc": "HEALTHY"}`` from the annotation; empty until GKE writes it."""
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


def _read(what: str, call: Any) -> Any:
    """``call()``, None when the object is not there (yet)."""
    try:
        return call()
    except ApiException as e:
        if e.status == 404:
            return None
        if e.status in (401, 403):
            raise PermanentError(
                f"the cluster's API server refused the bot's credentials reading {what}; "
                "ask the bot's operators to check its service account's access"
            ) from e
        raise TemporaryError(
            f"the cluster's API server answered {e.status} reading {what}", delay=TRANSIENT_DELAY
        ) from e
    except (HTTPError, OSError) as e:
        raise TemporaryError(
            f"could not reach the cluster's API server to read {what}", delay=TRANSIENT_DELAY
        ) from e
