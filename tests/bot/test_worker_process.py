"""``kubeflow-bot worker`` as its own process, fed through the real Pub/Sub emulator.

The bot side (handlers, approval, publish) runs in the test; the worker is the installed
console script, sharing the SQLite file as the two would share a database.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

from bot.console import ConsoleChat
from bot.settings import Settings
from bot.wiring import build_runtime
from provisioning.records import State
from tests.support.paths import CONSOLE_SCRIPT, REPO, SAMPLE_POLICY
from tests.support.pubsub_emulator import PubSubNames


def test_a_separate_worker_process_runs_an_approved_request_and_stops_on_sigterm(
    tmp_path: Path, pubsub_emulator: str, pubsub_names: PubSubNames
) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    env = {
        "GOOGLE_CLOUD_PROJECT": pubsub_names.project,
        "PUBSUB_TOPIC": pubsub_names.topic,
        "PUBSUB_SUBSCRIPTION": pubsub_names.subscription,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator,
        "KUBEFLOW_BOT_STORE": store,
        "KUBEFLOW_BOT_POLICY": str(SAMPLE_POLICY),
    }
    settings = Settings(**env)  # type: ignore[arg-type]
    out = io.StringIO()
    chat = ConsoleChat(out)
    # Building the bot side creates the topic and subscription before anything is published.
    bot = build_runtime(settings, chat, chat)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KUBEFLOW_BOT_"))}
    worker = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "worker"],
        env={**clean, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        bot.commands.handle("U_REQUESTER", "C_TEAM", "create demo --gpu nvidia-l4:2")
        [record] = bot.store.list()
        bot.approvals.approve("U_APPROVER", "C_TEAM", record.id)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = bot.store.get(record.id)
            assert current is not None
            if current.state in (State.SUCCEEDED, State.FAILED):
                break
            time.sleep(0.1)
        assert current.state is State.SUCCEEDED, current
        assert current.url == "https://demo.endpoints.demo-project.cloud.goog/"
        assert current.dry_run
        assert any("nvidia-l4x2" in call for step in current.steps for call in step.calls)
        events = [h.event for h in current.history]
        assert events[:2] == ["filed", "approved"]
        assert events.count("queued") == 1
        assert events[-2:] == ["running", "succeeded"]
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        bot.close()
    assert worker.returncode == 0, err
    assert f"{record.id} succeeded (dry-run)" in err
