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
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bot.settings import DEFAULT_STORE, Settings
from handlers.approvals import Approvals
from handlers.authz import Authz
from handlers.chat import Chat, Directory
from handlers.commands import Commands
from handlers.deps import Deps
from handlers.policy import Policy, load_policy
from handlers.progress import ChatNotifier
from provisioning.cloud import Cloud
from provisioning.dryrun_cloud import DryRunCloud
from provisioning.ids import new_request_id
from provisioning.inprocess_queue import InProcessQueue
from provisioning.notifier import Notifier
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
    worker: Worker

    def close(self) -> None:
        self.queue.close()
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
        settings.google_cloud_project, settings.pubsub_topic, settings.pubsub_subscription
    )


def build_cloud(settings: Settings) -> Cloud:
    if settings.cloud == "gcp":
        raise ConfigurationError(
            "KUBEFLOW_BOT_CLOUD=gcp: the Google Cloud clients are not part of this version; "
            "unset it to plan on the dry-run cloud"
        )
    return DryRunCloud()


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
    worker = Worker(
        store,
        cloud,
        notifier or ChatNotifier(chat, store, clock),
        clock,
        manifests=manifest_loader(settings.manifests_path),
    )
    return Runtime(
        settings=settings,
        policy=policy,
        store=store,
        queue=queue,
        cloud=cloud,
        approvals=approvals,
        commands=Commands(deps, approvals),
        worker=worker,
    )
