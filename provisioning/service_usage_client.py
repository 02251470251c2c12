"""Service Usage's part of ``Cloud``: which APIs a project has on, and turning them on.

``ServiceUsage`` reads services' states with ``BatchGetServices`` and starts enabling them
with ``BatchEnableServices``, over ``google.cloud.service_usage_v1``, at most
``BATCH_LIMIT`` (20) services per request, which is the API's limit for enabling.
It translates the library's exceptions into ``TemporaryError`` / ``PermanentError`` here
and nowhere else.

Enabling does not wait for its long-running operation: the step engine never blocks a
thread on a cloud operation.  ``ensure_apis`` calls ``enable_services`` and, on its next
run, observes again through ``enabled_services``.  One non-blocking look at a new
operation catches an enable that failed at once.  Enabling an enabled service is harmless
(the API answers a finished no-op).

The gcp cloud, assembled by ``bot``'s composition root, delegates its Service Usage
methods to it; ``ServiceUsage.connect`` builds the library client, against the real API
or a local emulator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions
from google.api_core.retry import Retry
from google.cloud import service_usage_v1
from google.cloud.service_usage_v1.services.service_usage.transports import (
    ServiceUsageGrpcTransport,
)
from google.longrunning import operations_pb2

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

# Services per request: BatchEnableServices takes at most 20 (BatchGetServices 30), and
# a request over the limit is refused whole.
BATCH_LIMIT = 20
# Seconds before the step engine tries again after a 429: Service Usage's troubleshooting
# guide asks for at least 30 seconds between retries of quota errors.
RATE_LIMIT_DELAY = 30.0

# Typed as Any: mypy sees proto-plus enum members as plain ints, not as the enum type.
_State: Any = service_usage_v1.State

# ErrorInfo reasons the real API gives (seen in its answers; not in the API reference).
_BILLING_REASON = "UREQ_PROJECT_BILLING_NOT_FOUND"
_UNKNOWN_SERVICE_REASON = "SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED"
_DISABLED_REASONS = frozenset({"SERVICE_DISABLED", "accessNotConfigured"})

_PERMISSION = re.compile(r"\b(serviceusage\.[a-zA-Z]+\.[a-zA-Z]+)\b")
_UNKNOWN_SERVICES = re.compile(r"permission denied for service\(s\):\s*(.+?)\.?$")
_DISABLED_IN = re.compile(r"has not been used in project (\S+?) before")
# "Quota exceeded for quota metric 'Mutate requests' and limit 'Mutate requests per minute'"
_QUOTA_LIMIT = re.compile(r"limit '([^']+)'")
_RATE = re.compile(r"per minute|per second|rate limit|too many requests", re.IGNORECASE)


@dataclass(frozen=True)
class _Call:
    """What a call was doing, in words for the requester and as an IAM permission."""

    doing: str  # "enable compute.googleapis.com in kf-proj"
    verb: str  # "enable APIs"
    permission: str  # "serviceusage.services.enable"
    project: str


def _batches(services: Sequence[str]) -> Iterator[list[str]]:
    """The services once each, in order, in lists of at most ``BATCH_LIMIT``."""
    unique = list(dict.fromkeys(services))
    for start in range(0, len(unique), BATCH_LIMIT):
        yield unique[start : start + BATCH_LIMIT]


def _quota_error(message: str, call: _Call) -> PermanentError:
    match = _QUOTA_LIMIT.search(message)
    what = f"the Service Usage quota '{match.group(1)}'" if match else "its Service Usage quota"
    return PermanentError(
        f"project {call.project} has used up {what}, so the bot could not {call.doing}; "
        "ask for more quota or try again tomorrow"
    )


def _permission_error(e: exceptions.GoogleAPICallError, call: _Call) -> PermanentError:
    message = e.message or ""
    if e.reason in _DISABLED_REASONS or "has not been used in project" in message:
        # The Service Usage API itself is off in the project that pays for the call.
        found = _DISABLED_IN.search(message)
        where = f"project {found.group(1)}" if found else call.project
        return PermanentError(
            f"the Service Usage API (serviceusage.googleapis.com) is not enabled in {where}; "
            "enable it there, then try again"
        )
    if e.reason == _UNKNOWN_SERVICE_REASON or "permission denied for service(s)" in message:
        found = _UNKNOWN_SERVICES.search(message)
        names = found.group(1) if found else "a requested API"
        return PermanentError(
            f"Service Usage does not know {names}, or will not let the bot use it in "
            f"{call.project}; check the API name, or ask a project owner to grant the bot "
            f"{call.permission}"
        )
    match = _PERMISSION.search(message)
    permission = match.group(1) if match else call.permission
    return missing_permission(verb=call.verb, project=call.project, permission=permission)


def _translate(e: exceptions.GoogleAPIError, call: _Call) -> Exception:
    """The error kind for a library exception raised while doing ``call``."""
    if not isinstance(e, exceptions.GoogleAPICallError):
        return unanswered_error(e, api="Service Usage", doing=call.doing)
    message = e.message or ""
    if isinstance(e, exceptions.FailedPrecondition) and (
        e.reason == _BILLING_REASON or "billing" in message.lower()
    ):
        return PermanentError(
            f"project {call.project} has no billing account, so its APIs cannot be enabled; "
            f"enable billing on project {call.project}, then try again"
        )
    quota = "quota" in message.lower()
    if isinstance(e, exceptions.TooManyRequests) and (not quota or _RATE.search(message)):
        # 429, and RESOURCE_EXHAUSTED that is a per-minute limit rather than a used-up quota.
        return TemporaryError(
            f"Service Usage is rate limiting; will {call.doing} later", delay=RATE_LIMIT_DELAY
        )
    if isinstance(e, exceptions.TooManyRequests | exceptions.PermissionDenied) and quota:
        return _quota_error(message, call)
    if isinstance(e, exceptions.PermissionDenied):
        return _permission_error(e, call)
    return general_error(e, api="Service Usage", doing=call.doing, message=message)


class ServiceUsage:
    """The enabled APIs of a project, as the steps see them."""

    def __init__(
        self,
        client: service_usage_v1.ServiceUsageClient,
        *,
        read_retry: Retry | None = READ_RETRY,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._client = client
        self._read_retry = read_retry
        self._timeout = timeout

    @classmethod
    def connect(cls, emulator_host: str | None) -> ServiceUsage:
        """A client for ``emulator_host`` (insecure, anonymous) or, if None, Google (ADC)."""
        if emulator_host is None:
            return cls(service_usage_v1.ServiceUsageClient())
        return cls(
            emulator_client(
                service_usage_v1.ServiceUsageClient, ServiceUsageGrpcTransport, emulator_host
            )
        )

    def enabled_services(self, project: str, services: Sequence[str]) -> frozenset[str]:
        """Those of ``services`` (ids like ``compute.googleapis.com``) that are ENABLED."""
        call = _Call(
            f"check which APIs are enabled in {project}",
            "read the project's APIs",
            "serviceusage.services.get",
            project,
        )
        parent = f"projects/{project}"
        enabled: set[str] = set()
        for batch in _batches(services):
            request = service_usage_v1.BatchGetServicesRequest(
                parent=parent, names=[f"{parent}/services/{s}" for s in batch]
            )
            try:
                response = self._client.batch_get_services(
                    request=request, retry=self._read_retry, timeout=self._timeout
                )
            except exceptions.GoogleAPIError as e:
                raise _translate(e, call) from e
            for service in response.services:
                # Answers name the project by number, so match on the service id alone.
                if service.state == _State.ENABLED:
                    enabled.add(service.name.rsplit("/", 1)[-1])
        return frozenset(enabled & set(services))

    def enable_services(self, project: str, services: Sequence[str]) -> None:
        """Start enabling ``services``; the caller observes the outcome later."""
        for batch in _batches(services):
            what = batch[0] if len(batch) == 1 else f"{len(batch)} APIs ({', '.join(batch)})"
            call = _Call(
                f"enable {what} in {project}",
                "enable APIs",
                "serviceusage.services.enable",
                project,
            )
            request = service_usage_v1.BatchEnableServicesRequest(
                parent=f"projects/{project}", service_ids=batch
            )
            try:
                # Never .result() it: that would block the step's thread until it is done.
                future = self._client.batch_enable_services(
                    request=request, retry=None, timeout=self._timeout
                )
            except exceptions.GoogleAPIError as e:
                raise _translate(e, call) from e
            self._check_started(future.operation, call)

    def _check_started(self, operation: operations_pb2.Operation, call: _Call) -> None:
        """One look (no waiting) at a new operation, to report one that failed at once."""
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
