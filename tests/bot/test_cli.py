"""``kubeflow-bot`` start-up: configuration problems end it with a reason and exit 2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bot.settings import Settings
from tests.support.paths import CONSOLE_SCRIPT, REPO


def run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "KUBEFLOW_BOT_", "PUBSUB_"))
    }
    clean.update(env)
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=clean,
        check=False,
    )


def test_a_bad_policy_stops_start_up_with_the_key_path(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (REPO / "policy.example.yaml").read_text().replace("four_eyes: true", "four_eyes: maybe")
    )
    result = run("console", KUBEFLOW_BOT_POLICY=str(policy))
    assert result.returncode == 2
    assert "four_eyes" in result.stderr
    assert str(policy) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    result = run("console", KUBEFLOW_BOT_POLICY=str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


def test_serve_without_slack_credentials_says_what_to_set() -> None:
    result = run("serve")
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr


def test_worker_without_pubsub_names_the_variables() -> None:
    result = run("worker")
    assert result.returncode == 2
    assert "PUBSUB_TOPIC" in result.stderr


def test_the_gcp_cloud_without_google_credentials_is_refused_clearly(tmp_path: Path) -> None:
    result = run(
        "console",
        KUBEFLOW_BOT_CLOUD="gcp",
        # No key file, no gcloud login, and no looking for a metadata server.
        GOOGLE_APPLICATION_CREDENTIALS="",
        CLOUDSDK_CONFIG=str(tmp_path),
        NO_GCE_CHECK="True",
    )
    assert result.returncode == 2
    assert "KUBEFLOW_BOT_CLOUD=gcp needs Google credentials" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_store_url_is_refused(tmp_path: Path) -> None:
    result = run("console", KUBEFLOW_BOT_STORE="postgres://user:hunter2@db/x")
    assert result.returncode == 2
    assert "sqlite:///" in result.stderr
    assert "hunter2" not in result.stderr


def test_requests_survive_a_restart_with_a_file_store(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    first = run("console", stdin="/kubeflow create demo\n", KUBEFLOW_BOT_STORE=store)
    assert first.returncode == 0, first.stderr
    second = run("console", stdin="/kubeflow list\n", KUBEFLOW_BOT_STORE=store)
    assert "`demo` awaiting approval" in second.stdout


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = Settings(
        SLACK_BOT_TOKEN="xoxb-secret-token",
        SLACK_SIGNING_SECRET="signing-secret-value",
        KUBEFLOW_BOT_OAUTH_CLIENT_SECRET="oauth-secret-value",
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("xoxb-secret-token", "signing-secret-value", "oauth-secret-value"):
        assert secret not in shown
