"""The Approve and Deny buttons on request cards, and the deny-reason dialog.

``bot`` calls ``register`` once on the Bolt app.  Each listener acknowledges at once and
hands the decision to the background pool, where ``Approvals`` makes it with one
compare-and-set transition: double clicks, two approvers at once and Slack's retries
decide a request at most once.  Deny first checks the clicker may deny, then opens a
dialog for the reason (within the three seconds a ``trigger_id`` lives); the reason
reaches the thread when the dialog is submitted.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from handlers import action_ids, cards, messages
from handlers.listener_deps import ListenerDeps

NEED_A_REASON = "Say why the request is denied."


def _clicked(body: dict[str, Any]) -> tuple[str, str, str]:
    """(user, channel, request id) of a button click."""
    user = str(body["user"]["id"])
    channel = str((body.get("container") or {}).get("channel_id") or body["channel"]["id"])
    request_id = str(body["actions"][0].get("value") or "")
    return user, channel, request_id


def register(app: App, deps: ListenerDeps) -> None:
    @app.action(action_ids.APPROVE)
    def on_approve(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        if not deps.replays.first_time(body.get("trigger_id")):
            return
        user, channel, request_id = _clicked(body)
        deps.background(lambda: deps.approvals.approve(user, channel, request_id))

    @app.action(action_ids.DENY)
    def on_deny(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        trigger_id = body.get("trigger_id")
        if not deps.replays.first_time(trigger_id):
            return
        user, channel, request_id = _clicked(body)

        def ask_for_reason() -> None:
            if deps.approvals.check_deny(user, channel, request_id) is None:
                return
            try:
                client.views_open(trigger_id=trigger_id, view=cards.deny_modal(request_id, channel))
            except SlackApiError:
                # An expired trigger (a slow moment) or a Slack hiccup: say so, not nothing.
                deps.chat.ephemeral(channel, user, messages.DIALOG_FAILED)
                raise

        deps.background(ask_for_reason)

    @app.view(action_ids.DENY_MODAL)
    def on_reason(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view.get("state", {}).get("values", {})
        field = values.get(action_ids.DENY_REASON_BLOCK, {}).get(action_ids.DENY_REASON_INPUT, {})
        reason = str(field.get("value") or "")
        if not reason.strip():
            ack(response_action="errors", errors={action_ids.DENY_REASON_BLOCK: NEED_A_REASON})
            return
        ack()
        if not deps.replays.first_time(f"view:{view.get('id')}"):
            return
        request_id, _, channel = str(view.get("private_metadata") or "").partition(" ")
        user = str(body["user"]["id"])
        deps.background(lambda: deps.approvals.deny(user, channel, request_id, reason))
