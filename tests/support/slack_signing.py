"""Requests as Slack sends them to a Bolt app's ``/slack/events``: signed, with real payloads.

Used by the Slack-app tests (through ``App.dispatch`` or over HTTP) and by
``bench/ack_latency.py``.

* ``sign(secret, body, timestamp)`` gives the ``X-Slack-Request-Timestamp`` and
  ``X-Slack-Signature`` headers (``v0=`` + hex HMAC-SHA256 of ``v0:{ts}:{body}``), computed
  here with ``hmac`` and checked against ``slack_sdk.signature.SignatureVerifier`` in
  ``test_slack_stubs.py``.  ``bolt_headers`` adds the content type, ready for ``BoltRequest``.
* ``slash_command_body``, ``block_action_body`` and ``view_submission_body`` build
  form-encoded bodies with the fields Slack sends (taken from Slack's documented payloads
  and slack-bolt's scenario tests).  Every body gets a fresh ``trigger_id``.
* ``SlackSender`` POSTs such bodies to a running app over HTTP (stdlib ``http.client``, one
  keep-alive connection per thread), correctly signed or deliberately not: ``unsigned``,
  ``stale`` (older than Slack's 5-minute window), ``bad_signature``, and ``retry`` (with
  the ``X-Slack-Retry-Num`` / ``X-Slack-Retry-Reason`` headers of a redelivery).

``response_url`` defaults to a loopback port nothing listens on, so a listener that calls
``respond()`` can never reach the real Slack: give ``SlackApiStub.response_url(...)`` to a
builder (or set ``SlackSender.response_url``) when a test wants to see those answers.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
EVENTS_PATH = "/slack/events"
# Port 9 (discard) on loopback: nothing listens there, so a stray respond() fails fast.
UNSET_RESPONSE_URL = "http://127.0.0.1:9/webhook/unset"
STALE_SECONDS = 301  # Slack's and Bolt's window is 5 minutes: abs(now - ts) > 300 is refused

TEAM_ID = "T0001"
TEAM_DOMAIN = "kubeflow-test"
API_APP_ID = "A_KUBEFLOW"
VERIFICATION_TOKEN = "verification-token"  # the deprecated token Slack still puts in payloads
BOT_USER_ID = "U_BOT"
BOT_ID = "B_BOT"

_serial = itertools.count(1)


def sign(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers with which Slack signs ``body`` sent at ``timestamp`` (Unix seconds)."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def bolt_headers(
    secret: str, body: bytes, timestamp: int | None = None, content_type: str = FORM
) -> dict[str, str]:
    """Signed headers plus ``Content-Type``, for ``BoltRequest(body=..., headers=...)``."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {"Content-Type": content_type, **sign(secret, body, stamp)}


def new_trigger_id() -> str:
    """A fresh trigger id, shaped like Slack's (``digits.digits.hex``)."""
    return f"{int(time.time() * 1000)}.{next(_serial)}.{uuid.uuid4().hex}"


def _action_ts() -> str:
    now = time.time()
    return f"{int(now)}.{int((now % 1) * 1_000_000):06d}"


def _user(user_id: str, team_id: str, user_name: str | None) -> dict[str, str]:
    name = user_name or user_id.lower()
    return {"id": user_id, "username": name, "name": name, "team_id": team_id}


