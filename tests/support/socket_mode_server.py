"""A local stand-in for Slack's Socket Mode WebSocket endpoint, stdlib only.

Used by ``tests/bot/test_socket_mode.py`` to run ``kubeflow-bot serve`` in Socket Mode
(``SLACK_APP_TOKEN`` set) against loopback only:

* ``SocketModeStub`` is a threaded TCP server on 127.0.0.1 that performs the RFC 6455
  opening handshake (``Sec-WebSocket-Accept``) on ``GET /link/?ticket=...``, reads the
  client's masked frames (text, ping, pong, close; fragmented messages are reassembled)
  and sends unmasked text frames, as a server must.  ``url`` is a ``ws://`` URL: the
  builtin ``slack_sdk.socket_mode`` client speaks plain TCP to any port but 443 (TLS is
  only used for 443 or through a proxy), so no certificate is needed.
* Pings are answered with pongs.  Text messages the client sends are kept in
  ``received`` (decoded from JSON when they are JSON); ``wait_ack`` blocks, with a bound,
  until the acknowledgement of one envelope has arrived.
* ``send_hello`` and ``send_envelope`` write what Slack writes: ``{"type": "hello", ...}``
  first, then envelopes ``{"envelope_id", "type", "payload", "accepts_response_payload"}``
  (``slash_commands``, ``interactive``, ``events_api``).  They go to the newest open
  connection.
* ``SocketModeSlackApi`` is a ``SlackApiStub`` that also implements
  ``apps.connections.open`` (checked against the stub's valid tokens like any method),
  answering ``{"ok": true, "url": <socket_url>}``.

Not modelled: Slack's ``disconnect`` messages and refresh, several concurrent
connections per app (each is accepted, but envelopes go to the newest), permessage
compression, TLS.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.support.serving import BackgroundServer, ConnectionTracking
from tests.support.slack_api import SlackApiStub

HOST = "127.0.0.1"
WAIT_SECONDS = 5.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE_BYTES = 16_384
MAX_FRAME_BYTES = 16 * 1024 * 1024

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

Json = dict[str, Any]


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key`` (RFC 6455)."""
    digest = hashlib.sha1((key.strip() + WS_GUID).encode("ascii")).digest()  # noqa: S324
    return base64.b64encode(digest).decode("ascii")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One unmasked frame, as a server sends it."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length <= 125:
        head += bytes([length])
    elif length <= 0xFFFF:
        head += bytes([126]) + struct.pack("!H", length)
    else:
        head += bytes([127]) + struct.pack("!Q", length)
    return head + payload


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False


class ProtocolError(Exception):
    """The client broke RFC 6455 (an unmasked frame, a bad length, a bad handshake)."""


class _Connection:
    """One accepted WebSocket connection (its socket, and a lock for writing to it)."""

    def __init__(self, sock: socket.socket, path: str, headers: dict[str, str]) -> None:
        self.sock = sock
        self.path = path
        self.headers = headers
        self.send_lock = threading.Lock()
        self.closed = False

    def send_frame(self, opcode: int, payload: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(encode_frame(opcode, payload))


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 65_536))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(sock: socket.socket) -> tuple[bool, int, bytes]:
    """``(fin, opcode, unmasked payload)`` of the next client frame."""
    b1, b2 = _read_exact(sock, 2)
    fin, opcode = bool(b1 & 0x80), b1 & 0x0F
    if not b2 & 0x80:
        raise ProtocolError("a client frame was not masked")
    length = b2 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(sock, 8))
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"a client frame of {length} bytes")
    mask = _read_exact(sock, 4)
    data = _read_exact(sock, length)
    payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
    return fin, opcode, payload


