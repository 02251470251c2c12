"""A stateful fake Kubernetes API server over HTTPS, for the Kubeflow manifest applier.

Used by the tests of the Kubeflow apply step (and ``tests/support/test_fake_kube.py``):
the real ``kubernetes`` client (``ApiClient`` + ``kubernetes.dynamic.DynamicClient``) and
kubectl talk to it as to a GKE control plane.  It binds 127.0.0.1 on a free port, serves
TLS with a throwaway CA (``tests/support/kube_ca.py``; ``.ca_pem`` / ``.ca_base64`` is what
a fake GKE hands out as ``master_auth.cluster_ca_certificate``), keeps HTTP/1.1
connections alive and answers ``application/json``.

What it serves:

* Auth: every request needs ``Authorization: Bearer <token>`` (any non-empty token, or
  one of ``tokens``); 401 otherwise.  Tokens seen are recorded in ``tokens_seen``.
* Legacy discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/G``,
  ``/apis/G/V``) for the built-in kinds in ``BUILTIN_TYPES`` (those of the Kubeflow bundle
  plus a few neighbours) and for the kinds of CustomResourceDefinitions once they are
  Established.  No aggregated discovery, no ``/openapi`` (404: kubectl needs
  ``--validate=false``).
* Server-side apply (``PATCH`` with ``application/apply-patch+yaml``, JSON or YAML body,
  ``fieldManager`` required, ``force=true`` honoured) as an upsert: 201 on create, 200
  otherwise.  Each manager's last applied configuration is kept; the object is their deep
  merge (maps merge, lists and scalars replace).  A manager that drops a field loses it
  unless another manager sets it.  A field another manager set to a different value is a
  409 conflict unless ``force=true``, which moves the field to the applier.
  ``resourceVersion`` (a global counter) moves only when something changed; ``generation``
  moves when anything outside ``metadata`` / ``status`` changed.
* ``POST`` (create only, 409 if it exists), ``GET`` one, ``LIST`` (one namespace or all,
  ``labelSelector`` with ``=``, ``!=``, ``k``, ``!k``), ``DELETE`` one (immediate; a
  Namespace takes its objects with it, a CRD its custom objects).
* Validation like the API server: names (DNS subdomain; Namespace DNS label; Service
  DNS-1035 label; RBAC kinds path segment; CRD ``<plural>.<group>``), kind / apiVersion /
  name / namespace of the body against the URL, the namespace must exist (404
  ``namespaces "x" not found``), unknown resources are 404 (what a client sees before a
  CRD is Established).
* CRDs become Established (``status.conditions`` Established and NamesAccepted True)
  ``crd_establish_seconds`` after they are first applied; only then are their kinds
  served.
* Admission webhooks: Validating/MutatingWebhookConfigurations are obeyed the way an
  unready cluster does.  A webhook whose rules match the request (apiGroups, resources,
  operations, scope; ``*`` wildcards) and whose namespaceSelector / objectSelector match
  refuses it with HTTP 500 ``failed calling webhook "NAME": ... no endpoints available
  for service "svc"`` until a Deployment in the Service's namespace whose pod template
  labels match the Service's selector is Available.  ``failurePolicy: Ignore`` webhooks
  never refuse.  Mutating webhooks do not mutate.
* Deployments (``apps``) become Available ``deployment_ready_seconds`` after creation
  (``never_available`` keeps named ones unavailable).  Ingresses (``networking.k8s.io``)
  get ``status.loadBalancer.ingress[0].ip`` and the ``ingress.kubernetes.io/backends``
  annotation ``ingress_ready_seconds`` after creation, and ManagedCertificates (served once
  their CRD is installed, as on GKE) turn from Provisioning to Active
  ``certificate_ready_seconds`` after creation (what GKE's controllers do,
  see gcp-reference S13).  A ready Ingress's backends are named, as GKE names them,
  ``k8s-be-<nodePort>--<hash>`` after the nodePorts of the Service ports it routes to;
  ``ingress_backends`` when none has one.
* NodePort and LoadBalancer Services: each port the object gives no ``nodePort`` gets
  one, the lowest free in 30000-32767, unique in the cluster and kept across re-applies
  (assigned when first read back; explicit ones are not checked for clashes).
* ``latency_seconds`` is slept before each answer.  Counters: ``request_counts`` by
  (HTTP method, Kind), ``applies_changed`` / ``applies_unchanged``, ``refusals``.

Timers are lazy: state moves when a request (or an inspection method) arrives and the
injected ``clock`` has passed the due time, so a ``FakeMonotonic`` makes tests exact.

Simplifications (beyond those above): no watch, no subresources (``/status``,
``/scale``), no PUT, no merge / strategic / JSON patches (415), no dry run, no
``resourceVersion`` preconditions, no finalizers or Terminating namespaces, no
``generateName``, no defaulting or schema validation; status in apply bodies is ignored;
webhook rules match any version of a resource (as ``matchPolicy: Equivalent`` mostly
does) and URL (non-Service) webhooks count as reachable; only Deployments back a
Service; managedFields are per manager but ``fieldsV1`` lists maps only (a list is one
field); every kind gets a ``generation``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.support.kube_ca import KubeCertificates, make_certificates
from tests.support.serving import BackgroundServer, ConnectionTracking

HOST = "127.0.0.1"
APPLY_PATCH = "application/apply-patch+yaml"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_INGRESS_BACKENDS: Mapping[str, str] = {"k8s-be-30000--abc": "HEALTHY"}
BACKENDS_ANNOTATION = "ingress.kubernetes.io/backends"
# GKE ends each backend service's name with a hash of the cluster's UID.
GKE_CLUSTER_HASH = "5f1c9e3a7d2b4c60"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-gke.fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# Server-owned metadata that an apply body may carry (kustomize writes
# ``creationTimestamp: null``) but that never belongs to a manager's configuration.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

Json = dict[str, Any]
_Key = tuple[str, str, str, str]  # (group, plural, namespace or "", name)


@dataclass(frozen=True)
class ResourceType:
    """One served resource: what discovery lists and URLs address."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    singular: str = ""
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``configmaps``: how the API names it in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> Json:
        entry: Json = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        return entry


