"""Every sentence the bot says to people, in one place.

Called by the handlers, the progress notifier and the card builders.  Text uses Slack
mrkdwn (``<@U123>`` mentions, backticks); the console adapter renders it as plain text.
Nothing here ever receives a secret: only ids, names, specs and plain-words reasons.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from provisioning.actions import (
    CreateAction,
    DeleteAction,
    GrantAction,
    RevokeAction,
    until_text,
)
from provisioning.records import RequestRecord, State, StepReport, StepStatus
from provisioning.spec import DeploymentSpec

NOT_A_REQUESTER = "The policy does not let you file requests; ask the platform team."
OWN_REQUEST = "You filed this request, and four-eyes approval is on: another approver must decide."
NOT_OWNER = "Only the deployment's owner or an approver can delete it."
REVOKE_APPROVERS_ONLY = "Only approvers can revoke access."
DENY_NEEDS_REASON = "Say why you deny the request: `deny REQUEST_ID REASON`."


def mention(user: str) -> str:
    return f"<@{user}>"


def escape(text: str) -> str:
    """Free text a person typed, made inert in Slack mrkdwn: no ``<!channel>`` pings,
    no links, no fake mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def hhmm(at: datetime) -> str:
    return at.strftime("%H:%M UTC")


def card_not_posted(code: str) -> str:
    hint = (
        " Invite the bot first: `/invite @kubeflow-bot`."
        if code in ("not_in_channel", "channel_not_found")
        else ""
    )
    return f"Could not post the request card here ({code}); nothing was filed.{hint}"


DIALOG_FAILED = "Could not open the reason dialog; click Deny again."


def no_such_request(request_id: str) -> str:
    return f"No such request `{request_id}`."


def no_such_deployment(name: str, known: Sequence[str]) -> str:
    listed = ", ".join(f"`{n}`" for n in known) if known else "none yet"
    return f"No deployment named `{name}`. Deployments: {listed}."


def which_deployment(known: Sequence[str]) -> str:
    if not known:
        return "There is no deployment yet to grant access to."
    listed = ", ".join(f"`{n}`" for n in known)
    return f"Name the deployment: {listed}."


def deployment_busy(holder: RequestRecord) -> str:
    return (
        f"`{holder.deployment}` already has an active request `{holder.id}` "
        f"({holder.state}, by {mention(holder.requester)}); wait for it or deny it first."
    )


def deployment_exists(name: str, request_id: str) -> str:
    return (
        f"A deployment named `{name}` exists already (request `{request_id}`); "
        f"pick another name or `/kubeflow delete {name}` first."
    )


def not_an_approver(request_id: str) -> str:
    return f"Only approvers can decide on `{request_id}`; your click changed nothing."


def already_decided(record: RequestRecord) -> str:
    who = f" by {mention(record.decided_by)}" if record.decided_by else ""
    if record.state is State.EXPIRED:
        return f"`{record.id}` expired without a decision; file it again if still needed."
    if record.state is State.DENIED:
        return f"`{record.id}` was already denied{who}."
    if record.state is State.CANCELLED:
        return f"`{record.id}` was cancelled."
    return f"`{record.id}` was already approved{who}."


def gpu_summary(spec: DeploymentSpec) -> str:
    if spec.gpu is None:
        return "no GPUs"
    g = spec.gpu
    return (
        f"{g.count}x {g.type} per node on {g.machine_type}, "
        f"autoscaling {g.min_nodes}..{g.max_nodes} nodes in {spec.zone}"
    )


