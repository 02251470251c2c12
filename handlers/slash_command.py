"""The ``/kubeflow`` slash-command listener.

``bot`` calls ``register`` once on the Bolt app.  A malformed command and ``help`` are
answered in the acknowledgement itself: Slack shows that text
to the user alone, and no API call is made.  Any other command is acknowledged at once
and handed to the background pool, which answers through the command's
``response_url`` (it works in any channel, private ones and DMs included).
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from handlers.listener_deps import ListenerDeps

COMMAND = "/kubeflow"


def register(app: App, deps: ListenerDeps) -> None:
    @app.command(COMMAND)
    def on_kubeflow(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        user = str(command["user_id"])
        channel = str(command["channel_id"])
        text = str(command.get("text") or "")
        quick = deps.commands.quick_answer(text)
        if quick is not None:
            ack(text=quick)
            return
        ack()
        if not deps.replays.first_time(command.get("trigger_id")):
            return

        def reply(said: str) -> None:
            respond(text=said, response_type="ephemeral")

        deps.background(lambda: deps.commands.handle(user, channel, text, reply=reply))
