"""Tests of the Slack stand-ins themselves, through the real slack_sdk and slack_bolt.

``SlackApiStub`` is driven by ``slack_sdk.WebClient`` / ``WebhookClient`` exactly as the bot
drives Slack; the signing helpers are checked against ``SignatureVerifier`` and against
Bolt's own request verification (``App.dispatch``, and over HTTP with ``SlackSender``).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt import Ack, App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook import WebhookClient

from tests.support.slack_api import SlackApiStub, SlackCall
from tests.support.slack_signing import (
    FORM,
    SlackSender,
    block_action_body,
    bolt_headers,
    plain_text_values,
    sign,
    slash_command_body,
    view_submission_body,
)

TOKEN = "xoxb-valid"
SECRET = "test-signing-secret"
CHANNEL = "C_REQUESTS"

CARD: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Create `demo`?"}},
    {
        "type": "actions",
        "block_id": "decision",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": "kf-1",
            },
            {
                "type": "button",
                "action_id": "deny",
                "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"},
                "value": "kf-1",
            },
        ],
    },
]


@pytest.fixture
def stub() -> Iterator[SlackApiStub]:
    with SlackApiStub(
        users={"U_ALICE": "alice@example.com", "U_BOB": "bob@example.com"},
        groups={"kubeflow-approvers": ("S_APPROVERS", ["U_BOB", "U_CAROL"])},
    ) as running:
        yield running
        assert running.errors == []


@pytest.fixture
def client(stub: SlackApiStub) -> WebClient:
    return WebClient(token=TOKEN, base_url=stub.url, timeout=5)


# -- the Web API stub ----------------------------------------------------------------------


def test_url_is_a_webclient_base_url_on_loopback(stub: SlackApiStub) -> None:
    assert stub.url == f"http://127.0.0.1:{stub.port}/api/"


def test_auth_test_answers_like_slack_and_is_recorded(
    stub: SlackApiStub, client: WebClient
) -> None:
    response = client.auth_test()

    assert response["ok"] is True
    assert response["user_id"] == "U_BOT"
    assert response["bot_id"] == "B_BOT"
    assert response["team_id"] == "T0001"
    assert response["is_enterprise_install"] is False
    (call,) = stub.calls
    assert isinstance(call, SlackCall)
    assert (call.method, call.token, call.path, call.ok) == (
        "auth.test",
        TOKEN,
        "/api/auth.test",
        True,
    )
    assert call.headers["authorization"] == f"Bearer {TOKEN}"


def test_post_update_and_thread_replies(stub: SlackApiStub, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL, text="Create demo?", blocks=CARD)
    parent = posted["ts"]
    assert posted["channel"] == CHANNEL
    assert posted["message"]["blocks"] == CARD
    # WebClient sends blocks as a JSON body; the stub hands them back as objects.
    assert stub.calls_to("chat.postMessage")[0].params["blocks"] == CARD

    updated = client.chat_update(channel=CHANNEL, ts=parent, text="Approved by Bob", blocks=[])
    assert updated["ts"] == parent
    assert updated["text"] == "Approved by Bob"

    first = client.chat_postMessage(channel=CHANNEL, text="queued", thread_ts=parent)
    second = client.chat_postMessage(channel=CHANNEL, text="running", thread_ts=parent)

    assert float(parent) < float(first["ts"]) < float(second["ts"])
    assert [m.text for m in stub.thread(CHANNEL, parent)] == ["queued", "running"]
    card = stub.message(CHANNEL, parent)
    assert (card.text, card.blocks, card.buttons) == ("Approved by Bob", [], [])
    assert card.edited
    assert card.history[0]["text"] == "Create demo?"
    assert card.history[0]["blocks"] == CARD
    assert [m.ts for m in stub.channel_messages(CHANNEL)] == [parent]
    assert set(stub.messages) == {
        (CHANNEL, parent),
        (CHANNEL, first["ts"]),
        (CHANNEL, second["ts"]),
    }


def test_form_encoded_blocks_and_token_field_are_understood(stub: SlackApiStub) -> None:
    tokenless = WebClient(base_url=stub.url)
    response = tokenless.api_call(
        "chat.postMessage",
        params={"token": TOKEN, "channel": CHANNEL, "blocks": json.dumps(CARD)},
    )

    assert response["ok"] is True
    (call,) = stub.calls_to("chat.postMessage")
    assert call.headers["content-type"] == FORM
    assert call.token == TOKEN
    assert call.params["blocks"] == CARD
    assert stub.message(CHANNEL, response["ts"]).buttons[0]["action_id"] == "approve"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_slack_errors_for_bad_arguments(client: WebClient) -> None:
    cases = [
        (lambda: client.chat_postMessage(channel=CHANNEL), "no_text"),
        (lambda: client.chat_postMessage(channel="", text="x"), "channel_not_found"),
        (lambda: client.chat_update(channel=CHANNEL, ts="1.000001", text="x"), "message_not_found"),
        (
            lambda: client.api_call("chat.scheduleMessage", json={"channel": CHANNEL}),
            "unknown_method",
        ),
    ]
    for call, error in cases:
        with pytest.raises(SlackApiError) as raised:
            call()
        assert raised.value.response["error"] == error


def test_update_needs_the_bots_own_message_in_that_channel(
    stub: SlackApiStub, client: WebClient
) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="mine")["ts"]
    theirs = stub.add_message(CHANNEL, "hello", user="U_ALICE")

    with pytest.raises(SlackApiError) as elsewhere:
        client.chat_update(channel="C_OTHER", ts=ts, text="x")
    with pytest.raises(SlackApiError) as not_ours:
        client.chat_update(channel=CHANNEL, ts=theirs, text="x")

    assert elsewhere.value.response["error"] == "message_not_found"
    assert not_ours.value.response["error"] == "cant_update_message"
    assert stub.message(CHANNEL, ts).text == "mine"


@pytest.mark.parametrize(
    ("token", "error"), [("xoxb-revoked", "invalid_auth"), (None, "not_authed")]
)
def test_tokens_are_checked(stub: SlackApiStub, token: str | None, error: str) -> None:
    with pytest.raises(SlackApiError) as raised:
        WebClient(token=token, base_url=stub.url).chat_postMessage(channel=CHANNEL, text="hi")

    assert raised.value.response.status_code == 200
    assert raised.value.response["error"] == error
    assert stub.messages == {}


def test_rate_limit_is_retried_by_the_webclient_after_retry_after(
    stub: SlackApiStub, client: WebClient
) -> None:
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    stub.rate_limit("chat.postMessage", times=1, retry_after=1)

    response = client.chat_postMessage(channel=CHANNEL, text="hi")

    assert response["ok"] is True
    limited, retried = stub.calls_to("chat.postMessage")
    assert (limited.rate_limited, limited.status, limited.error) == (True, 429, "ratelimited")
    assert (retried.rate_limited, retried.ok) == (False, True)
    assert retried.at - limited.at >= 1.0  # the client waited Retry-After seconds
    assert len(stub.messages) == 1


def test_rate_limit_without_a_retry_handler_raises_429(
    stub: SlackApiStub, client: WebClient
) -> None:
    stub.rate_limit("chat.update", times=1, retry_after=7)
    ts = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]

    with pytest.raises(SlackApiError) as raised:
        client.chat_update(channel=CHANNEL, ts=ts, text="approved")

    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "7"
    assert raised.value.response["error"] == "ratelimited"
    client.chat_update(channel=CHANNEL, ts=ts, text="approved")  # only one was limited
    assert [c.rate_limited for c in stub.calls_to("chat.update")] == [True, False]
    assert stub.message(CHANNEL, ts).text == "approved"


def test_injected_failures(stub: SlackApiStub, client: WebClient) -> None:
    stub.fail("chat.postMessage", "service_unavailable", times=2)

    for _ in range(2):
        with pytest.raises(SlackApiError) as raised:
            client.chat_postMessage(channel=CHANNEL, text="hi")
        assert raised.value.response["error"] == "service_unavailable"
    client.chat_postMessage(channel=CHANNEL, text="hi")

    assert [c.error for c in stub.calls_to("chat.postMessage")] == [
        "service_unavailable",
        "service_unavailable",
        None,
    ]


def test_ephemeral_and_views(stub: SlackApiStub, client: WebClient) -> None:
    answer = client.chat_postEphemeral(channel=CHANNEL, user="U_ALICE", text="only you")
    modal = {
        "type": "modal",
        "callback_id": "deny_reason",
        "private_metadata": "kf-1 C_REQUESTS",
        "title": {"type": "plain_text", "text": "Deny"},
        "blocks": [],
    }
    opened = client.views_open(trigger_id="123.456.abc", view=modal)

    assert answer["message_ts"]
    (ephemeral,) = stub.ephemerals("U_ALICE")
    assert (ephemeral.channel, ephemeral.text, ephemeral.message_ts) == (
        CHANNEL,
        "only you",
        answer["message_ts"],
    )
    assert stub.ephemerals("U_BOB") == []
    assert opened["view"]["id"].startswith("V")
    assert opened["view"]["callback_id"] == "deny_reason"
    (view,) = stub.views
    assert (view.id, view.trigger_id, view.view) == (opened["view"]["id"], "123.456.abc", modal)
    with pytest.raises(SlackApiError) as raised:
        client.views_open(trigger_id="", view=modal)
    assert raised.value.response["error"] == "invalid_arguments"


def test_directory_methods(stub: SlackApiStub, client: WebClient) -> None:
    assert client.users_info(user="U_ALICE")["user"]["profile"]["email"] == "alice@example.com"
    assert client.users_lookupByEmail(email="Bob@Example.com")["user"]["id"] == "U_BOB"
    groups = client.usergroups_list()["usergroups"]
    assert [(g["id"], g["handle"], g["name"]) for g in groups] == [
        ("S_APPROVERS", "kubeflow-approvers", "kubeflow-approvers")
    ]
    assert client.usergroups_users_list(usergroup="S_APPROVERS")["users"] == ["U_BOB", "U_CAROL"]

    for call, error in [
        (lambda: client.users_info(user="U_NOBODY"), "user_not_found"),
        (lambda: client.users_lookupByEmail(email="eve@example.com"), "users_not_found"),
        (lambda: client.usergroups_users_list(usergroup="S_NONE"), "no_such_subteam"),
    ]:
        with pytest.raises(SlackApiError) as raised:
            call()
        assert raised.value.response["error"] == error

    stub.users["U_DAVE"] = "dave@example.com"  # the directory can change while running
    assert client.users_lookupByEmail(email="dave@example.com")["user"]["id"] == "U_DAVE"


def test_wait_for_blocks_until_background_calls_arrive(
    stub: SlackApiStub, client: WebClient
) -> None:
    def later() -> None:
        for step in ("queued", "running", "done"):
            time.sleep(0.05)
            client.chat_postMessage(channel=CHANNEL, text=step)

    worker = threading.Thread(target=later)
    worker.start()
    done = stub.wait_for(
        "chat.postMessage",
        # A predicate may use the stub's own queries (its lock is re-entrant).
        predicate=lambda c: c.params["text"] == "done" and len(stub.messages) == 3,
    )
    worker.join()

    assert [c.params["text"] for c in done] == ["done"]
    assert len(stub.wait_for("chat.postMessage", count=3, timeout=0)) == 3
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"chat\.update"):
        stub.wait_for("chat.update", timeout=0.2)
    assert time.monotonic() - started < 2


def test_concurrent_posts_get_unique_increasing_ts(stub: SlackApiStub, client: WebClient) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(
            pool.map(lambda i: client.chat_postMessage(channel=CHANNEL, text=str(i)), range(100))
        )

    stamps = [a["ts"] for a in answers]
    assert len(set(stamps)) == 100
    assert sorted(stamps) == sorted(stamps, key=float)
    assert len(stub.calls_to("chat.postMessage")) == 100


def test_latency_and_reset(stub: SlackApiStub, client: WebClient) -> None:
    client.chat_postMessage(channel=CHANNEL, text="before")
    stub.fail("chat.postMessage")
    stub.reset()
    stub.latency_seconds = 0.2

    started = time.monotonic()
    client.chat_postMessage(channel=CHANNEL, text="after")  # the failure was forgotten too

    assert time.monotonic() - started >= 0.2
    assert [m.text for m in stub.messages.values()] == ["after"]
    assert [c.method for c in stub.calls] == ["chat.postMessage"]


def test_response_urls_act_like_slacks(stub: SlackApiStub, client: WebClient) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="card", blocks=CARD)["ts"]
    url = stub.response_url(CHANNEL, message_ts=ts, user="U_ALICE")

    WebhookClient(url).send(text="replaced", replace_original=True, blocks=[])
    WebhookClient(url).send(text="for everyone", response_type="in_channel")
    WebhookClient(url).send(text="just for you")
    plain = WebhookClient(stub.webhook_url("commands/T0001/1/x")).send(text="anything")

    assert stub.message(CHANNEL, ts).text == "replaced"
    assert [m.text for m in stub.channel_messages(CHANNEL)] == ["replaced", "for everyone"]
    assert [e.text for e in stub.ephemerals("U_ALICE")] == ["just for you"]
    assert plain.status_code == 200
    hooks = stub.calls_to("webhook")
    assert [h.params["text"] for h in hooks] == [
        "replaced",
        "for everyone",
        "just for you",
        "anything",
    ]
    assert hooks[0].params["replace_original"] is True

    WebhookClient(url).send(delete_original=True)
    assert (CHANNEL, ts) not in stub.messages
    assert stub.message(CHANNEL, ts).deleted


def test_get_query_strings_and_chunked_bodies(stub: SlackApiStub) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=5)
    conn.request("GET", f"/api/users.info?user=U_ALICE&token={TOKEN}")
    by_get = json.loads(conn.getresponse().read())
    conn.request(
        "POST",
        "/api/chat.postMessage",
        body=iter([b'{"channel": "C1", ', b'"text": "chunked"}']),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    by_chunks = json.loads(conn.getresponse().read())
    conn.close()

    assert by_get["user"]["profile"]["email"] == "alice@example.com"
    assert stub.calls_to("users.info")[0].http_method == "GET"
    assert by_chunks["ok"] is True
    assert stub.message("C1", by_chunks["ts"]).text == "chunked"


def test_keep_alive_and_stop() -> None:
    stub = SlackApiStub().start()
    conn = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(3):  # three requests on one connection
        conn.request("POST", "/api/auth.test", body=b"", headers=headers)
        response = conn.getresponse()
        assert json.loads(response.read())["ok"] is True
    stub.stop()
    stub.stop()  # idempotent

    # The kept-alive connection was closed by stop(), not left to a lingering thread.
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("POST", "/api/auth.test", body=b"", headers=headers)
        conn.getresponse()
    conn.close()
    assert len(stub.calls_to("auth.test")) == 3


# -- signing ---------------------------------------------------------------------------


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at


def test_sign_matches_slack_sdk() -> None:
    body = slash_command_body("create demo --gpu nvidia-tesla-t4:1", "U_ALICE", CHANNEL)
    timestamp = 1_765_000_000
    headers = sign(SECRET, body, timestamp)

    verifier = SignatureVerifier(SECRET, clock=FixedClock(timestamp + 10))
    expected = verifier.generate_signature(timestamp=str(timestamp), body=body)
    assert headers == {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": expected}
    assert verifier.is_valid(body, str(timestamp), headers["X-Slack-Signature"])
    assert verifier.is_valid(body.decode(), str(timestamp), headers["X-Slack-Signature"])
    assert not verifier.is_valid(body + b"x", str(timestamp), headers["X-Slack-Signature"])
    stale = SignatureVerifier(SECRET, clock=FixedClock(timestamp + 301))
    assert not stale.is_valid(body, str(timestamp), headers["X-Slack-Signature"])


def test_payload_shapes() -> None:
    command = {
        k: v[0]
        for k, v in parse_qs(
            slash_command_body("status", "U_ALICE", CHANNEL).decode(), keep_blank_values=True
        ).items()
    }
    assert {
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "response_url",
        "trigger_id",
    } <= set(command)
    assert (command["command"], command["text"], command["user_id"]) == (
        "/kubeflow",
        "status",
        "U_ALICE",
    )

    action = json.loads(
        parse_qs(block_action_body("approve", "kf-1", "U_BOB", CHANNEL, "1.000100").decode())[
            "payload"
        ][0]
    )
    assert action["type"] == "block_actions"
    assert action["container"] == {
        "type": "message",
        "message_ts": "1.000100",
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert action["actions"][0]["action_id"] == "approve"
    assert action["actions"][0]["value"] == "kf-1"
    assert action["message"]["user"] == "U_BOT"

    values = plain_text_values({"reason": {"reason_input": "no budget"}})
    view = json.loads(
        parse_qs(view_submission_body("deny_reason", "kf-1 C1", values, "U_BOB").decode())[
            "payload"
        ][0]
    )
    assert view["type"] == "view_submission"
    assert view["view"]["state"]["values"]["reason"]["reason_input"]["value"] == "no budget"
    assert view["view"]["private_metadata"] == "kf-1 C1"


# -- Bolt's request verification -----------------------------------------------------------


@pytest.fixture
def bolt_app(stub: SlackApiStub) -> tuple[App, dict[str, list[Any]]]:
    app = App(client=WebClient(token=TOKEN, base_url=stub.url), signing_secret=SECRET)
    seen: dict[str, list[Any]] = {"commands": [], "actions": [], "views": [], "retries": []}

    @app.command("/kubeflow")
    def on_command(ack: Ack, command: dict[str, Any], request: BoltRequest) -> None:
        # Recorded before ack(): the HTTP answer may go out as soon as ack() is called.
        seen["commands"].append(command)
        seen["retries"].append(request.headers.get("x-slack-retry-num", [None])[0])
        ack()

    @app.action("approve")
    def on_approve(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        seen["actions"].append(body)
        ack()
        client.chat_update(
            channel=body["container"]["channel_id"],
            ts=body["container"]["message_ts"],
            text=f"Approved by <@{body['user']['id']}>",
            blocks=[],
        )

    @app.view("deny_reason")
    def on_reason(ack: Ack, view: dict[str, Any]) -> None:
        seen["views"].append(view)
        ack()

    return app, seen


def _request(body: bytes, headers: dict[str, str]) -> BoltRequest:
    as_bolt_takes: dict[str, str | Sequence[str]] = dict(headers)
    return BoltRequest(body=body.decode(), headers=as_bolt_takes)


def _signed(body: bytes) -> BoltRequest:
    return _request(body, bolt_headers(SECRET, body))


def test_bolt_accepts_what_sign_produces(
    stub: SlackApiStub, bolt_app: tuple[App, dict[str, list[Any]]]
) -> None:
    app, seen = bolt_app
    ts = WebClient(token=TOKEN, base_url=stub.url).chat_postMessage(
        channel=CHANNEL, text="card", blocks=CARD
    )["ts"]

    values = plain_text_values({"reason": {"reason_input": "no budget"}})

    command = app.dispatch(_signed(slash_command_body("status", "U_ALICE", CHANNEL)))
    action = app.dispatch(_signed(block_action_body("approve", "kf-1", "U_BOB", CHANNEL, ts)))
    submitted = app.dispatch(_signed(view_submission_body("deny_reason", "kf-1", values, "U_BOB")))

    assert (command.status, action.status, submitted.status) == (200, 200, 200)
    (update,) = stub.wait_for("chat.update")
    assert update.params["ts"] == ts
    assert stub.message(CHANNEL, ts).text == "Approved by <@U_BOB>"
    assert seen["commands"][0]["text"] == "status"
    assert seen["views"][0]["state"]["values"]["reason"]["reason_input"]["value"] == "no budget"
    # The App asked auth.test through the stub (at construction and on the first request).
    assert stub.calls_to("auth.test")


@pytest.mark.parametrize("how", ["stale", "bad_signature", "unsigned"])
def test_bolt_refuses_what_slack_would_not_send(
    bolt_app: tuple[App, dict[str, list[Any]]], how: str
) -> None:
    app, seen = bolt_app
    body = slash_command_body("status", "U_ALICE", CHANNEL)
    headers = {
        "stale": bolt_headers(SECRET, body, timestamp=int(time.time()) - 301),
        "bad_signature": bolt_headers("another-secret", body),
        "unsigned": {"Content-Type": FORM},
    }[how]

    response = app.dispatch(_request(body, headers))

    assert response.status == 401
    assert json.loads(response.body) == {"error": "invalid request"}
    assert seen["commands"] == []


# -- SlackSender over HTTP -----------------------------------------------------------------


class _BoltServer(ThreadingHTTPServer):
    """The smallest real HTTP front for a Bolt ``App``: just for testing ``SlackSender``."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, app: App) -> None:
        self.app = app
        super().__init__(("127.0.0.1", 0), _BoltHandler)


