"""The `/kubeflow` command grammar: slash-command text in, one typed command out.

Pure: no Slack types, no I/O.  The command handler in ``handlers/`` calls
:func:`parse_command` on the text after ``/kubeflow``, for Slack and for the console alike,
answers a :class:`UsageError` with its reason and usage line, and acts on any other
result.  :func:`render_command` writes a command back as text; parsing that text with the
same policy gives the same command.  The policy supplies defaults and the limits on what
may be asked for; who may run a subcommand is decided elsewhere.
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from handlers import slash_text
from handlers.parsed_commands import (
    Command,
    CreateCommand,
    DeleteCommand,
    GrantCommand,
    HelpCommand,
    ListCommand,
    RevokeCommand,
    StatusCommand,
)
from handlers.policy import Policy
from handlers.usage import (
    GRANT_FOR_MAX,
    GRANT_FOR_MIN,
    OVERVIEW,
    SUBCOMMANDS,
    TAKES,
    USAGE,
    help_text,
)
from provisioning.gpus import GPU_FAMILIES, default_machine_type, machine_fits_gpu
from provisioning.ids import is_request_id
from provisioning.spec import (
    EMAIL_PATTERN,
    MACHINE_TYPE_PATTERN,
    MAX_HOST_LENGTH,
    DeploymentSpec,
    GpuSpec,
    endpoint_host,
    name_problem,
)

__all__ = [
    "OVERVIEW",
    "USAGE",
    "Command",
    "CreateCommand",
    "DeleteCommand",
    "GrantCommand",
    "HelpCommand",
    "ListCommand",
    "RevokeCommand",
    "StatusCommand",
    "UsageError",
    "help_text",
    "parse_command",
    "render_command",
]


class UsageError(ValueError):
    """A command that cannot be understood: what was wrong, and the usage to follow."""

    def __init__(self, reason: str, usage: str) -> None:
        super().__init__(f"{reason}\nUsage: {usage}")
        self.reason = reason
        self.usage = usage

    def __reduce__(self) -> tuple[type[UsageError], tuple[str, str]]:
        # The default would call UsageError(message) and fail; keep it picklable.
        return (UsageError, (self.reason, self.usage))


# Flags of create, and whether each takes a value.
_CREATE_FLAGS = {
    "--project": True,
    "--zone": True,
    "--gpu": True,
    "--gpu-nodes": True,
    "--machine-type": True,
    "--dry-run": False,
}
_GRANT_FLAGS = {"--for": True}
_HELP_FLAGS = ("--help", "-h")
_FOR = re.compile(r"([0-9]+)([hdw])", re.IGNORECASE)
_FOR_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
# Machine names are RFC 1035 labels in Compute Engine: at most 63 characters.
_MAX_MACHINE_TYPE = 63
_MAX_EMAIL = 254

_DIGITS = re.compile(r"[0-9]+")
_NODES = re.compile(r"(?:([0-9]+)-)?([0-9]+)")
_M = TypeVar("_M", bound=BaseModel)


def _shown(value: str, limit: int = 40) -> str:
    """User input as echoed in a reason: a pasted novel should not come back whole."""
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def _unknown(what: str, word: str, choices: tuple[str, ...] | list[str]) -> str:
    reason = f"unknown {what} `{_shown(word)}`"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75) if len(word) < 40 else []
    return f"{reason}; did you mean `{close[0]}`?" if close else reason


def _whole(text: str) -> int | None:
    """A non-negative decimal integer; huge ones are capped (they exceed every limit)."""
    if not _DIGITS.fullmatch(text):
        return None
    return int(text) if len(text) <= 9 else 10**9


def _split(sub: str, tokens: list[str], flags: dict[str, bool]) -> tuple[list[str], dict[str, str]]:
    """Positional arguments, and the value of each flag given (``""`` for switches)."""
    usage = USAGE[sub]
    positionals: list[str] = []
    values: dict[str, str] = {}
    at = 0
    while at < len(tokens):
        token = tokens[at]
        at += 1
        if not token.startswith("--"):
            positionals.append(token)
            continue
        name, equals, value = token.partition("=")
        name = name.lower()
        if name not in flags:
            reason = _unknown("flag", name, list(flags))
            raise UsageError(reason if flags else f"{reason}; {sub} takes no flags", usage)
        if name in values:
            raise UsageError(f"{name} was given twice; give it once", usage)
        if flags[name]:
            # `--zone` followed by another flag is a flag missing its value, not a zone.
            if not equals and at < len(tokens) and not tokens[at].startswith("--"):
                value = tokens[at]
                at += 1
            value = slash_text.unquote(value)
            if not value:
                raise UsageError(f"{name} needs a value", usage)
        elif equals:
            raise UsageError(f"{name} takes no value", usage)
        values[name] = value
    return positionals, values


def _no_more(sub: str, extra: list[str]) -> None:
    if extra:
        raise UsageError(f"unexpected `{_shown(extra[0])}`: {sub} takes {TAKES[sub]}", USAGE[sub])


def _check_name(name: str, usage: str) -> None:
    if name_problem(name) is not None:
        # Checked on the shortened form too, so that a pasted novel is not echoed whole.
        raise UsageError(name_problem(_shown(name)) or "not a valid deployment name", usage)


def _check_email(email: str, policy: Policy | None, usage: str) -> None:
    if len(email) > _MAX_EMAIL or not re.fullmatch(EMAIL_PATTERN, email):
        raise UsageError(f"`{_shown(email)}` is not a valid email address", usage)
    if policy is not None and not policy.email_allowed(email):
        allowed = ", ".join(policy.grant_domains)
        raise UsageError(f"{email} is not in an allowed domain; allowed domains: {allowed}", usage)


def _allowed(value: str, allowed: tuple[str, ...], what: str, usage: str) -> str:
    if value not in allowed:
        raise UsageError(
            f"{what} {_shown(value)} is not allowed; allowed {what}s: {', '.join(allowed)}", usage
        )
    return value


def _check_machine_type(machine_type: str, usage: str) -> None:
    if len(machine_type) > _MAX_MACHINE_TYPE or not re.fullmatch(
        MACHINE_TYPE_PATTERN, machine_type
    ):
        raise UsageError(
            f"`{_shown(machine_type)}` is not a machine type name (such as e2-standard-8)", usage
        )


def _gpu_nodes(text: str, policy: Policy, usage: str) -> tuple[int, int]:
    match = _NODES.fullmatch(text)
    if not match:
        raise UsageError(
            f"--gpu-nodes takes MAX or MIN-MAX, such as 2 or 1-3, not `{_shown(text)}`", usage
        )
    low = _whole(match.group(1) or "0") or 0
    high = _whole(match.group(2)) or 0
    limit = policy.limits.max_gpu_nodes
    if high < 1:
        raise UsageError("--gpu-nodes MAX must be at least 1, or the pool could never grow", usage)
    if high > limit:
        raise UsageError(
            f"--gpu-nodes {_shown(text)}: at most {limit} GPU nodes are allowed", usage
        )
    if low > high:
        raise UsageError(f"--gpu-nodes {text}: MIN {low} is larger than MAX {high}", usage)
    return low, high


def _gpu(flags: dict[str, str], policy: Policy, usage: str) -> GpuSpec | None:
    raw = flags.get("--gpu")
    if raw is None:
        if "--gpu-nodes" in flags:
            raise UsageError("--gpu-nodes sizes the GPU pool, so it needs --gpu TYPE too", usage)
        return None
    gpu_type, colon, count_text = raw.partition(":")
    if not policy.gpu_types:
        raise UsageError("GPUs are not allowed here; leave out --gpu", usage)
    _allowed(gpu_type, policy.gpu_types, "GPU type", usage)
    most = policy.limits.max_gpus_per_node
    count = _whole(count_text) if colon else policy.defaults.gpu_count
    if count is None or not 1 <= count <= most:
        raise UsageError(
            f"GPU count `{_shown(count_text)}` must be a whole number from 1 to {most}", usage
        )
    low, high = 0, policy.defaults.gpu_max_nodes
    if "--gpu-nodes" in flags:
        low, high = _gpu_nodes(flags["--gpu-nodes"], policy, usage)
    machine_type = flags.get("--machine-type") or default_machine_type(gpu_type)
    if machine_type is None:
        raise UsageError(
            f"name the GPU nodes' machine type for {gpu_type} with --machine-type", usage
        )
    _check_machine_type(machine_type, usage)
    if not machine_fits_gpu(machine_type, gpu_type):
        family = GPU_FAMILIES[gpu_type]
        prefixes = " or ".join(family.machine_prefixes)
        raise UsageError(
            f"machine type {machine_type} cannot carry {gpu_type}; use one starting with "
            f"{prefixes} (such as {family.default_machine_type})",
            usage,
        )
    return _build(
        GpuSpec,
        usage,
        type=gpu_type,
        count=count,
        machine_type=machine_type,
        min_nodes=low,
        max_nodes=high,
    )


def _plain(error: ValidationError) -> str:
    """One plain line from a pydantic error, for the rare case our checks let one through."""
    first = error.errors(include_url=False)[0]
    cause = first.get("ctx", {}).get("error")
    if cause is not None:
        return str(cause).replace("\n", " ")
    field = " ".join(str(part) for part in first["loc"])
    return f"{field}: {first['msg']}".replace("\n", " ")


def _build(model: type[_M], usage: str, **fields: Any) -> _M:
    try:
        return model(**fields)
    except ValidationError as e:
        raise UsageError(_plain(e), usage) from e


def _create(tokens: list[str], policy: Policy) -> CreateCommand:
    usage = USAGE["create"]
    positionals, flags = _split("create", tokens, _CREATE_FLAGS)
    if not positionals:
        raise UsageError("create needs a deployment NAME", usage)
    name = positionals[0]
    _no_more("create", positionals[1:])
    _check_name(name, usage)
    if is_request_id(name):
        # `status kf-3k9x2a` must mean one thing: the request with that id.
        raise UsageError(f"`{name}` looks like a request id; pick another name", usage)
    project = _allowed(
        flags.get("--project", policy.defaults.project), policy.projects, "project", usage
    )
    zone = _allowed(flags.get("--zone", policy.defaults.zone), policy.zones, "zone", usage)
    gpu = _gpu(flags, policy, usage)
    machine_type = policy.defaults.machine_type
    if gpu is None and "--machine-type" in flags:
        machine_type = flags["--machine-type"]
        _check_machine_type(machine_type, usage)
    host = endpoint_host(name, project)
    if len(host) > MAX_HOST_LENGTH:
        room = MAX_HOST_LENGTH - len(endpoint_host("", project))
        raise UsageError(
            f"`{name}` is too long for project {project}: its address {host} would have "
            f"{len(host)} characters, and only {MAX_HOST_LENGTH} fit; use at most {room}",
            usage,
        )
    spec = _build(
        DeploymentSpec,
        usage,
        name=name,
        project=project,
        zone=zone,
        machine_type=machine_type,
        gpu=gpu,
        kubeflow_version=policy.defaults.kubeflow_version,
    )
    return CreateCommand(spec=spec, dry_run="--dry-run" in flags)


def _span(duration: timedelta) -> str:
    """A duration as `--for` takes it: days when whole, else hours."""
    hours = int(duration.total_seconds()) // 3600
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


def _duration(text: str, usage: str) -> timedelta:
    match = _FOR.fullmatch(text)
    if not match:
        raise UsageError(
            f"--for takes hours, days or weeks, such as 12h, 7d or 2w, not `{_shown(text)}`",
            usage,
        )
    count = _whole(match.group(1)) or 0
    # Capped first: a count of weeks that overflows timedelta is just too long.
    duration = _FOR_UNITS[match.group(2).lower()] * min(count, 10**5)
    if not GRANT_FOR_MIN <= duration <= GRANT_FOR_MAX:
        raise UsageError(
            f"--for {_shown(text)}: access can last from {_span(GRANT_FOR_MIN)} to "
            f"{_span(GRANT_FOR_MAX)}",
            usage,
        )
    return duration


def _access(sub: str, tokens: list[str], policy: Policy) -> GrantCommand | RevokeCommand:
    usage = USAGE[sub]
    positionals, flags = _split(sub, tokens, _GRANT_FLAGS if sub == "grant" else {})
    if not positionals:
        raise UsageError(f"{sub} needs the EMAIL of the person", usage)
    email, name = positionals[0], (positionals[1] if len(positionals) > 1 else None)
    _no_more(sub, positionals[2:])
    # Only grants are held to the policy's domains: access must stay removable after a
    # domain leaves the policy.
    _check_email(email, policy if sub == "grant" else None, usage)
    if name is not None:
        _check_name(name, usage)
    if sub == "grant":
        duration = _duration(flags["--for"], usage) if "--for" in flags else None
        return _build(GrantCommand, usage, email=email, name=name, duration=duration)
    return _build(RevokeCommand, usage, email=email, name=name)


def _status(tokens: list[str]) -> StatusCommand:
    usage = USAGE["status"]
    positionals, _ = _split("status", tokens, {})
    _no_more("status", positionals[1:])
    target = positionals[0] if positionals else None
    if target is not None and name_problem(target) is not None:
        raise UsageError(
            f"`{_shown(target)}` is neither a deployment name nor a request id (such as kf-3k9x2a)",
            usage,
        )
    return StatusCommand(target=target)


def _delete(tokens: list[str]) -> DeleteCommand:
    usage = USAGE["delete"]
    positionals, _ = _split("delete", tokens, {})
    if not positionals:
        raise UsageError("delete needs the NAME of the deployment", usage)
    _no_more("delete", positionals[1:])
    _check_name(positionals[0], usage)
    return DeleteCommand(name=positionals[0])


def _help(tokens: list[str]) -> HelpCommand:
    positionals, _ = _split("help", tokens, {})
    _no_more("help", positionals[1:])
    if not positionals:
        return HelpCommand()
    topic = positionals[0].lower()
    if topic not in USAGE:
        raise UsageError(_unknown("subcommand", positionals[0], SUBCOMMANDS), OVERVIEW)
    return HelpCommand(topic=SUBCOMMANDS[SUBCOMMANDS.index(topic)])


def parse_command(text: str, policy: Policy) -> Command:
    """The command that ``text`` (what follows ``/kubeflow``) asks for, with the policy's
    defaults filled in; raises :class:`UsageError`, and nothing else, when it is malformed
    or asks for more than the policy allows."""
    tokens = slash_text.tokens(text)
    if not tokens:
        return HelpCommand()
    word, args = tokens[0].lower(), tokens[1:]
    if word in _HELP_FLAGS:
        return HelpCommand()
    if word not in SUBCOMMANDS:
        raise UsageError(_unknown("subcommand", tokens[0], SUBCOMMANDS), OVERVIEW)
    # `create --help` means "how does create work", wherever the flag sits.
    if any(arg.lower() in _HELP_FLAGS for arg in args):
        return HelpCommand(topic=word)
    match word:
        case "create":
            return _create(args, policy)
        case "grant" | "revoke":
            return _access(word, args, policy)
        case "status":
            return _status(args)
        case "list":
            _no_more("list", _split("list", args, {})[0])
            return ListCommand()
        case "delete":
            return _delete(args)
        case _:
            return _help(args)


def render_command(command: Command) -> str:
    """The canonical text of ``command``: every create flag spelled out except the
    Kubeflow version and, with a GPU, the cluster's machine type, which come from the
    policy.  ``parse_command(render_command(c), policy) == c`` for what the policy allows."""
    match command:
        case CreateCommand(spec=spec, dry_run=dry_run):
            parts = ["create", spec.name, "--project", spec.project, "--zone", spec.zone]
            if spec.gpu is None:
                parts += ["--machine-type", spec.machine_type]
            else:
                gpu = spec.gpu
                parts += [
                    "--gpu", f"{gpu.type}:{gpu.count}",
                    "--gpu-nodes", f"{gpu.min_nodes}-{gpu.max_nodes}",
                    "--machine-type", gpu.machine_type,
                ]  # fmt: skip
            if dry_run:
                parts.append("--dry-run")
        case GrantCommand(email=email, name=name, duration=duration):
            parts = ["grant", email] + ([name] if name else [])
            if duration is not None:
                parts += ["--for", _span(duration)]
        case RevokeCommand(email=email, name=name):
            parts = ["revoke", email] + ([name] if name else [])
        case StatusCommand(target=target):
            parts = ["status"] + ([target] if target else [])
        case ListCommand():
            parts = ["list"]
        case DeleteCommand(name=name):
            parts = ["delete", name]
        case HelpCommand(topic=topic):
            parts = ["help"] + ([topic] if topic else [])
    return " ".join(parts)
