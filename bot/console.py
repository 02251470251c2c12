"""The console: a local chat in the terminal, on the same handlers, store and worker.

``kubeflow-bot console`` (and ``make run`` without Slack variables) runs it, the way
Hubot's shell adapter and Errbot's text backend let people try a bot without a chat
service.  Lines are ``/kubeflow ...``, ``approve ID``, ``deny ID REASON`` and ``quit``;
``as USER_ID `` before a line acts as that user.  What the bot would post is printed:
thread replies indented under their root, private replies marked as such, updated
messages shown by the lines that changed.  At end of input it waits for queued work,
then returns.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable
from typing import TextIO

from bot.wiring import Runtime
from handlers.chat import Blocks
from provisioning.inprocess_queue import InProcessQueue
from provisioning.records import MessageRef

CONSOLE_USER = "U_CONSOLE"
CONSOLE_CHANNEL = "C_CONSOLE"
HELP = (
    "Lines: /kubeflow SUBCOMMAND ...  |  approve REQUEST_ID  |  deny REQUEST_ID REASON  |  quit\n"
    "Start a line with `as USER_ID ` to act as someone else (the sample policy's approver "
    "is U_APPROVER)."
)
_MENTION = re.compile(r"<@([A-Z0-9_]+)>")
_AS_USER = re.compile(r"^as\s+([A-Za-z0-9_]+)\s+(.*)$", re.DOTALL)


def plain(text: str) -> str:
    """Slack mrkdwn as terminal text: mentions become @USER, escapes are undone."""
    text = _MENTION.sub(r"@\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class ConsoleChat:
    """``Chat`` and ``Directory`` for the terminal; safe to call from worker threads."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._texts: dict[str, str] = {}
        self._threads: dict[str, str] = {}  # message ts -> its thread root ts

    def _write(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()

    @staticmethod
    def _indent(text: str, prefix: str, rest: str) -> str:
        lines = plain(text).splitlines() or [""]
        return "\n".join([prefix + lines[0], *(rest + line for line in lines[1:])])

    def post(
        self, channel: str, text: str, *, thread_ts: str | None = None, blocks: Blocks | None = None
    ) -> MessageRef:
        with self._lock:
            ts = f"{next(self._ts)}.000100"
            self._texts[ts] = text
            if thread_ts:
                self._threads[ts] = thread_ts
        if thread_ts:
            self._write(self._indent(text, "    | kubeflow-bot: ", "    |   "))
        else:
            self._write(self._indent(text, f"[#{channel}] kubeflow-bot: ", "    "))
        if blocks and any(b.get("type") == "actions" for b in blocks):
            self._write("    [Approve] [Deny]  (an approver types: approve ID  or  deny ID REASON)")
        return MessageRef(channel=channel, ts=ts)

    def update(self, ref: MessageRef, text: str, *, blocks: Blocks | None = None) -> None:
        with self._lock:
            before = self._texts.get(ref.ts, "").splitlines()
            self._texts[ref.ts] = text
            in_thread = ref.ts in self._threads
        changed = [line for line in text.splitlines() if line not in before]
        if not changed:
            return
        prefix = "    | " if in_thread else ""
        self._write("\n".join(f"{prefix}  (updated) {plain(line)}" for line in changed))

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        self._write(self._indent(text, f"(only visible to @{user}) ", "    "))

    # Directory: the console has no user groups and knows no emails.
    def group_members(self, handle: str) -> frozenset[str]:
        return frozenset()

    def user_for_email(self, email: str) -> str | None:
        return None

    def email_of(self, user: str) -> str | None:
        return None


def run_console(runtime: Runtime, chat: ConsoleChat, lines: Iterable[str], out: TextIO) -> int:
    """Feed ``lines`` to the bot as ``U_CONSOLE`` (or ``as USER``); returns the exit code."""
    queue = runtime.queue
    queue.consume(runtime.worker.handle, max_in_flight=2)
    interactive = hasattr(lines, "isatty") and lines.isatty()  # type: ignore[attr-defined]
    if interactive:
        out.write(f"kubeflow-bot console. {HELP}\n> ")
        out.flush()
    for raw in lines:
        line = raw.strip()
        if line in ("quit", "exit"):
            break
        if line:
            runtime.approvals.expire_due()
            handle_line(runtime, chat, line)
        if interactive:
            out.write("> ")
            out.flush()
    if isinstance(queue, InProcessQueue):
        queue.join()
    runtime.close()
    return 0


def handle_line(runtime: Runtime, chat: ConsoleChat, line: str) -> None:
    user = CONSOLE_USER
    match = _AS_USER.match(line)
    if match:
        user, line = match.group(1), match.group(2).strip()
    words = line.split(maxsplit=2)
    command = words[0].lower() if words else ""
    if command == "/kubeflow":
        runtime.commands.handle(user, CONSOLE_CHANNEL, line[len("/kubeflow") :].strip())
    elif command == "approve" and len(words) == 2:
        runtime.approvals.approve(user, CONSOLE_CHANNEL, words[1])
    elif command == "deny" and len(words) >= 2:
        runtime.approvals.deny(user, CONSOLE_CHANNEL, words[1], words[2] if len(words) > 2 else "")
    else:
        chat.ephemeral(CONSOLE_CHANNEL, user, f"Not a console line: `{line}`.\n{HELP}")
