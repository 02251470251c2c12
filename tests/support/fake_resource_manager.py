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
  PERMISSION_DENIED, as the real API answers for projects that do not exist or you cannot see.
* Each project has an IAM policy with an ``etag``.  Every successful ``SetIamPolicy``
  changes the etag.  A set whose ``policy.etag`` differs from the current one is refused with
  ABORTED ("There were concurrent policy changes. ...") and changes nothing, which is what
  makes read-modify-write safe.  As in real IAM, a set with an *empty* etag overwrites the
  policy unconditionally (``blind_sets`` counts them so tests can forbid them).
* Members must carry a known prefix (``user:``, ``serviceAccount:``, ``group:``, ...) and roles
  must look like ``roles/...`` or ``projects/.../roles/...`` (INVALID_ARGUMENT otherwise);
  bindings with no members are dropped.
* ``fail_next(method, code, message, times=1)`` injects errors (``method`` = "GetProject",
  "GetIamPolicy", "SetIamPolicy" or ``None`` for any).  Every request is recorded as an
  ``RmRequest``.

Not modelled: conditions / policy version 3 semantics, audit configs, update masks, the other
``Projects`` RPCs (they answer UNIMPLEMENTED), authentication.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import resourcemanager_v3
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.iam.v1 import iam_policy_pb2, policy_pb2

from tests.support.serving import GrpcFake

HOST = "127.0.0.1"
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


@dataclass(frozen=True)
class RmRequest:
    """One RPC the fake received: the method name, the request message and the answer code."""

    method: str
    request: Any
    code: grpc.StatusCode = grpc.StatusCode.OK


@dataclass
class _Fault:
    method: str | None
    code: grpc.StatusCode
    message: str
    times: int


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RmRequest] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    policies: dict[str, policy_pb2.Policy] = field(default_factory=dict)
    blind_sets: int = 0
    sets: int = 0


class FakeResourceManager(GrpcFake):
    """Resource Manager v3 ``Projects`` fake (GetProject, GetIamPolicy, SetIamPolicy).

    ``projects`` maps project ids to project numbers.  ``with FakeResourceManager() as rm:``
    starts and stops the server; ``target`` is ``127.0.0.1:PORT``.
    """

    def __init__(self, *, projects: Mapping[str, int] | None = None) -> None:
        self.projects: dict[str, int] = dict(DEFAULT_PROJECTS if projects is None else projects)
        self._state = _State()
        self._etags = itertools.count(1)
        for project_id in self.projects:
            policy = policy_pb2.Policy(version=1, etag=self._next_etag())
            policy.bindings.add(role="roles/owner", members=[DEFAULT_OWNER])
            self._state.policies[project_id] = policy
        self._register(self._grpc_server(max_workers=32))

    # -- lifecycle ---------------------------------------------------------------------------

    def _register(self, server: grpc.Server) -> None:
        handlers = {
            "GetProject": grpc.unary_unary_rpc_method_handler(
                self._rpc("GetProject", self._get_project),
                request_deserializer=resourcemanager_v3.GetProjectRequest.deserialize,
                response_serializer=resourcemanager_v3.Project.serialize,
            ),
            "GetIamPolicy": grpc.unary_unary_rpc_method_handler(
                self._rpc("GetIamPolicy", self._get_iam_policy),
                request_deserializer=iam_policy_pb2.GetIamPolicyRequest.FromString,
                response_serializer=policy_pb2.Policy.SerializeToString,
            ),
            "SetIamPolicy": grpc.unary_unary_rpc_method_handler(
                self._rpc("SetIamPolicy", self._set_iam_policy),
                request_deserializer=iam_policy_pb2.SetIamPolicyRequest.FromString,
                response_serializer=policy_pb2.Policy.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    def client(self) -> resourcemanager_v3.ProjectsClient:
        """A real ``ProjectsClient`` over an insecure channel to this fake (closed on stop)."""
        channel = self.channel()
        return resourcemanager_v3.ProjectsClient(transport=ProjectsGrpcTransport(channel=channel))

    # -- test controls -----------------------------------------------------------------------

    def fail_next(
        self, method: str | None, code: grpc.StatusCode, message: str, times: int = 1
    ) -> None:
        """Refuse the next ``times`` calls of ``method`` (any method if ``None``)."""
        with self._state.lock:
            self._state.faults.append(_Fault(method, code, message, times))

    @property
    def requests(self) -> list[RmRequest]:
        with self._state.lock:
            return list(self._state.requests)

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
    def blind_sets(self) -> int:
        """How many sets carried no etag (unconditional overwrites)."""
        with self._state.lock:
            return self._state.blind_sets

    # -- RPC implementations -----------------------------------------------------------------

    def _rpc(
        self, method: str, impl: Callable[[Any], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            with self._state.lock:
                try:
                    self._inject(method)
                    response = impl(request)
                except _Refused as refused:
                    self._state.requests.append(RmRequest(method, request, refused.code))
                    error = refused
                else:
                    self._state.requests.append(RmRequest(method, request))
                    return response
            context.abort(error.code, error.message)

        return call

    def _inject(self, method: str) -> None:
        for fault in self._state.faults:
            if fault.method is None or fault.method == method:
                fault.times -= 1
                if fault.times <= 0:
                    self._state.faults.remove(fault)
                raise _Refused(fault.code, fault.message)

    def _project_id(self, resource: str) -> str:
        key = resource.removeprefix("projects/")
        if resource.startswith("projects/"):
            if key in self.projects:
                return key
            for project_id, number in self.projects.items():
                if key == str(number):
                    return project_id
        raise _Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"Permission denied on resource '{resource}' (or it may not exist).",
        )

    def _get_project(self, request: resourcemanager_v3.GetProjectRequest) -> Any:
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
        out = policy_pb2.Policy()
        out.CopyFrom(self._state.policies[project_id])
        return out

    def _set_iam_policy(self, request: iam_policy_pb2.SetIamPolicyRequest) -> policy_pb2.Policy:
        project_id = self._project_id(request.resource)
        current = self._state.policies[project_id]
        incoming = request.policy
        if incoming.etag and incoming.etag != current.etag:
            raise _Refused(grpc.StatusCode.ABORTED, CONCURRENT_CHANGE)
        for binding in incoming.bindings:
            if not (binding.role.startswith("roles/") or "/roles/" in binding.role):
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Role {binding.role} is not supported."
                )
            for member in binding.members:
                if member not in SPECIAL_MEMBERS and not member.startswith(MEMBER_PREFIXES):
                    raise _Refused(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Invalid member type for member '{member}'.",
                    )
        if not incoming.etag:
            self._state.blind_sets += 1
        stored = policy_pb2.Policy(version=incoming.version or 1, etag=self._next_etag())
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
