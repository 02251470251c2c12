"""``slack-manifest.yaml``: the Slack app an operator creates must match what the bot does.

The command and interactivity URLs must end with the path ``serve`` listens on, and the
bot scopes must be exactly those the Web API methods called by the code under ``bot/``
and ``handlers/`` need: a method added without its scope fails here, and so does a scope
left behind after the last method needing it was removed.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from slack_sdk import WebClient

from bot.http_server import EVENTS_PATH
from handlers.slash_command import COMMAND
from tests.support.paths import REPO

MANIFEST = REPO / "slack-manifest.yaml"
PRODUCTION_PACKAGES = ("bot", "handlers")

# The bot-token scopes each Web API method needs (docs.slack.dev/reference/methods/...).
# users.info needs users:read; the bot reads ``profile.email`` from it (the requester's
# email for IAP access), which Slack returns only with users:read.email as well.
SCOPES_OF_METHOD: dict[str, frozenset[str]] = {
    "auth.test": frozenset(),
    "chat.postMessage": frozenset({"chat:write"}),
    "chat.update": frozenset({"chat:write"}),
    "chat.postEphemeral": frozenset({"chat:write"}),
    "chat.delete": frozenset({"chat:write"}),
    "users.info": frozenset({"users:read", "users:read.email"}),
    "users.lookupByEmail": frozenset({"users:read.email"}),
    "users.list": frozenset({"users:read"}),
    "usergroups.list": frozenset({"usergroups:read"}),
    "usergroups.users.list": frozenset({"usergroups:read"}),
    "views.open": frozenset(),
    "views.update": frozenset(),
    "views.push": frozenset(),
    "conversations.info": frozenset({"channels:read", "groups:read"}),
}
SLASH_COMMAND_SCOPE = "commands"

# ``client.chat_postMessage(`` and the like; ``api_call("chat.postMessage"`` too.
_METHOD_CALL = re.compile(r"\.([a-z]+(?:_[A-Za-z]+)+)\(")
_API_CALL = re.compile(r"\bapi_call\(\s*[\"']([a-zA-Z.]+)[\"']")


def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "slack-manifest.yaml must be a mapping"
    return data


def web_api_methods_called() -> dict[str, set[str]]:
    """Web API methods the production code calls, each with the files calling it."""
    found: dict[str, set[str]] = {}
    for package in PRODUCTION_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            names = {
                name.replace("_", ".")
                for name in _METHOD_CALL.findall(source)
                if name != "api_call" and callable(getattr(WebClient, name, None))
            }
            names |= set(_API_CALL.findall(source))
            for method in names:
                found.setdefault(method, set()).add(str(path.relative_to(REPO)))
    return found


def test_the_manifest_declares_the_kubeflow_command_on_the_events_path() -> None:
    commands = manifest()["features"]["slash_commands"]

    [kubeflow] = [c for c in commands if c["command"] == COMMAND]
    assert kubeflow["url"].startswith("https://")
    assert kubeflow["url"].endswith(EVENTS_PATH)
    assert [c["command"] for c in commands] == [COMMAND]


def test_the_manifest_enables_interactivity_on_the_events_path() -> None:
    settings = manifest()["settings"]

    interactivity = settings["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].startswith("https://")
    assert interactivity["request_url"].endswith(EVENTS_PATH)
    assert settings.get("socket_mode_enabled") is False  # HTTP mode, as the URLs say


def test_the_code_calls_the_web_api_methods_the_scope_table_expects() -> None:
    """The scan itself works: it finds the calls the bot is known to make."""
    called = web_api_methods_called()

    assert {"chat.postMessage", "chat.update", "chat.postEphemeral", "views.open"} <= set(called)


def test_the_manifest_asks_for_exactly_the_scopes_of_the_methods_the_bot_calls() -> None:
    called = web_api_methods_called()
    unknown = sorted(set(called) - set(SCOPES_OF_METHOD))
    if unknown:
        pytest.fail(
            f"add the scopes of {unknown} (called in "
            f"{sorted(set().union(*(called[m] for m in unknown)))}) to SCOPES_OF_METHOD"
        )
    needed = {scope for method in called for scope in SCOPES_OF_METHOD[method]}
    if manifest()["features"].get("slash_commands"):
        needed.add(SLASH_COMMAND_SCOPE)

    declared = manifest()["oauth_config"]["scopes"]["bot"]

    assert len(declared) == len(set(declared)), f"a scope is listed twice: {declared}"
    missing = needed - set(declared)
    superfluous = set(declared) - needed
    assert not missing, f"scopes the bot needs but the manifest lacks: {sorted(missing)}"
    assert not superfluous, f"scopes no call needs: {sorted(superfluous)}"
    assert "user" not in manifest()["oauth_config"]["scopes"]  # no user-token scopes
