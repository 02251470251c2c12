"""What the stand-in servers under ``tests/support`` share: start, stop, ``with``.

``StartStop`` gives any stand-in with ``start()``/``stop()`` its context-manager
methods.  ``BackgroundServer`` serves a ``socketserver`` server on a daemon thread; with
``ConnectionTracking`` mixed into that server, ``stop()`` also closes kept-alive
connections, so their handler threads end with it.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from types import TracebackType
from typing import Any, Self

STOP_WAIT_SECONDS = 5.0


class StartStop:
    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ConnectionTracking(socketserver.BaseServer):
    """Mixed in before a ``socketserver`` class: remembers the open connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)  # type: ignore[no-untyped-call]

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)  # type: ignore[no-untyped-call]

    def drop_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class BackgroundServer(StartStop):
    """A stand-in whose ``_new_server()`` builds a ``ConnectionTracking`` server."""

    thread_name = "stand-in"
    _server: Any = None
    _thread: threading.Thread | None = None

    def _new_server(self) -> Any:
        raise NotImplementedError

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = self._new_server()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if thread is not None:
            thread.join(STOP_WAIT_SECONDS)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() first")
        return int(self._server.server_address[1])
