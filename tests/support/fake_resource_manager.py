"""A local gRPC stand-in for Cloud Resource Manager v3 ``Projects``, for the real client.

``FakeResourceManager`` runs a ``grpc.server`` on a free 127.0.0.1 port serving
``google.cloud.resourcemanager.v3.Projects`` with the library's own message types:
``GetProject`` (proto-plus ``GetProjectRequest`` / ``Project``, via ``serialize`` /
``deserialize``) and ``GetIamPolicy`` / ``SetIamPolicy`` (plain protobuf
``google.iam.v1.iam_policy_pb2`` / ``policy_pb2``, via ``SerializeToString`` / ``FromString``).
``client()`` builds a real ``resourcemanager_v3.ProjectsClient`` over an insecure channel.

Behaviour modelled on the real service:

* ``GetProject(name="projects/{id}" or "projects/{number}")`` answers ``Project(name=
  "projects/{number}", project_id=id, state=ACTIVE, ...)``.  An unknown project is
  PERMISSION_DENIED, as the real API answers for projects that do not exist or you cannot see;
  a name that is not ``projects/`` and a project id or number is INVALID_ARGUMENT.
* Each project has an IAM policy with an ``etag``.  Every successful ``SetIamPolicy``
  changes the etag.  A set whose ``policy.etag`` differs from the current one is refused with
  ABORTED ("There were concurrent policy changes. ...") and changes nothing, which is what
  makes read-modify-write safe; ``stale_sets`` counts these refusals.  As in real IAM, a set
  with an *empty* etag overwrites the policy unconditionally, conditions and all
  (``blind_sets`` counts them so tests can forbid them).
* Policy versions and conditions, as ``google.iam.v1.Policy.version`` and
  ``GetPolicyOptions.requested_policy_version`` document them: valid versions are 0, 1 and 3
  (INVALID_ARGUMENT otherwise).  A read asking for 3 gets the policy as stored; a read
  asking for 0 or 1 (or not saying) of a policy with conditional bindings gets version 1 with
  those bindings' roles renamed ``{role}_withcond_{hash}`` and their conditions stripped, and
  writing such a role back is INVALID_ARGUMENT.  A set adding or keeping a conditional
  binding, or changing a policy that holds one (its etag given), must say version 3
  (INVALID_ARGUMENT otherwise).  Every condition needs a title of at most 100 characters, a
  description of at most 256 and an expression.  A stored policy is version 3 when it holds
  a conditional binding, else version 1.
* Members must carry a known prefix (``user:``, ``serviceAccount:``, ``group:``, ...) and roles
  must look like ``roles/...`` or ``projects/.../roles/...`` (INVALID_ARGUMENT otherwise);
  bindings with no members are dropped.
* ``fail_next(method, code, message, times=1)`` injects errors (``method`` = "GetProject",
  "GetIamPolicy", "SetIamPolicy" or ``None`` for any).  Every request is recorded as a
  ``GrpcCall``.

Not modelled: evaluating conditions (CEL), audit configs, update masks, the other
``Projects`` RPCs (they answer UNIMPLEMENTED), authentication.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import resourcemanager_v3
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.iam.v1 import iam_policy_pb2, policy_pb2

from tests.support.grpc_fake import GrpcError, GrpcFake

HOST = "127.0.0.1"
DOMAIN = "cloudresourcemanager.googleapis.com"
SERVICE = "google.cloud.resourcemanager.v3.Projects"
DEFAULT_PROJECTS: dict[str, int] = {"kf-proj": 123456789012}
DEFAULT_OWNER = "user:owner@example.com"
CONCURRENT_CHANGE = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)
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
# What a version-1 read calls a conditional binding's role.
WITHCOND = "_withcond_"
MAX_CONDITION_TITLE = 100
MAX_CONDITION_DESCRIPTION = 256
# "projects/" and one segment that could be a project id or number.
_PROJECT_NAME = re.compile(r"projects/[a-z0-9][-a-z0-9]*")


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    policies: dict[str, policy_pb2.Policy] = field(default_factory=dict)
    blind_sets: int = 0
    stale_sets: int = 0
    sets: int = 0


class FakeResourceManager(GrpcFake):
    """Resource Manager v3 ``Projects`` fake (GetProject, GetIamPolicy, SetIamPolicy).

    ``projects`` maps project ids to project numbers.  ``with FakeResourceManager() as rm:``
    starts and stops the server; ``target`` is ``127.0.0.1:PORT``.
    """

    DOMAIN = DOMAIN

    def __init__(self, *, projects: Mapping[str, int] | None = None) -> None:
        self.projects: dict[str, int] = dict(DEFAULT_PROJECTS if projects is None else projects)
        self._state = _State()
        self._etags = itertools.count(1)
        for project_id in self.projects:
            policy = policy_pb2.Policy(version=1, etag=self._next_etag())
            policy.bindings.add(role="roles/owner", members=[DEFAULT_OWNER])
            self._state.policies[project_id] = policy
        self._grpc_server(32, self._state.lock)
        self._serve(
            SERVICE,
            {
                "GetProject": (resourcemanager_v3.GetProjectRequest, self._get_project),
                "GetIamPolicy": (iam_policy_pb2.GetIamPolicyRequest, self._get_iam_policy),
                "SetIamPolicy": (iam_policy_pb2.SetIamPolicyRequest, self._set_iam_policy),
            },
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def client(self) -> resourcemanager_v3.ProjectsClient:
        """A real ``ProjectsClient`` over an insecure channel to this fake (closed on stop)."""
        return self._client(resourcemanager_v3.ProjectsClient, ProjectsGrpcTransport)

    # -- test controls -----------------------------------------------------------------------

    def policy(self, project_id: str) -> policy_pb2.Policy:
        """A copy of the project's current IAM policy."""
        with self._state.lock:
            copy = policy_pb2.Policy()
            copy.CopyFrom(self._state.policies[project_id])
            return copy

    def members(self, project_id: str, role: str) -> set[str]:
        with self._state.lock:
            return {
                member
                for binding in self._state.policies[project_id].bindings
                if binding.role == role
                for member in binding.members
            }

    @property
    def successful_sets(self) -> int:
        with self._state.lock:
            return self._state.sets

    @property
    def stale_sets(self) -> int:
        """How many sets were refused for a stale etag (a concurrent change won)."""
        with self._state.lock:
            return self._state.stale_sets

    @property
    def blind_sets(self) -> int:
        """How many sets carried no etag (unconditional overwrites)."""
        with self._state.lock:
            return self._state.blind_sets

    # -- RPC implementations -----------------------------------------------------------------

    def _project_id(self, resource: str) -> str:
        key = resource.removeprefix("projects/")
        if resource.startswith("projects/"):
            if key in self.projects:
                return key
            for project_id, number in self.projects.items():
                if key == str(number):
                    return project_id
        raise GrpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"Permission denied on resource '{resource}' (or it may not exist).",
        )

    def _get_project(self, request: resourcemanager_v3.GetProjectRequest) -> Any:
        if not _PROJECT_NAME.fullmatch(request.name):
            # What the API answers a name that is not "projects/{id or number}".
            raise _invalid(f"Invalid resource field value in the request: name={request.name!r}")
        project_id = self._project_id(request.name)
        return resourcemanager_v3.Project(
            name=f"projects/{self.projects[project_id]}",
            project_id=project_id,
            display_name=project_id,
            parent="organizations/100000000001",
            state=resourcemanager_v3.Project.State.ACTIVE,
            etag=f"W/{self.projects[project_id]}",
        )

    def _get_iam_policy(self, request: iam_policy_pb2.GetIamPolicyRequest) -> policy_pb2.Policy:
        project_id = self._project_id(request.resource)
        version = request.options.requested_policy_version
        if version not in (0, 1, 3):
            raise _invalid(f"Invalid requested policy version {version}; use 1 or 3.")
        stored = self._state.policies[project_id]
        out = policy_pb2.Policy()
        if version == 3 or not _conditional(stored):
            out.CopyFrom(stored)
            return out
        # Version 1 cannot carry conditions: the real API renames their roles instead.
        out.version = 1
        out.etag = stored.etag
        for binding in stored.bindings:
            added = out.bindings.add(role=binding.role, members=binding.members)
            if binding.HasField("condition"):
                digest = hashlib.sha256(binding.condition.SerializeToString()).hexdigest()
                added.role = f"{binding.role}{WITHCOND}{digest[:20]}"
        return out

    def _set_iam_policy(self, request: iam_policy_pb2.SetIamPolicyRequest) -> policy_pb2.Policy:
        project_id = self._project_id(request.resource)
        current = self._state.policies[project_id]
        incoming = request.policy
        if incoming.etag and incoming.etag != current.etag:
            self._state.stale_sets += 1
            raise GrpcError(grpc.StatusCode.ABORTED, CONCURRENT_CHANGE)
        if incoming.version not in (0, 1, 3):
            raise _invalid(f"Invalid policy version {incoming.version}; use 1 or 3.")
        for binding in incoming.bindings:
            _check_binding(binding, incoming.version)
        if incoming.etag and _conditional(current) and incoming.version != 3:
            raise _invalid(_NEEDS_VERSION_3.format(version=incoming.version))
        if not incoming.etag:
            self._state.blind_sets += 1
        stored = policy_pb2.Policy(
            version=3 if _conditional(incoming) else 1, etag=self._next_etag()
        )
        for binding in incoming.bindings:
            if binding.members:
                stored.bindings.add().CopyFrom(binding)
        self._state.policies[project_id] = stored
        self._state.sets += 1
        out = policy_pb2.Policy()
        out.CopyFrom(stored)
        return out

    def _next_etag(self) -> bytes:
        return b"BwY" + next(self._etags).to_bytes(5, "big")


