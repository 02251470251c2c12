"""The console end to end: the real ``kubeflow-bot console`` process, and the same loop
in-process where a test must read the request id before typing the next line."""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.console import ConsoleChat, run_console
from bot.settings import CONSOLE_STORE, Settings
from bot.wiring import build_runtime
from tests.support.paths import CONSOLE_SCRIPT, REPO, SAMPLE_POLICY

REQUEST_ID = re.compile(r"kf-[a-z0-9]{6}")


def console_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "KUBEFLOW_BOT_", "PUBSUB_"))
    }
    env.update(extra)
    return env


def run_script(stdin: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "console"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=console_env(**env),
        check=False,
    )


def converse(lines: list[str], *, policy: Path = SAMPLE_POLICY) -> str:
    """Run the console in-process; ``{id}`` in a line is the last request id printed."""
    out = io.StringIO()
    chat = ConsoleChat(out)
    settings = Settings(KUBEFLOW_BOT_POLICY=policy, KUBEFLOW_BOT_STORE=CONSOLE_STORE)
    runtime = build_runtime(settings, chat, chat, default_store=CONSOLE_STORE)

    def feed() -> Iterator[str]:
        for line in lines:
            ids = REQUEST_ID.findall(out.getvalue())
            yield line.replace("{id}", ids[-1] if ids else "kf-000000") + "\n"

    assert run_console(runtime, chat, feed(), out) == 0
    return out.getvalue()


def test_piped_create_prints_a_request_id_and_exits_zero() -> None:
    result = run_script("/kubeflow create demo --gpu nvidia-tesla-t4:1\n")
    assert result.returncode == 0, result.stderr
    assert REQUEST_ID.search(result.stdout)
    assert "Waiting for an approver" in result.stdout
    assert "[Approve] [Deny]" in result.stdout
    assert result.stderr == ""


def test_approval_by_the_approver_prints_the_plan_and_the_dry_run_url() -> None:
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=console_env(),
    )
    assert process.stdin and process.stdout
    process.stdin.write("/kubeflow create demo --gpu nvidia-tesla-t4:1\n")
    process.stdin.flush()
    first = process.stdout.readline()
    request_id = REQUEST_ID.search(first)
    assert request_id, first
    out, err = process.communicate(f"as U_APPROVER approve {request_id.group(0)}\n", timeout=60)
    assert process.returncode == 0, err
    assert f"Approved by @U_APPROVER. @U_CONSOLE, `{request_id.group(0)}` is queued" in out
    assert "container.projects.locations.clusters.create" in out
    assert "nodePools.create" in out and "accelerator=nvidia-tesla-t4x1" in out
    assert "URL it would have: https://demo.endpoints.demo-project.cloud.goog/ (dry-run)" in out
    # Thread replies are indented under the root.
    assert "    | kubeflow-bot: @U_CONSOLE, dry-run of" in out


def test_end_of_input_waits_for_queued_work_before_exiting() -> None:
    out = converse(["/kubeflow create demo", "as U_APPROVER approve {id}"])
    assert out.rstrip().endswith(
        "URL it would have: https://demo.endpoints.demo-project.cloud.goog/ (dry-run)"
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("/kubeflow create Demo_1", "not a valid deployment name"),
        ("/kubeflow create demo --gpu nvidia-tesla-a100", "nvidia-tesla-t4, nvidia-l4"),
        ("/kubeflow create demo --zone europe-west4-a", "us-central1-a, us-central1-c"),
        ("/kubeflow create demo --project other-project", "demo-project"),
        ("/kubeflow create demo --gpu", "--gpu"),
        ("/kubeflow create demo --frobnicate 3", "--frobnicate"),
        ("/kubeflow launch demo", "unknown subcommand"),
    ],
)
def test_bad_commands_get_a_reason_and_usage_and_create_nothing(line: str, reason: str) -> None:
    out = converse([line, "/kubeflow list"])
    refusal, listing = out.split("(only visible to @U_CONSOLE) ")[1:3]
    assert reason in refusal
    assert "Usage:" in refusal
    assert listing.startswith("No deployments yet")
    assert "[Approve]" not in out


def test_refusals_are_printed_as_the_private_replies_slack_users_see() -> None:
    out = converse(
        [
            "/kubeflow create demo",
            "approve {id}",  # U_CONSOLE is not an approver
            "as U_APPROVER deny {id}",  # a reason is required
            "as U_APPROVER approve {id}",
            "as U_APPROVER approve {id}",  # already decided
            "as U_APPROVER approve kf-zzzzzz",  # unknown id
            "as U_APPROVER /kubeflow create mine",
            "as U_APPROVER approve {id}",  # own request under four-eyes
        ]
    )
    assert "(only visible to @U_CONSOLE) Only approvers can decide on" in out
    assert "(only visible to @U_APPROVER) Say why you deny the request" in out
    assert re.search(
        r"\(only visible to @U_APPROVER\) `kf-[a-z0-9]{6}` was already approved by @U_APPROVER", out
    )
    assert "(only visible to @U_APPROVER) No such request `kf-zzzzzz`." in out
    assert (
        "(only visible to @U_APPROVER) You filed this request, and four-eyes approval is on" in out
    )


def test_deny_with_a_reason_posts_it_in_the_thread() -> None:
    out = converse(["/kubeflow create demo", "as U_APPROVER deny {id} no budget this quarter"])
    assert "Denied by @U_APPROVER" in out
    assert re.search(
        r"    \| kubeflow-bot: @U_CONSOLE, `kf-[a-z0-9]{6}` was denied by @U_APPROVER: "
        r"no budget this quarter",
        out,
    )


def test_as_switches_the_user_for_one_line_only() -> None:
    out = converse(["as U_SOMEONE /kubeflow create demo", "/kubeflow status"])
    assert "from @U_SOMEONE" in out
    assert "(only visible to @U_CONSOLE) You have no requests." in out


def test_lines_that_are_not_commands_get_the_console_help() -> None:
    out = converse(["hello there"])
    assert "Not a console line: `hello there`" in out
    assert "approve REQUEST_ID" in out


def test_quit_stops_reading() -> None:
    out = converse(["quit", "/kubeflow create demo"])
    assert "Request" not in out


def test_help_lists_every_subcommand() -> None:
    out = converse(["/kubeflow help"])
    for sub in ("create", "grant", "revoke", "status", "list", "delete", "help"):
        assert sub in out
