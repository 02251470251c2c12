"""The HTTP front: Bolt's ``/slack/events`` and ``GET /healthz`` on waitress.

Called by ``serve``.  waitress is a production WSGI server (a listen backlog of 1024,
a bounded thread pool, keep-alive), unlike Bolt's development server or wsgiref, which
drop connections when fifty requests arrive at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from waitress.server import create_server

from bot.background import Foreground

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"


class Front:
    """The WSGI application: health checks here, everything else to Bolt.

    Each answer to Slack is recorded in ``foreground``, so that follow-up work yields to
    a burst of acknowledgements (``background``)."""

    def __init__(self, app: App, foreground: Foreground | None = None) -> None:
        self._slack = SlackRequestHandler(app, path=EVENTS_PATH)
        self._foreground = foreground

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REQUEST_METHOD") in (
            "GET",
            "HEAD",
        ):
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
            return [b"ok\n"]
        try:
            return self._slack(environ, start_response)
        finally:
            if self._foreground is not None:
                self._foreground.answered()


def make_server(
    app: App, host: str, port: int, *, threads: int = 16, foreground: Foreground | None = None
) -> Any:
    """A waitress server bound now (``port`` 0 picks a free one); ``run()`` serves."""
    return create_server(
        Front(app, foreground),
        host=host,
        port=port,
        threads=threads,
        backlog=1024,
        connection_limit=1000,
        channel_timeout=60,
        ident="kubeflow-bot",
        clear_untrusted_proxy_headers=True,
    )
