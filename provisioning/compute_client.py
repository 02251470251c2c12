"""Compute Engine's part of ``Cloud``: GPU zones and global addresses over ``compute_v1``.

``ComputeClient`` answers which zones offer an accelerator type (from the aggregated
accelerator-type list), reserves, reads and releases the global static address the
ingress uses, and reads the id of the backend service GKE's ingress controller made (the
audience of IAP's JWT).  It translates the library's exceptions into ``TemporaryError`` /
``PermanentError`` here and nowhere else.  Inserts and deletes do not wait for their
operation: the step observes the address again next time (one non-blocking look at a new
insert's operation catches an insert that failed at once).  The gcp cloud, assembled by
``bot``'s composition root, delegates its Compute methods to it; ``ComputeClient.connect``
builds the REST clients, against the real API or a local emulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from provisioning.errors import PermanentError, TemporaryError
from provisioning.google_calls import (
    CALL_TIMEOUT,
    READ_RETRY,
    TRANSIENT_DELAY,
    missing_permission,
    unanswered_error,
)

ADDRESS_DESCRIPTION = "Static IP for a Kubeflow ingress, reserved by kubeflow-bot."
# Statuses of an address that has its IP.
_HAS_IP = frozenset({"RESERVED", "IN_USE"})

# Seconds before the step engine tries again.
RATE_LIMIT_DELAY = 30.0

# Typed as Any: mypy sees proto-plus enum members as plain ints, not as the enum type.
_OperationStatus: Any = compute_v1.Operation.Status

_QUOTA_NAME = re.compile(r"""Quota\s+['"]([A-Z0-9_]+)['"]|\b([A-Z0-9]+(?:_[A-Z0-9]+)+)\b""")
_PERMISSION = re.compile(r"\b(compute\.[a-zA-Z]+\.[a-zA-Z]+)\b")
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


@dataclass(frozen=True)
class _Call:
    """What a call was doing, in words for the requester and as an IAM permission."""

    doing: str  # "reserve global address kf-ip"
    verb: str  # "reserve global addresses"
    permission: str  # "compute.globalAddresses.create"
    project: str
    remedy: str = "ask for more"


def _reasons(e: exceptions.GoogleAPICallError) -> set[str]:
    found = {str(err.get("reason", "")) for err in e.errors if isinstance(err, dict)}
    if e.reason:
        found.add(e.reason)
    return found


def _quota_error(message: str, call: _Call) -> PermanentError:
    match = _QUOTA_NAME.search(message)
    name = next((g for g in match.groups() if g), None) if match else None
    what = f"the project's {name} quota" if name else f"project {call.project}'s quota"
    return PermanentError(f"{what} is used up; {call.remedy}")


def _translate(e: Exception, call: _Call) -> Exception:
    """The error kind for a library (or HTTP) exception raised while doing ``call``."""
    if not isinstance(e, exceptions.GoogleAPICallError):
        return unanswered_error(e, api="Compute Engine", doing=call.doing)
    message = e.message or ""
    reasons = _reasons(e)
    if isinstance(e, exceptions.TooManyRequests) or reasons & _RATE_LIMIT_REASONS:
        return TemporaryError(
            f"Compute Engine is rate limiting; will {call.doing} later", delay=RATE_LIMIT_DELAY
        )
    if isinstance(e, exceptions.Forbidden):
        if "quotaExceeded" in reasons or "quota" in message.lower():
            return _quota_error(message, call)
        if "accessNotConfigured" in reasons or "has not been used" in message:
            return PermanentError(
                f"the Compute Engine API (compute.googleapis.com) is not enabled in "
                f"{call.project}; enable it, then try again"
            )
        match = _PERMISSION.search(message)
        permission = match.group(1) if match else call.permission
        return missing_permission(verb=call.verb, project=call.project, permission=permission)
    if isinstance(e, exceptions.ServerError):
        return TemporaryError(
            f"Compute Engine did not answer ({e.code}); will {call.doing} later",
            delay=TRANSIENT_DELAY,
        )
    if isinstance(e, exceptions.Unauthorized):
        return PermanentError(
            "Google refused the bot's credentials; ask the bot's operators to check them"
        )
    if isinstance(e, exceptions.BadRequest):
        return PermanentError(f"Compute Engine refused to {call.doing}: {message}")
    return PermanentError(f"Compute Engine could not {call.doing}: {message}")


_FAILURES = (exceptions.GoogleAPIError, requests.exceptions.RequestException)


def _address_call(doing: str, verb: str, permission: str, project: str) -> _Call:
    return _Call(doing, verb, permission, project, "release an address or ask for more")


