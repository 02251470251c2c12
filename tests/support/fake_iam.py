"""A local gRPC stand-in for the IAM Admin API v1 (``google.iam.admin.v1.IAM``), stateful.

``FakeIam`` runs a ``grpc.server`` on a free 127.0.0.1 port serving the service with the
library's own message types: ``GetServiceAccount`` / ``CreateServiceAccount`` (proto-plus
``iam_admin_v1`` types, via ``serialize`` / ``deserialize``) and ``GetIamPolicy`` /
``SetIamPolicy`` on a service account (plain protobuf ``google.iam.v1.iam_policy_pb2`` /
``policy_pb2``).  ``client()`` builds a real ``iam_admin_v1.IAMClient`` over an insecure
channel.  Any other IAM method answers UNIMPLEMENTED.

Behaviour modelled on the real service:

* ``CreateServiceAccount(name="projects/{project}", account_id=..., service_account=...)``:
  ``name`` must be ``projects/{id}`` (INVALID_ARGUMENT otherwise); an unknown project is
  PERMISSION_DENIED ("... denied on resource (or it may not exist)"), as IAM answers for
  projects that do not exist or that you cannot see.  ``account_id`` must be 6 to 30
  characters matching ``[a-z]([-a-z0-9]*[a-z0-9])`` and ``display_name`` at most 100
  characters (INVALID_ARGUMENT).  A duplicate is ALREADY_EXISTS ("Service account X already
  exists within project projects/P.").  The new account has ``email``
  ``{account_id}@{project}.iam.gserviceaccount.com``, a 21-digit ``unique_id`` (also its
  ``oauth2_client_id``) and ``name`` ``projects/{project}/serviceAccounts/{email}``.
* Service account names are ``projects/{project or -}/serviceAccounts/{email or unique
  id}``; anything else is INVALID_ARGUMENT.  An account that does not exist, or that is
  named under another project than its own, is NOT_FOUND ("Unknown service account").
* Each account has its own IAM policy (empty at first, etag ``ACAB`` as the real API
  gives).  Every successful ``SetIamPolicy`` stores a new etag.  A set whose
  ``policy.etag`` differs from the current one is refused with ABORTED ("There were
  concurrent policy changes. ..."), changing nothing.  A set with an *empty* etag
  overwrites unconditionally, as real IAM does; ``blind_sets`` counts them so tests can
  forbid them.
* Policy versions: a binding with a condition needs ``policy.version`` 3 on a set
  (INVALID_ARGUMENT otherwise) and needs a condition title.  A read asking for version 1
  (or not saying) of a policy with conditional bindings gets version 1 with those bindings'
  roles renamed ``{role}_withcond_{hash}`` and their conditions stripped, as the real API
  documents; writing such a role back is INVALID_ARGUMENT.  ``requested_policy_version``
  other than 0, 1 or 3 is INVALID_ARGUMENT.  A stored policy is version 3 when it has a
  conditional binding, else version 1 (the real API's choice, as far as it is documented).
* Members must carry a known prefix (``user:``, ``serviceAccount:``, ``group:``, ...) and
  roles must look like ``roles/...`` or ``projects|organizations/.../roles/...``
  (INVALID_ARGUMENT otherwise); bindings with no members are dropped.

Fault injection: ``fail_next(method, code, message, times=1, reason=None)`` refuses the next
``times`` calls of ``method`` ("GetServiceAccount", "CreateServiceAccount", "GetIamPolicy",
"SetIamPolicy", or ``None`` for any) before touching any state; ``reason`` adds a
``google.rpc.ErrorInfo`` (e.g. ``SERVICE_DISABLED``), which the client shows as
``exc.reason``.

Inspection: ``requests`` (every call as ``GrpcCall(method, request, code)``, in order),
``calls(method)``, ``count(method)``, ``account(email)``, ``policy(email)``,
``members(email, role)``, ``successful_sets`` and ``blind_sets``.

Not modelled: propagation delays, the other IAM RPCs (keys, roles, list, update, delete,
disable), audit configs, update masks, quotas on the number of accounts, authentication.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from google.cloud import iam_admin_v1
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.iam.v1 import iam_policy_pb2, policy_pb2

from tests.support.grpc_fake import GrpcError, GrpcFake

HOST = "127.0.0.1"
SERVICE = "google.iam.admin.v1.IAM"
DEFAULT_PROJECTS = ("kf-proj",)
# What the real API answers as the etag of a policy that was never set ("ACAB" in REST).
EMPTY_POLICY_ETAG = b"\x00\x20\x01"
CONCURRENT_CHANGE = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)
UNKNOWN_ACCOUNT = "Unknown service account"
MEMBER_PREFIXES = (
    "user:",
    "serviceAccount:",
    "group:",
    "domain:",
    "principal:",
    "principalSet:",
    "deleted:",
)
SPECIAL_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
MAX_DISPLAY_NAME = 100

ACCOUNT_ID_RE = re.compile(r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$")
# Project ids (6 to 30 characters) or project numbers.
_PROJECT_RE = re.compile(r"^(?:[a-z][-a-z0-9]{4,28}[a-z0-9]|[0-9]{1,19})$")
_ROLE_RE = re.compile(r"^(?:roles/|(?:projects|organizations)/[^/]+/roles/)[A-Za-z0-9_.]+$")
_WITHCOND = "_withcond_"


def _invalid(message: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass
class _Account:
    project: str
    account: iam_admin_v1.ServiceAccount
    policy: policy_pb2.Policy = field(
        default_factory=lambda: policy_pb2.Policy(version=1, etag=EMPTY_POLICY_ETAG)
    )


def _copy_policy(policy: policy_pb2.Policy) -> policy_pb2.Policy:
    out = policy_pb2.Policy()
    out.CopyFrom(policy)
    return out


def _copy_account(account: iam_admin_v1.ServiceAccount) -> iam_admin_v1.ServiceAccount:
    return iam_admin_v1.ServiceAccount.deserialize(iam_admin_v1.ServiceAccount.serialize(account))


class FakeIam(GrpcFake):
    """IAM Admin v1 fake (service accounts and their IAM policies); see the module docstring.

    ``projects`` are the project ids accounts may be created in.  ``with FakeIam() as iam:``
    starts and stops the server; ``target`` is ``127.0.0.1:PORT``.
    """

    DOMAIN = "googleapis.com"

    def __init__(self, *, projects: Iterable[str] | None = None, max_workers: int = 32) -> None:
        self.projects: frozenset[str] = frozenset(
            DEFAULT_PROJECTS if projects is None else projects
        )
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}  # by email
        self._etags = itertools.count(1)
        self._unique_ids = itertools.count(104_857_600_000_000_000_001)
        self._sets = 0
        self._blind_sets = 0
        self._grpc_server(max_workers, self._lock)
        self._serve(
            SERVICE,
            {
                "GetServiceAccount": (
                    iam_admin_v1.GetServiceAccountRequest,
                    self._get_service_account,
                ),
                "CreateServiceAccount": (
                    iam_admin_v1.CreateServiceAccountRequest,
                    self._create_service_account,
                ),
                "GetIamPolicy": (iam_policy_pb2.GetIamPolicyRequest, self._get_iam_policy),
                "SetIamPolicy": (iam_policy_pb2.SetIamPolicyRequest, self._set_iam_policy),
            },
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def client(self) -> iam_admin_v1.IAMClient:
        """A real ``IAMClient`` over an insecure channel to this fake (closed on stop)."""
        return self._client(iam_admin_v1.IAMClient, IAMGrpcTransport)

    # -- test controls -----------------------------------------------------------------------

    def account(self, email: str) -> iam_admin_v1.ServiceAccount | None:
        with self._lock:
            state = self._accounts.get(email)
            return _copy_account(state.account) if state else None

    def policy(self, email: str) -> policy_pb2.Policy:
        """A copy of the account's current IAM policy (conditions and all)."""
        with self._lock:
            return _copy_policy(self._accounts[email].policy)

    def members(self, email: str, role: str) -> set[str]:
        """Members of ``role``'s bindings on the account, conditional ones included."""
        with self._lock:
            return {
                member
                for binding in self._accounts[email].policy.bindings
                if binding.role == role
                for member in binding.members
            }

    @property
    def successful_sets(self) -> int:
        with self._lock:
            return self._sets

    @property
    def blind_sets(self) -> int:
        """How many sets carried no etag (unconditional overwrites)."""
        with self._lock:
            return self._blind_sets

    # -- plumbing ----------------------------------------------------------------------------

    def _lookup(self, name: str) -> _Account:
        """The account named ``projects/{p or -}/serviceAccounts/{email or unique id}``."""
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "serviceAccounts":
            raise _invalid(
                f"Invalid service account name {name!r}: expected "
                "projects/{PROJECT_ID}/serviceAccounts/{EMAIL_OR_UNIQUE_ID}."
            )
        project, key = parts[1], parts[3]
        if not key or (project != "-" and not _PROJECT_RE.match(project)):
            raise _invalid(f"Invalid service account name {name!r}.")
        state = self._accounts.get(key)
        if state is None and key.isdigit():
            state = next((s for s in self._accounts.values() if s.account.unique_id == key), None)
        # Named under another project than its own: the real API does not find it either
        # (our choice where the documentation is silent).
        if state is None or project not in ("-", state.project):
            raise GrpcError(grpc.StatusCode.NOT_FOUND, UNKNOWN_ACCOUNT)
        return state

    # -- RPC implementations -----------------------------------------------------------------

    def _get_service_account(
        self, request: iam_admin_v1.GetServiceAccountRequest
    ) -> iam_admin_v1.ServiceAccount:
        return _copy_account(self._lookup(request.name).account)

    def _create_service_account(
        self, request: iam_admin_v1.CreateServiceAccountRequest
    ) -> iam_admin_v1.ServiceAccount:
        parts = request.name.split("/")
        if len(parts) != 2 or parts[0] != "projects" or not _PROJECT_RE.match(parts[1]):
            raise _invalid(
                f"Invalid resource name {request.name!r}: expected projects/{{PROJECT_ID}}."
            )
        project = parts[1]
        if project not in self.projects:
            raise GrpcError(
                grpc.StatusCode.PERMISSION_DENIED,
                "Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist).",
            )
        account_id = request.account_id
        if not 6 <= len(account_id) <= 30 or not ACCOUNT_ID_RE.match(account_id):
            raise _invalid(
                f"Invalid value for field 'accountId': {account_id!r}. Must be 6 to 30 "
                "characters and a match of regex '[a-z]([-a-z0-9]*[a-z0-9])'."
            )
        display_name = request.service_account.display_name
        if len(display_name) > MAX_DISPLAY_NAME:
            raise _invalid(
                f"Display name must be at most {MAX_DISPLAY_NAME} characters; "
                f"got {len(display_name)}."
            )
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self._accounts:
            raise GrpcError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"Service account {account_id} already exists within project projects/{project}.",
            )
        unique_id = str(next(self._unique_ids))
        account = iam_admin_v1.ServiceAccount(
            name=f"projects/{project}/serviceAccounts/{email}",
            project_id=project,
            unique_id=unique_id,
            email=email,
            display_name=display_name,
            description=request.service_account.description,
            oauth2_client_id=unique_id,
        )
        self._accounts[email] = _Account(project, account)
        return _copy_account(account)

    def _get_iam_policy(self, request: iam_policy_pb2.GetIamPolicyRequest) -> policy_pb2.Policy:
        state = self._lookup(request.resource)
        version = request.options.requested_policy_version
        if version not in (0, 1, 3):
            raise _invalid(f"Invalid requested policy version {version}; use 1 or 3.")
        stored = state.policy
        if version == 3 or not any(b.HasField("condition") for b in stored.bindings):
            return _copy_policy(stored)
        # Version 1 cannot carry conditions: the real API renames their roles instead.
        out = policy_pb2.Policy(version=1, etag=stored.etag)
        for binding in stored.bindings:
            added = out.bindings.add(role=binding.role, members=binding.members)
            if binding.HasField("condition"):
                digest = hashlib.sha256(binding.condition.SerializeToString()).hexdigest()
                added.role = f"{binding.role}{_WITHCOND}{digest[:20]}"
        return out

    def _set_iam_policy(self, request: iam_policy_pb2.SetIamPolicyRequest) -> policy_pb2.Policy:
        state = self._lookup(request.resource)
        incoming = request.policy
        if incoming.etag and incoming.etag != state.policy.etag:
            raise GrpcError(grpc.StatusCode.ABORTED, CONCURRENT_CHANGE)
        conditional = False
        for binding in incoming.bindings:
            if _WITHCOND in binding.role or not _ROLE_RE.match(binding.role):
                raise _invalid(f"Role {binding.role} is not supported for this resource.")
            for member in binding.members:
                if member not in SPECIAL_MEMBERS and not member.startswith(MEMBER_PREFIXES):
                    raise _invalid(f"Invalid member type for member '{member}'.")
            if binding.HasField("condition"):
                conditional = True
                if incoming.version != 3:
                    raise _invalid(
                        "Policies with conditional role bindings must specify version 3; "
                        f"got version {incoming.version}."
                    )
                if not binding.condition.title:
                    raise _invalid("Condition title is required for conditional bindings.")
        if not incoming.etag:
            self._blind_sets += 1
        stored = policy_pb2.Policy(version=3 if conditional else 1, etag=self._next_etag())
        for binding in incoming.bindings:
            if binding.members:
                stored.bindings.add().CopyFrom(binding)
        state.policy = stored
        self._sets += 1
        return _copy_policy(stored)

    def _next_etag(self) -> bytes:
        # Real etags are opaque bytes, often not valid UTF-8 (e.g. b"\x07\x05\xf6B...").
        return b"\x07\x05\xf6" + next(self._etags).to_bytes(5, "big")