class _Server(ConnectionTracking, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    stub: SocketModeStub

    def __init__(self, stub: SocketModeStub) -> None:
        self.stub = stub
        super().__init__((HOST, 0), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server
    request: socket.socket

    def handle(self) -> None:
        stub = self.server.stub
        try:
            connection = self._handshake()
        except (ProtocolError, ConnectionError, OSError, UnicodeDecodeError) as e:
            stub._record_error(f"handshake: {e!r}")
            return
        if connection is None:
            return
        stub._opened(connection)
        try:
            self._serve(connection)
        except (ConnectionError, OSError):
            pass  # the client went away (the bot closes its socket without a close frame)
        except ProtocolError as e:
            stub._record_error(f"frame: {e}")
        finally:
            stub._closed(connection)

    def _handshake(self) -> _Connection | None:
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = self.request.recv(4096)
            if not chunk:
                raise ConnectionError("the client closed the connection during the handshake")
            raw += chunk
            if len(raw) > MAX_HANDSHAKE_BYTES:
                raise ProtocolError("handshake request too long")
        head, _, rest = raw.partition(b"\r\n\r\n")
        if rest:
            raise ProtocolError("data after the handshake request, before the answer")
        lines = head.decode("utf-8").split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key", "")
        refusal = None
        if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("HTTP/1.1"):
            refusal = f"not a GET over HTTP/1.1: {lines[0]!r}"
        elif headers.get("upgrade", "").lower() != "websocket":
            refusal = "no Upgrade: websocket"
        elif "upgrade" not in headers.get("connection", "").lower():
            refusal = "no Connection: Upgrade"
        elif headers.get("sec-websocket-version") != "13":
            refusal = "Sec-WebSocket-Version is not 13"
        elif not _valid_key(key):
            refusal = "Sec-WebSocket-Key is not 16 bytes in base64"
        elif not self.server.stub._accepts_path(parts[1]):
            refusal = f"unknown ticket in {parts[1]!r}"
        if refusal is not None:
            self.server.stub._refused(parts[1] if len(parts) > 1 else "", refusal)
            body = refusal.encode()
            self.request.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            return None
        self.request.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
                "\r\n"
            ).encode("ascii")
        )
        return _Connection(self.request, parts[1], headers)

    def _serve(self, connection: _Connection) -> None:
        stub = self.server.stub
        fragments: list[bytes] = []
        fragment_opcode: int | None = None
        while True:
            fin, opcode, payload = _read_frame(connection.sock)
            if opcode == OP_PING:
                stub._count("ping")
                connection.send_frame(OP_PONG, payload)
            elif opcode == OP_PONG:
                stub._count("pong")
            elif opcode == OP_CLOSE:
                stub._count("close")
                with contextlib.suppress(OSError):
                    connection.send_frame(OP_CLOSE, payload[:2])
                return
            elif opcode in (OP_TEXT, OP_BINARY):
                if fragment_opcode is not None:
                    raise ProtocolError("a new message before the last fragmented one ended")
                if fin:
                    stub._message(opcode, payload)
                else:
                    fragment_opcode, fragments = opcode, [payload]
            elif opcode == OP_CONTINUATION:
                if fragment_opcode is None:
                    raise ProtocolError("a continuation frame with nothing to continue")
                fragments.append(payload)
                if fin:
                    stub._message(fragment_opcode, b"".join(fragments))
                    fragment_opcode, fragments = None, []
            else:
                raise ProtocolError(f"unknown opcode {opcode:#x}")


