"""How `/kubeflow` is used, in words for people: usage lines and the help text.

The grammar (``handlers.grammar``) attaches a usage line to every ``UsageError``; the
command handler answers ``/kubeflow help [SUBCOMMAND]`` with :func:`help_text`, in Slack
and in the console alike.  Keeping the wording here means the syntax is described in one
place, next to nothing that could drift from it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, get_args

from handlers.policy import Policy

Subcommand = Literal["create", "grant", "revoke", "status", "list", "delete", "help"]
SUBCOMMANDS: tuple[Subcommand, ...] = get_args(Subcommand)

# How long a time-bound grant (`grant --for`) may last: at least an hour, since IAP and
# IAM take minutes to apply a change; at most 90 days, since longer is not temporary.
GRANT_FOR_MIN = timedelta(hours=1)
GRANT_FOR_MAX = timedelta(days=90)

USAGE: dict[str, str] = {
    "create": (
        "/kubeflow create NAME [--project P] [--zone Z] [--gpu TYPE[:COUNT]] "
        "[--gpu-nodes MAX|MIN-MAX] [--machine-type T] [--dry-run]"
    ),
    "grant": "/kubeflow grant EMAIL [NAME] [--for DURATION]",
    "revoke": "/kubeflow revoke EMAIL [NAME]",
    "status": "/kubeflow status [NAME|REQUEST_ID]",
    "list": "/kubeflow list",
    "delete": "/kubeflow delete NAME",
    "help": "/kubeflow help [SUBCOMMAND]",
}

# What each subcommand takes, for the message about a surplus argument.
TAKES: dict[str, str] = {
    "create": "one NAME and flags",
    "grant": "an EMAIL, at most one NAME and --for",
    "revoke": "an EMAIL and at most one NAME",
    "status": "at most one NAME or request id",
    "list": "no arguments",
    "delete": "one NAME",
    "help": "at most one subcommand",
}
# The usage shown when the subcommand itself is unknown: all of them, on one line.
OVERVIEW = (
    "/kubeflow create|grant|revoke|status|list|delete|help ...  (/kubeflow help explains each)"
)

_SUMMARY: dict[str, str] = {
    "create": "ask for a Kubeflow deployment on GKE; once an approver says yes you get its URL",
    "grant": "give someone access to a deployment (approvers grant directly, others ask)",
    "revoke": "take that access away again (approvers)",
    "status": "where a request or deployment stands: steps done, URL",
    "list": "the deployments the bot manages, with state, GPU, owner, age and URL",
    "delete": "tear a deployment down, after a confirmation and approval",
    "help": "this help, or more about one subcommand",
}

_DETAILS: dict[str, tuple[str, ...]] = {
    "create": (
        "NAME: 2 to 24 lowercase letters, digits and hyphens, starting with a letter; "
        "the deployment answers at https://NAME.endpoints.PROJECT.cloud.goog/",
        "--project P, --zone Z: where it runs (the policy's defaults when left out)",
        "--gpu TYPE[:COUNT]: add a GPU node pool with COUNT GPUs per node (1 when left out)",
        "--gpu-nodes MAX or MIN-MAX: how far the GPU pool may scale (from 0 when MIN is left out)",
        "--machine-type T: with --gpu the GPU nodes' machine type, without it the cluster's",
        "--dry-run: show every step the bot would take, and queue nothing",
        "Example: `/kubeflow create demo --gpu nvidia-tesla-t4:1 --gpu-nodes 2`",
    ),
    "grant": (
        "EMAIL gets IAP access (roles/iap.httpsResourceAccessor) to the deployment's project.",
        "NAME names the deployment.",
        "--for DURATION: the access ends after DURATION, in hours, days or weeks (12h, 7d, "
        "2w; from 1 hour to 90 days); without it, the access lasts until revoked",
        "Example: `/kubeflow grant ada@example.com demo --for 7d`",
    ),
    "revoke": (
        "Removes the access that grant gave.",
        "Example: `/kubeflow revoke ada@example.com demo`",
    ),
    "status": ("Give a deployment NAME or a request id (such as kf-3k9x2a).",),
    "list": ("Every deployment the bot manages.",),
    "delete": (
        "Deletes the deployment's cluster once you confirm and an approver approves.",
        "Example: `/kubeflow delete demo`",
    ),
    "help": ("Example: `/kubeflow help create`",),
}


def _policy_lines(policy: Policy) -> tuple[str, ...]:
    """What this installation allows, so people need not guess before being refused."""
    gpus = ", ".join(policy.gpu_types) if policy.gpu_types else "none"
    return (
        f"Allowed here: projects {', '.join(policy.projects)}; zones {', '.join(policy.zones)}; "
        f"GPU types {gpus} (up to {policy.limits.max_gpus_per_node} per node, "
        f"up to {policy.limits.max_gpu_nodes} nodes).",
        f"Defaults: project {policy.defaults.project}, zone {policy.defaults.zone}, "
        f"machine type {policy.defaults.machine_type}, "
        f"GPU nodes 0-{policy.defaults.gpu_max_nodes}.",
    )


def help_text(topic: str | None, *, policy: Policy | None = None) -> str:
    """The answer to ``/kubeflow help [topic]``: every subcommand on one line each, or the
    details of one.  An unknown topic gets the overview rather than an error, since
    the person asked for help.  With ``policy`` the create help names what is allowed."""
    key = topic.strip().lower() if topic else None
    if key not in USAGE:
        lines = ["*/kubeflow* subcommands:"]
        lines += [f"`{USAGE[name]}`: {_SUMMARY[name]}" for name in SUBCOMMANDS]
        lines.append("`/kubeflow help SUBCOMMAND` tells more about one of them.")
        return "\n".join(lines)
    lines = [f"`{USAGE[key]}`", f"{_SUMMARY[key][0].upper()}{_SUMMARY[key][1:]}."]
    lines += _DETAILS[key]
    if key == "create" and policy is not None:
        lines += _policy_lines(policy)
    return "\n".join(lines)
