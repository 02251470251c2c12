"""What the fakes of Google's gRPC APIs share: the server, the methods, the errors.

Used by the stand-ins for GKE, IAM, Resource Manager, Service Usage and Service
Management under ``tests/support``.  ``GrpcFake`` runs a ``grpc.server`` on a free
loopback port and serves a subclass's methods (``_serve``): under the fake's lock each
call takes a fault a test queued with ``fail_next`` (``Faults``), runs the method and is
recorded (``requests``); a ``GrpcError`` ends the call as the real API would
(``GrpcError.abort``: the code, the message and, with a reason, an ``ErrorInfo``
detail).  ``_client`` builds the real library client over an insecure channel to the
fake, closed by ``stop``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, NoReturn, Self, TypeVar

import grpc
import proto
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.support.serving import StartStop

C = TypeVar("C")


class GrpcError(Exception):
    """An error a fake's method answers with; ``domain`` overrides the fake's own."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str | None = None,
        domain: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain

    def status(self, domain: str) -> status_pb2.Status:
        """As a ``google.rpc.Status``: also what a failed long-running operation holds."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.reason is not None:
            info = error_details_pb2.ErrorInfo(reason=self.reason, domain=self.domain or domain)
            status.details.add().Pack(info)
        return status

    def abort(self, context: grpc.ServicerContext, domain: str) -> NoReturn:
        context.abort_with_status(rpc_status.to_status(self.status(domain)))
        raise AssertionError("unreachable")  # pragma: no cover - abort raises


@dataclass
class _Fault:
    method: str | None
    error: GrpcError
    times: int


class Faults:
    """Errors queued for the next calls of a method, or of any method (``None``).  Not
    thread-safe: the fake calls it under its own lock."""

    def __init__(self) -> None:
        self._queued: list[_Fault] = []

    def add(
        self,
        method: str | None,
        code: grpc.StatusCode,
        message: str,
        *,
        times: int = 1,
        reason: str | None = None,
    ) -> None:
        self._queued.append(_Fault(method, GrpcError(code, message, reason), times))

    def take(self, method: str) -> None:
        """Raise the first fault queued for ``method``, using up one of its times."""
        for fault in self._queued:
            if fault.method is None or fault.method == method:
                fault.times -= 1
                if fault.times <= 0:
                    self._queued.remove(fault)
                raise fault.error


def decoder(message_type: Any) -> Callable[[bytes], Any]:
    """How to read a request of ``message_type``: proto-plus classes ``deserialize``,
    protobuf ones parse ``FromString``."""
    read: Callable[[bytes], Any] = getattr(message_type, "deserialize", None) or (
        message_type.FromString
    )
    return read


def encode(message: Any) -> bytes:
    """An answer, proto-plus or protobuf, as bytes."""
    if isinstance(message, proto.Message):
        return type(message).serialize(message)  # type: ignore[no-any-return]
    return bytes(message.SerializeToString())


Method = tuple[Any, Callable[[Any], Any]]  # (request type, implementation)


class GrpcCall(NamedTuple):
    """One request a fake received: the method, the decoded request, the answer's code."""

    method: str
    request: Any
    code: grpc.StatusCode = grpc.StatusCode.OK


class GrpcFake(StartStop):
    """A ``grpc.server`` on a free loopback port, for the stand-ins of gRPC APIs.

    A subclass sets ``DOMAIN`` (its errors' ``ErrorInfo`` domain), calls ``_grpc_server``
    once in its constructor with the lock that guards its state, then ``_serve`` for each
    service it implements; ``_before_call`` runs under that lock before each method.  It
    gets ``target``, ``start``/``stop``, ``channel``, ``_client``, ``fail_next`` and the
    record of ``requests``."""

    DOMAIN: ClassVar[str]
    port: int

    def _grpc_server(self, max_workers: int, lock: threading.Lock | threading.RLock) -> None:
        self._lock = lock
        self._faults = Faults()
        self._requests: list[GrpcCall] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._started = False
        self._channels: list[grpc.Channel] = []

    def _serve(self, service: str, methods: Mapping[str, Method]) -> None:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, impl),
                request_deserializer=decoder(request_type),
                response_serializer=encode,
            )
            for name, (request_type, impl) in methods.items()
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, handlers),)
        )

    def _wrap(
        self, method: str, impl: Callable[[Any], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                try:
                    self._faults.take(method)
                    self._before_call()
                    response = impl(request)
                except GrpcError as err:
                    self._requests.append(GrpcCall(method, request, err.code))
                    error = err
                else:
                    self._requests.append(GrpcCall(method, request))
                    return response
            error.abort(context, self.DOMAIN)

        return handler

    def _before_call(self) -> None:
        """Under the lock, before each method runs (a fake settles its operations)."""

    # -- fault injection and inspection ----------------------------------------------------

    def fail_next(
        self,
        method: str | None,
        code: grpc.StatusCode,
        message: str,
        times: int = 1,
        reason: str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (any method if None) fail."""
        with self._lock:
            self._faults.add(method, code, message, times=times, reason=reason)

    @property
    def requests(self) -> list[GrpcCall]:
        with self._lock:
            return list(self._requests)

    def calls(self, method: str) -> list[Any]:
        """The requests of ``method``, in order."""
        return [call.request for call in self.requests if call.method == method]

    def count(self, method: str) -> int:
        return len(self.calls(method))

    def _client(self, client_class: Callable[..., C], transport_class: Any) -> C:
        """The real library client, anonymous, over a channel to this fake."""
        transport = transport_class(
            host=self.target, credentials=AnonymousCredentials(), channel=self.channel()
        )
        return client_class(
            transport=transport, client_options=ClientOptions(api_endpoint=self.target)
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        if not self._started:
            self._server.start()
            self._started = True
        return self

    def stop(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        if self._started:
            self._server.stop(grace=None).wait()
            self._started = False

    def channel(self) -> grpc.Channel:
        """An insecure channel to the fake, closed by ``stop()``."""
        channel = grpc.insecure_channel(self.target)
        self._channels.append(channel)
        return channel