def _payload_form(payload: Mapping[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def slash_command_body(
    text: str,
    user_id: str,
    channel_id: str,
    *,
    command: str = "/kubeflow",
    team_id: str = TEAM_ID,
    trigger_id: str | None = None,
    response_url: str | None = None,
    user_name: str | None = None,
    channel_name: str | None = None,
    team_domain: str = TEAM_DOMAIN,
    api_app_id: str = API_APP_ID,
    token: str = VERIFICATION_TOKEN,
) -> bytes:
    """A slash command invocation, form-encoded, fields in the order Slack sends them."""
    fields = {
        "token": token,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name or channel_id.lower(),
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url or UNSET_RESPONSE_URL,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return urlencode(fields).encode()


def block_action_body(
    action_id: str,
    value: str | None,
    user_id: str,
    channel_id: str,
    message_ts: str,
    *,
    block_id: str = "actions",
    trigger_id: str | None = None,
    team_id: str = TEAM_ID,
    response_url: str | None = None,
    button_text: str | None = None,
    message_text: str = "",
    message_blocks: list[dict[str, Any]] | None = None,
    thread_ts: str | None = None,
    user_name: str | None = None,
    channel_name: str | None = None,
    team_domain: str = TEAM_DOMAIN,
    api_app_id: str = API_APP_ID,
    token: str = VERIFICATION_TOKEN,
    bot_user_id: str = BOT_USER_ID,
) -> bytes:
    """A click on a button of the bot's message ``message_ts``: ``payload=<json>``."""
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    message: dict[str, Any] = {
        "type": "message",
        "user": bot_user_id,
        "bot_id": BOT_ID,
        "text": message_text,
        "ts": message_ts,
    }
    if message_blocks is not None:
        message["blocks"] = message_blocks
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
        message["thread_ts"] = thread_ts
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": button_text or action_id, "emoji": True},
        "type": "button",
        "action_ts": _action_ts(),
    }
    if value is not None:  # Slack leaves "value" out for a button that has none
        action["value"] = value
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user_id, team_id, user_name),
        "api_app_id": api_app_id,
        "token": token,
        "container": container,
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name or channel_id.lower()},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url or UNSET_RESPONSE_URL,
        "actions": [action],
    }
    return _payload_form(payload)