class SocketModeStub(BackgroundServer):
    """Slack's Socket Mode endpoint on 127.0.0.1; see the module docstring.

    Use as a context manager, or call ``start()`` / ``stop()``.  ``ticket`` is the query
    value ``url`` carries; a handshake with another path is refused with HTTP 400.
    """

    def __init__(self, *, ticket: str | None = None, app_id: str = "A_KUBEFLOW") -> None:
        self.ticket = ticket or uuid.uuid4().hex
        self.app_id = app_id
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._connections: list[_Connection] = []
        self._handshakes: list[str] = []
        self._refusals: list[tuple[str, str]] = []
        self._received: list[Any] = []
        self._binary: list[bytes] = []
        self._counts: dict[str, int] = {"ping": 0, "pong": 0, "close": 0}
        self._errors: list[str] = []
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------

    thread_name = "socket-mode-stub"

    def _new_server(self) -> _Server:
        return _Server(self)

    @property
    def url(self) -> str:
        """What ``apps.connections.open`` answers: ``ws://127.0.0.1:PORT/link/?ticket=...``."""
        return f"ws://{HOST}:{self.port}/link/?ticket={self.ticket}"

    # -- what was received -----------------------------------------------------------

    @property
    def received(self) -> list[Any]:
        """Text messages from the client, oldest first (JSON ones decoded)."""
        with self._lock:
            return list(self._received)

    @property
    def handshakes(self) -> list[str]:
        """The request paths of accepted handshakes, in order."""
        with self._lock:
            return list(self._handshakes)

    @property
    def refusals(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of refused handshakes."""
        with self._lock:
            return list(self._refusals)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._connections if not c.closed)

    def count(self, kind: str) -> int:
        """How many ``ping``, ``pong`` or ``close`` frames the client sent."""
        with self._lock:
            return self._counts[kind]

    @property
    def errors(self) -> list[str]:
        """Protocol errors seen in server threads: should be empty."""
        with self._lock:
            return list(self._errors)

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout=timeout):
                raise AssertionError(
                    f"waited {timeout}s for {what}; handshakes: {self._handshakes}, "
                    f"refused: {self._refusals}, received: {self._received}, "
                    f"errors: {self._errors}"
                )

    def wait_connected(self, timeout: float = WAIT_SECONDS, count: int = 1) -> None:
        """Block until ``count`` connections have completed the handshake (open or not)."""
        self._wait(lambda: len(self._handshakes) >= count, timeout, f"{count} connection(s)")

    def wait_disconnected(self, timeout: float = WAIT_SECONDS) -> None:
        """Block until no connection is open."""
        self._wait(
            lambda: all(c.closed for c in self._connections), timeout, "every connection to end"
        )

    def wait_ack(self, envelope_id: str, timeout: float = WAIT_SECONDS) -> Json:
        """The client's acknowledgement of ``envelope_id``: ``{"envelope_id", "payload"?}``."""
        found: list[Json] = []

        def acked() -> bool:
            found[:] = [
                m
                for m in self._received
                if isinstance(m, dict) and m.get("envelope_id") == envelope_id
            ]
            return bool(found)

        self._wait(acked, timeout, f"the acknowledgement of envelope {envelope_id}")
        return found[0]

    # -- what Slack sends ------------------------------------------------------------

    def _current(self) -> _Connection:
        with self._lock:
            open_ones = [c for c in self._connections if not c.closed]
        if not open_ones:
            raise AssertionError("no open Socket Mode connection to send to")
        return open_ones[-1]

    def send_text(self, text: str) -> None:
        """One text frame to the newest open connection."""
        self._current().send_frame(OP_TEXT, text.encode("utf-8"))

    def send_json(self, message: Json) -> None:
        self.send_text(json.dumps(message))

    def send_hello(self, num_connections: int = 1) -> None:
        """What Slack sends first on a new connection."""
        self.send_json(
            {
                "type": "hello",
                "num_connections": num_connections,
                "debug_info": {
                    "host": "applink-stub",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )

    def send_envelope(
        self,
        type_: str,
        payload: Json,
        envelope_id: str | None = None,
        accepts_response_payload: bool = True,
        *,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> str:
        """An envelope of ``type_`` (``slash_commands``, ``interactive``, ``events_api``)
        carrying ``payload``; returns its ``envelope_id``."""
        envelope_id = envelope_id or f"{uuid.uuid4()}-{next(self._ids)}"
        message: Json = {
            "envelope_id": envelope_id,
            "type": type_,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if retry_attempt is not None:
            message["retry_attempt"] = retry_attempt
        if retry_reason is not None:
            message["retry_reason"] = retry_reason
        self.send_json(message)
        return envelope_id

    def close_connections(self, code: int = 1000, reason: str = "") -> None:
        """A close frame to every open connection (the client may reconnect)."""
        with self._lock:
            open_ones = [c for c in self._connections if not c.closed]
        for connection in open_ones:
            with contextlib.suppress(OSError):
                connection.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())

    # -- server threads --------------------------------------------------------------

    def _accepts_path(self, path: str) -> bool:
        return path.startswith("/link/") and f"ticket={self.ticket}" in path

    def _opened(self, connection: _Connection) -> None:
        with self._changed:
            self._connections.append(connection)
            self._handshakes.append(connection.path)
            self._changed.notify_all()

    def _closed(self, connection: _Connection) -> None:
        with self._changed:
            connection.closed = True
            self._changed.notify_all()

    def _refused(self, path: str, reason: str) -> None:
        with self._changed:
            self._refusals.append((path, reason))
            self._changed.notify_all()

    def _message(self, opcode: int, payload: bytes) -> None:
        with self._changed:
            if opcode == OP_BINARY:
                self._binary.append(payload)
            else:
                text = payload.decode("utf-8")
                try:
                    self._received.append(json.loads(text))
                except json.JSONDecodeError:
                    self._received.append(text)
            self._changed.notify_all()

    def _count(self, kind: str) -> None:
        with self._changed:
            self._counts[kind] += 1
            self._changed.notify_all()

    def _record_error(self, message: str) -> None:
        with self._changed:
            self._errors.append(message)
            self._changed.notify_all()


class SocketModeSlackApi(SlackApiStub):
    """A ``SlackApiStub`` that also answers ``apps.connections.open`` with ``socket_url``.

    The app token is checked like any token (``valid_tokens``), so an unknown ``xapp-``
    token gets ``invalid_auth``.  ``socket_url`` may be set or changed at any time.
    """

    def __init__(self, *, socket_url: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.socket_url = socket_url

    def _methods(self) -> dict[str, Callable[[Json], Json]]:
        return {**super()._methods(), "apps.connections.open": self._connections_open}

    def _connections_open(self, params: Json) -> Json:
        if self.socket_url is None:
            raise RuntimeError("SocketModeSlackApi.socket_url is not set")
        return {"url": self.socket_url}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)
