"""``kubeflow-bot serve`` (and ``worker``) as real processes, pointed at a ``SlackApiStub``.

Used by the Slack-app tests that go through the installed console script end to end:
signed HTTP in, Web API calls out to the stub.  ``BotLauncher`` starts processes with a
clean environment (no ``SLACK_`` / ``KUBEFLOW_BOT_`` / ``PUBSUB_`` variables inherited),
a policy file written from the sample policy plus changes, a fresh SQLite file, the HTTP
server on a free loopback port, and stderr captured to a file for log assertions.
``serve`` is waited for on ``GET /healthz`` (bounded); ``stop`` sends SIGTERM and returns
the exit code.  ``records`` reads the store through a read-only SQLite connection, so a
test can check what was stored without taking the bot's write lock.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioning.records import RequestRecord
from tests.support.paths import CONSOLE_SCRIPT, SAMPLE_POLICY
from tests.support.slack_api import SlackApiStub
from tests.support.slack_signing import SlackSender

HOST = "127.0.0.1"
BOT_TOKEN = "xoxb-valid"
SIGNING_SECRET = "test-signing-secret-8c1f0e"
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 20.0
ABORT_TIMEOUT_SECONDS = 5.0
# Variables a developer's shell may carry that would point the bot elsewhere.
_STRIPPED_PREFIXES = ("SLACK_", "KUBEFLOW_BOT_", "PUBSUB_")
_STRIPPED_NAMES = ("GOOGLE_CLOUD_PROJECT", "PORT")

SAMPLE_POLICY_DATA: dict[str, Any] = yaml.safe_load(SAMPLE_POLICY.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_policy(path: Path, **changes: Any) -> Path:
    """The sample policy with some top-level keys replaced, written as YAML to ``path``."""
    data = copy.deepcopy(SAMPLE_POLICY_DATA)
    data.update(changes)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET ``url`` on loopback (never through a proxy): status and body."""
    try:
        with _no_proxy_opener().open(url, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode("utf-8", errors="replace")


def read_records(store_path: Path) -> list[RequestRecord]:
    """Every stored request, oldest first, read through a read-only connection."""
    if not store_path.exists():
        return []
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5.0)
    try:
        try:
            rows = conn.execute("SELECT record FROM requests ORDER BY created_at, id").fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise
    finally:
        conn.close()
    return [RequestRecord.model_validate_json(record) for (record,) in rows]


@dataclass
class BotProcess:
    """One running ``kubeflow-bot`` process and what a test needs to talk to it."""

    command: str
    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    store_path: Path
    log_path: Path
    secret: str
    _senders: list[SlackSender] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def sender(self, **kw: Any) -> SlackSender:
        """A ``SlackSender`` signing with the process's secret; closed when it stops."""
        sender = SlackSender(self.url, self.secret, **kw)
        self._senders.append(sender)
        return sender

    def log(self) -> str:
        """What the process wrote to stderr (and stdout) so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def records(self) -> list[RequestRecord]:
        return read_records(self.store_path)

    def record(self, request_id: str) -> RequestRecord:
        found = [r for r in self.records() if r.id == request_id]
        assert found, f"no stored request {request_id}; stored: {[r.id for r in self.records()]}"
        return found[0]

    def wait_until_healthy(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"kubeflow-bot {self.command} exited with {self.process.returncode} "
                    f"before answering /healthz:\n{self.log()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http_get(f"{self.url}/healthz", timeout=0.5)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"kubeflow-bot {self.command} did not answer /healthz within "
                    f"{timeout:.0f} s:\n{self.log()}"
                )
            time.sleep(0.02)

    def wait(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        """Wait for the process to end by itself (a start-up failure); its exit code."""
        self.exit_code = int(self.process.wait(timeout))
        return self.exit_code

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, then wait; returns the exit code (aborted when stuck: -6, or -9)."""
        if self.exit_code is not None:
            return self.exit_code
        for sender in self._senders:
            sender.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # Stuck: SIGABRT has Python's fault handler write every thread's stack to
                # the log, which says where; then it is killed.
                self.process.send_signal(signal.SIGABRT)
                try:
                    self.process.wait(ABORT_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
        self.exit_code = int(self.process.returncode)
        return self.exit_code


class BotLauncher:
    """Starts ``kubeflow-bot`` processes for one test, and stops them all at the end.

    ``stub`` receives the processes' Web API calls; ``workdir`` holds the policy, store
    and logs (a pytest ``tmp_path``).
    """

    def __init__(self, stub: SlackApiStub, workdir: Path) -> None:
        self.stub = stub
        self.workdir = workdir
        self.started: list[BotProcess] = []

    def base_env(self) -> dict[str, str]:
        return {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_STRIPPED_PREFIXES) and k not in _STRIPPED_NAMES
        }

    def start(
        self,
        command: str = "serve",
        *,
        policy: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        store_path: Path | None = None,
        token: str = BOT_TOKEN,
        secret: str = SIGNING_SECRET,
        wait: bool = True,
    ) -> BotProcess:
        """Start ``kubeflow-bot COMMAND``; ``policy`` holds changes to the sample policy,
        ``env`` extra (or overriding) variables.  ``serve`` is waited for unless ``wait``
        is False."""
        index = len(self.started)
        policy_path = write_policy(self.workdir / f"policy-{index}.yaml", **dict(policy or {}))
        store_path = store_path or self.workdir / f"state-{index}.db"
        log_path = self.workdir / f"{command}-{index}.log"
        port = free_port()
        full_env = {
            **self.base_env(),
            "SLACK_API_URL": self.stub.url,
            "SLACK_BOT_TOKEN": token,
            "SLACK_SIGNING_SECRET": secret,
            "KUBEFLOW_BOT_HOST": HOST,
            "PORT": str(port),
            "KUBEFLOW_BOT_STORE": f"sqlite:///{store_path}",
            "KUBEFLOW_BOT_POLICY": str(policy_path),
            # A process stuck at stop is sent SIGABRT, and says where it was stuck.
            "PYTHONFAULTHANDLER": "1",
            # Loopback only, whatever proxies the environment names.
            "no_proxy": HOST,
            "NO_PROXY": HOST,
            "no_grpc_proxy": HOST,
            **dict(env or {}),
        }
        # The child writes to its own copy of the descriptor; ours can close at once.
        with log_path.open("w", encoding="utf-8") as log_file:
            process = subprocess.Popen(
                [str(CONSOLE_SCRIPT), command],
                env=full_env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        bot = BotProcess(
            command=command,
            process=process,
            port=port,
            env=full_env,
            store_path=store_path,
            log_path=log_path,
            secret=secret,
        )
        self.started.append(bot)
        if wait and command == "serve":
            bot.wait_until_healthy()
        return bot

    def stop_all(self) -> dict[str, int]:
        """Stop every process (the last started first) that a test did not ``wait`` for;
        their exit codes by log name (0 is a clean stop)."""
        codes = {}
        for bot in reversed(self.started):
            if bot.exit_code is None:
                codes[bot.log_path.name] = bot.stop()
        return codes
