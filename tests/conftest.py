"""Shared test configuration: fixture plugins that live under ``tests/support``."""

pytest_plugins = [
    "tests.support.pubsub_emulator",
]