def plain_text_values(texts: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """``{block_id: {action_id: text}}`` -> the ``view.state.values`` of plain-text inputs."""
    return {
        block_id: {
            action_id: {"type": "plain_text_input", "value": text}
            for action_id, text in actions.items()
        }
        for block_id, actions in texts.items()
    }


def view_submission_body(
    callback_id: str,
    private_metadata: str,
    values: Mapping[str, Mapping[str, Mapping[str, Any]]],
    user_id: str,
    *,
    view_id: str | None = None,
    trigger_id: str | None = None,
    team_id: str = TEAM_ID,
    blocks: list[dict[str, Any]] | None = None,
    title: str = "Kubeflow",
    user_name: str | None = None,
    team_domain: str = TEAM_DOMAIN,
    api_app_id: str = API_APP_ID,
    token: str = VERIFICATION_TOKEN,
) -> bytes:
    """A modal's submission: ``values`` is ``{block_id: {action_id: {"type", "value"}}}``."""
    view_id = view_id or f"V{next(_serial):08d}"
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": team_domain},
        "user": _user(user_id, team_id, user_name),
        "api_app_id": api_app_id,
        "token": token,
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "blocks": blocks or [],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": {k: dict(v) for k, v in values.items()}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "title": {"type": "plain_text", "text": title},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": {"type": "plain_text", "text": "Cancel"},
            "submit": {"type": "plain_text", "text": "Submit"},
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": api_app_id,
            "external_id": "",
            "app_installed_team_id": team_id,
            "bot_id": BOT_ID,
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return _payload_form(payload)


class SentResponse(NamedTuple):
    """What the app answered: ``status, body, headers`` (header names lower-cased)."""

    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class SlackSender:
    """POSTs Slack-shaped requests to a Bolt app, one keep-alive connection per thread.

    ``base_url`` is the app's root (``http://127.0.0.1:PORT``; requests go to ``path``,
    ``/slack/events`` by default) or the full endpoint URL when it has a path of its own.
    ``clock`` gives the Unix time used for signatures.
    """

    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        path: str = EVENTS_PATH,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        response_url: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"SlackSender needs an http:// URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path if parts.path not in ("", "/") else path
        self.secret = secret
        self.timeout = timeout
        self.clock = clock
        self.response_url = response_url
        self.connections_opened = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    # -- transport -----------------------------------------------------------------------

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
            self.connections_opened += 1
        return conn, False

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def post(
        self,
        body: bytes,
        content_type: str = FORM,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        headers: Mapping[str, str] | None = None,
        signed: bool = True,
    ) -> SentResponse:
        """POST ``body``; signed now (or at ``timestamp``) unless ``signed`` is False.

        ``signature`` replaces the computed ``X-Slack-Signature``; ``headers`` are added last.
        """
        sent: dict[str, str] = {"Content-Type": content_type}
        if signed:
            stamp = int(self.clock()) if timestamp is None else timestamp
            sent.update(sign(self.secret, body, stamp))
            if signature is not None:
                sent["X-Slack-Signature"] = signature
        sent.update(headers or {})
        for attempt in range(2):
            conn, reused = self._connection()
            try:
                conn.request("POST", self.path, body=body, headers=sent)
                response = conn.getresponse()
                text = response.read().decode("utf-8", errors="replace")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_connection()
                # A kept-alive connection the server had closed: send once more on a new one.
                if reused and attempt == 0:
                    continue
                raise
            except Exception:
                self._drop_connection()
                raise
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
            if response.will_close:
                self._drop_connection()
            return SentResponse(response.status, text, answer_headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> SlackSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what Slack sends ---------------------------------------------------------------

    def _with_response_url(self, kw: dict[str, Any]) -> dict[str, Any]:
        if self.response_url is not None:
            kw.setdefault("response_url", self.response_url)
        return kw

    def command(self, text: str, user: str, channel: str, **kw: Any) -> SentResponse:
        """``/kubeflow text`` from ``user`` in ``channel``; ``kw`` go to ``slash_command_body``."""
        return self.post(slash_command_body(text, user, channel, **self._with_response_url(kw)))

    def action(
        self,
        action_id: str,
        value: str | None,
        user: str,
        channel: str,
        message_ts: str,
        **kw: Any,
    ) -> SentResponse:
        """A button click; ``kw`` go to ``block_action_body``."""
        body = block_action_body(
            action_id, value, user, channel, message_ts, **self._with_response_url(kw)
        )
        return self.post(body)

    def submit_view(
        self,
        callback_id: str,
        private_metadata: str,
        values: Mapping[str, Mapping[str, Mapping[str, Any]]],
        user: str,
        **kw: Any,
    ) -> SentResponse:
        """A modal submission; ``kw`` go to ``view_submission_body``."""
        return self.post(view_submission_body(callback_id, private_metadata, values, user, **kw))

    def unsigned(
        self, body: bytes, content_type: str = FORM, *, headers: Mapping[str, str] | None = None
    ) -> SentResponse:
        """``body`` with no signature headers at all."""
        return self.post(body, content_type, headers=headers, signed=False)

    def stale(
        self,
        body: bytes,
        content_type: str = FORM,
        *,
        age: int = STALE_SECONDS,
        headers: Mapping[str, str] | None = None,
    ) -> SentResponse:
        """``body`` correctly signed, but ``age`` seconds ago (a replay)."""
        return self.post(body, content_type, timestamp=int(self.clock()) - age, headers=headers)

    def bad_signature(
        self, body: bytes, content_type: str = FORM, *, headers: Mapping[str, str] | None = None
    ) -> SentResponse:
        """``body`` signed now, but with a different secret."""
        forged = sign(self.secret + "-not", body, int(self.clock()))["X-Slack-Signature"]
        return self.post(body, content_type, signature=forged, headers=headers)

    def retry(
        self,
        body: bytes,
        content_type: str = FORM,
        *,
        retry_num: int = 1,
        reason: str = "http_timeout",
        headers: Mapping[str, str] | None = None,
    ) -> SentResponse:
        """Slack's redelivery of ``body`` (after a timeout or error), freshly signed."""
        retry_headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": reason}
        return self.post(body, content_type, headers={**retry_headers, **(headers or {})})
