"""``kubeflow-bot serve`` in Socket Mode, end to end, against loopback stand-ins for Slack.

With ``SLACK_APP_TOKEN`` set (and no signing secret) ``serve`` asks the Web API
(``SocketModeSlackApi``, at ``SLACK_API_URL``) for a WebSocket URL with
``apps.connections.open``, connects to it (``SocketModeStub``) and takes slash commands
and button clicks as envelopes, acknowledging each on the socket.  Every test starts the
installed console script as its own process, with a fresh SQLite file and the in-process
worker on the dry-run cloud; waits are bounded.  The last tests check the WebSocket
stand-in itself, with slack_sdk's own Socket Mode client and with raw frames.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import pytest
from slack_sdk import WebClient
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from handlers import action_ids
from handlers.usage import USAGE
from tests.support.bot_process import BotLauncher
from tests.support.paths import CONSOLE_SCRIPT, SAMPLE_POLICY
from tests.support.slack_api import SlackCall
from tests.support.slack_signing import block_action_body, new_trigger_id, slash_command_body
from tests.support.socket_mode_server import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SocketModeSlackApi,
    SocketModeStub,
    accept_key,
    wait_until,
)

HOST = "127.0.0.1"
BOT_TOKEN = "xoxb-valid"
APP_TOKEN = "xapp-valid"
REQUESTER = "U_REQ"
APPROVER = "U_APPROVER"
CHANNEL = "C_TEAM"
CREATE_DEMO = "create demo --gpu nvidia-tesla-t4:1"
DEMO_URL = "https://demo.endpoints.demo-project.cloud.goog/"
USERS = {REQUESTER: "req@example.com", APPROVER: "approver@example.com"}
WAIT = 10.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
# The socket-mode client reads HTTPS_PROXY & co. itself (and ignores NO_PROXY).
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


# -- the bot as a process ---------------------------------------------------------------


@dataclass
class SocketModeBot:
    """A ``kubeflow-bot serve`` process in Socket Mode; stdout and stderr kept apart."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        out = self.stdout_path.read_text(encoding="utf-8", errors="replace")
        return f"--- stdout ---\n{out}\n--- stderr ---\n{self.stderr()}"

    def assert_running(self) -> None:
        code = self.process.poll()
        assert code is None, f"serve exited with {code}:\n{self.output()}"

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return int(self.process.wait(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"serve did not exit within {timeout:.0f} s:\n{self.output()}"
            ) from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait (bounded); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


def start_bot(
    api: SocketModeSlackApi, workdir: Path, *, app_token: str = APP_TOKEN
) -> SocketModeBot:
    """``kubeflow-bot serve`` with ``SLACK_APP_TOKEN`` and no signing secret, env built
    as ``BotLauncher`` builds it."""
    base = BotLauncher(api, workdir).base_env()
    env = {k: v for k, v in base.items() if k.lower() not in PROXY_VARIABLES}
    env.update(
        {
            "SLACK_API_URL": api.url,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": app_token,
            "KUBEFLOW_BOT_STORE": f"sqlite:///{workdir / 'state.db'}",
            "KUBEFLOW_BOT_POLICY": str(SAMPLE_POLICY),
            "no_proxy": HOST,
            "NO_PROXY": HOST,
            "no_grpc_proxy": HOST,
        }
    )
    assert "SLACK_SIGNING_SECRET" not in env
    stdout_path, stderr_path = workdir / "serve.out", workdir / "serve.err"
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        process = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "serve"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    return SocketModeBot(process, stdout_path, stderr_path)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def socket_stub() -> Iterator[SocketModeStub]:
    with SocketModeStub() as stub:
        yield stub
        assert stub.errors == []


@pytest.fixture
def api(socket_stub: SocketModeStub) -> Iterator[SocketModeSlackApi]:
    with SocketModeSlackApi(
        valid_tokens={BOT_TOKEN, APP_TOKEN}, users=USERS, socket_url=socket_stub.url
    ) as stub:
        yield stub
        assert stub.errors == []


@pytest.fixture
def bot(
    api: SocketModeSlackApi, socket_stub: SocketModeStub, tmp_path: Path
) -> Iterator[SocketModeBot]:
    """The bot, connected (its hello received); killed at the end if a test left it up."""
    bot = start_bot(api, tmp_path)
    try:
        opened = api.wait_for("apps.connections.open", timeout=START_TIMEOUT)
        assert [(c.token, c.ok) for c in opened] == [(APP_TOKEN, True)], opened
        socket_stub.wait_connected(START_TIMEOUT)
        bot.assert_running()
        socket_stub.send_hello()
        yield bot
    finally:
        bot.kill()


# -- what Slack sends ---------------------------------------------------------------------


def slash_command_payload(text: str, user: str, channel: str, **kw: Any) -> dict[str, str]:
    """The fields of ``slash_command_body``, as the dict a Socket Mode envelope carries."""
    return dict(parse_qsl(slash_command_body(text, user, channel, **kw).decode()))


def block_action_payload(*args: Any, **kw: Any) -> dict[str, Any]:
    """``block_action_body``'s ``payload``, decoded: what an ``interactive`` envelope carries."""
    form = parse_qs(block_action_body(*args, **kw).decode())
    payload: dict[str, Any] = json.loads(form["payload"][0])
    return payload


def is_card(call: SlackCall) -> bool:
    return call.ok and any(b.get("type") == "actions" for b in call.params.get("blocks") or ())


def approve_button(call: SlackCall) -> dict[str, Any]:
    for block in call.params.get("blocks") or ():
        for element in block.get("elements", ()) if block.get("type") == "actions" else ():
            if element.get("action_id") == action_ids.APPROVE:
                return dict(element)
    raise AssertionError(f"no approve button in {call.params.get('blocks')}")


def thread_reply(
    api: SocketModeSlackApi, ts: str, *fragments: str, timeout: float = WAIT
) -> SlackCall:
    """The first post in the thread under ``ts`` whose text holds every fragment."""

    def matches(call: SlackCall) -> bool:
        text = str(call.params.get("text", ""))
        return call.ok and call.params.get("thread_ts") == ts and all(f in text for f in fragments)

    return api.wait_for("chat.postMessage", 1, timeout=timeout, predicate=matches)[0]


def assert_clean_stop(bot: SocketModeBot, socket_stub: SocketModeStub) -> None:
    code = bot.stop()
    assert code == 0, bot.output()
    assert "Traceback" not in bot.stderr(), bot.output()
    socket_stub.wait_disconnected(WAIT)


# -- the bot in Socket Mode ------------------------------------------------------------------


def test_a_request_is_filed_approved_and_provisioned_over_socket_mode(
    bot: SocketModeBot, api: SocketModeSlackApi, socket_stub: SocketModeStub
) -> None:
    command = slash_command_payload(
        CREATE_DEMO,
        REQUESTER,
        CHANNEL,
        trigger_id=new_trigger_id(),
        response_url=api.response_url(CHANNEL, user=REQUESTER),
    )

    filed_envelope = socket_stub.send_envelope("slash_commands", command)

    ack = socket_stub.wait_ack(filed_envelope, WAIT)
    assert not ack.get("payload"), ack  # acknowledged at once; the answer comes later
    cards = api.wait_for("chat.postMessage", timeout=WAIT, predicate=is_card)
    card = cards[0]
    request_id = str(approve_button(card)["value"])
    assert card.params["channel"] == CHANNEL
    assert request_id in str(card.params.get("text")), card.params
    wait_until(lambda: bool(api.ephemerals(REQUESTER)), "the requester to be told", WAIT)
    filed = api.ephemerals(REQUESTER)[0].text
    assert filed.startswith(f"Filed `{request_id}`"), filed

    channel, ts = str(card.response["channel"]), str(card.response["ts"])
    click = block_action_payload(
        action_ids.APPROVE,
        request_id,
        APPROVER,
        channel,
        ts,
        response_url=api.response_url(channel, message_ts=ts, user=APPROVER),
    )
    click_envelope = socket_stub.send_envelope("interactive", click)

    ack = socket_stub.wait_ack(click_envelope, WAIT)
    assert not ack.get("payload"), ack
    approved = thread_reply(api, ts, "Approved by", f"<@{APPROVER}>")
    assert request_id in str(approved.params["text"])
    finished = thread_reply(api, ts, DEMO_URL, timeout=2 * WAIT)
    assert request_id in str(finished.params["text"])
    assert_clean_stop(bot, socket_stub)


def test_help_is_answered_in_the_acknowledgement(
    bot: SocketModeBot, api: SocketModeSlackApi, socket_stub: SocketModeStub
) -> None:
    calls_before = len(api.calls)
    envelope = socket_stub.send_envelope(
        "slash_commands",
        slash_command_payload(
            "help", REQUESTER, CHANNEL, response_url=api.response_url(CHANNEL, user=REQUESTER)
        ),
    )

    ack = socket_stub.wait_ack(envelope, WAIT)

    answer = ack.get("payload") or {}
    assert answer.get("response_type", "ephemeral") == "ephemeral", ack
    for usage in USAGE.values():
        assert f"`{usage}`" in str(answer.get("text", "")), ack
    assert_clean_stop(bot, socket_stub)
    assert [c.method for c in api.calls[calls_before:]] == []  # nothing but the ack


def test_serve_exits_2_when_slack_refuses_the_app_token(
    api: SocketModeSlackApi, socket_stub: SocketModeStub, tmp_path: Path
) -> None:
    bot = start_bot(api, tmp_path, app_token="xapp-unknown")
    try:
        code = bot.wait(START_TIMEOUT)
    finally:
        bot.kill()

    assert code == 2, bot.output()
    stderr = bot.stderr()
    assert "Traceback" not in stderr, stderr
    assert "xapp-unknown" not in stderr, stderr  # the token never reaches the log
    reasons = [line for line in stderr.splitlines() if line.startswith("kubeflow-bot: ")]
    assert len(reasons) == 1, stderr
    assert "SLACK_APP_TOKEN" in reasons[0] and "invalid_auth" in reasons[0], stderr
    refused = api.calls_to("apps.connections.open")
    assert [(c.token, c.error) for c in refused] == [("xapp-unknown", "invalid_auth")]
    assert socket_stub.handshakes == []


# -- the stand-in itself ---------------------------------------------------------------------


def test_the_stub_serves_slack_sdks_own_socket_mode_client(
    api: SocketModeSlackApi, socket_stub: SocketModeStub
) -> None:
    seen: list[SocketModeRequest] = []

    def listener(client: SocketModeClient, request: SocketModeRequest) -> None:
        seen.append(request)
        answer = {"text": "x" * 300}  # long enough for a 16-bit frame length
        client.send_socket_mode_response(SocketModeResponse(request.envelope_id, answer))

    web = WebClient(base_url=api.url)
    client = SocketModeClient(app_token=APP_TOKEN, web_client=web, auto_reconnect_enabled=False)
    client.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    try:
        client.connect()
        socket_stub.wait_connected(WAIT)
        assert socket_stub.handshakes == [f"/link/?ticket={socket_stub.ticket}"]
        socket_stub.send_hello()
        payload = {"command": "/kubeflow", "text": "y" * 70_000}  # a 64-bit frame length
        envelope = socket_stub.send_envelope("slash_commands", payload)

        ack = socket_stub.wait_ack(envelope, WAIT)

        assert ack == {"envelope_id": envelope, "payload": {"text": "x" * 300}}
        assert [(r.type, r.payload, r.accepts_response_payload) for r in seen] == [
            ("slash_commands", payload, True)
        ]
        # The client pings as it connects; the stub's pong is what it measures.
        session = client.current_session
        assert session is not None
        wait_until(lambda: session.last_ping_pong_time is not None, "a pong", WAIT)
        assert socket_stub.count("ping") >= 1
    finally:
        client.close()
    socket_stub.wait_disconnected(WAIT)
    assert api.calls_to("apps.connections.open")[0].token == APP_TOKEN


def _masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)])
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_server_frame(sock: socket.socket) -> tuple[int, bytes]:
    b1, b2 = sock.recv(2, socket.MSG_WAITALL)
    assert not b2 & 0x80, "a server frame must not be masked"
    length = b2 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))
    return b1 & 0x0F, sock.recv(length, socket.MSG_WAITALL) if length else b""


