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

from bot.console import ConsoleChat, run_console
from bot.log_notifier import LogNotifier
from bot.settings import CONSOLE_STORE, Settings
from bot.wiring import ConfigurationError, build_runtime
from handlers.chat import Blocks
from handlers.policy import PolicyError
from provisioning.records import MessageRef

EXIT_CONFIG = 2


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


def console(settings: Settings) -> int:
    chat = ConsoleChat(sys.stdout)
    runtime = build_runtime(settings, chat, chat, default_store=CONSOLE_STORE)
    return run_console(runtime, chat, sys.stdin, sys.stdout)


def serve(settings: Settings) -> int:
    if not settings.slack_configured and settings.slack_app_token is None:
        print(
            "kubeflow-bot serve needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
            "(or SLACK_APP_TOKEN for Socket Mode); `kubeflow-bot console` runs without them.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    print(
        "kubeflow-bot serve: serving Slack is not built in this version yet; "
        "`kubeflow-bot console` runs the same bot in the terminal.",
        file=sys.stderr,
    )
    return EXIT_CONFIG


def worker(settings: Settings) -> int:
    if not settings.pubsub_configured:
        print(
            "kubeflow-bot worker reads Pub/Sub: set GOOGLE_CLOUD_PROJECT, PUBSUB_TOPIC and "
            "PUBSUB_SUBSCRIPTION. Without them the worker runs inside `serve` or `console`.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    # Progress goes to the log until the Slack notifier is configured for the worker.
    runtime = build_runtime(settings, _NoChat(), _NoChat(), notifier=LogNotifier())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.queue.consume(runtime.worker.handle)
    logging.getLogger(__name__).info("worker consuming %s", settings.pubsub_subscription)
    stop.wait()
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
