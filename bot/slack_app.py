"""The Bolt app: built once, with every handler module registered on it.

Called by ``serve``.  Listeners run with ``process_before_response=True``: Bolt calls
them on the HTTP request thread and answers Slack when they return, which they do right
after ``ack()``, having handed the work to ``background``.  That spares Bolt's
ack-polling loop (10 ms steps) and keeps its listener pool, sized explicitly here, out
of the slow path altogether.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App, BoltResponse
from slack_sdk import WebClient

from handlers import approval_buttons, slash_command
from handlers.listener_deps import ListenerDeps

log = logging.getLogger(__name__)

# Only lazy listeners would use it; none are registered, so a small pool suffices.
LISTENER_THREADS = 4


class _NoTokenWarning(logging.Filter):
    """Bolt warns that ``SLACK_BOT_TOKEN`` "will be unused" when a client is given too;
    it is the same token, read once by our settings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


def build_bolt_app(client: WebClient, signing_secret: str, deps: ListenerDeps) -> App:
    bolt_log = logging.getLogger("slack_bolt.App")
    bolt_log.addFilter(_NoTokenWarning())
    app = App(
        client=client,
        signing_secret=signing_secret,
        process_before_response=True,
        # Bolt's own auth.test here primes its authorization middleware; without it the
        # first requests to arrive would each call auth.test before they could be acked.
        token_verification_enabled=True,
        listener_executor=ThreadPoolExecutor(
            max_workers=LISTENER_THREADS, thread_name_prefix="bolt-listener"
        ),
        logger=bolt_log,
    )

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
        # One place for what slipped through: logged with its kind, answered with 200 so
        # that Slack does not retry a payload that will fail the same way again.
        log.error("unhandled %s for a %s payload", type(error).__name__, body.get("type"))
        return BoltResponse(status=200, body="")

    for module in (slash_command, approval_buttons):
        module.register(app, deps)
    return app
