"""A local stand-in for the Slack Web API, for the real ``slack_sdk.WebClient`` to talk to.

Used by the Slack-app tests (the Bolt app, ``SlackChat`` / ``SlackDirectory``, the worker's
progress messages) and by ``bench/ack_latency.py``.  Modelled on slack-bolt's own
``tests/mock_web_api_server``, but it binds 127.0.0.1 on a free port (so tests can run in
parallel), keeps connections alive, and answers like Slack instead of ``{"ok": true}``:

* ``SlackApiStub`` is a threaded HTTP server.  Give ``stub.url`` (``http://127.0.0.1:PORT/api/``)
  to ``WebClient(base_url=...)``.  Methods live at ``/api/METHOD`` as on
  ``https://slack.com/api/``.  Form-encoded and JSON bodies are both accepted (the WebClient
  sends ``chat.postMessage``, ``chat.update`` and ``views.open`` as JSON, the rest as forms,
  always with POST), and so is the token as ``Authorization: Bearer`` or a ``token`` form field.
* Tokens are checked (``not_authed`` / ``invalid_auth``).  Implemented methods:
  ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
  ``views.open``, ``users.info``, ``users.lookupByEmail``, ``usergroups.list`` and
  ``usergroups.users.list``; any other method answers ``unknown_method``.  Posted messages
  are kept (with their edit history) so tests can check what a channel or thread shows.
* ``/webhook/...`` accepts POSTs the way a ``response_url`` does.  URLs made by
  ``response_url(channel, message_ts=..., user=...)`` also apply ``replace_original``,
  ``delete_original`` and ``response_type: in_channel`` to the stored messages.
* Every request is recorded, in order, as a ``SlackCall``; ``wait_for`` blocks (on a
  condition variable, with a bound) until background threads have made the calls a test
  expects.
* Faults: ``rate_limit`` (HTTP 429 with ``Retry-After``), ``fail`` (``ok: false`` with a
  given error, optionally with a 5xx status) and ``latency_seconds``.

Not modelled: per-tier rate limits, the five-uses limit of a ``response_url``, trigger-id
expiry (inject it with ``fail("views.open", "expired_trigger_id")``), channel membership.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.serving import BackgroundServer, ConnectionTracking

HOST = "127.0.0.1"
DEFAULT_TOKENS = frozenset({"xoxb-valid"})
WAIT_SECONDS = 5.0
# Form fields that carry JSON; they are decoded into objects in ``SlackCall.params``.
JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "user_auth_blocks")
WEBHOOK = "webhook"  # the ``SlackCall.method`` of a POST to /webhook/...

Json = dict[str, Any]


@dataclass(frozen=True)
class SlackCall:
    """One request the stub received, with what it answered.

    ``method`` is the Web API method (``"chat.postMessage"``) or ``"webhook"`` for a POST to
    ``/webhook/...``.  ``params`` holds the form fields or the JSON body, with JSON-carrying
    form fields (``blocks``, ``view``, ...) decoded and JSON ``null`` values dropped, and the
    query string merged in.  ``headers`` has lower-cased names.  ``at`` is ``time.time()``
    when the request arrived.  ``rate_limited`` marks an attempt answered with HTTP 429.
    """

    method: str
    params: Json
    token: str | None
    headers: dict[str, str]
    at: float
    path: str = ""
    http_method: str = "POST"
    status: int = 200
    response: Json = field(default_factory=dict)
    rate_limited: bool = False

    @property
    def ok(self) -> bool:
        return self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return str(error) if error is not None else None


@dataclass
class PostedMessage:
    """A message as the channel shows it now; ``history`` holds earlier versions, oldest first."""

    channel: str
    ts: str
    text: str
    blocks: list[Json] | None = None
    thread_ts: str | None = None
    user: str = "U_BOT"
    history: list[Json] = field(default_factory=list)
    deleted: bool = False

    @property
    def edited(self) -> bool:
        return bool(self.history)

    @property
    def buttons(self) -> list[Json]:
        """The elements of the message's ``actions`` blocks (its buttons, mostly)."""
        return [
            element
            for block in self.blocks or ()
            if block.get("type") == "actions"
            for element in block.get("elements", ())
        ]

    def as_api(self) -> Json:
        """The ``message`` object Slack puts in its answers."""
        message: Json = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts}
        if self.blocks is not None:
            message["blocks"] = copy.deepcopy(self.blocks)
        if self.thread_ts is not None:
            message["thread_ts"] = self.thread_ts
        return message