def _builtin(
    group: str, version: str, kind: str, plural: str, namespaced: bool, *short: str
) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, tuple(short))


# The built-in kinds of the Kubeflow 26.03 bundle (../shared/data), plus Ingress, Pod,
# Job/CronJob, PriorityClass, IngressClass and StorageClass, which an applier may meet.
BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _builtin("", "v1", "Namespace", "namespaces", False, "ns"),
    _builtin("", "v1", "ServiceAccount", "serviceaccounts", True, "sa"),
    _builtin("", "v1", "ConfigMap", "configmaps", True, "cm"),
    _builtin("", "v1", "Secret", "secrets", True),
    _builtin("", "v1", "Service", "services", True, "svc"),
    _builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, "pvc"),
    _builtin("", "v1", "Pod", "pods", True, "po"),
    _builtin("apps", "v1", "Deployment", "deployments", True, "deploy"),
    _builtin("apps", "v1", "StatefulSet", "statefulsets", True, "sts"),
    _builtin("apps", "v1", "DaemonSet", "daemonsets", True, "ds"),
    _builtin("batch", "v1", "Job", "jobs", True),
    _builtin("batch", "v1", "CronJob", "cronjobs", True, "cj"),
    _builtin("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    _builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, "pdb"),
    _builtin("networking.k8s.io", "v1", "Ingress", "ingresses", True, "ing"),
    _builtin("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    _builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, "netpol"),
    _builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    _builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        "crd",
        "crds",
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        False,
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        False,
    ),
    _builtin("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, "pc"),
    _builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, "sc"),
)

_CRD = ("apiextensions.k8s.io", "customresourcedefinitions")
_DEPLOYMENT = ("apps", "deployments")
_INGRESS = ("networking.k8s.io", "ingresses")
_CERTIFICATE = ("networking.gke.io", "managedcertificates")
_NAMESPACE = ("", "namespaces")
_WEBHOOK_CONFIGS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
_ADMISSION_GROUP = "admissionregistration.k8s.io"
_RBAC_GROUP = "rbac.authorization.k8s.io"

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The API server's own wording, so that error messages read like the real ones.
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. "
    "'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
    "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
    "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_LABEL_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
    "with an alphabetic character, and end with an alphanumeric character (e.g. "
    "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version order: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (0, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {"alpha": 1, "beta": 2}.get(stage or "", 3)
    return (rank, int(major), int(minor or 0), version)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_body(code: int, reason: str, message: str, details: Json | None = None) -> Json:
    body: Json = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


class ApiError(Exception):
    """An answer in the API server's ``Status`` shape."""

    def __init__(self, code: int, reason: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = _status_body(code, reason, message, details)


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rtype.qualified} "{name}" not found',
        {"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def _no_such_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _invalid(rtype: ResourceType, name: str, field_path: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{rtype.kind} "{name}" is invalid: {field_path}: {message}',
        {
            "name": name,
            "group": rtype.group,
            "kind": rtype.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field_path}],
        },
    )


# -- plain-data helpers ---------------------------------------------------------------