class _BoltHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _BoltServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        headers: dict[str, str | Sequence[str]] = {
            name.lower(): value for name, value in self.headers.items()
        }
        response = self.server.app.dispatch(BoltRequest(body=body, headers=headers))
        payload = (response.body or "").encode()
        self.send_response(response.status)
        for name, values in response.headers.items():
            if name.lower() != "content-length":
                for value in values:
                    self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sender(bolt_app: tuple[App, dict[str, list[Any]]]) -> Iterator[SlackSender]:
    server = _BoltServer(bolt_app[0])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        with SlackSender(f"http://127.0.0.1:{server.server_address[1]}", SECRET) as sending:
            yield sending
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_sender_over_http(sender: SlackSender, bolt_app: tuple[App, dict[str, list[Any]]]) -> None:
    _, seen = bolt_app
    body = slash_command_body("list", "U_ALICE", CHANNEL)

    assert sender.command("status", "U_ALICE", CHANNEL).status == 200
    assert sender.retry(body, retry_num=2).status == 200
    for refused in (sender.stale(body), sender.bad_signature(body), sender.unsigned(body)):
        assert (refused.status, refused.json()) == (401, {"error": "invalid request"})

    assert [c["text"] for c in seen["commands"]] == ["status", "list"]
    assert seen["retries"] == [None, "2"]
    assert sender.connections_opened == 1  # five requests, one kept-alive connection


def test_sender_from_many_threads(
    sender: SlackSender, bolt_app: tuple[App, dict[str, list[Any]]]
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda i: sender.command(f"status {i}", "U_ALICE", CHANNEL).status, range(40))
        )

    assert statuses == [200] * 40
    assert len(bolt_app[1]["commands"]) == 40
    assert sender.connections_opened <= 8
