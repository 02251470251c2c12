"""Driving ``kubeflow-bot serve`` as Slack would, and reading what it told Slack.

``Slack`` pairs one bot process with the stand-in Web API it calls and a sender that
signs as Slack does.  Used by the end-to-end tests of the Slack app and of the worker.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers import action_ids
from provisioning.records import MessageRef
from tests.support.bot_process import BotProcess
from tests.support.slack_api import SlackApiStub, SlackCall
from tests.support.slack_signing import SentResponse, SlackSender, new_trigger_id

REQUESTER = "U_REQ"
APPROVER = "U_APPROVER"
OTHER = "U_OTHER"
CHANNEL = "C_TEAM"
DEMO_URL = "https://demo.endpoints.demo-project.cloud.goog/"
CREATE_DEMO = "create demo --gpu nvidia-tesla-t4:1"
USERS = {
    REQUESTER: "req@example.com",
    APPROVER: "approver@example.com",
    OTHER: "other@example.com",
}
REQUEST_ID = re.compile(r"kf-[a-z0-9]{6}")
WAIT = 10.0
# A negative check ("nothing more was posted") waits for this long a silence.
QUIET_SECONDS = 0.3


@dataclass(frozen=True)
class Card:
    """An approval card the bot posted."""

    request_id: str
    channel: str
    ts: str
    call: SlackCall

    @property
    def ref(self) -> MessageRef:
        return MessageRef(channel=self.channel, ts=self.ts)


def is_card(call: SlackCall) -> bool:
    return call.ok and any(b.get("type") == "actions" for b in call.params.get("blocks") or ())


def buttons(blocks: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {
        element["action_id"]: element
        for block in blocks or ()
        if block.get("type") == "actions"
        for element in block.get("elements", ())
    }


def card_of(call: SlackCall) -> Card:
    approve = buttons(call.params.get("blocks"))[action_ids.APPROVE]
    return Card(
        str(approve["value"]), str(call.response["channel"]), str(call.response["ts"]), call
    )


def text_of(call: SlackCall) -> str:
    return str(call.params.get("text", ""))


def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` (every 10 ms) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)


def acknowledged_text(response: SentResponse) -> str:
    """The text of an acknowledgement that carries an answer (only the user sees it)."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return response.body
    answer = response.json()
    assert answer.get("response_type", "ephemeral") == "ephemeral", answer
    return str(answer.get("text", ""))