def describe_action(record: RequestRecord) -> str:
    action = record.action
    match action:
        case CreateAction(spec=spec):
            return (
                f"create Kubeflow {spec.kubeflow_version} deployment `{spec.name}` in "
                f"project `{spec.project}`, zone `{spec.zone}`, {spec.machine_type} nodes, "
                f"{gpu_summary(spec)}"
            )
        case GrantAction(expires_at=None):
            return f"grant `{action.email}` access to `{action.deployment}`"
        case GrantAction(expires_at=until) if until is not None:
            return (
                f"grant `{action.email}` access to `{action.deployment}` until {until_text(until)}"
            )
        case RevokeAction():
            return f"revoke `{action.email}`'s access to `{action.deployment}`"
        case DeleteAction():
            return (
                f"DELETE deployment `{action.deployment}` (its cluster in `{action.project}`, "
                "its address and DNS name)"
            )
    raise AssertionError(action)


def request_card(record: RequestRecord) -> str:
    expires = (
        f" Expires {record.expires_at.strftime('%Y-%m-%d %H:%M UTC')} if undecided."
        if record.expires_at
        else ""
    )
    return (
        f"Request `{record.id}` from {mention(record.requester)}: {describe_action(record)}."
        f" Waiting for an approver.{expires}"
    )


def card_decided(record: RequestRecord) -> str:
    head = f"Request `{record.id}` from {mention(record.requester)}: {describe_action(record)}."
    at = hhmm(record.decided_at) if record.decided_at else ""
    by = mention(record.decided_by) if record.decided_by else "nobody"
    if record.state is State.DENIED:
        return f"{head}\nDenied by {by} at {at}: {escape(record.reason)}"
    if record.state is State.EXPIRED:
        return f"{head}\nExpired at {at}: nobody decided in time."
    return f"{head}\nApproved by {by} at {at}."


def filed(record: RequestRecord) -> str:
    return f"Filed `{record.id}`; approvers were asked. `/kubeflow status {record.id}` shows it."


def approved_reply(record: RequestRecord) -> str:
    return (
        f"Approved by {mention(record.decided_by or '?')}. {mention(record.requester)}, "
        f"`{record.id}` is queued; progress follows in this thread."
    )


def approved_directly(record: RequestRecord) -> str:
    who = mention(record.requester)
    return f"{who} is an approver: `{record.id}` queued ({describe_action(record)})."


def denied_reply(record: RequestRecord) -> str:
    return (
        f"{mention(record.requester)}, `{record.id}` was denied by "
        f"{mention(record.decided_by or '?')}: {escape(record.reason)}"
    )


def expired_reply(record: RequestRecord) -> str:
    return f"{mention(record.requester)}, `{record.id}` expired without a decision."


def queue_failed(record: RequestRecord) -> str:
    return f"`{record.id}` is approved but could not be queued yet; the bot retries on its own."


_MARK = {
    StepStatus.PENDING: "[ ]",
    StepStatus.RUNNING: "[~]",
    StepStatus.DONE: "[x]",
    StepStatus.PLANNED: "[p]",
    StepStatus.SKIPPED: "[-]",
    StepStatus.FAILED: "[!]",
}


def checklist(record: RequestRecord) -> str:
    lines = [f"`{record.id}` {record.deployment}: {record.state}"]
    for step in record.steps:
        took = f" ({step.seconds:.1f}s)" if step.seconds else ""
        detail = f": {step.detail}" if step.detail else ""
        lines.append(f"{_MARK[step.status]} {step.title}{detail}{took}")
    return "\n".join(lines)


# Steps whose completion is worth a thread reply of its own, not just a checklist tick.
MILESTONES: dict[str, str] = {
    "cluster": "the GKE cluster is running",
    "gpu_pool": "the GPU node pool is ready",
    "kubeflow": "Kubeflow is installed; putting IAP in front of it next",
}


def milestone(record: RequestRecord, step: StepReport) -> str:
    took = f" ({step.seconds:.0f}s)" if step.seconds else ""
    return f"`{record.id}` {record.deployment}: {MILESTONES[step.name]}{took}."


def plan_text(name: str, steps: Sequence[StepReport]) -> str:
    lines = [f"Plan for `{name}` (dry-run: every API call the worker would make, nothing created):"]
    for number, step in enumerate(steps, start=1):
        detail = f": {step.detail}" if step.detail else ""
        lines.append(f"{number}. {step.title}{detail}")
        lines.extend(f"    {call}" for call in step.calls)
    return "\n".join(lines)


