"""A stateful fake of Service Usage API v1, served over real gRPC on loopback.

The real ``google.cloud.service_usage_v1.ServiceUsageClient`` talks to it through an
insecure channel (``FakeServiceUsage.client()``).  The fake decodes and encodes the
library's own proto-plus types (``GetServiceRequest``, ``Service``, ...) and plain
protobuf ``google.longrunning`` messages for operations, so whatever the client sends is
what the fake sees.  ``google.longrunning.Operations/GetOperation`` is served on the same
server, which is where the client's operation future polls.

Served methods: ``google.api.serviceusage.v1.ServiceUsage`` GetService, BatchGetServices,
BatchEnableServices, EnableService, and ``google.longrunning.Operations`` GetOperation.
Anything else answers UNIMPLEMENTED.

Behaviour, modelled on the real API:

* Projects are known by id and by number (``projects`` maps one to the other); either
  form is accepted in ``name`` / ``parent``.  Answers name the project by number
  (``projects/123456789012/services/compute.googleapis.com``), as the real API does.
* Names: ``name`` must be ``projects/{project}/services/{service}`` and ``parent``
  ``projects/{project}``, else INVALID_ARGUMENT.  Folders and organizations (which the
  real GetService accepts) are not modelled and are INVALID_ARGUMENT here too.
* BatchEnableServices takes 1 to ``MAX_ENABLE_IDS`` (20) service ids and BatchGetServices
  1 to ``MAX_GET_NAMES`` (30, the documented limit) names, else INVALID_ARGUMENT with no
  state change.  A BatchGetServices ``parent`` must be the project of every name.
* A service the fake does not know (not in ``services``) is refused with the real API's
  answer for a mistyped or hidden service: PERMISSION_DENIED "Not found or permission
  denied for service(s): x." with ErrorInfo reason
  ``SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED``.  (Seen from ``gcloud services enable``;
  the fake answers reads of unknown services the same way, which is a choice.)  An unknown
  project is PERMISSION_DENIED too: Google does not reveal whether a project exists.
* Billing: enabling a service on a project in ``billing_disabled`` fails at once with
  FAILED_PRECONDITION "Billing account for project '123' is not found. ..." and ErrorInfo
  reason ``UREQ_PROJECT_BILLING_NOT_FOUND``, as the real API does.  (Here every service
  needs billing; the real API exempts a few free ones.)
* Enabling returns a ``google.longrunning.Operation``.  When every requested service is
  already enabled the answer is the real API's ``operations/noop.DONE_OPERATION``, done at
  once.  Otherwise the answer is a running operation, done once it has answered
  ``operation_polls`` GetOperation calls as running *and* ``operation_seconds`` have passed
  on ``clock``; then its services become ENABLED and its ``response`` is a packed
  ``BatchEnableServicesResponse`` (``EnableServiceResponse`` for EnableService).  Time moves
  lazily: every request settles what is due first, so a read sees services enabled by an
  operation nobody polled.  Enabling an enabled service is fine.

Fault injection:

* ``fail_next(method, code, message, times=1, reason=None)``: the next ``times`` calls of
  ``method`` (e.g. ``"BatchEnableServices"``, or ``None`` for any) fail with that status
  (and an ErrorInfo ``reason`` if given) before touching any state.
* ``fail_next_operation(code, message, reason=None)``: the next enable operation finishes
  with that error and enables nothing.

Inspection: ``requests`` (every call as ``GrpcCall(method, request, code)``, in order),
``calls(method)``, ``count(method)``, ``enabled(project)``, ``operation(name)``.

Not modelled: DisableService, ListServices, quota and consumer overrides, service
dependencies (enabling ``container`` does not enable ``compute`` here), authentication.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import proto
from google.cloud import service_usage_v1
from google.cloud.service_usage_v1.services.service_usage.transports import (
    ServiceUsageGrpcTransport,
)
from google.longrunning import operations_pb2
from google.protobuf import any_pb2

from tests.support.grpc_fake import GrpcError, GrpcFake

SERVICE = "google.api.serviceusage.v1.ServiceUsage"
OPERATIONS = "google.longrunning.Operations"
DOMAIN = "serviceusage.googleapis.com"

DEFAULT_PROJECTS: dict[str, int] = {"kf-proj": 123456789012}
MAX_ENABLE_IDS = 20
MAX_GET_NAMES = 30
NOOP_OPERATION = "operations/noop.DONE_OPERATION"

#: The services the fake knows; enabling or reading any other is PERMISSION_DENIED.
KNOWN_SERVICES: frozenset[str] = frozenset(
    {
        "bigquery.googleapis.com",
        "cloudbilling.googleapis.com",
        "cloudresourcemanager.googleapis.com",
        "compute.googleapis.com",
        "container.googleapis.com",
        "containerregistry.googleapis.com",
        "dns.googleapis.com",
        "endpoints.googleapis.com",
        "file.googleapis.com",
        "iam.googleapis.com",
        "iamcredentials.googleapis.com",
        "iap.googleapis.com",
        "logging.googleapis.com",
        "ml.googleapis.com",
        "monitoring.googleapis.com",
        "pubsub.googleapis.com",
        "servicecontrol.googleapis.com",
        "servicemanagement.googleapis.com",
        "serviceusage.googleapis.com",
        "sqladmin.googleapis.com",
        "storage.googleapis.com",
        *(f"svc{i:02d}.example.googleapis.com" for i in range(50)),
    }
)

UNKNOWN_SERVICE_REASON = "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED"
BILLING_REASON = "UREQ_PROJECT_BILLING_NOT_FOUND"
BILLING_MESSAGE = (
    "Billing account for project '{number}' is not found. Billing must be enabled for "
    "activation of service(s) '{services}' to proceed."
)

# Typed as Any: mypy sees proto-plus enum members as plain ints, not as the enum type.
State: Any = service_usage_v1.State


@dataclass
class _OpState:
    op: operations_pb2.Operation
    project_id: str
    service_ids: list[str]
    single: bool  # EnableService (one service) rather than BatchEnableServices
    polls_left: int
    done_at: float
    error: GrpcError | None = None


@dataclass
class _Projects:
    numbers: dict[str, int]
    enabled: dict[str, set[str]] = field(default_factory=dict)


def _invalid(message: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _pack(message: proto.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(message).pb(message))
    return packed


class FakeServiceUsage(GrpcFake):
    """Service Usage v1 over gRPC on 127.0.0.1; see the module docstring.

    ``projects`` maps project ids to numbers, ``enabled`` gives each project's services
    enabled at the start (by project id), ``services`` is the catalogue of known services.
    """

    DOMAIN = DOMAIN

    def __init__(
        self,
        *,
        projects: Mapping[str, int] | None = None,
        enabled: Mapping[str, Iterable[str]] | None = None,
        services: Iterable[str] = KNOWN_SERVICES,
        billing_disabled: Iterable[str] = (),
        operation_polls: int = 1,
        operation_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        max_workers: int = 8,
    ) -> None:
        numbers = dict(DEFAULT_PROJECTS if projects is None else projects)
        self._projects = _Projects(numbers, {p: set() for p in numbers})
        for project_id, ids in (enabled or {}).items():
            self._projects.enabled[project_id] |= set(ids)
        self.services = frozenset(services)
        self.billing_disabled = set(billing_disabled)
        self.operation_polls = operation_polls
        self.operation_seconds = operation_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self._ops: dict[str, _OpState] = {}
        self._op_faults: list[GrpcError] = []
        self._ids = itertools.count(1)
        self._grpc_server(max_workers, self._lock)
        su = service_usage_v1
        self._serve(
            SERVICE,
            {
                "GetService": (su.GetServiceRequest, self._get_service),
                "BatchGetServices": (su.BatchGetServicesRequest, self._batch_get_services),
                "BatchEnableServices": (su.BatchEnableServicesRequest, self._batch_enable_services),
                "EnableService": (su.EnableServiceRequest, self._enable_service),
            },
        )
        self._serve(
            OPERATIONS, {"GetOperation": (operations_pb2.GetOperationRequest, self._get_operation)}
        )

    # -- lifecycle -------------------------------------------------------------------------

    def client(self) -> service_usage_v1.ServiceUsageClient:
        """A real ``ServiceUsageClient`` talking to this fake (anonymous, insecure)."""
        return self._client(service_usage_v1.ServiceUsageClient, ServiceUsageGrpcTransport)

    # -- fault injection and inspection ----------------------------------------------------

    def fail_next_operation(
        self, code: grpc.StatusCode, message: str, reason: str | None = None
    ) -> None:
        """Make the next enable operation finish with this error, enabling nothing."""
        with self._lock:
            self._op_faults.append(GrpcError(code, message, reason))

    def enabled(self, project: str) -> frozenset[str]:
        """The services enabled in the project (by id or number), operations settled first."""
        with self._lock:
            self._settle()
            return frozenset(self._projects.enabled[self._project_id(f"projects/{project}")])

    def operation(self, name: str) -> operations_pb2.Operation | None:
        """A copy of an operation by name, as GetOperation would answer without polling."""
        with self._lock:
            self._settle()
            state = self._ops.get(name)
            if state is None:
                return None
            out = operations_pb2.Operation()
            out.CopyFrom(state.op)
            return out

    # -- plumbing --------------------------------------------------------------------------

    def _before_call(self) -> None:
        self._settle()

    def _settle(self) -> None:
        now = self.clock()
        for state in self._ops.values():
            if not state.op.done and state.polls_left <= 0 and now >= state.done_at:
                self._finish(state)

    def _finish(self, state: _OpState) -> None:
        op = state.op
        op.done = True
        if state.error is not None:
            op.error.CopyFrom(state.error.status(DOMAIN))
            return
        enabled = self._projects.enabled[state.project_id]
        enabled.update(state.service_ids)
        services = [self._service(state.project_id, s) for s in state.service_ids]
        if state.single:
            op.response.CopyFrom(_pack(service_usage_v1.EnableServiceResponse(service=services[0])))
        else:
            op.response.CopyFrom(
                _pack(service_usage_v1.BatchEnableServicesResponse(services=services))
            )

    def _project_id(self, parent: str) -> str:
        """The project id for ``projects/{id or number}``; PERMISSION_DENIED if unknown."""
        key = parent.removeprefix("projects/")
        if key in self._projects.numbers:
            return key
        for project_id, number in self._projects.numbers.items():
            if key == str(number):
                return project_id
        # Choice: the real API's wording for a project it will not show varies by method.
        raise GrpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"Project '{key}' not found or permission denied.",
        )

    def _parent(self, parent: str, field_name: str = "parent") -> str:
        parts = parent.split("/")
        if len(parts) != 2 or parts[0] != "projects" or not parts[1]:
            raise _invalid(f"Invalid {field_name} '{parent}': expected 'projects/{{project}}'.")
        return self._project_id(parent)

    def _name(self, name: str) -> tuple[str, str]:
        """``projects/{p}/services/{s}`` as (project id, service id), or INVALID_ARGUMENT."""
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "services" or not all(parts):
            raise _invalid(
                f"Invalid resource name '{name}': expected "
                "'projects/{project}/services/{service}'."
            )
        return self._project_id(f"projects/{parts[1]}"), parts[3]

    def _check_known(self, service_ids: Iterable[str]) -> None:
        unknown = sorted({s for s in service_ids if s not in self.services})
        if unknown:
            raise GrpcError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Not found or permission denied for service(s): {', '.join(unknown)}.",
                reason=UNKNOWN_SERVICE_REASON,
            )

    def _service(self, project_id: str, service_id: str) -> service_usage_v1.Service:
        parent = f"projects/{self._projects.numbers[project_id]}"
        enabled = service_id in self._projects.enabled[project_id]
        return service_usage_v1.Service(
            name=f"{parent}/services/{service_id}",
            parent=parent,
            config=service_usage_v1.ServiceConfig(name=service_id, title=service_id),
            state=State.ENABLED if enabled else State.DISABLED,
        )

    def _start_enable(
        self, project_id: str, service_ids: list[str], *, single: bool
    ) -> operations_pb2.Operation:
        self._check_known(service_ids)
        missing = [s for s in service_ids if s not in self._projects.enabled[project_id]]
        number = self._projects.numbers[project_id]
        metadata = _pack(
            service_usage_v1.OperationMetadata(
                resource_names=[f"projects/{number}/services/{s}" for s in service_ids]
            )
        )
        if not missing:
            # What the real API answers when there is nothing to do: a finished no-op.
            op = operations_pb2.Operation(name=NOOP_OPERATION, done=True, metadata=metadata)
            state = _OpState(op, project_id, service_ids, single, 0, 0.0)
            self._finish(state)
            return op
        if project_id in self.billing_disabled:
            raise GrpcError(
                grpc.StatusCode.FAILED_PRECONDITION,
                BILLING_MESSAGE.format(number=number, services=",".join(missing)),
                reason=BILLING_REASON,
                domain=f"{DOMAIN}/billing-enabled",
            )
        name = f"operations/acf.p2-{number}-{uuid.UUID(int=next(self._ids))}"
        op = operations_pb2.Operation(name=name, metadata=metadata)
        state = _OpState(
            op,
            project_id,
            service_ids,
            single,
            polls_left=self.operation_polls,
            done_at=self.clock() + self.operation_seconds,
            error=self._op_faults.pop(0) if self._op_faults else None,
        )
        # Running in this answer even when nothing is left to wait for, as the real API
        # answers; the next request settles it.
        self._ops[name] = state
        out = operations_pb2.Operation()
        out.CopyFrom(op)
        return out

    # -- RPCs ------------------------------------------------------------------------------

    def _get_service(self, request: service_usage_v1.GetServiceRequest) -> Any:
        project_id, service_id = self._name(request.name)
        self._check_known([service_id])
        return self._service(project_id, service_id)

    def _batch_get_services(self, request: service_usage_v1.BatchGetServicesRequest) -> Any:
        names = list(request.names)
        if not names:
            raise _invalid("At least one service name must be given.")
        if len(names) > MAX_GET_NAMES:
            raise _invalid(
                f"A single request can get a maximum of {MAX_GET_NAMES} services at a time; "
                f"got {len(names)}."
            )
        parent = self._parent(request.parent) if request.parent else None
        refs = [self._name(name) for name in names]
        for (project_id, _), name in zip(refs, names, strict=True):
            # Choice: id and number of the same project count as the same parent.
            if parent is not None and project_id != parent:
                raise _invalid(f"Service '{name}' is not under parent '{request.parent}'.")
        self._check_known(s for _, s in refs)
        return service_usage_v1.BatchGetServicesResponse(
            services=[self._service(p, s) for p, s in refs]
        )

    def _batch_enable_services(
        self, request: service_usage_v1.BatchEnableServicesRequest
    ) -> operations_pb2.Operation:
        project_id = self._parent(request.parent)
        ids = list(request.service_ids)
        if not ids:
            raise _invalid("At least one service id must be given.")
        if len(ids) > MAX_ENABLE_IDS:
            raise _invalid(
                f"A single request can enable a maximum of {MAX_ENABLE_IDS} services at a "
                f"time; got {len(ids)}."
            )
        if any(not s or "/" in s for s in ids):
            raise _invalid(f"Invalid service id in {ids}.")
        return self._start_enable(project_id, ids, single=False)

    def _enable_service(
        self, request: service_usage_v1.EnableServiceRequest
    ) -> operations_pb2.Operation:
        project_id, service_id = self._name(request.name)
        return self._start_enable(project_id, [service_id], single=True)

    def _get_operation(self, request: operations_pb2.GetOperationRequest) -> Any:
        state = self._ops.get(request.name)
        if state is None:
            if request.name == NOOP_OPERATION:
                return operations_pb2.Operation(name=NOOP_OPERATION, done=True)
            raise GrpcError(grpc.StatusCode.NOT_FOUND, f"Operation '{request.name}' not found.")
        if not state.op.done and state.polls_left > 0:
            state.polls_left -= 1  # this poll answers "running"
        else:
            self._settle()
        out = operations_pb2.Operation()
        out.CopyFrom(state.op)
        return out
