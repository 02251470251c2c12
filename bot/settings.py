"""Settings read once from the environment (and ``.env``) by the entry points.

The only place that reads the environment: everything else gets typed values from
here.  Secrets are ``SecretStr`` so they never print in a repr, a log or an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STORE = "sqlite:///kubeflow-bot.db"
CONSOLE_STORE = "sqlite:///:memory:"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    policy_path: Path = Field(Path("policy.example.yaml"), alias="KUBEFLOW_BOT_POLICY")
    store_url: str | None = Field(None, alias="KUBEFLOW_BOT_STORE")
    cloud: Literal["gcp", "dry-run"] | None = Field(None, alias="KUBEFLOW_BOT_CLOUD")
    manifests_path: Path | None = Field(None, alias="KUBEFLOW_BOT_MANIFESTS")
    oauth_client_id: str | None = Field(None, alias="KUBEFLOW_BOT_OAUTH_CLIENT_ID")
    oauth_client_secret: SecretStr | None = Field(None, alias="KUBEFLOW_BOT_OAUTH_CLIENT_SECRET")

    google_cloud_project: str | None = None
    pubsub_topic: str | None = None
    pubsub_subscription: str | None = None
    pubsub_emulator_host: str | None = None
    # Where Pub/Sub moves a request delivered this many times (set when the bot creates
    # the subscription); unset, a message that keeps failing keeps coming back, every 30 s.
    # Pub/Sub counts every delivery, the worker's deferrals while a cluster provisions
    # included, hence the high default.
    pubsub_dead_letter_topic: str | None = None
    max_delivery_attempts: int = Field(
        100, ge=5, le=100, alias="KUBEFLOW_BOT_MAX_DELIVERY_ATTEMPTS"
    )
    # How long the worker holds a message at a time (the subscription's ack deadline,
    # when the bot creates it, and each lease extension): a message held by a worker
    # that died comes back after about this long.
    pubsub_lease_seconds: int = Field(30, ge=10, le=600, alias="KUBEFLOW_BOT_PUBSUB_LEASE_SECONDS")

    port: int = Field(8080, ge=1, le=65535)
    # All interfaces by default, as App Engine and containers need; tests bind loopback.
    host: str = Field("0.0.0.0", alias="KUBEFLOW_BOT_HOST")  # noqa: S104
    http_threads: int = Field(16, ge=1, le=256, alias="KUBEFLOW_BOT_HTTP_THREADS")
    background_threads: int = Field(16, ge=1, le=256, alias="KUBEFLOW_BOT_BACKGROUND_THREADS")
    log_level: str = Field("INFO", alias="KUBEFLOW_BOT_LOG_LEVEL")

    # The worker: requests in hand at once, how long a delivery holds a request before
    # another may take over, and an optional cap on how long it waits to look again at
    # a pending cloud operation (each step says how long it wants; this shortens it).
    worker_concurrency: int = Field(8, ge=1, le=1000, alias="KUBEFLOW_BOT_WORKER_CONCURRENCY")
    lease_seconds: float = Field(300.0, ge=1.0, le=3600.0, alias="KUBEFLOW_BOT_LEASE_SECONDS")
    max_poll_seconds: float | None = Field(
        None, ge=1.0, le=600.0, alias="KUBEFLOW_BOT_MAX_POLL_SECONDS"
    )

    # Local stand-ins for Google's APIs (plaintext host:port, anonymous credentials), as
    # PUBSUB_EMULATOR_HOST is for Pub/Sub; unset means the real API.
    container_emulator_host: str | None = None
    compute_emulator_host: str | None = None
    resourcemanager_emulator_host: str | None = None
    serviceusage_emulator_host: str | None = None
    iam_emulator_host: str | None = None
    servicemanagement_emulator_host: str | None = None

    @property
    def slack_configured(self) -> bool:
        return self.slack_bot_token is not None and self.slack_signing_secret is not None

    @property
    def pubsub_configured(self) -> bool:
        return bool(self.pubsub_topic and self.pubsub_subscription)