_NEEDS_VERSION_3 = (
    "Policies with conditional role bindings must specify version 3; got version {version}."
)


def _invalid(message: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _conditional(policy: policy_pb2.Policy) -> bool:
    return any(b.HasField("condition") and b.members for b in policy.bindings)


def _check_binding(binding: policy_pb2.Binding, version: int) -> None:
    """INVALID_ARGUMENT for a binding the real API would refuse in a policy of ``version``."""
    if WITHCOND in binding.role or not (
        binding.role.startswith("roles/") or "/roles/" in binding.role
    ):
        raise _invalid(f"Role {binding.role} is not supported.")
    for member in binding.members:
        if member not in SPECIAL_MEMBERS and not member.startswith(MEMBER_PREFIXES):
            raise _invalid(f"Invalid member type for member '{member}'.")
    if not binding.HasField("condition"):
        return
    if version != 3:
        raise _invalid(_NEEDS_VERSION_3.format(version=version))
    condition = binding.condition
    if not condition.title:
        raise _invalid("Condition title is required for conditional bindings.")
    if len(condition.title) > MAX_CONDITION_TITLE:
        raise _invalid(f"Condition title must be at most {MAX_CONDITION_TITLE} characters.")
    if len(condition.description) > MAX_CONDITION_DESCRIPTION:
        raise _invalid(
            f"Condition description must be at most {MAX_CONDITION_DESCRIPTION} characters."
        )
    if not condition.expression.strip():
        raise _invalid("Condition expression must not be empty.")
