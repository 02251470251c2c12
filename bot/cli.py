"""``kubeflow-bot``: the command-line entry point (serve, worker, console).

Installed as a console script by ``pyproject.toml``; ``make run`` calls it.  Reads the
settings once, builds the runtime through ``wiring`` and hands it to an adapter.  A
configuration problem (bad policy, missing variable) ends it with the reason on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from pydantic import ValidationError
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackApiError

from bot.background import Foreground
from bot.console import ConsoleChat, run_console
from bot.http_server import EVENTS_PATH, make_server
from bot.log_notifier import LogNotifier
from bot.settings import CONSOLE_STORE, Settings
from bot.slack_chat import SlackChat, SlackDirectory, web_client
from bot.wiring import ConfigurationError, build_runtime, build_slack
from handlers.chat import Blocks
from handlers.policy import PolicyError
from provisioning.records import MessageRef

EXIT_CONFIG = 2
log = logging.getLogger("kubeflow-bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeflow-bot",
        description="Kubeflow on Google Cloud from chat: request, approve, provision.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="serve the Slack app over HTTP on $PORT (or Socket Mode)")
    sub.add_parser("worker", help="run the Pub/Sub worker that provisions approved requests")
    sub.add_parser(
        "console", help="a local chat in the terminal, with the worker in the same process"
    )
    return parser


def _configure_logging(level: str, *, quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Bolt logs request bodies at INFO and DEBUG (a rejected signature, for one); they
    # carry user text and Slack's legacy verification token, so they stay out of logs.
    logging.getLogger("slack_bolt").setLevel(logging.WARNING)
    logging.getLogger("slack_sdk").setLevel(logging.WARNING)


def console(settings: Settings) -> int:
    chat = ConsoleChat(sys.stdout)
    runtime = build_runtime(settings, chat, chat, default_store=CONSOLE_STORE)
    return run_console(runtime, chat, sys.stdin, sys.stdout)


# How often the main thread wakes while it waits to be stopped.
SIGNAL_CHECK_SECONDS = 0.5


def _stop_on_signals(stop: threading.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def _wait_until_stopped(stop: threading.Event) -> None:
    # Python runs signal handlers on the main thread, but the kernel may deliver SIGTERM
    # to any thread, gRPC's among them; then an untimed wait here is never interrupted
    # and the handler never runs. Waking now and then lets it run.
    while not stop.wait(SIGNAL_CHECK_SECONDS):
        pass


def serve(settings: Settings) -> int:
    if settings.slack_bot_token is None or (
        settings.slack_signing_secret is None and settings.slack_app_token is None
    ):
        print(
            "kubeflow-bot serve needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
            "(or SLACK_APP_TOKEN for Socket Mode); `kubeflow-bot console` runs without them.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    slack = build_slack(settings)
    slack.start()
    try:
        if settings.slack_app_token is not None:
            _serve_socket_mode(slack.app, settings.slack_app_token.get_secret_value())
        else:
            _serve_http(slack.app, settings, slack.foreground)
    finally:
        slack.close()
    return 0


def _serve_http(app: App, settings: Settings, foreground: Foreground) -> None:
    server = make_server(
        app, settings.host, settings.port, threads=settings.http_threads, foreground=foreground
    )

    def stop(*_: object) -> None:
        # waitress leaves its loop on SystemExit and shuts its thread pool down.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving Slack on http://%s:%d%s", settings.host, settings.port, EVENTS_PATH)
    server.run()
    log.info("stopped serving")


def _serve_socket_mode(app: App, app_token: str) -> None:
    handler = SocketModeHandler(app, app_token)
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        handler.connect()
    except SlackApiError as e:
        raise ConfigurationError(
            f"Slack did not open a Socket Mode connection for SLACK_APP_TOKEN "
            f"({e.response.get('error')})"
        ) from e
    log.info("connected to Slack in Socket Mode")
    _wait_until_stopped(stop)
    handler.close()


def worker(settings: Settings) -> int:
    if not settings.pubsub_configured:
        print(
            "kubeflow-bot worker reads Pub/Sub: set GOOGLE_CLOUD_PROJECT, PUBSUB_TOPIC and "
            "PUBSUB_SUBSCRIPTION. Without them the worker runs inside `serve` or `console`.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if settings.slack_bot_token is not None:
        # Progress goes to each request's Slack thread.
        client = web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
        runtime = build_runtime(settings, SlackChat(client), SlackDirectory(client))
    else:
        # No chat configured for the worker: progress goes to the log.
        runtime = build_runtime(settings, _NoChat(), _NoChat(), notifier=LogNotifier())
    stop = threading.Event()
    _stop_on_signals(stop)
    runtime.queue.consume(runtime.worker.handle, max_in_flight=settings.worker_concurrency)
    log.info("worker consuming %s", settings.pubsub_subscription)
    _wait_until_stopped(stop)
    # Stop pulling; what is in hand finishes or, unacknowledged, is redelivered.
    runtime.close()
    return 0


class _NoChat:
    """The worker process posts nothing itself: handlers never run there."""

    def post(
        self, channel: str, text: str, *, thread_ts: str | None = None, blocks: Blocks | None = None
    ) -> MessageRef:
        raise RuntimeError("the worker process has no chat")

    def update(self, ref: MessageRef, text: str, *, blocks: Blocks | None = None) -> None:
        raise RuntimeError("the worker process has no chat")

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        raise RuntimeError("the worker process has no chat")

    def group_members(self, handle: str) -> frozenset[str]:
        return frozenset()

    def user_for_email(self, email: str) -> str | None:
        return None

    def email_of(self, user: str) -> str | None:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as e:
        print(f"kubeflow-bot: bad environment: {e}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings.log_level, quiet=args.command == "console")
    commands = {"serve": serve, "worker": worker, "console": console}
    try:
        return commands[args.command](settings)
    except (PolicyError, ConfigurationError) as e:
        print(f"kubeflow-bot: {e}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