@dataclass(frozen=True)
class Ephemeral:
    """A message only ``user`` sees (``chat.postEphemeral`` or a ``response_url`` answer)."""

    channel: str
    user: str | None
    text: str
    message_ts: str
    blocks: list[Json] | None = None
    thread_ts: str | None = None


@dataclass(frozen=True)
class OpenedView:
    id: str
    trigger_id: str
    view: Json


@dataclass
class _ResponseTarget:
    channel: str
    message_ts: str | None
    user: str | None


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.body: Json = {"ok": False, "error": error, **extra}


def _missing(name: str) -> _ApiError:
    return _ApiError(
        "invalid_arguments",
        response_metadata={"messages": [f"[ERROR] missing required field: {name}"]},
    )


class _Server(ConnectionTracking, ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
    stub: SlackApiStub

    def __init__(self, stub: SlackApiStub) -> None:
        self.stub = stub
        super().__init__((HOST, 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def log_message(self, *args: Any) -> None:
        pass  # keep test output quiet

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        arrived = time.time()
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            status, answer, extra_headers = self.server.stub._answer(
                self.command, self.path, headers, body, arrived
            )
        except Exception as e:  # noqa: BLE001 (a stub bug must reach the test, not hang it)
            self.server.stub._record_error(f"{self.command} {self.path}: {e!r}")
            status, answer, extra_headers = 500, {"ok": False, "error": f"stub_error: {e!r}"}, {}
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _parse_params(content_type: str, query: str, body: bytes) -> tuple[Json, bool]:
    """Form fields or JSON body (plus the query string); True when the body was JSON."""
    params: Json = {key: values[0] for key, values in parse_qs(query).items()}
    text = body.decode("utf-8", errors="replace")
    is_json = content_type.startswith("application/json") or text.lstrip().startswith("{")
    if is_json and text.strip():
        decoded = json.loads(text)
        if isinstance(decoded, dict):
            params.update({k: v for k, v in decoded.items() if v is not None})
    elif content_type.startswith("multipart/"):
        pass  # file uploads: not modelled, the raw call is still recorded
    elif text:
        parsed = parse_qs(text, keep_blank_values=True)
        params.update({key: values[0] for key, values in parsed.items()})
    for name in JSON_FIELDS:
        value = params.get(name)
        if isinstance(value, str) and value:
            # Undecodable JSON stays a string; the method decides whether that is an error.
            with contextlib.suppress(json.JSONDecodeError):
                params[name] = json.loads(value)
    return params, is_json


def _present(params: Json, name: str) -> bool:
    value = params.get(name)
    return value is not None and value != ""


class SlackApiStub(BackgroundServer):
    """A Slack Web API on 127.0.0.1; see the module docstring.

    ``users`` maps user id -> email; ``groups`` maps handle -> (group id, member ids).  Both
    may be replaced or changed while the server runs.  Use as a context manager, or call
    ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        *,
        valid_tokens: Sequence[str] | frozenset[str] = DEFAULT_TOKENS,
        users: Mapping[str, str] | None = None,
        groups: Mapping[str, tuple[str, Sequence[str]]] | None = None,
        latency_seconds: float = 0.0,
        team_id: str = "T0001",
        team: str = "Kubeflow Test",
        bot_user_id: str = "U_BOT",
        bot_id: str = "B_BOT",
    ) -> None:
        self.valid_tokens: set[str] = set(valid_tokens)
        self.users: dict[str, str] = dict(users or {})
        self.groups: dict[str, tuple[str, list[str]]] = {
            handle: (group_id, list(members))
            for handle, (group_id, members) in (groups or {}).items()
        }
        self.latency_seconds = latency_seconds
        self.team_id = team_id
        self.team = team
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        # Re-entrant: a wait_for predicate may call the stub's own query methods.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._calls: list[SlackCall] = []
        self._messages: dict[tuple[str, str], PostedMessage] = {}
        self._ephemerals: list[Ephemeral] = []
        self._views: list[OpenedView] = []
        self._rate_limits: dict[str, deque[int]] = {}
        self._failures: dict[str, deque[tuple[str, int]]] = {}
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._errors: list[str] = []

    # -- lifecycle -------------------------------------------------------------------

    thread_name = "slack-api-stub"

    def _new_server(self) -> _Server:
        return _Server(self)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The ``base_url`` for ``WebClient``: ``http://127.0.0.1:PORT/api/``."""
        return f"{self.base}/api/"

    def webhook_url(self, name: str = "hook") -> str:
        """A URL under ``/webhook/`` that records POSTs and answers ok (nothing else)."""
        return f"{self.base}/webhook/{name.lstrip('/')}"

    def response_url(
        self, channel: str, *, message_ts: str | None = None, user: str | None = None
    ) -> str:
        """A ``response_url`` for a command or action in ``channel`` that acts like Slack's.

        A POST with ``replace_original`` / ``delete_original`` changes the message at
        ``message_ts``; ``response_type: in_channel`` posts a new message; anything else
        becomes an ephemeral message for ``user``.
        """
        with self._lock:
            key = f"response/{next(self._ids)}"
            self._response_targets[key] = _ResponseTarget(channel, message_ts, user)
        return self.webhook_url(key)

    # -- faults ----------------------------------------------------------------------

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        with self._lock:
            self._rate_limits.setdefault(method, deque()).extend([retry_after] * times)

    def fail(
        self, method: str, error: str = "internal_error", times: int = 1, *, status: int = 200
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``.

        ``status`` 500 or 503 makes the WebClient's ``ServerErrorRetryHandler`` retry them.
        """
        with self._lock:
            self._failures.setdefault(method, deque()).extend([(error, status)] * times)

    # -- what was received -----------------------------------------------------------

    @property
    def calls(self) -> list[SlackCall]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[SlackCall]:
        """Every attempt at ``method`` (rate-limited and failed ones included), in order."""
        with self._lock:
            return [call for call in self._calls if call.method == method]

    def wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = WAIT_SECONDS,
        predicate: Callable[[SlackCall], bool] | None = None,
    ) -> list[SlackCall]:
        """Block until ``count`` calls of ``method`` (matching ``predicate``) have arrived.

        Returns all such calls so far.  Rate-limited and failed attempts count unless
        ``predicate`` excludes them (e.g. ``predicate=lambda c: c.ok``).  Raises
        ``AssertionError`` naming what did arrive after ``timeout`` seconds.
        """

        def matching() -> list[SlackCall]:
            return [
                call
                for call in self._calls
                if call.method == method and (predicate is None or predicate(call))
            ]

        with self._changed:
            found: list[SlackCall] = []

            def enough() -> bool:
                found[:] = matching()
                return len(found) >= count

            if self._changed.wait_for(enough, timeout=timeout):
                return list(found)
            seen = [f"{c.method}{'' if c.ok else f' ({c.error or c.status})'}" for c in self._calls]
        raise AssertionError(
            f"waited {timeout}s for {count} call(s) of {method}, got {len(found)}; "
            f"all calls: {seen}"
        )

    @property
    def messages(self) -> dict[tuple[str, str], PostedMessage]:
        """Messages as they stand now, by ``(channel, ts)`` (copies; deleted ones left out)."""
        with self._lock:
            return {
                key: copy.deepcopy(message)
                for key, message in self._messages.items()
                if not message.deleted
            }

    def message(self, channel: str, ts: str) -> PostedMessage:
        """One message (a copy), deleted or not; ``KeyError`` if it was never posted."""
        with self._lock:
            found = self._messages.get((channel, ts))
            if found is None:
                raise KeyError(f"no message {ts} in {channel}")
            return copy.deepcopy(found)

    def channel_messages(self, channel: str) -> list[PostedMessage]:
        """Top-level (not threaded) messages in ``channel``, oldest first."""
        with self._lock:
            found = [
                m
                for m in self._messages.values()
                if m.channel == channel and m.thread_ts is None and not m.deleted
            ]
            return copy.deepcopy(sorted(found, key=lambda m: m.ts))

    def thread(self, channel: str, thread_ts: str) -> list[PostedMessage]:
        """Replies in the thread under ``thread_ts``, oldest first (the parent excluded)."""
        with self._lock:
            found = [
                m
                for m in self._messages.values()
                if m.channel == channel
                and m.thread_ts == thread_ts
                and m.ts != thread_ts
                and not m.deleted
            ]
            return copy.deepcopy(sorted(found, key=lambda m: m.ts))

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        with self._lock:
            return [e for e in self._ephemerals if user is None or e.user == user]

    @property
    def views(self) -> list[OpenedView]:
        with self._lock:
            return list(self._views)

    @property
    def errors(self) -> list[str]:
        """Exceptions raised inside the stub itself (answered as HTTP 500): should be empty."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget calls, messages, views and pending faults; keep tokens, users and groups."""
        with self._lock:
            self._calls.clear()
            self._messages.clear()
            self._ephemerals.clear()
            self._views.clear()
            self._rate_limits.clear()
            self._failures.clear()
            self._response_targets.clear()
            self._errors.clear()

    def add_message(
        self, channel: str, text: str, *, user: str, thread_ts: str | None = None
    ) -> str:
        """Put a message from someone else in ``channel`` (the bot cannot update it)."""
        with self._lock:
            ts = self._next_ts()
            self._messages[(channel, ts)] = PostedMessage(
                channel, ts, text, thread_ts=thread_ts, user=user
            )
            self._changed.notify_all()
            return ts

    # -- request handling (server threads) ---------------------------------------------

    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"{1_700_000_000 + n // 10_000}.{(n % 10_000) * 100:06d}"

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def _answer(
        self, verb: str, path: str, headers: dict[str, str], body: bytes, arrived: float
    ) -> tuple[int, Json, dict[str, str]]:
        if self.latency_seconds > 0:
            time.sleep(self.latency_seconds)
        split = urlsplit(path)
        params, is_json = _parse_params(headers.get("content-type", ""), split.query, body)
        token = None
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            token = authorization[len("bearer ") :].strip() or None
        elif not is_json and isinstance(params.get("token"), str):
            token = params["token"] or None

        if split.path.startswith("/webhook/"):
            method = WEBHOOK
        elif split.path.startswith("/api/"):
            method = split.path[len("/api/") :]
        else:
            method = ""

        with self._lock:
            status, answer, extra = self._dispatch(method, split.path, params, token)
            self._calls.append(
                SlackCall(
                    method=method or split.path,
                    params=params,
                    token=token,
                    headers=headers,
                    at=arrived,
                    path=split.path,
                    http_method=verb,
                    status=status,
                    response=answer,
                    rate_limited=status == 429,
                )
            )
            self._changed.notify_all()
        return status, answer, extra

    def _dispatch(
        self, method: str, path: str, params: Json, token: str | None
    ) -> tuple[int, Json, dict[str, str]]:
        """Called with the lock held."""
        if method == WEBHOOK:
            return self._webhook(path[len("/webhook/") :], params)
        if not method:
            return 404, {"ok": False, "error": "not_found"}, {}
        handler = self._methods().get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, {}
        if token is None:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token not in self.valid_tokens:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        pending = self._rate_limits.get(method)
        if pending:
            retry_after = pending.popleft()
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
        failures = self._failures.get(method)
        if failures:
            error, status = failures.popleft()
            return status, {"ok": False, "error": error}, {}
        try:
            answer = handler(params)
        except _ApiError as e:
            return 200, e.body, {}
        extra = {"X-OAuth-Scopes": "commands,chat:write,users:read,users:read.email"}
        return 200, {"ok": True, **answer}, extra if method == "auth.test" else {}

    def _methods(self) -> dict[str, Callable[[Json], Json]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
            "users.info": self._users_info,
            "users.lookupByEmail": self._lookup_by_email,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
        }

    # -- methods (lock held) -------------------------------------------------------------

    def _auth_test(self, params: Json) -> Json:
        return {
            "url": "https://kubeflow-test.slack.com/",
            "team": self.team,
            "user": "kubeflow-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    @staticmethod
    def _blocks(params: Json) -> list[Json] | None:
        blocks = params.get("blocks")
        if blocks is None:
            return None
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise _ApiError("invalid_blocks_format")
        return blocks

    @staticmethod
    def _has_content(params: Json) -> bool:
        return any(_present(params, name) for name in ("text", "blocks", "attachments"))

    def _post_message(self, params: Json) -> Json:
        if not _present(params, "channel"):
            raise _ApiError("channel_not_found")
        blocks = self._blocks(params)
        if not self._has_content(params):
            raise _ApiError("no_text")
        channel = str(params["channel"])
        thread_ts = str(params["thread_ts"]) if _present(params, "thread_ts") else None
        message = PostedMessage(
            channel=channel,
            ts=self._next_ts(),
            text=str(params.get("text", "")),
            blocks=copy.deepcopy(blocks),
            thread_ts=thread_ts,
            user=self.bot_user_id,
        )
        self._messages[(channel, message.ts)] = message
        return {"channel": channel, "ts": message.ts, "message": message.as_api()}

    def _update(self, params: Json) -> Json:
        if not _present(params, "channel"):
            raise _ApiError("channel_not_found")
        if not _present(params, "ts"):
            raise _missing("ts")
        blocks = self._blocks(params)
        if not self._has_content(params):
            raise _ApiError("no_text")
        channel, ts = str(params["channel"]), str(params["ts"])
        message = self._messages.get((channel, ts))
        if message is None or message.deleted:
            raise _ApiError("message_not_found")
        if message.user != self.bot_user_id:
            raise _ApiError("cant_update_message")
        self._replace(message, params, blocks)
        return {"channel": channel, "ts": ts, "text": message.text, "message": message.as_api()}

    @staticmethod
    def _replace(message: PostedMessage, params: Json, blocks: list[Json] | None) -> None:
        message.history.append(
            {"text": message.text, "blocks": copy.deepcopy(message.blocks), "at": time.time()}
        )
        if "text" in params:
            message.text = str(params["text"])
        if blocks is not None:
            message.blocks = copy.deepcopy(blocks)

    def _post_ephemeral(self, params: Json) -> Json:
        if not _present(params, "channel"):
            raise _ApiError("channel_not_found")
        if not _present(params, "user"):
            raise _missing("user")
        blocks = self._blocks(params)
        if not self._has_content(params):
            raise _ApiError("no_text")
        ts = self._next_ts()
        self._ephemerals.append(
            Ephemeral(
                channel=str(params["channel"]),
                user=str(params["user"]),
                text=str(params.get("text", "")),
                message_ts=ts,
                blocks=copy.deepcopy(blocks),
                thread_ts=str(params["thread_ts"]) if _present(params, "thread_ts") else None,
            )
        )
        return {"message_ts": ts}

    def _views_open(self, params: Json) -> Json:
        if not _present(params, "trigger_id"):
            raise _missing("trigger_id")
        if not _present(params, "view"):
            raise _missing("view")
        view = params["view"]
        if not isinstance(view, dict) or "type" not in view:
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] view must be a JSON object with a type"]},
            )
        view_id = f"V{next(self._ids):08d}"
        opened = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{view_id}",
            "title": view.get("title"),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": "A_KUBEFLOW",
            "external_id": view.get("external_id", ""),
            "bot_id": self.bot_id,
        }
        self._views.append(OpenedView(view_id, str(params["trigger_id"]), copy.deepcopy(view)))
        return {"view": opened}

    def _user(self, user_id: str, email: str) -> Json:
        name = email.split("@", 1)[0]
        return {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": name,
            "deleted": False,
            "is_bot": False,
            "profile": {"email": email, "real_name": name, "display_name": name},
        }

    def _users_info(self, params: Json) -> Json:
        if not _present(params, "user"):
            raise _missing("user")
        user_id = str(params["user"])
        email = self.users.get(user_id)
        if email is None:
            raise _ApiError("user_not_found")
        return {"user": self._user(user_id, email)}

    def _lookup_by_email(self, params: Json) -> Json:
        if not _present(params, "email"):
            raise _missing("email")
        wanted = str(params["email"]).lower()
        for user_id, email in self.users.items():
            if email.lower() == wanted:
                return {"user": self._user(user_id, email)}
        raise _ApiError("users_not_found")

    def _usergroups_list(self, params: Json) -> Json:
        include_users = str(params.get("include_users", "")).lower() in ("1", "true")
        groups = []
        for handle, (group_id, members) in self.groups.items():
            group: Json = {
                "id": group_id,
                "team_id": self.team_id,
                "is_usergroup": True,
                "name": handle,
                "handle": handle,
                "description": "",
                "date_delete": 0,
                "user_count": len(members),
            }
            if include_users:
                group["users"] = list(members)
            groups.append(group)
        return {"usergroups": groups}

    def _usergroups_users_list(self, params: Json) -> Json:
        if not _present(params, "usergroup"):
            raise _missing("usergroup")
        wanted = str(params["usergroup"])
        for group_id, members in self.groups.values():
            if group_id == wanted:
                return {"users": list(members)}
        raise _ApiError("no_such_subteam")

    # -- response_url (lock held) ----------------------------------------------------

    def _webhook(self, name: str, params: Json) -> tuple[int, Json, dict[str, str]]:
        target = self._response_targets.get(name)
        if target is None:
            return 200, {"ok": True}, {}
        blocks = params.get("blocks") if isinstance(params.get("blocks"), list) else None
        truthy = ("true", "1", True)
        if params.get("delete_original") in truthy or params.get("replace_original") in truthy:
            message = (
                self._messages.get((target.channel, target.message_ts))
                if target.message_ts
                else None
            )
            if message is None or message.deleted:
                return 404, {"ok": False, "error": "message_not_found"}, {}
            if params.get("delete_original") in truthy:
                message.deleted = True
            else:
                self._replace(message, params, blocks)
            return 200, {"ok": True}, {}
        thread_ts = str(params["thread_ts"]) if _present(params, "thread_ts") else None
        ts = self._next_ts()
        if params.get("response_type") == "in_channel":
            self._messages[(target.channel, ts)] = PostedMessage(
                channel=target.channel,
                ts=ts,
                text=str(params.get("text", "")),
                blocks=copy.deepcopy(blocks),
                thread_ts=thread_ts,
                user=self.bot_user_id,
            )
        else:
            self._ephemerals.append(
                Ephemeral(
                    channel=target.channel,
                    user=target.user,
                    text=str(params.get("text", "")),
                    message_ts=ts,
                    blocks=copy.deepcopy(blocks),
                    thread_ts=thread_ts,
                )
            )
        return 200, {"ok": True}, {}
