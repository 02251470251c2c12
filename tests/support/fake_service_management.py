"""A stateful fake of Service Management API v1 (Cloud Endpoints), over real gRPC on loopback.

The real ``google.cloud.servicemanagement_v1.ServiceManagerClient`` talks to it through an
insecure channel (``FakeServiceManagement.client()``).  The fake decodes and encodes the
library's own proto-plus types (``GetServiceRequest``, ``ManagedService``, ``Rollout``, ...),
the plain protobuf ``google.api.Service`` for service configs and plain protobuf
``google.longrunning`` messages for operations.  ``google.longrunning.Operations/
GetOperation`` is served on the same server: the gRPC transport polls it there (the REST
transport cannot poll ``operations/...`` names, see the testing notes).

Served methods of ``google.api.servicemanagement.v1.ServiceManager``: GetService,
CreateService, DeleteService, UndeleteService (long-running), CreateServiceConfig,
GetServiceConfig, ListServiceConfigs, CreateServiceRollout (long-running),
ListServiceRollouts, GetServiceRollout; and ``google.longrunning.Operations`` GetOperation.
Anything else answers UNIMPLEMENTED.

Behaviour, modelled on the real API where it is documented:

* A managed service's name must be a DNS name (lower-case labels of at most 63
  characters) ending ``.endpoints.{producer_project_id}.cloud.goog``, for a project the
  fake knows (``projects``); else INVALID_ARGUMENT (the wording is the fake's).  An
  unknown producer project is PERMISSION_DENIED "Caller does not have permission
  'servicemanagement.services.create' on project P.", the real API's words.
* CreateService of a live name is ALREADY_EXISTS.  A deleted service is kept for
  ``RETENTION_SECONDS`` (30 days) and its name cannot be reused meanwhile (documented);
  the status and words of that refusal are not documented, so the fake answers
  FAILED_PRECONDITION "Service 'H' has been deleted and can be undeleted ..." — a
  choice.  After 30 days on ``clock`` it is purged and the name is free again.
* GetService, the config and rollout methods and DeleteService see a deleted service as
  NOT_FOUND (a choice: ``ManagedService`` has no state field to show it).
  UndeleteService restores a deleted service with its configs and rollouts; undeleting a
  live one is FAILED_PRECONDITION, an unknown or purged one NOT_FOUND (choices).
* Create, delete and undelete change the service at once; their operation is reported
  running until it is done (a choice: the real ones take seconds).  A rollout is
  IN_PROGRESS until its operation is done, then SUCCESS, and only then does the host
  point at the new target.  A new rollout cancels older ones still in progress (the
  documented meaning of CANCELLED).  An operation is done once it has answered
  ``operation_polls`` GetOperation calls as running *and* ``operation_seconds`` have passed
  on ``clock``; every request settles what is due first.
* CreateServiceConfig: ``service_config.name`` must be the service's name, every
  ``endpoints[].name`` must be the service's name and every ``target`` an IPv4 address,
  else INVALID_ARGUMENT.  Config and rollout ids look like the real ones
  (``2026-01-02r0``).  GetServiceConfig without ``config_id`` answers the newest config (a
  choice).  Lists are newest first.
* ListServiceRollouts: ``filter`` is documented as required: empty is INVALID_ARGUMENT
  here; ``status=STATUS`` and ``strategy=TrafficPercentStrategy`` are understood.
* CreateServiceRollout takes a traffic-percent strategy whose percentages name existing
  configs and add up to 100, else INVALID_ARGUMENT.  Delete-service rollouts are not
  modelled (INVALID_ARGUMENT).

Fault injection:

* ``fail_next(method, code, message, times=1, reason=None)``: the next ``times`` calls of
  ``method`` (e.g. ``"CreateService"``, or ``None`` for any) fail with that status (and an
  ErrorInfo ``reason`` if given) before touching any state.
* ``fail_next_operation(code, message)``: the next long-running operation finishes with
  that error; a failing rollout ends FAILED_ROLLED_BACK and changes no target.

Inspection: ``requests`` (every call as ``GrpcCall(method, request, code)``, in order),
``calls(method)``, ``count(method)``, ``writes()`` (the mutating calls), ``target_of(host)``
(the IPv4 the rolled-out config points the host at, or None), ``exists(host)``,
``deleted(host)``, ``configs(host)``, ``rollouts(host)``, ``operation(name)``.
Seeding: ``add_service(host, project, deleted=False)`` puts a live or just-deleted
service in place without a request.

Not modelled: SubmitConfigSource (OpenAPI files), ListServices, GenerateConfigReport,
IAM policies, authentication, the DNS record itself.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import proto
from google.api import service_pb2
from google.cloud import servicemanagement_v1 as sm
from google.cloud.servicemanagement_v1.services.service_manager.transports import (
    ServiceManagerGrpcTransport,
)
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2

from tests.support.grpc_fake import GrpcError, GrpcFake, Method

SERVICE = "google.api.servicemanagement.v1.ServiceManager"
OPERATIONS = "google.longrunning.Operations"
DOMAIN = "servicemanagement.googleapis.com"

DEFAULT_PROJECTS: frozenset[str] = frozenset({"kf-proj"})
RETENTION_SECONDS = 30 * 24 * 3600.0
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50

PERMISSION_MESSAGE = "Caller does not have permission '{permission}' on project {project}."
DELETED_MESSAGE = (
    "Service '{name}' has been deleted and can be undeleted within 30 days of its "
    "deletion; it cannot be created again until then."
)

# Typed as Any: mypy sees proto-plus enum members as plain ints, not as the enum type.
RolloutStatus: Any = sm.Rollout.RolloutStatus

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_STATUS_FILTER = re.compile(r"^\s*status\s*=\s*([A-Z_]+)\s*$")
_STRATEGY_FILTER = re.compile(r"^\s*strategy\s*=\s*([A-Za-z]+)\s*$")
_WRITES = frozenset(
    {
        "CreateService",
        "DeleteService",
        "UndeleteService",
        "CreateServiceConfig",
        "CreateServiceRollout",
    }
)


@dataclass
class _Managed:
    name: str
    project: str
    deleted_at: float | None = None
    configs: list[service_pb2.Service] = field(default_factory=list)  # oldest first
    rollouts: list[sm.Rollout] = field(default_factory=list)  # oldest first


@dataclass
class _OpState:
    op: operations_pb2.Operation
    response: Callable[[], Any]  # the message packed into op.response when done
    polls_left: int
    done_at: float
    on_done: Callable[[], None] | None = None
    on_error: Callable[[], None] | None = None
    error: GrpcError | None = None


def _invalid(message: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(message).pb(message) if isinstance(message, proto.Message) else message)
    return packed


def _copy(op: operations_pb2.Operation) -> operations_pb2.Operation:
    out = operations_pb2.Operation()
    out.CopyFrom(op)
    return out


class FakeServiceManagement(GrpcFake):
    """Service Management v1 over gRPC on 127.0.0.1; see the module docstring.

    ``projects`` are the producer projects the fake knows (by id).
    """

    DOMAIN = DOMAIN

    def __init__(
        self,
        *,
        projects: Iterable[str] = DEFAULT_PROJECTS,
        operation_polls: int = 1,
        operation_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        max_workers: int = 8,
    ) -> None:
        self.projects = frozenset(projects)
        self.operation_polls = operation_polls
        self.operation_seconds = operation_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self._services: dict[str, _Managed] = {}
        self._ops: dict[str, _OpState] = {}
        self._op_faults: list[GrpcError] = []
        self._ids = itertools.count(0)
        self._grpc_server(max_workers, self._lock)
        methods: dict[str, Method] = {
            "GetService": (sm.GetServiceRequest, self._get_service),
            "CreateService": (sm.CreateServiceRequest, self._create_service),
            "DeleteService": (sm.DeleteServiceRequest, self._delete_service),
            "UndeleteService": (sm.UndeleteServiceRequest, self._undelete_service),
            "CreateServiceConfig": (sm.CreateServiceConfigRequest, self._create_config),
            "GetServiceConfig": (sm.GetServiceConfigRequest, self._get_config),
            "ListServiceConfigs": (sm.ListServiceConfigsRequest, self._list_configs),
            "CreateServiceRollout": (sm.CreateServiceRolloutRequest, self._create_rollout),
            "ListServiceRollouts": (sm.ListServiceRolloutsRequest, self._list_rollouts),
            "GetServiceRollout": (sm.GetServiceRolloutRequest, self._get_rollout),
        }
        self._serve(SERVICE, methods)
        self._serve(
            OPERATIONS, {"GetOperation": (operations_pb2.GetOperationRequest, self._get_operation)}
        )

    # -- lifecycle -------------------------------------------------------------------------

    def client(self) -> sm.ServiceManagerClient:
        """A real ``ServiceManagerClient`` talking to this fake (anonymous, insecure)."""
        return self._client(sm.ServiceManagerClient, ServiceManagerGrpcTransport)

    # -- fault injection and inspection ----------------------------------------------------

    def fail_next_operation(self, code: grpc.StatusCode, message: str) -> None:
        """Make the next long-running operation finish with this error."""
        with self._lock:
            self._op_faults.append(GrpcError(code, message))

    def writes(self) -> list[str]:
        """The mutating methods called so far, in order (refused ones included)."""
        return [call.method for call in self.requests if call.method in _WRITES]

    def target_of(self, host: str) -> str | None:
        """Where the rolled-out config points ``host``; None if nothing live does."""
        with self._lock:
            self._settle()
            managed = self._services.get(host)
            if managed is None or managed.deleted_at is not None:
                return None
            config = self._active_config(managed)
            if config is None:
                return None
            return next((e.target for e in config.endpoints if e.name == host), None)

    def exists(self, host: str) -> bool:
        """True while the service is live (not deleted)."""
        with self._lock:
            self._settle()
            managed = self._services.get(host)
            return managed is not None and managed.deleted_at is None

    def deleted(self, host: str) -> bool:
        """True while the service is deleted but can still be undeleted."""
        with self._lock:
            self._settle()
            managed = self._services.get(host)
            return managed is not None and managed.deleted_at is not None

    def configs(self, host: str) -> list[service_pb2.Service]:
        """The service's configs, oldest first."""
        with self._lock:
            managed = self._services.get(host)
            return [] if managed is None else list(managed.configs)

    def rollouts(self, host: str) -> list[sm.Rollout]:
        """The service's rollouts, oldest first, operations settled first."""
        with self._lock:
            self._settle()
            managed = self._services.get(host)
            return [] if managed is None else [sm.Rollout(r) for r in managed.rollouts]

    def operation(self, name: str) -> operations_pb2.Operation | None:
        """A copy of an operation by name, as GetOperation would answer without polling."""
        with self._lock:
            self._settle()
            state = self._ops.get(name)
            return None if state is None else _copy(state.op)

    def add_service(self, host: str, project: str, *, deleted: bool = False) -> None:
        """Seed a service (live, or deleted just now) without going through the API."""
        with self._lock:
            self._services[host] = _Managed(host, project, self.clock() if deleted else None)

    # -- plumbing --------------------------------------------------------------------------

    def _before_call(self) -> None:
        self._settle()

    def _settle(self) -> None:
        now = self.clock()
        for state in self._ops.values():
            if not state.op.done and state.polls_left <= 0 and now >= state.done_at:
                self._finish(state)
        for name, managed in list(self._services.items()):
            if managed.deleted_at is not None and now >= managed.deleted_at + RETENTION_SECONDS:
                del self._services[name]

    def _finish(self, state: _OpState) -> None:
        state.op.done = True
        if state.error is not None:
            state.op.error.CopyFrom(state.error.status(DOMAIN))
            if state.on_error is not None:
                state.on_error()
            return
        if state.on_done is not None:
            state.on_done()
        state.op.response.CopyFrom(_pack(state.response()))

    def _start_operation(
        self,
        name: str,
        resource: str,
        response: Callable[[], Any],
        on_done: Callable[[], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> operations_pb2.Operation:
        metadata = _pack(sm.OperationMetadata(resource_names=[resource]))
        op = operations_pb2.Operation(name=name, metadata=metadata)
        self._ops[name] = _OpState(
            op,
            response,
            polls_left=self.operation_polls,
            done_at=self.clock() + self.operation_seconds,
            on_done=on_done,
            on_error=on_error,
            error=self._op_faults.pop(0) if self._op_faults else None,
        )
        # Running in this answer, as the real API answers; a later request settles it.
        return _copy(op)

    def _next_id(self) -> str:
        # Real config and rollout ids look like "2026-01-02r0".
        return f"{datetime.now(UTC):%Y-%m-%d}r{next(self._ids)}"

    def _check_name(self, name: str) -> None:
        if not name:
            raise _invalid("The service name must not be empty.")
        labels = name.split(".")
        if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
            raise _invalid(f"The service name '{name}' is not a valid DNS name.")

    def _live(self, name: str) -> _Managed:
        """The live service, or NOT_FOUND (deleted services included: a choice)."""
        self._check_name(name)
        managed = self._services.get(name)
        if managed is None or managed.deleted_at is not None:
            raise GrpcError(grpc.StatusCode.NOT_FOUND, f"Service '{name}' not found.")
        return managed

    def _active_config(self, managed: _Managed) -> service_pb2.Service | None:
        for rollout in reversed(managed.rollouts):
            if rollout.status == RolloutStatus.SUCCESS:
                percentages = dict(rollout.traffic_percent_strategy.percentages)
                config_id = max(percentages, key=lambda k: percentages[k])
                return next((c for c in managed.configs if c.id == config_id), None)
        return None

    def _managed_service(self, managed: _Managed) -> sm.ManagedService:
        return sm.ManagedService(service_name=managed.name, producer_project_id=managed.project)

    @staticmethod
    def _page(items: list[Any], page_size: int, page_token: str) -> tuple[list[Any], str]:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise _invalid(f"page_size must be between 0 and {MAX_PAGE_SIZE}.")
        size = page_size or DEFAULT_PAGE_SIZE
        try:
            start = int(page_token) if page_token else 0
        except ValueError as e:
            raise _invalid(f"Invalid page token '{page_token}'.") from e
        end = start + size
        return items[start:end], (str(end) if end < len(items) else "")

    # -- services --------------------------------------------------------------------------

    def _get_service(self, request: sm.GetServiceRequest) -> Any:
        return self._managed_service(self._live(request.service_name))

    def _create_service(self, request: sm.CreateServiceRequest) -> Any:
        name = request.service.service_name
        project = request.service.producer_project_id
        self._check_name(name)
        if not project:
            raise _invalid("The producer project id must not be empty.")
        if project not in self.projects:
            raise GrpcError(
                grpc.StatusCode.PERMISSION_DENIED,
                PERMISSION_MESSAGE.format(
                    permission="servicemanagement.services.create", project=project
                ),
            )
        if not name.endswith(f".endpoints.{project}.cloud.goog") or name.count(".") != 4:
            # Choice: the real API's words for a name outside the project's domain.
            raise _invalid(
                f"The service name '{name}' must be of the form "
                f"NAME.endpoints.{project}.cloud.goog for producer project {project}."
            )
        existing = self._services.get(name)
        if existing is not None and existing.deleted_at is None:
            raise GrpcError(grpc.StatusCode.ALREADY_EXISTS, f"Service '{name}' already exists.")
        if existing is not None:
            # Choice: the 30-day retention is documented; this status and wording are not.
            raise GrpcError(grpc.StatusCode.FAILED_PRECONDITION, DELETED_MESSAGE.format(name=name))
        managed = _Managed(name, project)
        self._services[name] = managed
        return self._start_operation(
            f"operations/services.{name}-{next(self._ids)}",
            f"services/{name}",
            lambda: self._managed_service(managed),
        )

    def _delete_service(self, request: sm.DeleteServiceRequest) -> Any:
        managed = self._live(request.service_name)
        managed.deleted_at = self.clock()
        return self._start_operation(
            f"operations/services.{managed.name}-{next(self._ids)}",
            f"services/{managed.name}",
            empty_pb2.Empty,
        )

    def _undelete_service(self, request: sm.UndeleteServiceRequest) -> Any:
        name = request.service_name
        self._check_name(name)
        managed = self._services.get(name)
        if managed is None:
            raise GrpcError(grpc.StatusCode.NOT_FOUND, f"Service '{name}' not found.")
        if managed.deleted_at is None:
            # Choice: undeleting a live service is refused.
            raise GrpcError(
                grpc.StatusCode.FAILED_PRECONDITION, f"Service '{name}' is not deleted."
            )
        managed.deleted_at = None
        return self._start_operation(
            f"operations/services.{name}-{next(self._ids)}",
            f"services/{name}",
            lambda: sm.UndeleteServiceResponse(service=self._managed_service(managed)),
        )

    # -- configs ---------------------------------------------------------------------------

    def _create_config(self, request: sm.CreateServiceConfigRequest) -> Any:
        managed = self._live(request.service_name)
        config = service_pb2.Service()
        config.CopyFrom(request.service_config)
        if config.name != managed.name:
            raise _invalid(
                f"The service config name '{config.name}' must be the service name "
                f"'{managed.name}'."
            )
        for endpoint in config.endpoints:
            if endpoint.name != managed.name:
                raise _invalid(
                    f"Endpoint name '{endpoint.name}' must be the service name '{managed.name}'."
                )
            try:
                ipaddress.IPv4Address(endpoint.target)
            except ValueError as e:
                raise _invalid(
                    f"Endpoint target '{endpoint.target}' of '{endpoint.name}' is not an "
                    "IPv4 address."
                ) from e
        config.id = self._next_id()
        if not config.producer_project_id:
            config.producer_project_id = managed.project
        managed.configs.append(config)
        return config

    def _get_config(self, request: sm.GetServiceConfigRequest) -> Any:
        managed = self._live(request.service_name)
        if not request.config_id:
            if not managed.configs:
                raise GrpcError(
                    grpc.StatusCode.NOT_FOUND, f"Service '{managed.name}' has no configs."
                )
            return managed.configs[-1]
        for config in managed.configs:
            if config.id == request.config_id:
                return config
        raise GrpcError(
            grpc.StatusCode.NOT_FOUND,
            f"Service config '{request.config_id}' of '{managed.name}' not found.",
        )

    def _list_configs(self, request: sm.ListServiceConfigsRequest) -> Any:
        managed = self._live(request.service_name)
        page, token = self._page(
            list(reversed(managed.configs)), request.page_size, request.page_token
        )
        return sm.ListServiceConfigsResponse(service_configs=page, next_page_token=token)

    # -- rollouts --------------------------------------------------------------------------

    def _create_rollout(self, request: sm.CreateServiceRolloutRequest) -> Any:
        managed = self._live(request.service_name)
        rollout = sm.Rollout(request.rollout)
        if "delete_service_strategy" in rollout:
            raise _invalid("Delete-service rollouts are not supported by this fake.")
        percentages = dict(rollout.traffic_percent_strategy.percentages)
        if not percentages:
            raise _invalid("A rollout needs a traffic percent strategy with percentages.")
        known = {c.id for c in managed.configs}
        unknown = sorted(set(percentages) - known)
        if unknown:
            raise _invalid(f"Service config(s) {', '.join(unknown)} of '{managed.name}' not found.")
        if abs(sum(percentages.values()) - 100.0) > 1e-9:
            raise _invalid("The traffic percentages of a rollout must add up to 100.")
        for older in managed.rollouts:
            if older.status == RolloutStatus.IN_PROGRESS:
                older.status = RolloutStatus.CANCELLED
        rollout.rollout_id = self._next_id()
        rollout.service_name = managed.name
        rollout.status = RolloutStatus.IN_PROGRESS
        rollout.created_by = "fake@example.com"
        managed.rollouts.append(rollout)
        rollout_id = rollout.rollout_id

        def stored() -> sm.Rollout:
            return next(r for r in managed.rollouts if r.rollout_id == rollout_id)

        def done() -> None:
            if stored().status == RolloutStatus.IN_PROGRESS:
                stored().status = RolloutStatus.SUCCESS

        def failed() -> None:
            stored().status = RolloutStatus.FAILED_ROLLED_BACK

        return self._start_operation(
            f"operations/rollouts.{managed.name}:{rollout_id}",
            f"services/{managed.name}/rollouts/{rollout_id}",
            lambda: sm.Rollout(stored()),
            on_done=done,
            on_error=failed,
        )

    def _list_rollouts(self, request: sm.ListServiceRolloutsRequest) -> Any:
        managed = self._live(request.service_name)
        rollouts = list(reversed(managed.rollouts))
        if not request.filter:
            raise _invalid("A filter is required, e.g. 'status=SUCCESS'.")
        status = _STATUS_FILTER.match(request.filter)
        strategy = _STRATEGY_FILTER.match(request.filter)
        if status is not None:
            if status.group(1) not in RolloutStatus.__members__:
                raise _invalid(f"Unknown rollout status in filter '{request.filter}'.")
            wanted = RolloutStatus[status.group(1)]
            rollouts = [r for r in rollouts if r.status == wanted]
        elif strategy is not None and strategy.group(1) == "TrafficPercentStrategy":
            rollouts = [r for r in rollouts if "traffic_percent_strategy" in r]
        elif strategy is not None and strategy.group(1) == "DeleteServiceStrategy":
            rollouts = [r for r in rollouts if "delete_service_strategy" in r]
        else:
            raise _invalid(f"Unsupported filter '{request.filter}'.")
        page, token = self._page(rollouts, request.page_size, request.page_token)
        return sm.ListServiceRolloutsResponse(rollouts=page, next_page_token=token)

    def _get_rollout(self, request: sm.GetServiceRolloutRequest) -> Any:
        managed = self._live(request.service_name)
        for rollout in managed.rollouts:
            if rollout.rollout_id == request.rollout_id:
                return rollout
        raise GrpcError(
            grpc.StatusCode.NOT_FOUND,
            f"Rollout '{request.rollout_id}' of '{managed.name}' not found.",
        )

    # -- operations ------------------------------------------------------------------------

    def _get_operation(self, request: operations_pb2.GetOperationRequest) -> Any:
        state = self._ops.get(request.name)
        if state is None:
            raise GrpcError(grpc.StatusCode.NOT_FOUND, f"Operation '{request.name}' not found.")
        if not state.op.done and state.polls_left > 0:
            state.polls_left -= 1  # this poll answers "running"
        else:
            self._settle()
        return _copy(state.op)
