"""Fixtures of the tests that run ``kubeflow-bot`` processes against a stand-in Slack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bot_process import BotLauncher
from tests.support.slack_api import SlackApiStub
from tests.support.slack_driver import USERS


@pytest.fixture
def stub() -> Iterator[SlackApiStub]:
    """The Slack Web API the processes call; no call may have been malformed."""
    with SlackApiStub(users=USERS) as api:
        yield api
        assert api.errors == []


@pytest.fixture
def launcher(stub: SlackApiStub, tmp_path: Path) -> Iterator[BotLauncher]:
    """Starts the processes of one test; each must have stopped cleanly (exit 0)."""
    launcher = BotLauncher(stub, tmp_path)
    yield launcher
    codes = launcher.stop_all()
    logs = {bot.log_path.name: bot.log() for bot in launcher.started}
    assert all(code == 0 for code in codes.values()), (codes, logs)
