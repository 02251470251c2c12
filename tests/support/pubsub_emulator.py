"""Pytest fixtures for the Pub/Sub emulator: one emulator per session, fresh names per test.

Loaded as a plugin by ``tests/conftest.py``.  ``pubsub_emulator`` starts the Cloud SDK's
Pub/Sub emulator (the Java server itself, not through gcloud) on a free loopback port,
sets ``PUBSUB_EMULATOR_HOST`` for the session and stops the server at the end.
``pubsub_names`` gives each test its own topic and subscription: after a streaming
subscriber closes, the emulator keeps routing that subscription's messages to the dead
stream, so subscriptions must never be shared between tests.  A missing emulator or Java
fails the tests rather than skipping them: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
TEST_PROJECT = "kubeflow-bot-test"


@dataclass(frozen=True)
class PubSubNames:
    """Fresh names for one test, in ``TEST_PROJECT``."""

    project: str
    topic: str
    subscription: str
    dead_letter_topic: str


def _java() -> str | None:
    """The Java the emulator's start script will run (it prefers ``$JAVA_HOME``)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers_ok(url: str) -> bool:
    # No proxies: the emulator is on loopback, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1.0) as response:
            return bool(response.read().strip() == b"Ok")
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_SECONDS)


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the Pub/Sub emulator once per session; yields its ``host:port``."""
    if not os.access(EMULATOR, os.X_OK):
        pytest.fail(f"the Pub/Sub emulator is not installed at {EMULATOR}", pytrace=False)
    if _java() is None:
        pytest.fail("the Pub/Sub emulator needs Java, and none was found", pytrace=False)
    port = _free_port()
    host_port = f"{HOST}:{port}"
    output_path = tmp_path_factory.mktemp("pubsub-emulator") / "output.log"
    with output_path.open("wb") as output:
        # The start script ends in ``exec java``: this pid is the server itself.
        process = subprocess.Popen(
            [str(EMULATOR), f"--host={HOST}", f"--port={port}"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers_ok(f"http://{host_port}/"):
            if process.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with status {process.returncode}"
                    if process.poll() is not None
                    else f"did not answer within {START_TIMEOUT_SECONDS:.0f} s"
                )
                pytest.fail(
                    f"the Pub/Sub emulator on {host_port} {state}; its output:\n"
                    + output_path.read_text(errors="replace"),
                    pytrace=False,
                )
            time.sleep(0.05)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PUBSUB_EMULATOR_HOST", host_port)
            # gRPC honours http_proxy and friends; keep the loopback traffic off any proxy
            # (gRPC reads this exact lower-case name).
            patch.setenv("no_grpc_proxy", HOST)
            yield host_port
    finally:
        _stop(process)


@pytest.fixture
def pubsub_names(pubsub_emulator: str) -> PubSubNames:
    """A fresh topic, subscription and dead-letter topic name (not yet created)."""
    suffix = uuid.uuid4().hex
    return PubSubNames(
        project=TEST_PROJECT,
        topic=f"requests-{suffix}",
        subscription=f"worker-{suffix}",
        dead_letter_topic=f"dead-letters-{suffix}",
    )
