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
