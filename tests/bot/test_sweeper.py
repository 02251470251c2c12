"""The sweeper expires overdue requests, so their cards say so even if nobody looks."""

from __future__ import annotations

from bot.settings import CONSOLE_STORE, Settings
from bot.sweeper import Sweeper
from bot.wiring import build_runtime
from provisioning.records import State
from tests.support.clocks import FakeClock
from tests.support.paths import SAMPLE_POLICY
from tests.support.recording_chat import RecordingChat


def test_a_sweep_expires_overdue_requests_and_updates_their_cards() -> None:
    chat = RecordingChat()
    clock = FakeClock()
    settings = Settings(KUBEFLOW_BOT_POLICY=SAMPLE_POLICY, KUBEFLOW_BOT_STORE=CONSOLE_STORE)
    runtime = build_runtime(settings, chat, chat, clock=clock)
    try:
        runtime.commands.handle("U_ALICE", "C_TEAM", "create demo")
        runtime.commands.handle("U_BOB", "C_TEAM", "create other")
        sweeper = Sweeper(runtime.approvals)

        sweeper.sweep()
        assert {r.state for r in runtime.store.list()} == {State.PENDING}

        clock.advance(hours=24, seconds=1)
        sweeper.sweep()

        assert {r.state for r in runtime.store.list()} == {State.EXPIRED}
        assert all("Expired at" in u.text for u in chat.updates())
        assert len(chat.updates()) == 2
    finally:
        runtime.close()


def test_the_sweeper_thread_stops_promptly() -> None:
    chat = RecordingChat()
    settings = Settings(KUBEFLOW_BOT_POLICY=SAMPLE_POLICY, KUBEFLOW_BOT_STORE=CONSOLE_STORE)
    runtime = build_runtime(settings, chat, chat)
    sweeper = Sweeper(runtime.approvals, every_seconds=3600)
    sweeper.start()
    assert sweeper.running
    sweeper.stop()
    assert not sweeper.running
    runtime.close()