def _drop_nulls(value: Any) -> Any:
    """An apply body's ``null`` means "no opinion"; it never becomes stored data."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _merge_into(target: Json, source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _leaves(
    value: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, item in value.items():
        if isinstance(item, dict) and item:
            yield from _leaves(item, (*prefix, key))
        else:
            yield (*prefix, key), item


def _lookup(value: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    current: Any = value
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return False, None
        current = current[key]
    return True, current


def _remove(value: Json, path: tuple[str, ...]) -> None:
    """Remove ``path`` and the maps it leaves empty."""
    parents: list[Json] = [value]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 2, -1, -1):
        if not parents[depth + 1]:
            parents[depth].pop(path[depth], None)


def _fields_v1(value: Mapping[str, Any]) -> Json:
    return {
        f"f:{key}": _fields_v1(item) if isinstance(item, dict) else {}
        for key, item in value.items()
    }


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector; an empty or absent one matches everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _label_query_matches(query: str, labels: Mapping[str, str]) -> bool:
    """The equality-based ``labelSelector`` query syntax (``a=b,c!=d,e,!f``)."""
    for term in filter(None, (part.strip() for part in query.split(","))):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _parse_body(raw: bytes) -> Any:
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader, C or Python)


# -- stored objects -------------------------------------------------------------------


@dataclass
class _Layer:
    """What one field manager last applied (or wrote)."""

    config: Json
    operation: str
    api_version: str
    time: str


@dataclass
class _Stored:
    group: str
    plural: str
    kind: str
    namespace: str
    name: str
    api_version: str
    uid: str
    created: str
    created_at: float
    resource_version: int
    generation: int = 1
    layers: dict[str, _Layer] = field(default_factory=dict)
    merged: Json = field(default_factory=dict)
    ready: bool = False  # Established / Available / load balancer assigned, by kind
    ready_at: float | None = None

    @property
    def key(self) -> _Key:
        return (self.group, self.plural, self.namespace, self.name)

    @property
    def labels(self) -> dict[str, str]:
        labels = dict((self.merged.get("metadata") or {}).get("labels") or {})
        if (self.group, self.plural) == _NAMESPACE:
            labels[NAMESPACE_NAME_LABEL] = self.name
        return labels


def _merge_layers(layers: Mapping[str, _Layer]) -> Json:
    merged: Json = {}
    for layer in layers.values():
        _merge_into(merged, layer.config)
    return merged


def _spec_part(obj: Mapping[str, Any]) -> Json:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


# -- HTTP plumbing --------------------------------------------------------------------


class _Server(ConnectionTracking, ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
    fake: FakeKube

    def __init__(self, fake: FakeKube, context: ssl.SSLContext) -> None:
        self.fake = fake
        super().__init__((HOST, 0), _Handler)
        # The handshake is deferred to the handler's thread (``_Handler.setup``): done on
        # accept, one slow or refusing client would stall the accept loop for everyone.
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that refused our certificate or hung up: expected in tests
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it each answer waits ~40 ms for the client's delayed ACK (Nagle).
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, *args: Any) -> None:
        pass  # keep test output quiet

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake = self.server.fake
        try:
            status, answer = fake._answer(self.command, self.path, headers, body)
        except Exception as e:  # noqa: BLE001 (a fake's bug must reach the test, not hang it)
            fake._record_error(f"{self.command} {self.path}: {e!r}")
            status, answer = 500, _status_body(500, "InternalError", f"fake_kube bug: {e!r}")
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(payload)


@dataclass
class _Request:
    method: str
    kind: str = ""


# -- the fake -------------------------------------------------------------------------


class FakeKube(BackgroundServer):
    """A Kubernetes API server on ``https://127.0.0.1:PORT``; see the module docstring.

    Use as a context manager or ``start()`` / ``stop()``.  The delays and
    ``latency_seconds`` are plain attributes and may be changed while it runs (a delay
    counts from the object's creation and is read then).
    """

    thread_name = "fake-kube"

    def __init__(
        self,
        *,
        tokens: Collection[str] | None = None,
        crd_establish_seconds: float = 0.2,
        deployment_ready_seconds: float = 0.3,
        ingress_ready_seconds: float = 0.5,
        certificate_ready_seconds: float = 0.5,
        ingress_ip: str = "203.0.113.10",
        ingress_backends: Mapping[str, str] = DEFAULT_INGRESS_BACKENDS,
        latency_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        certificates: KubeCertificates | None = None,
    ) -> None:
        self.tokens: set[str] | None = None if tokens is None else set(tokens)
        self.crd_establish_seconds = crd_establish_seconds
        self.deployment_ready_seconds = deployment_ready_seconds
        self.ingress_ready_seconds = ingress_ready_seconds
        self.certificate_ready_seconds = certificate_ready_seconds
        self.ingress_ip = ingress_ip
        self.ingress_backends = dict(ingress_backends)
        self.latency_seconds = latency_seconds
        self._clock = clock
        self.certificates = certificates or make_certificates(HOST)
        self._lock = threading.RLock()
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._objects: dict[_Key, _Stored] = {}
        self._waiting: dict[_Key, _Stored] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}
        self._never_available: set[str] = set()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._applies_changed = 0
        self._applies_unchanged = 0
        self._tokens_seen: list[str] = []
        self._refusals: list[str] = []
        self._errors: list[str] = []
        self._node_ports: dict[tuple[_Key, str], int] = {}  # (Service, port) -> nodePort
        namespace_type = self._builtin_type("", "namespaces")
        for name in namespaces:
            self._create(
                namespace_type,
                "",
                name,
                {"metadata": {"name": name}},
                manager="kube-apiserver",
                operation="Update",
            )

    # -- lifecycle ---------------------------------------------------------------------

    def _new_server(self) -> _Server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["http/1.1"])  # Go clients would otherwise try h2
        # load_cert_chain reads files only; they live just long enough to be read.
        with tempfile.TemporaryDirectory(prefix="fake-kube-") as directory:
            cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
            with open(cert, "wb") as f:
                f.write(self.certificates.cert_pem)
            with open(key, "wb") as f:
                f.write(self.certificates.key_pem)
            context.load_cert_chain(cert, key)
        return _Server(self, context)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return self.certificates.ca_pem

    @property
    def ca_base64(self) -> str:
        """As GKE's ``master_auth.cluster_ca_certificate``."""
        return self.certificates.ca_base64

    def write_ca(self, path: str | os.PathLike[str]) -> str:
        """Write the CA PEM to ``path`` (for ``ssl_ca_cert`` / ``--certificate-authority``)."""
        with open(path, "wb") as f:
            f.write(self.ca_pem)
        return os.fspath(path)

    # -- behaviour switches -------------------------------------------------------------

    def never_available(self, names: Iterable[str]) -> None:
        """Keep these Deployments (``"namespace/name"``) unavailable until restored."""
        with self._lock:
            self._never_available.update(names)

    def restore_availability(self, names: Iterable[str]) -> None:
        """Undo ``never_available``: they become Available once their delay has passed."""
        with self._lock:
            self._never_available.difference_update(names)
            self._settle()

    # -- inspection ---------------------------------------------------------------------

    def find(
        self, kind: str, name: str, namespace: str | None = None, *, group: str | None = None
    ) -> Json | None:
        """The stored object as the API would return it, or None.

        ``group`` tells apart kinds that several groups define (``Certificate``,
        ``Ingress``, knative's ``Service``); without it such a lookup raises ValueError.
        """
        with self._lock:
            self._settle()
            found = [
                stored
                for stored in self._objects.values()
                if stored.kind == kind
                and stored.name == name
                and stored.namespace == (namespace or "")
                and (group is None or stored.group == group)
            ]
            if len(found) > 1:
                groups = sorted(s.group for s in found)
                raise ValueError(f"{kind} {name!r} exists in several groups {groups}: pass group")
            return self._render(found[0]) if found else None

    def objects(
        self, kind: str | None = None, *, group: str | None = None, namespace: str | None = None
    ) -> list[Json]:
        """Stored objects (rendered), optionally of one kind / group / namespace."""
        with self._lock:
            self._settle()
            return [
                self._render(stored)
                for stored in self._objects.values()
                if (kind is None or stored.kind == kind)
                and (group is None or stored.group == group)
                and (namespace is None or stored.namespace == namespace)
            ]

    def served_kinds(self) -> set[tuple[str, str]]:
        """(apiVersion, kind) of everything discovery lists now."""
        with self._lock:
            self._settle()
            return {(t.api_version, t.kind) for t in self._types()}

    @property
    def request_counts(self) -> Counter[tuple[str, str]]:
        """Requests by (HTTP method, Kind); discovery counts as kind ``"discovery"``,
        unknown resources under their URL name, refused tokens as ``"unauthorized"``."""
        with self._lock:
            return Counter(self._requests)

    def requests(self, method: str | None = None, kind: str | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (m, k), n in self._requests.items()
                if (method is None or m == method) and (kind is None or k == kind)
            )

    @property
    def applies_changed(self) -> int:
        """Server-side applies (and creates) that wrote something."""
        with self._lock:
            return self._applies_changed

    @property
    def applies_unchanged(self) -> int:
        """Server-side applies that found nothing to change (no resourceVersion bump)."""
        with self._lock:
            return self._applies_unchanged

    @property
    def tokens_seen(self) -> list[str]:
        with self._lock:
            return list(self._tokens_seen)

    @property
    def refusals(self) -> list[str]:
        """Messages of webhook refusals, in order."""
        with self._lock:
            return list(self._refusals)

    @property
    def errors(self) -> list[str]:
        """Exceptions raised inside the fake itself (answered as HTTP 500): should be empty."""
        with self._lock:
            return list(self._errors)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._applies_changed = self._applies_unchanged = 0
            self._tokens_seen.clear()
            self._refusals.clear()

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    # -- types and timers (lock held) --------------------------------------------------------

    def _types(self) -> list[ResourceType]:
        types = list(BUILTIN_TYPES)
        for crd_types in self._crd_types.values():
            types.extend(crd_types)
        return types

    def _type(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rtype in self._types():
            if (rtype.group, rtype.version, rtype.plural) == (group, version, plural):
                return rtype
        return None

    @staticmethod
    def _builtin_type(group: str, plural: str) -> ResourceType:
        return next(t for t in BUILTIN_TYPES if (t.group, t.plural) == (group, plural))

    def _next_rv(self) -> int:
        self._last_rv = next(self._rv)
        return self._last_rv

    def _settle(self) -> None:
        """Move every timer that is due: CRDs establish, Deployments and Ingresses get ready."""
        now = self._clock()
        for key, stored in list(self._waiting.items()):
            if stored.ready_at is None or stored.ready_at > now:
                continue
            if (stored.group, stored.plural) == _DEPLOYMENT and (
                f"{stored.namespace}/{stored.name}" in self._never_available
            ):
                continue
            del self._waiting[key]
            stored.ready = True
            stored.resource_version = self._next_rv()
            if (stored.group, stored.plural) == _CRD:
                self._register_crd(stored)

    def _register_crd(self, stored: _Stored) -> None:
        spec = stored.merged.get("spec") or {}
        names = spec.get("names") or {}
        self._crd_types[stored.name] = [
            ResourceType(
                group=spec.get("group", ""),
                version=version.get("name", ""),
                kind=names.get("kind", ""),
                plural=names.get("plural", ""),
                namespaced=spec.get("scope") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                singular=names.get("singular") or names.get("kind", "").lower(),
                categories=tuple(names.get("categories") or ()),
            )
            for version in spec.get("versions") or []
            if version.get("served", True)
        ]

    # -- rendering (lock held) -----------------------------------------------------------

    def _render(self, stored: _Stored, api_version: str | None = None) -> Json:
        obj = copy.deepcopy(stored.merged)
        obj["apiVersion"] = api_version or stored.api_version
        obj["kind"] = stored.kind
        metadata: Json = obj.setdefault("metadata", {})
        metadata["name"] = stored.name
        if stored.namespace:
            metadata["namespace"] = stored.namespace
        else:
            metadata.pop("namespace", None)
        metadata.update(
            uid=stored.uid,
            resourceVersion=str(stored.resource_version),
            generation=stored.generation,
            creationTimestamp=stored.created,
            managedFields=[
                {
                    "manager": manager,
                    "operation": layer.operation,
                    "apiVersion": layer.api_version,
                    "time": layer.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": _fields_v1(
                        {k: v for k, v in layer.config.items() if k not in ("apiVersion", "kind")}
                    ),
                }
                for manager, layer in stored.layers.items()
            ],
        )
        kind = (stored.group, stored.plural)
        if kind == _NAMESPACE:
            metadata.setdefault("labels", {})[NAMESPACE_NAME_LABEL] = stored.name
            obj["status"] = {"phase": "Active"}
        elif kind == _CRD:
            obj["status"] = self._crd_status(stored)
        elif kind == _DEPLOYMENT:
            obj["status"] = self._deployment_status(stored)
        elif kind == _INGRESS:
            obj["status"] = {"loadBalancer": {}}
            if stored.ready:
                obj["status"] = {"loadBalancer": {"ingress": [{"ip": self.ingress_ip}]}}
                metadata.setdefault("annotations", {})[BACKENDS_ANNOTATION] = json.dumps(
                    self._ingress_backends(stored), separators=(",", ":")
                )
        elif kind == ("", "services"):
            self._give_node_ports(stored, obj.get("spec") or {})
        elif kind == _CERTIFICATE:
            # What GKE's managed-certificate controller reports (gcp-reference S13).
            domains = (stored.merged.get("spec") or {}).get("domains") or []
            status = "Active" if stored.ready else "Provisioning"
            obj["status"] = {
                "certificateStatus": status,
                "domainStatus": [{"domain": d, "status": status} for d in domains],
            }
        return obj

    def _give_node_ports(self, stored: _Stored, spec: Json) -> None:
        """Fill in the nodePorts the API server gives a NodePort or LoadBalancer Service."""
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            for slot in [s for s in self._node_ports if s[0] == stored.key]:
                del self._node_ports[slot]  # released, as when the type goes back
            return
        used = {port for (key, _), port in self._node_ports.items() if key in self._objects}
        for port in spec.get("ports") or []:
            if not isinstance(port, dict) or port.get("nodePort"):
                continue
            slot = (stored.key, str(port.get("name") or port.get("port")))
            if slot not in self._node_ports:
                self._node_ports[slot] = next(p for p in range(30000, 32768) if p not in used)
                used.add(self._node_ports[slot])
            port["nodePort"] = self._node_ports[slot]

    def _ingress_backends(self, stored: _Stored) -> Mapping[str, str]:
        """GKE's name for each Service port the Ingress routes to that has a nodePort."""
        spec = stored.merged.get("spec") or {}
        refs = [spec.get("defaultBackend")] + [
            path.get("backend")
            for rule in spec.get("rules") or []
            for path in (rule.get("http") or {}).get("paths") or []
        ]
        found: dict[str, str] = {}
        for ref in refs:
            wanted = (ref or {}).get("service") or {}
            name = wanted.get("name")
            service = self._objects.get(("", "services", stored.namespace, name)) if name else None
            if service is None:
                continue
            port_ref = wanted.get("port") or {}
            for port in (self._render(service).get("spec") or {}).get("ports") or []:
                named = port.get("name") is not None and port.get("name") == port_ref.get("name")
                if port.get("nodePort") and (named or port.get("port") == port_ref.get("number")):
                    found[f"k8s-be-{port['nodePort']}--{GKE_CLUSTER_HASH}"] = "HEALTHY"
        return found or self.ingress_backends

    @staticmethod
    def _crd_status(stored: _Stored) -> Json:
        spec = stored.merged.get("spec") or {}
        versions = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
        if not stored.ready:
            return {
                "conditions": [],
                "acceptedNames": {"kind": "", "plural": ""},
                "storedVersions": versions,
            }
        names = spec.get("names") or {}
        return {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": stored.created,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": stored.created,
                },
            ],
            "acceptedNames": copy.deepcopy(names),
            "storedVersions": versions,
        }

    @staticmethod
    def _deployment_status(stored: _Stored) -> Json:
        replicas = (stored.merged.get("spec") or {}).get("replicas", 1)
        if stored.ready:
            return {
                "observedGeneration": stored.generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True",
                        "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable",
                        "message": "ReplicaSet has successfully progressed.",
                    },
                ],
            }
        return {
            "observedGeneration": stored.generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "unavailableReplicas": replicas,
            "conditions": [
                {
                    "type": "Available",
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "ReplicaSetUpdated",
                    "message": "ReplicaSet is progressing.",
                },
            ],
        }

    # -- request handling (server threads) -----------------------------------------------------

    def _answer(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Json]:
        if self.latency_seconds > 0:
            time.sleep(self.latency_seconds)
        split = urlsplit(raw_path)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        authorization = headers.get("authorization", "")
        token = ""
        if authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        request = _Request(method)
        with self._lock:
            if token:
                self._tokens_seen.append(token)
            if not token or (self.tokens is not None and token not in self.tokens):
                self._requests[(method, "unauthorized")] += 1
                return 401, _status_body(401, "Unauthorized", "Unauthorized")
            self._settle()
            try:
                status, answer = self._route(request, split.path, query, headers, body)
            except ApiError as e:
                status, answer = e.code, e.body
            self._requests[(method, request.kind)] += 1
            # A zero delay takes effect at once, not on the next request.
            self._settle()
        return status, answer

    def _route(
        self,
        request: _Request,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, Json]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if not parts or parts[0] not in ("api", "apis") or len(parts) <= 2 - (parts[0] == "api"):
            request.kind = "discovery"
            if request.method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return 200, self._discovery(parts)
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            request.kind = "discovery"
            return 200, self._discovery(parts)

        namespace, plural, name = "", rest[0], None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, plural = rest[1], rest[2]
            name = rest[3] if len(rest) >= 4 else None
            extra = rest[4:]
        else:
            name = rest[1] if len(rest) >= 2 else None
            extra = rest[2:]
        rtype = self._type(group, version, plural)
        request.kind = rtype.kind if rtype else plural
        if rtype is None or extra or (namespace and not rtype.namespaced):
            raise _no_such_resource()
        if name is not None and rtype.namespaced and not namespace:
            raise _no_such_resource()

        if request.method == "GET":
            if name is None:
                return 200, self._list(rtype, namespace, query.get("labelSelector", ""))
            return 200, self._get(rtype, namespace, name)
        if request.method == "PATCH" and name is not None:
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != APPLY_PATCH:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"fake_kube serves only server-side apply ({APPLY_PATCH}) patches, "
                    f"not {content_type or 'no content type'}",
                )
            return self._apply(rtype, namespace, name, body, query)
        if request.method == "POST" and name is None:
            return self._post(rtype, namespace, body, query, headers)
        if request.method == "DELETE" and name is not None:
            return 200, self._delete(rtype, namespace, name)
        raise ApiError(405, "MethodNotAllowed", f"fake_kube does not serve {request.method} here")

    # -- discovery -------------------------------------------------------------------------

    def _discovery(self, parts: list[str]) -> Json:
        types = self._types()
        if parts == ["version"]:
            return dict(SERVER_VERSION)
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{HOST}:{self.port}"}
                ],
            }
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups(types)}
        if len(parts) == 2 and parts[0] == "apis":
            for entry in self._groups(types):
                if entry["name"] == parts[1]:
                    return {"kind": "APIGroup", "apiVersion": "v1", **entry}
            raise _no_such_resource()
        if parts and parts[0] in ("api", "apis") and len(parts) in (2, 3):
            group = "" if parts[0] == "api" else parts[1]
            version = parts[-1]
            resources = [t.discovery() for t in types if (t.group, t.version) == (group, version)]
            if resources:
                return {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": resources,
                }
        # /openapi/v2, /openapi/v3 and anything else: not served (kubectl: --validate=false).
        raise _no_such_resource()

    @staticmethod
    def _groups(types: list[ResourceType]) -> list[Json]:
        versions: dict[str, set[str]] = {}
        for rtype in types:
            if rtype.group:
                versions.setdefault(rtype.group, set()).add(rtype.version)
        groups = []
        for name, found in versions.items():
            ordered = sorted(found, key=_version_priority, reverse=True)
            entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in ordered]
            groups.append({"name": name, "versions": entries, "preferredVersion": entries[0]})
        return groups

    # -- reads -----------------------------------------------------------------------------

    def _get(self, rtype: ResourceType, namespace: str, name: str) -> Json:
        stored = self._objects.get((rtype.group, rtype.plural, namespace, name))
        if stored is None:
            raise _not_found(rtype, name)
        return self._render(stored, rtype.api_version)

    def _list(self, rtype: ResourceType, namespace: str, label_query: str) -> Json:
        items = [
            self._render(stored, rtype.api_version)
            for stored in self._objects.values()
            if (stored.group, stored.plural) == (rtype.group, rtype.plural)
            and (not namespace or stored.namespace == namespace)
            and _label_query_matches(label_query, stored.labels)
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self._last_rv)},
            "items": items,
        }

    # -- writes ----------------------------------------------------------------------------

    def _config(
        self, rtype: ResourceType, namespace: str, url_name: str | None, body: bytes
    ) -> tuple[str, Json]:
        """The body, checked against the URL and cleaned into a manager's configuration."""
        try:
            parsed = _parse_body(body)
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"error decoding the body: {e}") from e
        if not isinstance(parsed, dict):
            raise ApiError(400, "BadRequest", "the body must be a single object")
        config: Json = _drop_nulls(parsed)
        config.pop("status", None)
        if config.get("apiVersion") != rtype.api_version:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({config.get('apiVersion')}) does not match "
                f"the expected API version ({rtype.api_version})",
            )
        if config.get("kind") != rtype.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the kind in the data ({config.get('kind')}) does not match the expected "
                f"kind ({rtype.kind})",
            )
        metadata = config.get("metadata")
        if not isinstance(metadata, dict):
            metadata = config["metadata"] = {}
        for server_field in SERVER_METADATA:
            metadata.pop(server_field, None)
        name = metadata.get("name")
        if not name:
            raise _invalid(
                rtype, url_name or "", "metadata.name", "Required value: name is required"
            )
        if url_name is not None and name != url_name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({name}) does not match the name on the URL ({url_name})",
            )
        self._check_name(rtype, str(name), config)
        if rtype.namespaced:
            if metadata.get("namespace", namespace) != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            metadata["namespace"] = namespace
            if (*_NAMESPACE, "", namespace) not in self._objects:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
        else:
            metadata.pop("namespace", None)
        return str(name), config

    @staticmethod
    def _check_name(rtype: ResourceType, name: str, config: Json) -> None:
        def invalid(message: str) -> ApiError:
            return _invalid(rtype, name, "metadata.name", f'Invalid value: "{name}": {message}')

        if rtype.group == _RBAC_GROUP:
            # RBAC names are path segments ("system:aggregate-to-edit" is valid).
            if name in (".", "..") or "/" in name or "%" in name:
                raise invalid("may not contain '/' or '%' or be '.' or '..'")
            return
        if (rtype.group, rtype.plural) == _NAMESPACE:
            if len(name) > 63 or not _LABEL.fullmatch(name):
                raise invalid(_LABEL_MSG)
            return
        if (rtype.group, rtype.plural) == ("", "services"):
            if len(name) > 63 or not _LABEL_1035.fullmatch(name):
                raise invalid(_LABEL_1035_MSG)
            return
        if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
            raise invalid(_SUBDOMAIN_MSG)
        if (rtype.group, rtype.plural) == _CRD:
            spec = config.get("spec") or {}
            expected = f"{(spec.get('names') or {}).get('plural')}.{spec.get('group')}"
            if name != expected:
                raise invalid('must be spec.names.plural+"."+spec.group')

    def _apply(
        self,
        rtype: ResourceType,
        namespace: str,
        url_name: str,
        body: bytes,
        query: Mapping[str, str],
    ) -> tuple[int, Json]:
        manager = query.get("fieldManager", "")
        if not manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
            )
        force = query.get("force", "").lower() == "true"
        name, config = self._config(rtype, namespace, url_name, body)
        stored = self._objects.get((rtype.group, rtype.plural, namespace, name))
        if stored is None:
            self._admit(rtype, "CREATE", namespace, name, self._labels_of(config))
            created = self._create(
                rtype, namespace, name, config, manager=manager, operation="Apply"
            )
            self._applies_changed += 1
            return 201, self._render(created, rtype.api_version)

        layers = {
            owner: _Layer(
                copy.deepcopy(layer.config), layer.operation, layer.api_version, layer.time
            )
            for owner, layer in stored.layers.items()
        }
        conflicts = self._conflicts(layers, manager, config)
        if conflicts and not force:
            raise self._conflict_error(rtype, name, conflicts)
        for other, path in conflicts:
            _remove(layers[other].config, path)
        previous = layers.get(manager)
        unchanged_layer = (
            previous is not None
            and previous.config == config
            and previous.operation == "Apply"
            and previous.api_version == rtype.api_version
        )
        if not unchanged_layer:
            layers[manager] = _Layer(config, "Apply", rtype.api_version, _now_iso())
        merged = _merge_layers(layers)
        self._admit(rtype, "UPDATE", namespace, name, self._labels_of(merged))
        if unchanged_layer and not conflicts and merged == stored.merged:
            self._applies_unchanged += 1
            return 200, self._render(stored, rtype.api_version)
        if _spec_part(merged) != _spec_part(stored.merged):
            stored.generation += 1
        stored.layers = {owner: layer for owner, layer in layers.items() if layer.config}
        stored.merged = merged
        stored.api_version = rtype.api_version
        stored.resource_version = self._next_rv()
        if (rtype.group, rtype.plural) == _CRD and stored.ready:
            self._register_crd(stored)  # a new served version shows up at once
        self._applies_changed += 1
        return 200, self._render(stored, rtype.api_version)

    def _post(
        self,
        rtype: ResourceType,
        namespace: str,
        body: bytes,
        query: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> tuple[int, Json]:
        name, config = self._config(rtype, namespace, None, body)
        if (rtype.group, rtype.plural, namespace, name) in self._objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.qualified} "{name}" already exists',
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )
        self._admit(rtype, "CREATE", namespace, name, self._labels_of(config))
        # Without fieldManager the real server names the manager after the user agent.
        manager = query.get("fieldManager") or headers.get("user-agent", "unknown").split("/")[0]
        created = self._create(rtype, namespace, name, config, manager=manager, operation="Update")
        self._applies_changed += 1
        return 201, self._render(created, rtype.api_version)

    def _create(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        config: Json,
        *,
        manager: str,
        operation: str,
    ) -> _Stored:
        config = {"apiVersion": rtype.api_version, "kind": rtype.kind, **config}
        stored = _Stored(
            group=rtype.group,
            plural=rtype.plural,
            kind=rtype.kind,
            namespace=namespace,
            name=name,
            api_version=rtype.api_version,
            uid=str(uuid.uuid4()),
            created=_now_iso(),
            created_at=self._clock(),
            resource_version=self._next_rv(),
            layers={manager: _Layer(config, operation, rtype.api_version, _now_iso())},
            merged=copy.deepcopy(config),
        )
        delay = {
            _CRD: self.crd_establish_seconds,
            _DEPLOYMENT: self.deployment_ready_seconds,
            _INGRESS: self.ingress_ready_seconds,
            _CERTIFICATE: self.certificate_ready_seconds,
        }.get((rtype.group, rtype.plural))
        if delay is not None:
            stored.ready_at = stored.created_at + delay
            self._waiting[stored.key] = stored
        self._objects[stored.key] = stored
        return stored

    @staticmethod
    def _conflicts(
        layers: Mapping[str, _Layer], manager: str, config: Json
    ) -> list[tuple[str, tuple[str, ...]]]:
        """(other manager, field path) pairs that ``config`` sets to a different value."""
        found = []
        for path, value in _leaves(config):
            if path in (("apiVersion",), ("kind",)) or value == {}:
                continue
            for other, layer in layers.items():
                if other == manager:
                    continue
                present, theirs = _lookup(layer.config, path)
                if present and theirs != value:
                    found.append((other, path))
        return found

    @staticmethod
    def _conflict_error(
        rtype: ResourceType, name: str, conflicts: list[tuple[str, tuple[str, ...]]]
    ) -> ApiError:
        def dotted(path: tuple[str, ...]) -> str:
            return "." + ".".join(path)

        by_manager: dict[str, list[str]] = {}
        for other, path in conflicts:
            by_manager.setdefault(other, []).append(dotted(path))
        parts = []
        for other, paths in by_manager.items():
            if len(paths) == 1:
                parts.append(f'conflict with "{other}" using {rtype.api_version}: {paths[0]}')
            else:
                listed = "".join(f"\n- {p}" for p in paths)
                parts.append(f'conflicts with "{other}" using {rtype.api_version}:{listed}')
        count = len(conflicts)
        message = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: " + "\n".join(
            parts
        )
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{other}" using {rtype.api_version}',
                "field": dotted(path),
            }
            for other, path in conflicts
        ]
        return ApiError(
            409,
            "Conflict",
            message,
            {"name": name, "group": rtype.group, "kind": rtype.plural, "causes": causes},
        )

    def _delete(self, rtype: ResourceType, namespace: str, name: str) -> Json:
        key = (rtype.group, rtype.plural, namespace, name)
        stored = self._objects.get(key)
        if stored is None:
            raise _not_found(rtype, name)
        self._admit(rtype, "DELETE", namespace, name, stored.labels)
        doomed = [key]
        if (rtype.group, rtype.plural) == _NAMESPACE:
            doomed += [k for k, s in self._objects.items() if s.namespace == name]
        if (rtype.group, rtype.plural) == _CRD:
            spec = stored.merged.get("spec") or {}
            owned = (spec.get("group"), (spec.get("names") or {}).get("plural"))
            doomed += [k for k, s in self._objects.items() if (s.group, s.plural) == owned]
            self._crd_types.pop(name, None)
        for doomed_key in doomed:
            self._objects.pop(doomed_key, None)
            self._waiting.pop(doomed_key, None)
        self._next_rv()
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": rtype.group,
                "kind": rtype.plural,
                "uid": stored.uid,
            },
        }

    # -- admission webhooks ------------------------------------------------------------------

    @staticmethod
    def _labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
        return dict((obj.get("metadata") or {}).get("labels") or {})

    def _admit(
        self,
        rtype: ResourceType,
        operation: str,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
    ) -> None:
        """Refuse the request as an unready webhook would (HTTP 500), or return."""
        if rtype.group == _ADMISSION_GROUP:
            return  # the API server never sends webhook configurations to webhooks
        configs = sorted(
            (
                s
                for s in self._objects.values()
                if s.group == _ADMISSION_GROUP and s.plural in _WEBHOOK_CONFIGS
            ),
            key=lambda s: (s.plural, s.name),
        )
        for config in configs:
            for hook in config.merged.get("webhooks") or []:
                if hook.get("failurePolicy", "Fail") == "Ignore":
                    continue
                if not any(
                    self._rule_matches(rule, rtype, operation, hook)
                    for rule in hook.get("rules") or []
                ):
                    continue
                if not self._hook_selects(hook, rtype, namespace, name, labels):
                    continue
                problem = self._unreachable(hook)
                if problem is None:
                    continue
                message = (
                    f'Internal error occurred: failed calling webhook "{hook.get("name")}": '
                    f"failed to call webhook: {problem}"
                )
                self._refusals.append(message)
                raise ApiError(500, "InternalError", message, {"causes": [{"message": message}]})

    @staticmethod
    def _rule_matches(
        rule: Mapping[str, Any], rtype: ResourceType, operation: str, hook: Mapping[str, Any]
    ) -> bool:
        operations = rule.get("operations") or []
        if "*" not in operations and operation not in operations:
            return False
        groups = rule.get("apiGroups") or []
        if "*" not in groups and rtype.group not in groups:
            return False
        if hook.get("matchPolicy") == "Exact":
            versions = rule.get("apiVersions") or []
            if "*" not in versions and rtype.version not in versions:
                return False
        resources = rule.get("resources") or []
        if not any(r in ("*", "*/*", rtype.plural) for r in resources):
            return False
        scope = rule.get("scope", "*")
        return scope == "*" or (scope == "Namespaced") == rtype.namespaced

    def _hook_selects(
        self,
        hook: Mapping[str, Any],
        rtype: ResourceType,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
    ) -> bool:
        if not _selector_matches(hook.get("objectSelector"), labels):
            return False
        namespace_selector = hook.get("namespaceSelector")
        if (rtype.group, rtype.plural) == _NAMESPACE:
            # A Namespace is matched on its own labels, as the real API server does.
            own = {**labels, NAMESPACE_NAME_LABEL: name}
            return _selector_matches(namespace_selector, own)
        if not rtype.namespaced:
            return True  # other cluster-scoped objects are never skipped
        ns = self._objects.get((*_NAMESPACE, "", namespace))
        return _selector_matches(namespace_selector, ns.labels if ns else {})

    def _unreachable(self, hook: Mapping[str, Any]) -> str | None:
        """Why calling the webhook fails now, or None when a ready backend exists."""
        service = (hook.get("clientConfig") or {}).get("service")
        if not service:
            return None  # URL webhooks: not modelled, taken as reachable
        svc_ns, svc_name = service.get("namespace", ""), service.get("name", "")
        url = (
            f'Post "https://{svc_name}.{svc_ns}.svc:{service.get("port", 443)}'
            f'{service.get("path", "")}?timeout={hook.get("timeoutSeconds", 10)}s"'
        )
        svc = self._objects.get(("", "services", svc_ns, svc_name))
        if svc is None:
            return f'{url}: service "{svc_name}" not found'
        selector = (svc.merged.get("spec") or {}).get("selector") or {}
        if selector:
            for stored in self._objects.values():
                if (stored.group, stored.plural) != _DEPLOYMENT or stored.namespace != svc_ns:
                    continue
                template = (stored.merged.get("spec") or {}).get("template") or {}
                pod_labels = (template.get("metadata") or {}).get("labels") or {}
                if stored.ready and all(pod_labels.get(k) == v for k, v in selector.items()):
                    return None
        return f'{url}: no endpoints available for service "{svc_name}"'