def test_the_stub_speaks_rfc6455_to_a_raw_client(socket_stub: SocketModeStub) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((HOST, socket_stub.port), timeout=WAIT) as sock:
        path = f"/link/?ticket={socket_stub.ticket}"
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head

        sock.sendall(_masked(OP_PING, b"are you there"))
        assert _read_server_frame(sock) == (OP_PONG, b"are you there")
        # One message in three fragments, with a ping between them (RFC 6455, 5.4).
        sock.sendall(_masked(OP_TEXT, b'{"envelope_id": ', fin=False))
        sock.sendall(_masked(OP_CONTINUATION, b'"e-1",', fin=False))
        sock.sendall(_masked(OP_PING, b""))
        sock.sendall(_masked(OP_CONTINUATION, b' "payload": {}}'))
        assert _read_server_frame(sock) == (OP_PONG, b"")
        assert socket_stub.wait_ack("e-1", WAIT) == {"envelope_id": "e-1", "payload": {}}

        socket_stub.send_text("from the server")
        assert _read_server_frame(sock) == (OP_TEXT, b"from the server")
        sock.sendall(_masked(OP_CLOSE, struct.pack("!H", 1000)))
        assert _read_server_frame(sock) == (OP_CLOSE, struct.pack("!H", 1000))
    socket_stub.wait_disconnected(WAIT)
    assert socket_stub.count("close") == 1


def test_the_stub_refuses_a_handshake_without_its_ticket(socket_stub: SocketModeStub) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((HOST, socket_stub.port), timeout=WAIT) as sock:
        sock.sendall(
            f"GET /link/?ticket=other HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert socket_stub.handshakes == []
    assert [path for path, _ in socket_stub.refusals] == ["/link/?ticket=other"]


def test_the_stub_api_checks_the_app_token(api: SocketModeSlackApi) -> None:
    web = WebClient(base_url=api.url)
    assert web.apps_connections_open(app_token=APP_TOKEN)["url"] == api.socket_url
    with pytest.raises(Exception, match="invalid_auth"):
        web.apps_connections_open(app_token="xapp-unknown")
    results = [(c.token, c.ok) for c in api.calls_to("apps.connections.open")]
    assert results == [(APP_TOKEN, True), ("xapp-unknown", False)]
