"""``kubeflow-bot worker`` as its own process, fed through the real Pub/Sub emulator.

The bot side (handlers, approval, publish) runs in the test; the worker is the installed
console script, sharing the SQLite file as the two would share a database.
"""

from __future__ import annotations

import ctypes
import io
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bot.console import ConsoleChat
from bot.settings import Settings
from bot.wiring import build_runtime
from provisioning.records import State
from tests.support.paths import CONSOLE_SCRIPT, REPO, SAMPLE_POLICY
from tests.support.pubsub_emulator import PubSubNames

# Linux x86-64's number for tgkill(2), which Python's os module does not wrap.
SYS_TGKILL = 234


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


def _tgkill(pid: int, tid: int, signum: int) -> None:
    """Send ``signum`` to one thread of another process, as the kernel may pick any."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid} {tid}")


@pytest.mark.skipif(
    platform.machine() != "x86_64", reason="tgkill's syscall number here is x86-64's"
)
def test_a_sigterm_that_lands_on_another_thread_still_stops_the_worker(
    tmp_path: Path, pubsub_emulator: str, pubsub_names: PubSubNames
) -> None:
    env = {
        "GOOGLE_CLOUD_PROJECT": pubsub_names.project,
        "PUBSUB_TOPIC": pubsub_names.topic,
        "PUBSUB_SUBSCRIPTION": pubsub_names.subscription,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator,
        "KUBEFLOW_BOT_STORE": f"sqlite:///{tmp_path / 'state.db'}",
        "KUBEFLOW_BOT_POLICY": str(SAMPLE_POLICY),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KUBEFLOW_BOT_"))}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "worker"],
            env={**clean, **env},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "worker consuming" not in log.read_text() and time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            time.sleep(0.05)
        # Any thread but the main one (whose id is the process id): gRPC's, Pub/Sub's.
        others = sorted(int(t) for t in os.listdir(f"/proc/{worker.pid}/task"))
        others.remove(worker.pid)
        assert others, "the worker runs no other thread"
        _tgkill(worker.pid, others[-1], signal.SIGTERM)

        code = worker.wait(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert code == 0, log.read_text()
