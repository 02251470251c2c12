"""Cloud Endpoints' part of ``Cloud``: the deployment's DNS name over Service Management.

``EndpointsClient`` makes ``NAME.endpoints.PROJECT.cloud.goog`` point at the ingress's
static IP the way Google does it: a Service Management *managed service* named exactly
that host, whose rolled-out service config (a ``google.api.Service``) lists
``endpoints: [{name: host, target: ip}]``.  It uses ``ServiceManagerClient`` over gRPC
(its REST transport cannot poll the ``operations/...`` names the API returns), and
translates the library's exceptions into ``TemporaryError`` / ``PermanentError`` here and
nowhere else.

``ensure_endpoint`` observes, compares and acts: it creates the service (or undeletes it,
since a name deleted within 30 days cannot be created again), and only when the
rolled-out config points the host elsewhere does it create a config and roll it out.  It
never waits for a long-running operation: one non-blocking look at a new operation
catches one that failed at once; when it is still running (or a rollout is in progress)
the answer is True and the step looks again on its next run.

The gcp cloud (``provisioning/gcp_cloud.py``), assembled by ``bot``'s composition root,
delegates its Endpoints methods to it, after reading the address's IP; ``connect``
builds the library client, against the real API or a local emulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.api import endpoint_pb2, service_pb2
from google.api_core import exceptions
from google.api_core.retry import Retry
from google.cloud import servicemanagement_v1 as sm
from google.cloud.servicemanagement_v1.services.service_manager.transports import (
    ServiceManagerGrpcTransport,
)
from google.longrunning import operations_pb2
from google.protobuf import wrappers_pb2

from provisioning.errors import PermanentError, TemporaryError
from provisioning.google_calls import (
    CALL_TIMEOUT,
    READ_RETRY,
    emulator_client,
    general_error,
    missing_permission,
    operation_error,
    unanswered_error,
)

# Seconds before the step engine tries again after a 429 or a per-minute limit.
RATE_LIMIT_DELAY = 30.0
# The service config format version Endpoints uses for ``google.api.Service`` configs.
CONFIG_VERSION = 3

# Typed as Any: mypy sees proto-plus enum members as plain ints, not as the enum type.
_RolloutStatus: Any = sm.Rollout.RolloutStatus

_DISABLED_REASONS = frozenset({"SERVICE_DISABLED", "accessNotConfigured"})
_PERMISSION = re.compile(r"\b(servicemanagement\.[a-zA-Z]+\.[a-zA-Z]+)\b")
_DISABLED_IN = re.compile(r"has not been used in project (\S+?) before")
_RATE = re.compile(r"per minute|per second|rate limit|too many requests", re.IGNORECASE)
# A create refused because the name was deleted within 30 days mentions the deletion
# (the exact status and words are undocumented: ALREADY_EXISTS or FAILED_PRECONDITION).
_DELETED = re.compile(r"\bdelet|undelet", re.IGNORECASE)


@dataclass(frozen=True)
class _Call:
    """What a call was doing, in words for the requester and as an IAM permission."""

    doing: str  # "create the Endpoints service demo.endpoints.kf-proj.cloud.goog"
    verb: str  # "create Endpoints services"
    permission: str  # "servicemanagement.services.create"
    project: str


def _permission_error(e: exceptions.GoogleAPICallError, call: _Call) -> PermanentError:
    message = e.message or ""
    if e.reason in _DISABLED_REASONS or "has not been used in project" in message:
        found = _DISABLED_IN.search(message)
        where = f"project {found.group(1)}" if found else call.project
        return PermanentError(
            "the Service Management API (servicemanagement.googleapis.com) is not enabled "
            f"in {where}; enable it there, then try again"
        )
    match = _PERMISSION.search(message)
    permission = match.group(1) if match else call.permission
    return missing_permission(verb=call.verb, project=call.project, permission=permission)


def _translate(e: exceptions.GoogleAPIError, call: _Call) -> Exception:
    """The error kind for a library exception raised while doing ``call``."""
    if not isinstance(e, exceptions.GoogleAPICallError):
        return unanswered_error(e, api="Service Management", doing=call.doing)
    message = e.message or ""
    quota = "quota" in message.lower()
    if isinstance(e, exceptions.TooManyRequests) and (not quota or _RATE.search(message)):
        # 429, and RESOURCE_EXHAUSTED that is a per-minute limit rather than a used-up quota.
        return TemporaryError(
            f"Service Management is rate limiting; will {call.doing} later",
            delay=RATE_LIMIT_DELAY,
        )
    if isinstance(e, exceptions.TooManyRequests | exceptions.PermissionDenied) and quota:
        return PermanentError(
            f"project {call.project} has used up its Service Management quota, so the bot "
            f"could not {call.doing}; ask for more quota or try again tomorrow"
        )
    if isinstance(e, exceptions.PermissionDenied):
        return _permission_error(e, call)
    return general_error(e, api="Service Management", doing=call.doing, message=message)


def endpoint_config(project: str, host: str, ip: str) -> service_pb2.Service:
    """The service config that points ``host`` at ``ip`` (the DNS A record)."""
    return service_pb2.Service(
        name=host,
        title=f"Kubeflow at {host}",
        producer_project_id=project,
        config_version=wrappers_pb2.UInt32Value(value=CONFIG_VERSION),
        endpoints=[endpoint_pb2.Endpoint(name=host, target=ip)],
    )


class EndpointsClient:
    """The Endpoints DNS names of one project's deployments, as the steps see them."""

    def __init__(
        self,
        client: sm.ServiceManagerClient,
        *,
        read_retry: Retry | None = READ_RETRY,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._client = client
        self._read_retry = read_retry
        self._timeout = timeout

    @classmethod
    def connect(cls, emulator_host: str | None) -> EndpointsClient:
        """A client for ``emulator_host`` (insecure, anonymous) or, if None, Google (ADC)."""
        if emulator_host is None:
            # gRPC is the library's default transport; REST could not poll operations.
            return cls(sm.ServiceManagerClient(transport="grpc"))
        return cls(
            emulator_client(sm.ServiceManagerClient, ServiceManagerGrpcTransport, emulator_host)
        )

    # -- the two Cloud methods -------------------------------------------------------------

    def ensure_endpoint(self, project: str, host: str, ip: str) -> bool:
        """Point ``host`` at ``ip``; True when something changed or is still changing."""
        changed = False
        if not self._service_exists(project, host):
            if not self._create_or_undelete(project, host):
                return True  # still running: the step looks again
            changed = True
        if self._rollout_in_progress(project, host):
            return True
        if self._current_target(project, host) == ip:
            return changed
        config_id = self._create_config(project, host, ip)
        self._roll_out(project, host, config_id)
        return True

    def delete_endpoint(self, project: str, host: str) -> bool:
        """Start deleting the Endpoints service; False when there is none."""
        if not self._service_exists(project, host):
            return False
        call = _Call(
            f"delete the Endpoints service {host}",
            "delete Endpoints services",
            "servicemanagement.services.delete",
            project,
        )
        try:
            future = self._client.delete_service(
                service_name=host, retry=None, timeout=self._timeout
            )
        except exceptions.NotFound:
            return False  # deleted since the read
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        self._look(future.operation, call)
        return True

    # -- the service -----------------------------------------------------------------------

    def _service_exists(self, project: str, host: str) -> bool:
        call = _Call(
            f"read the Endpoints service {host}",
            "read Endpoints services",
            "servicemanagement.services.get",
            project,
        )
        try:
            self._client.get_service(
                service_name=host, retry=self._read_retry, timeout=self._timeout
            )
        except exceptions.NotFound:
            return False
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return True

    def _create_or_undelete(self, project: str, host: str) -> bool:
        """Create the service, or undelete it; True once its operation is done."""
        call = _Call(
            f"create the Endpoints service {host}",
            "create Endpoints services",
            "servicemanagement.services.create",
            project,
        )
        service = sm.ManagedService(service_name=host, producer_project_id=project)
        try:
            future = self._client.create_service(service=service, retry=None, timeout=self._timeout)
        except (exceptions.AlreadyExists, exceptions.FailedPrecondition) as e:
            if _DELETED.search(e.message or ""):
                return self._undelete(project, host)
            if isinstance(e, exceptions.AlreadyExists):
                return True  # created since the read
            raise _translate(e, call) from e
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return self._look(future.operation, call)

    def _undelete(self, project: str, host: str) -> bool:
        call = _Call(
            f"undelete the Endpoints service {host}",
            "undelete Endpoints services",
            # Choice: undelete is not listed separately; it needs the delete permission.
            "servicemanagement.services.delete",
            project,
        )
        try:
            future = self._client.undelete_service(
                service_name=host, retry=None, timeout=self._timeout
            )
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return self._look(future.operation, call)

    # -- configs and rollouts --------------------------------------------------------------

    def _newest_rollout(self, project: str, host: str, status: str) -> sm.Rollout | None:
        call = _Call(
            f"read the rollouts of the Endpoints service {host}",
            "read Endpoints services",
            "servicemanagement.services.get",
            project,
        )
        request = sm.ListServiceRolloutsRequest(
            service_name=host, filter=f"status={status}", page_size=1
        )
        try:
            pages = self._client.list_service_rollouts(
                request=request, retry=self._read_retry, timeout=self._timeout
            )
            return next(iter(pages), None)  # newest first; only the first page is read
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e

    def _rollout_in_progress(self, project: str, host: str) -> bool:
        return self._newest_rollout(project, host, "IN_PROGRESS") is not None

    def _current_target(self, project: str, host: str) -> str | None:
        """Where the newest successful rollout points ``host``; None if nowhere."""
        rollout = self._newest_rollout(project, host, "SUCCESS")
        if rollout is None:
            return None
        percentages = dict(rollout.traffic_percent_strategy.percentages)
        if not percentages:
            return None
        config_id = max(percentages, key=lambda k: percentages[k])
        call = _Call(
            f"read config {config_id} of the Endpoints service {host}",
            "read Endpoints services",
            "servicemanagement.services.get",
            project,
        )
        try:
            config = self._client.get_service_config(
                service_name=host,
                config_id=config_id,
                retry=self._read_retry,
                timeout=self._timeout,
            )
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return next((str(e.target) for e in config.endpoints if e.name == host), None)

    def _create_config(self, project: str, host: str, ip: str) -> str:
        call = _Call(
            f"point {host} at {ip}",
            "update Endpoints services",
            "servicemanagement.services.update",
            project,
        )
        try:
            config = self._client.create_service_config(
                service_name=host,
                service_config=endpoint_config(project, host, ip),
                retry=None,
                timeout=self._timeout,
            )
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return str(config.id)

    def _roll_out(self, project: str, host: str, config_id: str) -> None:
        call = _Call(
            f"roll out config {config_id} of {host}",
            "update Endpoints services",
            "servicemanagement.services.update",
            project,
        )
        rollout = sm.Rollout(
            traffic_percent_strategy=sm.Rollout.TrafficPercentStrategy(
                percentages={config_id: 100.0}
            )
        )
        try:
            future = self._client.create_service_rollout(
                service_name=host, rollout=rollout, retry=None, timeout=self._timeout
            )
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        self._look(future.operation, call)

    # -- operations ------------------------------------------------------------------------

    def _look(self, operation: operations_pb2.Operation, call: _Call) -> bool:
        """One look (no waiting) at a new operation: True if done, raises if it failed."""
        if not operation.done:
            try:
                operation = self._client.transport.operations_client.get_operation(
                    name=operation.name, retry=self._read_retry, timeout=self._timeout
                )
            except exceptions.GoogleAPIError as e:
                raise _translate(e, call) from e
        if operation.done and operation.HasField("error") and operation.error.code:
            error = operation_error(operation.error)
            raise _translate(error, call) from error
        return bool(operation.done)
