"""How the Google Cloud clients call their APIs: deadlines, read retries, delays.

Shared by the Google clients (GKE, Compute, IAM, Service Usage, Service Management), so
every Google call is bounded the same way, a temporary failure asks the step engine to
look again after the same delay, and what no API-specific rule covers is told the same
way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry, if_exception_type
from google.auth.credentials import AnonymousCredentials
from google.rpc import error_details_pb2, status_pb2

from provisioning.errors import PermanentError, TemporaryError

C = TypeVar("C")

# Seconds before the step engine tries again after a temporary failure.
TRANSIENT_DELAY = 10.0
# Per-call deadline; the libraries' own defaults are minutes long.
CALL_TIMEOUT = 30.0
# Reads retry a flaky connection briefly; mutations never retry here (the step engine
# re-runs the whole ensure step, which observes first).
READ_RETRY = Retry(
    predicate=if_exception_type(exceptions.ServiceUnavailable),
    initial=0.25,
    maximum=2.0,
    multiplier=2.0,
    timeout=8.0,
)

# What a busy or briefly unreachable API answers: worth another look later.
TRANSIENT_ERRORS = (
    exceptions.ServiceUnavailable,
    exceptions.DeadlineExceeded,
    exceptions.ServerError,
    exceptions.Aborted,
    exceptions.Unknown,
)


def code_name(e: exceptions.GoogleAPICallError) -> str:
    """``UNAVAILABLE``, ``DEADLINE_EXCEEDED``..., or the exception's class name."""
    code = e.grpc_status_code
    return code.name if code is not None else type(e).__name__


def general_error(
    e: exceptions.GoogleAPICallError, *, api: str, doing: str, message: str
) -> Exception:
    """The error kind every client ends with, once its own API's cases are handled."""
    if isinstance(e, TRANSIENT_ERRORS):
        return TemporaryError(
            f"{api} did not answer ({code_name(e)}); will {doing} later", delay=TRANSIENT_DELAY
        )
    if isinstance(e, exceptions.Unauthenticated):
        return PermanentError(
            "Google refused the bot's credentials; ask the bot's operators to check them"
        )
    if isinstance(e, exceptions.InvalidArgument):
        return PermanentError(f"{api} refused to {doing}: {message}")
    return PermanentError(f"{api} could not {doing}: {message}")


def operation_error(status: status_pb2.Status) -> exceptions.GoogleAPICallError:
    """The library exception a finished long-running operation's ``error`` stands for."""
    info = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            break
    return exceptions.from_grpc_status(status.code, status.message, error_info=info)


def emulator_client(client_class: Callable[..., C], transport_class: Any, host: str) -> C:
    """A gRPC library client for a local stand-in at ``host``: plaintext, anonymous."""
    transport = transport_class(
        host=host, credentials=AnonymousCredentials(), channel=grpc.insecure_channel(host)
    )
    return client_class(transport=transport, client_options=ClientOptions(api_endpoint=host))


def unanswered_error(e: Exception, *, api: str, doing: str) -> TemporaryError:
    """The error kind for a call ``api`` never answered (anything but a
    ``GoogleAPICallError``): the library's retries ran out, or the network failed
    (connection refused or reset, read timeouts)."""
    if isinstance(e, exceptions.RetryError):
        return TemporaryError(f"{api} did not answer in time to {doing}", delay=TRANSIENT_DELAY)
    return TemporaryError(f"could not reach {api} to {doing}", delay=TRANSIENT_DELAY)


def missing_permission(*, verb: str, project: str, permission: str) -> PermanentError:
    """What the requester reads when the bot's service account lacks ``permission``."""
    return PermanentError(
        f"the bot's service account may not {verb} in {project} ({permission}); "
        "ask a project owner to grant it"
    )