class ComputeClient:
    """Accelerator zones and global addresses in one project, as the steps see them."""

    def __init__(
        self,
        accelerators: compute_v1.AcceleratorTypesClient,
        addresses: compute_v1.GlobalAddressesClient,
        operations: compute_v1.GlobalOperationsClient,
        backend_services: compute_v1.BackendServicesClient,
        *,
        read_retry: Retry | None = READ_RETRY,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._accelerators = accelerators
        self._addresses = addresses
        self._operations = operations
        self._backend_services = backend_services
        self._read_retry = read_retry
        self._timeout = timeout

    @classmethod
    def connect(cls, emulator_host: str | None) -> ComputeClient:
        """Clients for ``emulator_host`` (plain HTTP, anonymous) or, if None, Compute (ADC)."""
        if emulator_host is None:
            return cls(
                compute_v1.AcceleratorTypesClient(),
                compute_v1.GlobalAddressesClient(),
                compute_v1.GlobalOperationsClient(),
                compute_v1.BackendServicesClient(),
            )
        endpoint = emulator_host if "://" in emulator_host else f"http://{emulator_host}"

        def options() -> dict[str, Any]:
            return {
                "credentials": AnonymousCredentials(),
                "client_options": ClientOptions(api_endpoint=endpoint),
            }

        return cls(
            compute_v1.AcceleratorTypesClient(**options()),
            compute_v1.GlobalAddressesClient(**options()),
            compute_v1.GlobalOperationsClient(**options()),
            compute_v1.BackendServicesClient(**options()),
        )

    # -- accelerators ------------------------------------------------------------------------

    def zones_offering(self, project: str, accelerator_type: str) -> frozenset[str]:
        """The zones whose accelerator types include ``accelerator_type``."""
        call = _Call(
            f"list the zones offering {accelerator_type}",
            "list accelerator types",
            "compute.acceleratorTypes.list",
            project,
        )
        request = compute_v1.AggregatedListAcceleratorTypesRequest(
            project=project, filter=f'name = "{accelerator_type}"'
        )
        zones: set[str] = set()
        try:
            pages = self._accelerators.aggregated_list(
                request=request, retry=self._read_retry, timeout=self._timeout
            )
            for scope, scoped in pages:
                if not scope.startswith("zones/"):
                    continue
                if any(a.name == accelerator_type for a in scoped.accelerator_types):
                    zones.add(scope.removeprefix("zones/"))
        except _FAILURES as e:
            raise _translate(e, call) from e
        return frozenset(zones)

    # -- global addresses --------------------------------------------------------------------

    def get_global_address(self, project: str, name: str) -> str | None:
        """The address's IP once reserved; None when absent or still reserving."""
        call = _address_call(
            f"read global address {name}",
            "read global addresses",
            "compute.globalAddresses.get",
            project,
        )
        try:
            address = self._addresses.get(
                project=project, address=name, retry=self._read_retry, timeout=self._timeout
            )
        except exceptions.NotFound:
            return None
        except _FAILURES as e:
            raise _translate(e, call) from e
        if address.status in _HAS_IP and address.address:
            return str(address.address)
        return None

    def create_global_address(self, project: str, name: str) -> None:
        """Start reserving the address; an existing one is left as it is."""
        call = _address_call(
            f"reserve global address {name}",
            "reserve global addresses",
            "compute.globalAddresses.create",
            project,
        )
        resource = compute_v1.Address(
            name=name,
            address_type="EXTERNAL",
            ip_version="IPV4",
            description=ADDRESS_DESCRIPTION,
        )
        try:
            # An extended operation: never .result() it (that polls compute.googleapis.com).
            operation = self._addresses.insert(
                project=project, address_resource=resource, retry=None, timeout=self._timeout
            )
        except exceptions.Conflict:
            return  # the step's next observation sees it
        except _FAILURES as e:
            raise _translate(e, call) from e
        self._check_started(project, str(operation.name), call)

    def _check_started(self, project: str, operation: str, call: _Call) -> None:
        """One look (no waiting) at a new operation, to report one that failed at once."""
        try:
            op = self._operations.get(
                project=project, operation=operation, retry=self._read_retry, timeout=self._timeout
            )
        except _FAILURES as e:
            raise _translate(e, call) from e
        if op.status != _OperationStatus.DONE or not op.error.errors:
            return
        first = op.error.errors[0]
        message = first.message or first.code
        if "QUOTA" in first.code:
            raise _quota_error(message, call)
        raise PermanentError(f"Compute Engine could not {call.doing}: {message}")

    def delete_global_address(self, project: str, name: str) -> None:
        """Start releasing the address; an absent one is already gone."""
        call = _address_call(
            f"release global address {name}",
            "release global addresses",
            "compute.globalAddresses.delete",
            project,
        )
        try:
            self._addresses.delete(project=project, address=name, retry=None, timeout=self._timeout)
        except exceptions.NotFound:
            return
        except _FAILURES as e:
            raise _translate(e, call) from e

    # -- backend services --------------------------------------------------------------------

    def backend_service_id(self, project: str, name: str) -> str | None:
        """The numeric id of the global backend service ``name``; None when absent."""
        call = _Call(
            f"read backend service {name}",
            "read backend services",
            "compute.backendServices.get",
            project,
        )
        try:
            found = self._backend_services.get(
                project=project,
                backend_service=name,
                retry=self._read_retry,
                timeout=self._timeout,
            )
        except exceptions.NotFound:
            return None
        except _FAILURES as e:
            raise _translate(e, call) from e
        # A uint64; Compute never gives 0 to a resource that exists.
        return str(found.id) if found.id else None
