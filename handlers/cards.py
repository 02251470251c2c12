"""Block Kit builders for the approval card: pure functions of a request record.

Called by the approval flow when a request is filed (buttons) and when it is decided
or expires (buttons replaced by who decided and when).  The console ignores blocks
and prints the text fallback, which says the same.
"""

from __future__ import annotations

from typing import Any

from handlers import action_ids, messages
from provisioning.actions import DeleteAction
from provisioning.records import RequestRecord


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def pending_card(record: RequestRecord) -> list[dict[str, Any]]:
    approve: dict[str, Any] = {
        "type": "button",
        "action_id": action_ids.APPROVE,
        "text": {"type": "plain_text", "text": "Approve"},
        "style": "primary",
        "value": record.id,
    }
    if isinstance(record.action, DeleteAction):
        # Deleting is the one action that cannot be undone: ask once more.
        approve["confirm"] = {
            "title": {"type": "plain_text", "text": "Delete the deployment?"},
            "text": {
                "type": "mrkdwn",
                "text": f"This deletes `{record.deployment}` and its cluster.",
            },
            "confirm": {"type": "plain_text", "text": "Delete"},
            "deny": {"type": "plain_text", "text": "Keep it"},
            "style": "danger",
        }
    deny = {
        "type": "button",
        "action_id": action_ids.DENY,
        "text": {"type": "plain_text", "text": "Deny"},
        "style": "danger",
        "value": record.id,
    }
    return [
        _section(messages.request_card(record)),
        {"type": "actions", "block_id": f"decide-{record.id}", "elements": [approve, deny]},
    ]


def decided_card(record: RequestRecord) -> list[dict[str, Any]]:
    return [_section(messages.card_decided(record))]


def deny_modal(request_id: str, channel: str) -> dict[str, Any]:
    """The dialog the Deny button opens: one required reason, posted to the thread."""
    return {
        "type": "modal",
        "callback_id": action_ids.DENY_MODAL,
        "private_metadata": f"{request_id} {channel}",
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": action_ids.DENY_REASON_BLOCK,
                "label": {"type": "plain_text", "text": f"Why deny {request_id}?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": action_ids.DENY_REASON_INPUT,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": 500,
                },
            }
        ],
    }