@dataclass
class Slack:
    """One bot process, the stub it calls, and a sender signing as Slack does.

    What only one user sees may reach them three ways, and the tests accept each: in the
    acknowledgement's body, through the request's ``response_url`` (the stub's, which
    records it as an ephemeral message for that user), or by ``chat.postEphemeral``.
    """

    bot: BotProcess
    stub: SlackApiStub
    sender: SlackSender

    @classmethod
    def on(cls, bot: BotProcess, stub: SlackApiStub) -> Slack:
        return cls(bot, stub, bot.sender())

    # What Slack sends

    def command(self, text: str, user: str = REQUESTER, channel: str = CHANNEL) -> SentResponse:
        response = self.sender.command(
            text, user, channel, response_url=self.stub.response_url(channel, user=user)
        )
        assert response.status == 200, response
        return response

    def click(
        self, action_id: str, card: Card, user: str, *, trigger_id: str | None = None
    ) -> SentResponse:
        response = self.sender.action(
            action_id,
            card.request_id,
            user,
            card.channel,
            card.ts,
            trigger_id=trigger_id or new_trigger_id(),
            response_url=self.stub.response_url(card.channel, message_ts=card.ts, user=user),
        )
        assert response.status == 200, response
        assert response.body == "", response  # a click is answered later, if at all
        return response

    def approve(self, card: Card, user: str = APPROVER) -> SentResponse:
        return self.click(action_ids.APPROVE, card, user)

    # What the stub recorded

    def told(self, user: str) -> list[str]:
        """Ephemeral messages to ``user`` (by response_url or chat.postEphemeral), in order."""
        return [e.text for e in self.stub.ephemerals(user)]

    def wait_told(self, user: str, before: int = 0) -> str:
        """The first ephemeral message to ``user`` after the first ``before`` ones."""
        until(lambda: len(self.told(user)) > before, f"an ephemeral message to {user}")
        return self.told(user)[before]

    def answer(self, text: str, user: str = REQUESTER, channel: str = CHANNEL) -> str:
        """``/kubeflow text`` from ``user``, and the answer only they see."""
        before = len(self.told(user))
        response = self.command(text, user, channel)
        if response.body:
            return acknowledged_text(response)
        return self.wait_told(user, before)

    def cards(self) -> list[Card]:
        return [card_of(c) for c in self.stub.calls_to("chat.postMessage") if is_card(c)]

    def thread_posts(self, card: Card) -> list[SlackCall]:
        """Successful posts in the card's thread, in the order they arrived."""
        return [
            c
            for c in self.stub.calls_to("chat.postMessage")
            if c.ok
            and c.params.get("channel") == card.channel
            and c.params.get("thread_ts") == card.ts
        ]

    def wait_reply(self, card: Card, *fragments: str, timeout: float = WAIT) -> SlackCall:
        """The first post in the card's thread whose text holds every fragment."""

        def matches(call: SlackCall) -> bool:
            return (
                call.ok
                and call.params.get("thread_ts") == card.ts
                and all(f in text_of(call) for f in fragments)
            )

        return self.stub.wait_for("chat.postMessage", 1, timeout=timeout, predicate=matches)[0]

    def updates_of(self, ts: str) -> list[SlackCall]:
        return [c for c in self.stub.calls_to("chat.update") if c.params.get("ts") == ts]

    # Flows

    def file(self, text: str = CREATE_DEMO, user: str = REQUESTER, channel: str = CHANNEL) -> Card:
        """File a request: its card, once ``user`` was told it is filed."""
        before = len(self.cards())
        filed = self.answer(text, user, channel)
        assert filed.startswith("Filed `"), filed
        self.stub.wait_for("chat.postMessage", before + 1, timeout=WAIT, predicate=is_card)
        card = self.cards()[before]
        assert filed.startswith(f"Filed `{card.request_id}`"), filed
        return card

    def finished(self, card: Card, timeout: float = WAIT) -> SlackCall:
        """The worker's final reply to a create (dry-run) in the card's thread."""
        return self.wait_reply(
            card, f"dry-run of `{card.request_id}` finished", DEMO_URL, timeout=timeout
        )

    def provision(self, text: str = CREATE_DEMO, user: str = REQUESTER) -> Card:
        """A ready (dry-run) deployment: filed, approved, run to the end."""
        card = self.file(text, user)
        self.approve(card)
        self.finished(card)
        return card

    def settle(self, quiet: float = QUIET_SECONDS) -> None:
        """Wait until the bot has called Slack not once for ``quiet`` seconds (bounded):
        what it was going to do about the requests so far, it has done."""
        seen, since = len(self.stub.calls), time.monotonic()
        deadline = since + WAIT
        while time.monotonic() - since < quiet:
            assert time.monotonic() < deadline, "the bot kept calling Slack"
            time.sleep(0.02)
            if len(self.stub.calls) != seen:
                seen, since = len(self.stub.calls), time.monotonic()

    def methods_called(self) -> list[str]:
        return [c.method for c in self.stub.calls]


def thread_replies_containing(slack: Slack, card: Card, fragment: str) -> list[SlackCall]:
    return [c for c in slack.thread_posts(card) if fragment in text_of(c)]


def assert_nothing_happened(slack: Slack) -> None:
    """No card, no post, no update, no dialog, and nothing stored."""
    slack.settle()
    called = set(slack.methods_called())
    assert not called & {"chat.postMessage", "chat.update", "views.open"}, called
    assert slack.stub.messages == {}  # no in-channel answer through a response_url either
    assert slack.bot.records() == []
