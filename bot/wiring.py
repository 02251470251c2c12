"""The composition root: builds the store, queue, cloud, handlers and worker once.

Called by the entry points (``cli``) with the settings and a chat adapter (Slack or the
console).  Choices follow the embedded defaults (README): the in-process queue unless
Pub/Sub names are set, SQLite for state, the dry-run cloud unless ``gcp`` is chosen.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.background import BackgroundPool, Foreground
from bot.settings import DEFAULT_STORE, Settings
from bot.slack_app import build_bolt_app
from bot.slack_chat import SlackChat, SlackDirectory, web_client
from bot.sweeper import Sweeper
from handlers.approvals import Approvals
from handlers.authz import Authz
from handlers.chat import Chat, Directory
from handlers.commands import Commands
from handlers.deps import Deps
from handlers.listener_deps import ListenerDeps
from handlers.policy import Policy, load_policy
from handlers.progress import ChatNotifier
from handlers.replays import ReplayGuard
from provisioning.cloud import Cloud
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.ids import new_request_id
from provisioning.inprocess_queue import InProcessQueue
from provisioning.notifier import Notifier
from provisioning.oauth import OAuthClient
from provisioning.pubsub_queue import PubSubQueue
from provisioning.queue import Queue
from provisioning.sqlite_store import open_store
from provisioning.store import RequestStore
from provisioning.worker import Worker

log = logging.getLogger(__name__)


class ConfigurationError(ValueError):
    """The settings cannot make a working bot; the message says which and why."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    store: RequestStore
    queue: Queue
    cloud: Cloud
    approvals: Approvals
    commands: Commands
    authz: Authz
    worker: Worker
    # Built here unless a notifier was passed in; then closed here too.
    status_notifier: ChatNotifier | None = None

    def close(self) -> None:
        self.queue.close()
        if self.status_notifier is not None:
            self.status_notifier.close()
        self.store.close()


def build_queue(settings: Settings) -> Queue:
    if not (settings.pubsub_topic or settings.pubsub_subscription):
        return InProcessQueue()
    if not settings.pubsub_configured:
        raise ConfigurationError("set both PUBSUB_TOPIC and PUBSUB_SUBSCRIPTION, or neither")
    if not settings.google_cloud_project:
        raise ConfigurationError("PUBSUB_TOPIC needs GOOGLE_CLOUD_PROJECT (the bot's own project)")
    assert settings.pubsub_topic and settings.pubsub_subscription
    return PubSubQueue(
        settings.google_cloud_project,
        settings.pubsub_topic,
        settings.pubsub_subscription,
        # One figure for both: how soon a message held by a worker that died comes back,
        # whether the client had extended its lease or not yet.
        ack_deadline_seconds=settings.pubsub_lease_seconds,
        max_lease_seconds=settings.pubsub_lease_seconds,
        dead_letter_topic=settings.pubsub_dead_letter_topic,
        max_delivery_attempts=settings.max_delivery_attempts,
    )


def build_cloud(settings: Settings) -> Cloud:
    if settings.cloud == "gcp":
        # Imported here: Google's client libraries take about a second to import, which
        # the embedded defaults (the dry-run cloud) need not pay at every start.
        from google.auth.exceptions import DefaultCredentialsError  # noqa: PLC0415

        from provisioning.gcp_cloud import EmulatorHosts, GcpCloud  # noqa: PLC0415

        try:
            return GcpCloud.connect(
                EmulatorHosts(
                    container=settings.container_emulator_host,
                    compute=settings.compute_emulator_host,
                    resourcemanager=settings.resourcemanager_emulator_host,
                    serviceusage=settings.serviceusage_emulator_host,
                    iam=settings.iam_emulator_host,
                    servicemanagement=settings.servicemanagement_emulator_host,
                )
            )
        except DefaultCredentialsError as e:
            raise ConfigurationError(
                "KUBEFLOW_BOT_CLOUD=gcp needs Google credentials (Application Default "
                "Credentials): run with a service account on Google Cloud, or set "
                "GOOGLE_APPLICATION_CREDENTIALS to a key file"
            ) from e
    return DryRunCloud()


def build_oauth_client(settings: Settings) -> OAuthClient | None:
    """The custom OAuth client for IAP from both settings, or None (IAP's Google-managed
    client) when neither is set; one without the other is a mistake, said at start."""
    # An empty variable (``KEY=`` in an env file) counts as not set.
    client_id = settings.oauth_client_id or None
    secret = settings.oauth_client_secret
    if secret is not None and not secret.get_secret_value():
        secret = None
    if client_id is None and secret is None:
        return None
    if client_id is None or secret is None:
        missing = (
            "KUBEFLOW_BOT_OAUTH_CLIENT_ID"
            if client_id is None
            else ("KUBEFLOW_BOT_OAUTH_CLIENT_SECRET")
        )
        raise ConfigurationError(
            "set both KUBEFLOW_BOT_OAUTH_CLIENT_ID and KUBEFLOW_BOT_OAUTH_CLIENT_SECRET "
            f"(a custom OAuth client for IAP), or neither (IAP's Google-managed client); "
            f"{missing} is not set"
        )
    try:
        return OAuthClient(client_id, secret)
    except ValueError as e:
        # The message names the setting, never its value.
        raise ConfigurationError(f"KUBEFLOW_BOT_OAUTH_CLIENT_ID/_SECRET: {e}") from e


