"""A local stand-in for the Compute Engine v1 REST API, for the real ``compute_v1`` clients.

google-cloud-compute is REST-only, and its REST transport talks to plain
``http://127.0.0.1:PORT`` when that is given as ``client_options.api_endpoint`` with
``AnonymousCredentials``.  ``FakeCompute`` is a ``ThreadingHTTPServer`` on a free loopback port
(HTTP/1.1, keep-alive, Nagle off) that answers the paths those clients call, with the JSON
field names the library parses (checked against ``services/*/transports/rest_base.py`` and
by real client calls in ``test_fake_compute.py``):

* ``GET /compute/v1/projects/{p}/aggregated/acceleratorTypes`` (``AcceleratorTypesClient.
  aggregated_list``): ``{"kind", "id", "selfLink", "items": {"zones/{zone}":
  {"acceleratorTypes": [{"kind", "id", "name", "zone", "description",
  "maximumCardsPerInstance", "selfLink"}]}}}``.  Every known zone is listed; a zone with no
  match carries ``{"warning": {"code": "NO_RESULTS_ON_PAGE", ...}}`` instead, as the real API
  does.  ``filter`` supports ``name = "x"``, ``name != "x"`` (exact) and ``name eq x`` /
  ``name ne x`` (regular expression, full match); anything else is a 400.
* ``GET|POST /compute/v1/projects/{p}/global/addresses`` and
  ``GET|DELETE .../global/addresses/{name}`` (``GlobalAddressesClient``).  Insert and delete
  answer with a global ``compute#operation``; the address shows ``status: "RESERVING"`` with
  no IP until its operation is DONE, then ``RESERVED`` with ``address: "34.x.y.z"``.  A delete
  removes the address when its operation is DONE.  Names must match
  ``[a-z]([-a-z0-9]{0,61}[a-z0-9])?`` (400 ``invalid``); duplicates are 409
  ``alreadyExists``; unknown names 404 ``notFound``.  A repeated ``requestId`` returns the
  first operation (Compute's idempotency), without a second insert.
* ``GET /compute/v1/projects/{p}/global/backendServices/{name}``
  (``BackendServicesClient.get``): ``{"kind": "compute#backendService", "id", "name",
  "selfLink", "protocol", "portName", ...}``.  The fake creates none itself: GKE's ingress
  controller makes them, so a test seeds them (``put_backend_service``) or passes
  ``backend_services``, a function naming those that exist in a project (read at each
  request, so they appear when the Ingress that makes them is ready).  Names are checked
  as on insert (400 ``invalid``); an unknown one is 404 ``notFound``.  Ids are stable.
* ``GET .../global/operations/{op}`` and ``POST .../global/operations/{op}/wait``
  (``GlobalOperationsClient.get`` / ``wait``).  Each get or wait counts as one poll.  An
  operation is DONE once it has been polled ``polls_to_done`` times, or once
  ``seconds_to_done`` have passed on the injectable ``clock`` (whichever comes first;
  ``polls_to_done=0`` means operations are DONE as soon as they are created).  ``wait``
  does not block: it counts a poll and answers with the current state.

Errors are Google's JSON shape, ``{"error": {"code", "message", "errors": [{"message",
"domain", "reason"}]}}``, which ``google.api_core`` maps to ``Conflict``, ``NotFound``,
``Forbidden`` and so on.  ``fail_next`` injects such errors (for example 403
``quotaExceeded`` "Quota 'STATIC_ADDRESSES' exceeded.").  ``fail_next_operation`` makes the
next insert's operation finish DONE with an ``error`` (and no address), as a failed
asynchronous insert does.  Every request is recorded as a ``ComputeRequest``.

Do not call ``.result()`` / ``.done()`` on the extended operation that ``insert()`` returns:
it polls the real compute.googleapis.com.  Poll with ``operations_client()`` instead.

Not modelled: paging (``maxResults`` / ``pageToken`` are ignored), regional addresses,
labels, ``move``, IAM, per-zone accelerator listing, backend service writes and lists,
authentication.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from tests.support.serving import StartStop

HOST = "127.0.0.1"
SELF_LINK_BASE = "https://www.googleapis.com/compute/v1"
NAME_PATTERN = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
HTTP_METHODS = frozenset({"GET", "POST", "DELETE", "PATCH", "PUT"})

DEFAULT_ACCELERATORS: dict[str, tuple[str, ...]] = {
    "nvidia-tesla-t4": ("us-central1-a", "us-central1-b", "us-central1-f", "europe-west4-a"),
    "nvidia-l4": ("us-central1-a", "us-central1-c", "europe-west4-a"),
    "nvidia-tesla-a100": ("us-central1-a", "us-central1-f"),
}
MAX_CARDS: dict[str, int] = {"nvidia-tesla-t4": 4, "nvidia-l4": 8, "nvidia-tesla-a100": 16}
DESCRIPTIONS: dict[str, str] = {
    "nvidia-tesla-t4": "NVIDIA T4",
    "nvidia-l4": "NVIDIA L4",
    "nvidia-tesla-a100": "NVIDIA A100 40GB",
}

Json = dict[str, Any]

_AGGREGATED = re.compile(r"^/compute/v1/projects/([^/]+)/aggregated/acceleratorTypes$")
_ADDRESSES = re.compile(r"^/compute/v1/projects/([^/]+)/global/addresses$")
_ADDRESS = re.compile(r"^/compute/v1/projects/([^/]+)/global/addresses/([^/]+)$")
_BACKEND_SERVICE = re.compile(r"^/compute/v1/projects/([^/]+)/global/backendServices/([^/]+)$")
_OPERATION = re.compile(r"^/compute/v1/projects/([^/]+)/global/operations/([^/]+?)(/wait)?$")
_FILTER = re.compile(r'^\s*\(?\s*name\s*(=|!=|eq|ne)\s*"?([^"\s)]*)"?\s*\)?\s*$')


@dataclass(frozen=True)
class ComputeRequest:
    """One request the fake received: ``query`` as parsed lists, ``body`` as decoded JSON."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Json | None
    status: int = 200


