"""The ``/kubeflow`` slash-command listener.

``bot`` calls ``register`` once on the Bolt app.  The listener acknowledges at once and
hands the command to the background pool: parsing, policy checks, the store and the
replies (ephemeral answers, the request card) all happen there, so Slack gets its
answer in milliseconds whatever the command does.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App

from handlers.listener_deps import ListenerDeps

COMMAND = "/kubeflow"


def register(app: App, deps: ListenerDeps) -> None:
    @app.command(COMMAND)
    def on_kubeflow(ack: Ack, command: dict[str, Any]) -> None:
        ack()
        if not deps.replays.first_time(command.get("trigger_id")):
            return
        user = str(command["user_id"])
        channel = str(command["channel_id"])
        text = str(command.get("text") or "")
        deps.background(lambda: deps.commands.handle(user, channel, text))
