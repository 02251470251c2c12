"""IAM's part of ``Cloud``: service accounts and IAM policies over IAM Admin and Resource Manager.

``IamClient`` creates and looks up the deployment's service accounts and reads and writes
two kinds of IAM policy: a service account's own (``iam_admin_v1.IAMClient``, for Workload
Identity) and the project's (``resourcemanager_v3.ProjectsClient``, for the accounts'
roles and IAP access); it also reads the project's number (the audience of IAP's JWT
names it).  It maps ``google.iam.v1`` policies onto the plain ``IamPolicy`` /
``IamBinding`` / ``IamCondition`` values and back, reading and writing policy version 3 so
conditional bindings survive whole (expression, title and description), and always sends
back the etag it read: a write that lost a race raises
``ConcurrentChange`` for ``iam_edits.read_modify_write`` to re-read and re-apply.  Every
other library exception becomes ``TemporaryError`` / ``PermanentError`` here and nowhere
else.  The gcp cloud, assembled by ``bot``'s composition root, delegates its IAM methods to
it; ``IamClient.connect`` builds the library clients, against the real APIs or emulators.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from google.api_core import exceptions
from google.api_core.retry import Retry
from google.cloud import iam_admin_v1, resourcemanager_v3
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.type import expr_pb2

from provisioning.cloud import IamBinding, IamCondition, IamPolicy
from provisioning.errors import ConcurrentChange, PermanentError, TemporaryError
from provisioning.google_calls import (
    CALL_TIMEOUT,
    READ_RETRY,
    TRANSIENT_DELAY,
    emulator_client,
    general_error,
    missing_permission,
    unanswered_error,
)

# Version 3 is the only one that carries conditions: read at 1, a policy's conditional
# bindings come back with renamed roles and no condition, and cannot be written back.  IAM
# also wants 3 on any write to a policy that holds a condition, even one removing it, and
# accepts 3 for a policy without any, so every read asks for 3 and every write says 3.
POLICY_VERSION = 3

# Seconds before the step engine tries again.
RATE_LIMIT_DELAY = 30.0

_PERMISSION = re.compile(r"\b((?:iam|resourcemanager)\.[a-zA-Z]+\.[a-zA-Z]+)\b")
_RATE_LIMIT = re.compile(r"rate limit|too many requests|per minute", re.IGNORECASE)
_ACCOUNT_LIMIT = re.compile(r"maximum number of service accounts", re.IGNORECASE)
_CONCURRENT = re.compile(r"etag|concurrent", re.IGNORECASE)
# Project policy writes naming an account IAM has not spread everywhere yet are refused
# with "Service account X does not exist." for a few seconds after its creation.
_UNKNOWN_MEMBER = re.compile(r"Service account \S+ does not exist", re.IGNORECASE)


@dataclass(frozen=True)
class _Api:
    name: str  # "IAM", in sentences
    title: str  # "Identity and Access Management (IAM)"
    service: str  # "iam.googleapis.com"


_IAM = _Api("IAM", "Identity and Access Management (IAM)", "iam.googleapis.com")
_RESOURCE_MANAGER = _Api(
    "Resource Manager", "Cloud Resource Manager", "cloudresourcemanager.googleapis.com"
)


@dataclass(frozen=True)
class _Call:
    """What a call was doing, in words for the requester and as an IAM permission."""

    api: _Api
    doing: str  # "create service account kf-demo-vm in kf-proj"
    verb: str  # "create service accounts"
    permission: str  # "iam.serviceAccounts.create"
    project: str
    sets_policy: bool = False


def _account_path(project: str, email: str) -> str:
    return f"projects/{project}/serviceAccounts/{email}"


def _email(project: str, account_id: str) -> str:
    return f"{account_id}@{project}.iam.gserviceaccount.com"


def _permission_error(e: exceptions.GoogleAPICallError, call: _Call) -> PermanentError:
    message = e.message or ""
    if e.reason == "SERVICE_DISABLED" or "has not been used" in message:
        return PermanentError(
            f"the {call.api.title} API ({call.api.service}) is not enabled in "
            f"{call.project}; enable it, then try again"
        )
    match = _PERMISSION.search(message)
    permission = match.group(1) if match else call.permission
    if "may not exist" in message:
        # Google answers the same for a project that does not exist and one it may not see.
        return PermanentError(
            f"the bot's service account may not {call.verb} in {call.project} "
            f"({permission}), or the project does not exist; check the project id, or ask "
            "a project owner to grant it"
        )
    return missing_permission(verb=call.verb, project=call.project, permission=permission)


def _translate(e: exceptions.GoogleAPIError, call: _Call) -> Exception:
    """The error kind for a library exception raised while doing ``call``."""
    api = call.api.name
    if not isinstance(e, exceptions.GoogleAPICallError):
        return unanswered_error(e, api=api, doing=call.doing)
    message = e.message or ""
    if call.sets_policy and (
        isinstance(e, exceptions.Aborted)
        or (isinstance(e, exceptions.FailedPrecondition) and _CONCURRENT.search(message))
    ):
        return ConcurrentChange(
            f"the IAM policy changed since it was read; will {call.doing} again",
            delay=TRANSIENT_DELAY,
        )
    if isinstance(e, exceptions.TooManyRequests):
        if _ACCOUNT_LIMIT.search(message):
            # RESOURCE_EXHAUSTED with a one-day RetryInfo: not worth waiting for.
            return PermanentError(
                f"project {call.project} has reached its limit on service accounts, so the "
                f"bot could not {call.doing}; delete unused service accounts or ask for a "
                "quota increase"
            )
        return TemporaryError(
            f"{api} is rate limiting; will {call.doing} later", delay=RATE_LIMIT_DELAY
        )
    if isinstance(e, exceptions.PermissionDenied):
        return _permission_error(e, call)
    if (
        isinstance(e, exceptions.InvalidArgument)
        and call.sets_policy
        and _UNKNOWN_MEMBER.search(message)
    ):
        return TemporaryError(
            f"IAM does not know a new service account everywhere yet; will {call.doing} later",
            delay=TRANSIENT_DELAY,
        )
    return general_error(e, api=api, doing=call.doing, message=message)


def _missing_account(email: str, project: str) -> PermanentError:
    return PermanentError(
        f"service account {email} does not exist in {project}; if it was deleted, delete "
        "this deployment and request it again"
    )


def _encode_etag(etag: bytes) -> str:
    # Etags are opaque bytes, rarely valid UTF-8: base64 carries them back exactly.
    return base64.b64encode(etag).decode("ascii")


def _decode_etag(etag: str) -> bytes:
    if not etag:
        # An empty etag would make the write unconditional and could drop a concurrent
        # grant: a caller bug, never something to send.
        raise ValueError("refusing to write an IAM policy without the etag it was read with")
    try:
        return base64.b64decode(etag, validate=True)
    except binascii.Error as e:
        raise ValueError(f"not an etag this client read: {etag!r}") from e


class IamClient:
    """Service accounts and IAM policies in one project, as the steps see them."""

    def __init__(
        self,
        iam: iam_admin_v1.IAMClient,
        projects: resourcemanager_v3.ProjectsClient,
        *,
        read_retry: Retry | None = READ_RETRY,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._iam = iam
        self._projects = projects
        self._read_retry = read_retry
        self._timeout = timeout

    @classmethod
    def connect(
        cls, iam_emulator_host: str | None, resourcemanager_emulator_host: str | None
    ) -> IamClient:
        """Clients for each emulator host given (insecure, anonymous), else the API (ADC)."""
        if iam_emulator_host is None:
            iam = iam_admin_v1.IAMClient()
        else:
            iam = emulator_client(iam_admin_v1.IAMClient, IAMGrpcTransport, iam_emulator_host)
        if resourcemanager_emulator_host is None:
            projects = resourcemanager_v3.ProjectsClient()
        else:
            projects = emulator_client(
                resourcemanager_v3.ProjectsClient,
                ProjectsGrpcTransport,
                resourcemanager_emulator_host,
            )
        return cls(iam, projects)

    # -- policies as plain values ------------------------------------------------------------

    @staticmethod
    def _to_plain(policy: policy_pb2.Policy) -> IamPolicy:
        return IamPolicy(
            bindings=tuple(
                IamBinding(
                    role=b.role,
                    members=frozenset(b.members),
                    condition=(
                        IamCondition(
                            expression=b.condition.expression,
                            title=b.condition.title,
                            description=b.condition.description,
                        )
                        if b.HasField("condition")
                        else None
                    ),
                )
                for b in policy.bindings
            ),
            etag=_encode_etag(policy.etag),
        )

    @staticmethod
    def _to_proto(policy: IamPolicy) -> policy_pb2.Policy:
        out = policy_pb2.Policy(version=POLICY_VERSION, etag=_decode_etag(policy.etag))
        for binding in policy.bindings:
            added = out.bindings.add(role=binding.role, members=sorted(binding.members))
            if binding.condition is not None:
                added.condition.CopyFrom(
                    expr_pb2.Expr(
                        expression=binding.condition.expression,
                        title=binding.condition.title,
                        description=binding.condition.description,
                    )
                )
        return out

    @staticmethod
    def _read_request(resource: str) -> iam_policy_pb2.GetIamPolicyRequest:
        return iam_policy_pb2.GetIamPolicyRequest(
            resource=resource,
            options=options_pb2.GetPolicyOptions(requested_policy_version=POLICY_VERSION),
        )

    # -- service accounts --------------------------------------------------------------------

    def service_account_exists(self, project: str, account_id: str) -> bool:
        email = _email(project, account_id)
        call = _Call(
            _IAM,
            f"look up service account {account_id} in {project}",
            "read service accounts",
            "iam.serviceAccounts.get",
            project,
        )
        try:
            self._iam.get_service_account(
                name=_account_path(project, email),
                retry=self._read_retry,
                timeout=self._timeout,
            )
        except exceptions.NotFound:
            return False
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return True

    def create_service_account(self, project: str, account_id: str, display_name: str) -> None:
        call = _Call(
            _IAM,
            f"create service account {account_id} in {project}",
            "create service accounts",
            "iam.serviceAccounts.create",
            project,
        )
        try:
            self._iam.create_service_account(
                name=f"projects/{project}",
                account_id=account_id,
                service_account=iam_admin_v1.ServiceAccount(display_name=display_name),
                retry=None,
                timeout=self._timeout,
            )
        except exceptions.AlreadyExists:
            return  # another delivery of this request made it first
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e

    # -- a service account's own IAM policy --------------------------------------------------

    def get_service_account_iam_policy(self, project: str, email: str) -> IamPolicy:
        resource = _account_path(project, email)
        call = _Call(
            _IAM,
            f"read the IAM policy of service account {email}",
            "read service accounts' IAM policies",
            "iam.serviceAccounts.getIamPolicy",
            project,
        )
        try:
            policy = self._iam.get_iam_policy(
                request=self._read_request(resource),
                retry=self._read_retry,
                timeout=self._timeout,
            )
        except exceptions.NotFound as e:
            raise _missing_account(email, project) from e
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return self._to_plain(policy)

    def set_service_account_iam_policy(
        self, project: str, email: str, policy: IamPolicy
    ) -> IamPolicy:
        resource = _account_path(project, email)
        call = _Call(
            _IAM,
            f"update the IAM policy of service account {email}",
            "change service accounts' IAM policies",
            "iam.serviceAccounts.setIamPolicy",
            project,
            sets_policy=True,
        )
        request = iam_policy_pb2.SetIamPolicyRequest(
            resource=resource, policy=self._to_proto(policy)
        )
        try:
            stored = self._iam.set_iam_policy(request=request, retry=None, timeout=self._timeout)
        except exceptions.NotFound as e:
            raise _missing_account(email, project) from e
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return self._to_plain(stored)

    # -- the project ---------------------------------------------------------------------

    def project_number(self, project: str) -> str:
        """The project's number: ``projects.get`` names a project ``projects/{number}``."""
        call = _Call(
            _RESOURCE_MANAGER,
            f"read project {project}",
            "read the project",
            "resourcemanager.projects.get",
            project,
        )
        try:
            found = self._projects.get_project(
                name=f"projects/{project}", retry=self._read_retry, timeout=self._timeout
            )
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        number = str(found.name).removeprefix("projects/")
        if not number.isdigit():
            raise PermanentError(
                f"Resource Manager named project {project} {found.name!r}, not by its number"
            )
        return number

    # -- the project's IAM policy ------------------------------------------------------------

    def get_project_iam_policy(self, project: str) -> IamPolicy:
        resource = f"projects/{project}"
        call = _Call(
            _RESOURCE_MANAGER,
            f"read the IAM policy of project {project}",
            "read the project's IAM policy",
            "resourcemanager.projects.getIamPolicy",
            project,
        )
        try:
            policy = self._projects.get_iam_policy(
                request=self._read_request(resource),
                retry=self._read_retry,
                timeout=self._timeout,
            )
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return self._to_plain(policy)

    def set_project_iam_policy(self, project: str, policy: IamPolicy) -> IamPolicy:
        resource = f"projects/{project}"
        call = _Call(
            _RESOURCE_MANAGER,
            f"update the IAM policy of project {project}",
            "change the project's IAM policy",
            "resourcemanager.projects.setIamPolicy",
            project,
            sets_policy=True,
        )
        request = iam_policy_pb2.SetIamPolicyRequest(
            resource=resource, policy=self._to_proto(policy)
        )
        try:
            stored = self._projects.set_iam_policy(
                request=request, retry=None, timeout=self._timeout
            )
        except exceptions.GoogleAPIError as e:
            raise _translate(e, call) from e
        return self._to_plain(stored)