def succeeded_reply(record: RequestRecord, *, dry_run: bool) -> str:
    action = record.action
    who = mention(record.requester)
    if isinstance(action, CreateAction):
        spec = action.spec
        if dry_run:
            return (
                f"{who}, dry-run of `{record.id}` finished: nothing was created.\n"
                f"{plan_text(spec.name, record.steps)}\n"
                f"URL it would have: {spec.url} (dry-run)"
            )
        return (
            f"{who}, `{spec.name}` is ready: {spec.url}\n"
            f"GPUs: {gpu_summary(spec)}.\n"
            f"Add people with `/kubeflow grant EMAIL {spec.name}`."
        )
    note = " (dry-run: nothing was changed)" if dry_run else ""
    if isinstance(action, GrantAction):
        detail = record.steps[0].detail if record.steps else ""
        return f"{who}, `{record.id}`: {detail or 'access granted'}{note}."
    if isinstance(action, RevokeAction):
        detail = record.steps[0].detail if record.steps else ""
        return f"{who}, `{record.id}`: {detail or 'access revoked'}{note}."
    return f"{who}, `{record.deployment}` is deleted{note}."


def failed_reply(record: RequestRecord, reason: str, *, will_retry: bool) -> str:
    then = (
        "The bot will try again." if will_retry else "It will not be retried; file a new request."
    )
    return f"{mention(record.requester)}, `{record.id}` failed. {reason} {then}"


_SLACK_USER = re.compile(r"[UW][A-Z0-9_]{1,30}")


def _actor(actor: str) -> str:
    # People are Slack user ids; the bot and its worker act under their own names.
    return mention(actor) if _SLACK_USER.fullmatch(actor) else actor


def history_lines(record: RequestRecord) -> list[str]:
    """The request's audit trail: every state it went through, when and by whom."""
    lines = ["History:"]
    for entry in record.history:
        detail = f" ({escape(entry.detail)})" if entry.detail else ""
        lines.append(
            f"{entry.at.strftime('%Y-%m-%d %H:%M UTC')} {entry.event} by "
            f"{_actor(entry.actor)}{detail}"
        )
    return lines


def status_text(record: RequestRecord) -> str:
    lines = [
        f"`{record.id}` ({record.kind}) by {mention(record.requester)}: {record.state}",
        describe_action(record),
    ]
    if record.reason:
        lines.append(f"Reason: {escape(record.reason)}")
    finished = (StepStatus.DONE, StepStatus.PLANNED, StepStatus.SKIPPED)
    done = [s for s in record.steps if s.status in finished]
    if record.steps:
        lines.append(f"Steps done: {len(done)}/{len(record.steps)}")
        lines.extend(checklist(record).splitlines()[1:])
    if record.url:
        lines.append(f"URL: {record.url}")
    if isinstance(record.action, GrantAction | RevokeAction):
        # Who gave or took access, and who approved it, is what an access review asks.
        lines.extend(history_lines(record))
    return "\n".join(lines)


def no_requests() -> str:
    return "You have no requests. `/kubeflow create NAME` files one."


def age(created: datetime, now: datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def deployments_table(rows: Sequence[tuple[RequestRecord, str]], now: datetime) -> str:
    """``rows``: the create record of each deployment and its state word."""
    if not rows:
        return "No deployments yet. `/kubeflow create NAME` files one."
    lines = ["Deployments:"]
    for record, state in rows:
        assert isinstance(record.action, CreateAction)
        spec = record.action.spec
        gpu = f"{spec.gpu.count}x {spec.gpu.type}" if spec.gpu else "no GPU"
        url = record.url or spec.url
        lines.append(
            f"`{spec.name}` {state}, {gpu}, owner {mention(record.requester)}, "
            f"age {age(record.created_at, now)}, {url} (`{record.id}`)"
        )
    return "\n".join(lines)