def manifest_loader(path: Path | None) -> Callable[[], Sequence[Mapping[str, Any]]] | None:
    """Reads the rendered bundle (YAML, or gzipped YAML) once, on first use."""
    if path is None:
        return None

    @cache
    def load() -> tuple[Mapping[str, Any], ...]:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as stream:
            return tuple(doc for doc in yaml.safe_load_all(stream) if isinstance(doc, dict))

    return load


def build_runtime(
    settings: Settings,
    chat: Chat,
    directory: Directory,
    *,
    default_store: str = DEFAULT_STORE,
    notifier: Notifier | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Runtime:
    policy = load_policy(settings.policy_path)
    # Before anything is opened: a half-configured client ends the start here.
    oauth_client = build_oauth_client(settings)
    try:
        store = open_store(settings.store_url or default_store)
    except ValueError as e:
        raise ConfigurationError(f"KUBEFLOW_BOT_STORE: {e}") from e
    queue = build_queue(settings)
    cloud = build_cloud(settings)
    deps = Deps(
        policy=policy,
        store=store,
        queue=queue,
        chat=chat,
        directory=directory,
        authz=Authz(policy, directory),
        clock=clock,
        new_id=new_request_id,
    )
    approvals = Approvals(deps)
    status_notifier = None
    if notifier is None:
        notifier = status_notifier = ChatNotifier(chat, store, clock)
    worker = Worker(
        store,
        cloud,
        notifier,
        clock,
        manifests=manifest_loader(settings.manifests_path),
        oauth_client=oauth_client,
        lease=timedelta(seconds=settings.lease_seconds),
        max_poll_seconds=settings.max_poll_seconds,
    )
    return Runtime(
        settings=settings,
        policy=policy,
        store=store,
        queue=queue,
        cloud=cloud,
        approvals=approvals,
        commands=Commands(deps, approvals),
        authz=deps.authz,
        worker=worker,
        status_notifier=status_notifier,
    )


@dataclass
class SlackRuntime:
    """The Slack app and what it stands on; ``close`` in reverse order of building."""

    runtime: Runtime
    client: WebClient
    app: App
    background: BackgroundPool
    sweeper: Sweeper
    # Told of every answer the HTTP front gives, so follow-up work yields to acks.
    foreground: Foreground

    @property
    def in_process_worker(self) -> bool:
        return isinstance(self.runtime.queue, InProcessQueue)

    def start(self) -> None:
        if self.in_process_worker:
            # Embedded defaults: the worker lives here, so one process is a whole bot.
            self.runtime.queue.consume(
                self.runtime.worker.handle, max_in_flight=self.runtime.settings.worker_concurrency
            )
        self.sweeper.start()

    def close(self) -> None:
        self.sweeper.stop()
        self.background.close()
        self.runtime.close()


def check_token(client: WebClient, api_url: str) -> None:
    """Fail at start-up, with the reason and without a traceback, when Slack will not
    take the bot token or cannot be reached; never with the token in the message."""
    try:
        client.auth_test()
    except SlackApiError as e:
        raise ConfigurationError(
            f"Slack did not accept SLACK_BOT_TOKEN ({e.response.get('error')})"
        ) from e
    except OSError as e:
        raise ConfigurationError(f"cannot reach the Slack API at {api_url}: {e}") from e


def build_slack(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> SlackRuntime:
    token = settings.slack_bot_token
    secret = settings.slack_signing_secret
    if token is None or (secret is None and settings.slack_app_token is None):
        raise ConfigurationError(
            "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for Socket Mode)"
        )
    client = web_client(token.get_secret_value(), settings.slack_api_url)
    check_token(client, settings.slack_api_url)
    chat = SlackChat(client)
    runtime = build_runtime(settings, chat, SlackDirectory(client), clock=clock)
    foreground = Foreground()
    background = BackgroundPool(workers=settings.background_threads, foreground=foreground)
    deps = ListenerDeps(
        commands=runtime.commands,
        approvals=runtime.approvals,
        authz=runtime.authz,
        store=runtime.store,
        chat=chat,
        background=background,
        replays=ReplayGuard(),
    )
    # Socket Mode connections are authenticated by the app token; Bolt skips signature
    # checks there, but it still wants a secret to be constructed.
    signing = secret.get_secret_value() if secret is not None else "socket-mode"
    app = build_bolt_app(client, signing, deps)
    return SlackRuntime(runtime, client, app, background, Sweeper(runtime.approvals), foreground)