class ComputeError(Exception):
    """An error answered as Google's JSON error body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def body(self) -> Json:
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }


@dataclass
class _Fault:
    match: str
    status: int
    reason: str
    message: str
    times: int

    def matches(self, method: str, path: str) -> bool:
        if self.match.upper() in HTTP_METHODS:
            return method == self.match.upper()
        if " " in self.match:
            want_method, prefix = self.match.split(" ", 1)
            return method == want_method.upper() and path.startswith(prefix)
        return path.startswith(self.match)


@dataclass
class _Operation:
    project: str
    name: str
    op_id: int
    operation_type: str
    target: str  # address name
    request_id: str | None
    created: float
    polls: int = 0
    done: bool = False
    error: Json | None = None
    on_done: Callable[[], None] | None = None

    def json(self) -> Json:
        target_link = f"{SELF_LINK_BASE}/projects/{self.project}/global/addresses/{self.target}"
        out: Json = {
            "kind": "compute#operation",
            "id": str(self.op_id),
            "name": self.name,
            "operationType": self.operation_type,
            "targetLink": target_link,
            "targetId": str(self.op_id + 1_000_000),
            "status": "DONE" if self.done else "RUNNING",
            "progress": 100 if self.done else 0,
            "user": "anonymous@example.com",
            "insertTime": "2026-03-02T09:00:00.000-08:00",
            "startTime": "2026-03-02T09:00:00.000-08:00",
            "selfLink": f"{SELF_LINK_BASE}/projects/{self.project}/global/operations/{self.name}",
        }
        if self.done:
            out["endTime"] = "2026-03-02T09:00:05.000-08:00"
        if self.error is not None:
            out["error"] = self.error
            out["httpErrorStatusCode"] = 400
            out["httpErrorMessage"] = "BAD REQUEST"
        return out


@dataclass
class _Address:
    project: str
    name: str
    address_id: int
    body: Json
    status: str = "RESERVING"
    ip: str | None = None

    def json(self) -> Json:
        out: Json = {
            "kind": "compute#address",
            "id": str(self.address_id),
            "creationTimestamp": "2026-03-02T09:00:00.000-08:00",
            "name": self.name,
            "addressType": self.body.get("addressType", "EXTERNAL"),
            "ipVersion": self.body.get("ipVersion", "IPV4"),
            "networkTier": "PREMIUM",
            "status": self.status,
            "selfLink": f"{SELF_LINK_BASE}/projects/{self.project}/global/addresses/{self.name}",
        }
        if "description" in self.body:
            out["description"] = self.body["description"]
        if self.ip is not None:
            out["address"] = self.ip
        return out


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[ComputeRequest] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    operation_faults: list[Json] = field(default_factory=list)
    addresses: dict[tuple[str, str], _Address] = field(default_factory=dict)
    operations: dict[tuple[str, str], _Operation] = field(default_factory=dict)
    by_request_id: dict[tuple[str, str], _Operation] = field(default_factory=dict)
    backend_services: dict[tuple[str, str], int] = field(default_factory=dict)


class FakeCompute(StartStop):
    """Compute Engine v1 REST fake: accelerator types, global addresses, global operations.

    ``accelerators`` maps a GPU type (``"nvidia-tesla-t4"``) to the zones offering it.
    ``with FakeCompute() as compute:`` starts and stops it; ``endpoint`` is the
    ``http://127.0.0.1:PORT`` to give the clients (or use the ``*_client()`` helpers).
    """

    def __init__(
        self,
        *,
        accelerators: Mapping[str, Sequence[str]] | None = None,
        polls_to_done: int = 1,
        seconds_to_done: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        backend_services: Callable[[str], Iterable[str]] | None = None,
    ) -> None:
        self.accelerators: dict[str, tuple[str, ...]] = {
            gpu: tuple(zones)
            for gpu, zones in (
                DEFAULT_ACCELERATORS if accelerators is None else accelerators
            ).items()
        }
        self.polls_to_done = polls_to_done
        self.seconds_to_done = seconds_to_done
        self.clock = clock
        self.backend_services = backend_services
        self._state = _State()
        self._ids = itertools.count(4_000_000_000_000_000_001)
        self._ips = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeCompute:
        fake = self

        class Handler(_Handler):
            compute = fake

        server = ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-compute", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeCompute is not started")
        return f"http://{HOST}:{self._server.server_address[1]}"

    # -- real clients ------------------------------------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=self.endpoint),
        }

    def accelerator_types_client(self) -> compute_v1.AcceleratorTypesClient:
        return compute_v1.AcceleratorTypesClient(**self._client_kwargs())

    def addresses_client(self) -> compute_v1.GlobalAddressesClient:
        return compute_v1.GlobalAddressesClient(**self._client_kwargs())

    def operations_client(self) -> compute_v1.GlobalOperationsClient:
        return compute_v1.GlobalOperationsClient(**self._client_kwargs())

    def backend_services_client(self) -> compute_v1.BackendServicesClient:
        return compute_v1.BackendServicesClient(**self._client_kwargs())

    # -- test controls -----------------------------------------------------------------------

    def fail_next(self, match: str, status: int, reason: str, message: str, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with a Google JSON error.

        ``match`` is an HTTP method (``"POST"``), a path prefix
        (``"/compute/v1/projects/p/global/addresses"``) or both (``"POST /compute/v1/..."``).
        """
        with self._state.lock:
            self._state.faults.append(_Fault(match, status, reason, message, times))

    def fail_next_operation(
        self, code: str = "QUOTA_EXCEEDED", message: str = "Quota 'STATIC_ADDRESSES' exceeded."
    ) -> None:
        """Make the next insert's operation finish DONE with ``error.errors[0]`` = code/message."""
        with self._state.lock:
            self._state.operation_faults.append({"errors": [{"code": code, "message": message}]})

    @property
    def requests(self) -> list[ComputeRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def addresses(self, project: str) -> dict[str, Json]:
        """The project's global addresses as the API would show them, by name."""
        with self._state.lock:
            return {
                name: address.json()
                for (proj, name), address in self._state.addresses.items()
                if proj == project
            }

    def put_address(self, project: str, name: str, ip: str = "34.120.0.99") -> None:
        """Seed an already reserved address (as if created outside the test)."""
        with self._state.lock:
            self._state.addresses[(project, name)] = _Address(
                project, name, next(self._ids), {}, status="RESERVED", ip=ip
            )

    def put_backend_service(self, project: str, name: str) -> str:
        """Seed a global backend service (as GKE's ingress controller makes); its id."""
        with self._state.lock:
            return str(self._backend_service_id(project, name))

    def _backend_service_id(self, project: str, name: str) -> int:
        return self._state.backend_services.setdefault((project, name), next(self._ids))

    # -- request handling (called by the handler threads) ------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Json | None
    ) -> tuple[int, Json]:
        with self._state.lock:
            try:
                status, payload = self._dispatch(method, path, query, body)
            except ComputeError as err:
                status, payload = err.status, err.body()
            self._state.requests.append(ComputeRequest(method, path, query, body, status))
            return status, payload

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], body: Json | None
    ) -> tuple[int, Json]:
        for fault in self._state.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._state.faults.remove(fault)
                raise ComputeError(fault.status, fault.reason, fault.message)

        if (m := _AGGREGATED.match(path)) and method == "GET":
            return 200, self._aggregated_accelerators(m.group(1), query)
        if m := _ADDRESSES.match(path):
            if method == "GET":
                return 200, self._list_addresses(m.group(1))
            if method == "POST":
                return 200, self._insert_address(m.group(1), query, body or {})
        if m := _ADDRESS.match(path):
            if method == "GET":
                return 200, self._address(m.group(1), m.group(2)).json()
            if method == "DELETE":
                return 200, self._delete_address(m.group(1), m.group(2), query)
        if (m := _BACKEND_SERVICE.match(path)) and method == "GET":
            return 200, self._backend_service(m.group(1), m.group(2))
        if m := _OPERATION.match(path):
            is_wait = m.group(3) is not None
            if (method == "GET" and not is_wait) or (method == "POST" and is_wait):
                return 200, self._poll(m.group(1), m.group(2)).json()
        raise ComputeError(404, "notFound", f"The requested URL {path} was not found.")

    def _aggregated_accelerators(self, project: str, query: dict[str, list[str]]) -> Json:
        match = _name_matcher(query.get("filter", [""])[0])
        zones = sorted({zone for zs in self.accelerators.values() for zone in zs})
        items: Json = {}
        for zone in zones:
            zone_link = f"{SELF_LINK_BASE}/projects/{project}/zones/{zone}"
            found = [
                {
                    "kind": "compute#acceleratorType",
                    "id": str(10000 + sorted(self.accelerators).index(gpu)),
                    "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
                    "name": gpu,
                    "description": DESCRIPTIONS.get(gpu, gpu),
                    "zone": zone_link,
                    "maximumCardsPerInstance": MAX_CARDS.get(gpu, 4),
                    "selfLink": f"{zone_link}/acceleratorTypes/{gpu}",
                }
                for gpu in sorted(self.accelerators)
                if zone in self.accelerators[gpu] and match(gpu)
            ]
            if found:
                items[f"zones/{zone}"] = {"acceleratorTypes": found}
            else:
                items[f"zones/{zone}"] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": (f"There are no results for scope 'zones/{zone}' on this page."),
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                }
        return {
            "kind": "compute#acceleratorTypeAggregatedList",
            "id": f"projects/{project}/aggregated/acceleratorTypes",
            "items": items,
            "selfLink": f"{SELF_LINK_BASE}/projects/{project}/aggregated/acceleratorTypes",
        }

    def _backend_service(self, project: str, name: str) -> Json:
        if not NAME_PATTERN.fullmatch(name):
            raise ComputeError(
                400,
                "invalid",
                f"Invalid value for field 'backendService': '{name}'. Must be a match of "
                "regex '[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19}'",
            )
        if self.backend_services is not None:
            for made in self.backend_services(project):
                self._backend_service_id(project, made)
        service_id = self._state.backend_services.get((project, name))
        if service_id is None:
            raise ComputeError(
                404,
                "notFound",
                f"The resource 'projects/{project}/global/backendServices/{name}' was not found",
            )
        link = f"{SELF_LINK_BASE}/projects/{project}/global/backendServices/{name}"
        node_port = name.removeprefix("k8s-be-").split("--", 1)[0]
        return {
            "kind": "compute#backendService",
            "id": str(service_id),
            "creationTimestamp": "2026-03-02T09:05:00.000-08:00",
            "name": name,
            "selfLink": link,
            "protocol": "HTTP",
            "port": int(node_port) if node_port.isdigit() else 80,
            "portName": f"port{node_port}",
            "timeoutSec": 30,
            "loadBalancingScheme": "EXTERNAL",
            "fingerprint": "AAAAAAAAAAA=",
        }

    def _list_addresses(self, project: str) -> Json:
        for op in list(self._state.operations.values()):
            self._settle(op)
        items = [
            a.json() for (proj, _), a in sorted(self._state.addresses.items()) if proj == project
        ]
        out: Json = {
            "kind": "compute#addressList",
            "id": f"projects/{project}/global/addresses",
            "selfLink": f"{SELF_LINK_BASE}/projects/{project}/global/addresses",
        }
        if items:
            out["items"] = items
        return out

    def _address(self, project: str, name: str) -> _Address:
        for op in list(self._state.operations.values()):
            self._settle(op)
        address = self._state.addresses.get((project, name))
        if address is None:
            raise ComputeError(
                404,
                "notFound",
                f"The resource 'projects/{project}/global/addresses/{name}' was not found",
            )
        return address

    def _insert_address(self, project: str, query: dict[str, list[str]], body: Json) -> Json:
        request_id = query.get("requestId", [None])[0]
        if request_id and (project, request_id) in self._state.by_request_id:
            return self._state.by_request_id[(project, request_id)].json()
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ComputeError(400, "required", "Required field 'resource.name' not specified")
        if not NAME_PATTERN.fullmatch(name):
            raise ComputeError(
                400,
                "invalid",
                f"Invalid value for field 'resource.name': '{name}'. Must be a match of "
                "regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
            )
        if (project, name) in self._state.addresses:
            raise ComputeError(
                409,
                "alreadyExists",
                f"The resource 'projects/{project}/global/addresses/{name}' already exists",
            )
        address = _Address(project, name, next(self._ids), dict(body))
        self._state.addresses[(project, name)] = address
        error = self._state.operation_faults.pop(0) if self._state.operation_faults else None

        def finish() -> None:
            if error is not None:
                self._state.addresses.pop((project, name), None)
                return
            n = next(self._ips)
            address.status = "RESERVED"
            address.ip = f"34.{110 + n // 65536 % 100}.{n // 256 % 256}.{n % 256}"

        op = self._new_operation(project, "insert", name, request_id, finish)
        op.error = error
        return op.json()

    def _delete_address(self, project: str, name: str, query: dict[str, list[str]]) -> Json:
        request_id = query.get("requestId", [None])[0]
        if request_id and (project, request_id) in self._state.by_request_id:
            return self._state.by_request_id[(project, request_id)].json()
        self._address(project, name)

        def finish() -> None:
            self._state.addresses.pop((project, name), None)

        return self._new_operation(project, "delete", name, request_id, finish).json()

    def _new_operation(
        self,
        project: str,
        operation_type: str,
        target: str,
        request_id: str | None,
        on_done: Callable[[], None],
    ) -> _Operation:
        op_id = next(self._ids)
        name = f"operation-{op_id}-{op_id % 0xFFFFFFFF:08x}"
        op = _Operation(
            project, name, op_id, operation_type, target, request_id, self.clock(), on_done=on_done
        )
        self._state.operations[(project, name)] = op
        if request_id:
            self._state.by_request_id[(project, request_id)] = op
        self._settle(op)
        return op

    def _poll(self, project: str, name: str) -> _Operation:
        op = self._state.operations.get((project, name))
        if op is None:
            raise ComputeError(
                404,
                "notFound",
                f"The resource 'projects/{project}/global/operations/{name}' was not found",
            )
        op.polls += 1
        self._settle(op)
        return op

    def _settle(self, op: _Operation) -> None:
        if op.done:
            return
        by_polls = op.polls >= self.polls_to_done
        by_time = (
            self.seconds_to_done is not None and self.clock() - op.created >= self.seconds_to_done
        )
        if by_polls or by_time:
            op.done = True
            if op.on_done is not None:
                op.on_done()


def _name_matcher(expression: str) -> Callable[[str], bool]:
    if not expression.strip():
        return lambda _name: True
    m = _FILTER.match(expression)
    if m is None:
        raise ComputeError(
            400,
            "invalid",
            f"Invalid value for field 'filter': '{expression}'. Invalid list filter expression.",
        )
    op, value = m.group(1), m.group(2)
    if op == "=":
        return lambda name: name == value
    if op == "!=":
        return lambda name: name != value
    pattern = re.compile(value)
    if op == "eq":
        return lambda name: pattern.fullmatch(name) is not None
    return lambda name: pattern.fullmatch(name) is None


class _Handler(BaseHTTPRequestHandler):
    compute: FakeCompute
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fake records requests instead of logging them."""

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Json | None = None
        status: int
        payload: Json
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            status, payload = 400, ComputeError(400, "parseError", "Parse Error").body()
        else:
            query = parse_qs(parts.query, keep_blank_values=True)
            status, payload = self.compute.handle(self.command, unquote(parts.path), query, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve  # noqa: N815
    do_POST = _serve  # noqa: N815
    do_DELETE = _serve  # noqa: N815
