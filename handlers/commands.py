"""``/kubeflow`` subcommands: parse, check policy, store, answer.

Called for every slash command, by the Slack listener ``bot`` registers and by the
console, with who typed it, where, and how to answer them privately.  Commands that
need nothing but the text (a usage error, help) have ``quick_answer``: Slack shows it
as the acknowledgement itself, with no API call.  The rest go through ``handle``, off the
request thread: requests are stored and announced, approved ones are published; the
worker does the rest.  Every refusal is a private one-line reason (plus usage for
malformed commands) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from handlers import messages
from handlers.approvals import Approvals
from handlers.chat import ChatError
from handlers.deployments import Deployment, deployment, deployments
from handlers.deps import Deps
from handlers.grammar import (
    CreateCommand,
    DeleteCommand,
    GrantCommand,
    HelpCommand,
    ListCommand,
    RevokeCommand,
    StatusCommand,
    UsageError,
    help_text,
    parse_command,
)
from provisioning import planner
from provisioning.actions import Action, CreateAction, DeleteAction, GrantAction, RevokeAction
from provisioning.ids import is_request_id
from provisioning.records import HistoryEntry, RequestRecord, State
from provisioning.store import DeploymentBusy, DuplicateRequest

_ID_ATTEMPTS = 5

# Answers the person who typed the command, privately.
Reply = Callable[[str], None]


@dataclass(frozen=True)
class Invocation:
    """Who typed a command, in which channel, and how to answer them."""

    user: str
    channel: str
    reply: Reply


def _minute_up(at: datetime) -> datetime:
    """``at`` rounded up to a whole minute: an end date is shown to the minute, so that is
    what it is."""
    floor = at.replace(second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(minutes=1)


class Commands:
    def __init__(self, deps: Deps, approvals: Approvals) -> None:
        self._d = deps
        self._approvals = approvals

    def quick_answer(self, text: str) -> str | None:
        """The answer to a malformed command or to ``help``, or None for the others.

        Pure and cheap (a parse, no store), so it may run before Slack's ack; even
        reading the store there measurably slows every ack under load."""
        try:
            command = parse_command(text, self._d.policy)
        except UsageError as e:
            return str(e)
        if isinstance(command, HelpCommand):
            return help_text(command.topic, policy=self._d.policy)
        return None

    def handle(self, user: str, channel: str, text: str, *, reply: Reply | None = None) -> None:
        """Act on the text after ``/kubeflow`` typed by ``user`` in ``channel``.

        Private answers go through ``reply``, or as ephemeral messages in ``channel``."""
        who = Invocation(
            user, channel, reply or (lambda said: self._d.chat.ephemeral(channel, user, said))
        )
        quick = self.quick_answer(text)
        if quick is not None:
            who.reply(quick)
            return
        command = parse_command(text, self._d.policy)
        match command:
            case StatusCommand():
                who.reply(self._status(user, command))
            case CreateCommand():
                self._create(who, command)
            case GrantCommand() | RevokeCommand():
                self._access(who, command)
            case DeleteCommand():
                self._delete(who, command)
            case ListCommand():
                now = self._d.clock()
                rows = [(dep.create, dep.state) for dep in deployments(self._d.store).values()]
                who.reply(messages.deployments_table(rows, now))

    def _new_record(self, user: str, channel: str, action: Action) -> RequestRecord:
        now = self._d.clock()
        return RequestRecord(
            id=self._d.new_id(),
            action=action,
            requester=user,
            channel=channel,
            created_at=now,
            updated_at=now,
            expires_at=now + self._d.policy.approval_ttl,
            history=(HistoryEntry(at=now, actor=user, event="filed"),),
        )

    def _file(
        self,
        who: Invocation,
        action: Action,
        *,
        channel: str | None = None,
        thread_ts: str | None = None,
        directly: bool = False,
    ) -> RequestRecord | None:
        """File ``action`` for ``who`` in ``channel`` (theirs by default)."""
        for _ in range(_ID_ATTEMPTS):
            record = self._new_record(who.user, channel or who.channel, action)
            try:
                if directly:
                    return self._approvals.approve_directly(record, thread_ts=thread_ts)
                return self._approvals.file(record, thread_ts=thread_ts)
            except DuplicateRequest:
                continue  # a random id collided with an old one: draw another
            except DeploymentBusy as e:
                who.reply(messages.deployment_busy(e.holder))
                return None
            except ChatError as e:
                # The record was cancelled again (Approvals.file): say why, keep nothing.
                who.reply(messages.card_not_posted(e.code))
                return None
        raise RuntimeError("could not draw an unused request id")

    def _create(self, who: Invocation, command: CreateCommand) -> None:
        refusal = self._d.authz.may_request(who.user)
        if refusal:
            who.reply(refusal)
            return
        spec = command.spec
        existing = deployment(self._d.store, spec.name)
        if existing and existing.create.active:
            who.reply(messages.deployment_busy(existing.create))
            return
        if existing and existing.ready:
            who.reply(messages.deployment_exists(spec.name, existing.create.id))
            return
        action = CreateAction(spec=spec, requester_email=self._d.directory.email_of(who.user))
        if command.dry_run:
            steps = planner.plan(action, request_id="kf-dryrun", requester=who.user)
            who.reply(messages.plan_text(spec.name, steps) + f"\nURL: {spec.url} (dry-run)")
            return
        record = self._file(who, action)
        if record is not None:
            who.reply(messages.filed(record))

    def _find(
        self, who: Invocation, name: str | None, *, failed_too: bool = False
    ) -> Deployment | None:
        """The ready deployment ``name`` (or the only one); with ``failed_too`` also one
        whose create failed, so that its leftovers can be deleted."""

        def usable(dep: Deployment | None) -> bool:
            return dep is not None and (
                dep.ready or (failed_too and dep.create.state is State.FAILED)
            )

        if name is not None:
            dep = deployment(self._d.store, name)
            if dep is not None and usable(dep):
                return dep
        # No name, or not a usable one: look at them all to answer.
        known = deployments(self._d.store)
        ready = sorted(n for n, dep in known.items() if usable(dep))
        if name is None and len(ready) == 1:
            return known[ready[0]]
        if name is None:
            who.reply(messages.which_deployment(ready))
        else:
            who.reply(messages.no_such_deployment(name, ready))
        return None

    def _access(self, who: Invocation, command: GrantCommand | RevokeCommand) -> None:
        approver = self._d.authz.is_approver(who.user)
        if isinstance(command, RevokeCommand) and not approver:
            who.reply(messages.REVOKE_APPROVERS_ONLY)
            return
        if not approver:
            refusal = self._d.authz.may_request(who.user)
            if refusal:
                who.reply(refusal)
                return
        dep = self._find(who, command.name)
        if dep is None:
            return
        action: GrantAction | RevokeAction
        if isinstance(command, GrantCommand):
            until = (
                None if command.duration is None else _minute_up(self._d.clock()) + command.duration
            )
            action = GrantAction(
                email=command.email,
                deployment=dep.name,
                project=dep.create.project,
                expires_at=until,
            )
        else:
            action = RevokeAction(
                email=command.email, deployment=dep.name, project=dep.create.project
            )
        # Answered in the deployment's own thread, where its people already look.
        record = self._file(
            who,
            action,
            channel=dep.create.channel,
            thread_ts=dep.create.thread_ts,
            directly=approver,
        )
        if record is not None and not approver:
            who.reply(messages.filed(record))

    def _delete(self, who: Invocation, command: DeleteCommand) -> None:
        dep = self._find(who, command.name, failed_too=True)
        if dep is None:
            return
        refusal = self._d.authz.may_delete(dep.create.requester, who.user)
        if refusal:
            who.reply(refusal)
            return
        assert isinstance(dep.create.action, CreateAction)
        spec = dep.create.action.spec
        action = DeleteAction(deployment=spec.name, project=spec.project, zone=spec.zone)
        record = self._file(who, action, channel=dep.create.channel, thread_ts=dep.create.thread_ts)
        if record is not None:
            who.reply(messages.filed(record))

    def _status(self, user: str, command: StatusCommand) -> str:
        store = self._d.store
        target = command.target
        if target is None:
            mine = [self._approvals.refresh(r) for r in store.list(requester=user, limit=5)]
            return "\n\n".join(messages.status_text(r) for r in mine) or messages.no_requests()
        if is_request_id(target):
            record = store.get(target)
            if record is None:
                return messages.no_such_request(target)
            return messages.status_text(self._approvals.refresh(record))
        dep = deployment(store, target)
        if dep is not None:
            # The deployment itself (its create request), and a delete under way if any.
            shown = [dep.create] + ([dep.deleting] if dep.deleting else [])
            return "\n\n".join(messages.status_text(self._approvals.refresh(r)) for r in shown)
        latest = store.list(deployment=target, limit=1)
        if not latest:
            return messages.no_such_deployment(target, sorted(deployments(store)))
        return messages.status_text(self._approvals.refresh(latest[0]))
