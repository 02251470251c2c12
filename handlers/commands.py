"""``/kubeflow`` subcommands: parse, check policy, store, answer.

Called for every slash command, by the Slack listener ``bot`` registers and by the
console, with who typed it and where.  Nothing slow happens here: requests are stored
and announced, approved ones are published; the worker does the rest.  Every refusal is
an ephemeral one-line reason (plus usage for malformed commands) and changes nothing.
"""

from __future__ import annotations

from handlers import messages
from handlers.approvals import Approvals
from handlers.deployments import Deployment, deployments
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


class Commands:
    def __init__(self, deps: Deps, approvals: Approvals) -> None:
        self._d = deps
        self._approvals = approvals

    def handle(self, user: str, channel: str, text: str) -> None:
        """Act on the text after ``/kubeflow`` typed by ``user`` in ``channel``."""
        try:
            command = parse_command(text, self._d.policy)
        except UsageError as e:
            self._tell(channel, user, str(e))
            return
        match command:
            case CreateCommand():
                self._create(user, channel, command)
            case GrantCommand() | RevokeCommand():
                self._access(user, channel, command)
            case DeleteCommand():
                self._delete(user, channel, command)
            case StatusCommand():
                self._status(user, channel, command)
            case ListCommand():
                now = self._d.clock()
                rows = [(dep.create, dep.state) for dep in deployments(self._d.store).values()]
                self._tell(channel, user, messages.deployments_table(rows, now))
            case HelpCommand():
                self._tell(channel, user, help_text(command.topic, policy=self._d.policy))

    def _tell(self, channel: str, user: str, text: str) -> None:
        self._d.chat.ephemeral(channel, user, text)

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
        user: str,
        channel: str,
        action: Action,
        *,
        thread_ts: str | None = None,
        directly: bool = False,
    ) -> RequestRecord | None:
        for _ in range(_ID_ATTEMPTS):
            record = self._new_record(user, channel, action)
            try:
                if directly:
                    return self._approvals.approve_directly(record, thread_ts=thread_ts)
                return self._approvals.file(record, thread_ts=thread_ts)
            except DuplicateRequest:
                continue  # a random id collided with an old one: draw another
            except DeploymentBusy as e:
                self._tell(channel, user, messages.deployment_busy(e.holder))
                return None
        raise RuntimeError("could not draw an unused request id")

    def _create(self, user: str, channel: str, command: CreateCommand) -> None:
        refusal = self._d.authz.may_request(user)
        if refusal:
            self._tell(channel, user, refusal)
            return
        spec = command.spec
        existing = deployments(self._d.store).get(spec.name)
        if existing and (existing.ready or existing.create.active):
            if existing.create.active:
                self._tell(channel, user, messages.deployment_busy(existing.create))
            else:
                self._tell(channel, user, messages.deployment_exists(spec.name, existing.create.id))
            return
        action = CreateAction(spec=spec, requester_email=self._d.directory.email_of(user))
        if command.dry_run:
            steps = planner.plan(action, request_id="kf-dryrun", requester=user)
            self._tell(
                channel, user, messages.plan_text(spec.name, steps) + f"\nURL: {spec.url} (dry-run)"
            )
            return
        record = self._file(user, channel, action)
        if record is not None:
            self._tell(channel, user, messages.filed(record))

    def _find(
        self, user: str, channel: str, name: str | None, *, failed_too: bool = False
    ) -> Deployment | None:
        """The ready deployment ``name`` (or the only one); with ``failed_too`` also one
        whose create failed, so that its leftovers can be deleted."""
        known = deployments(self._d.store)
        ready = sorted(
            n
            for n, dep in known.items()
            if dep.ready or (failed_too and dep.create.state is State.FAILED)
        )
        if name is None:
            if len(ready) == 1:
                return known[ready[0]]
            self._tell(channel, user, messages.which_deployment(ready))
            return None
        dep = known.get(name)
        if dep is None or name not in ready:
            self._tell(channel, user, messages.no_such_deployment(name, ready))
            return None
        return dep

    def _access(self, user: str, channel: str, command: GrantCommand | RevokeCommand) -> None:
        approver = self._d.authz.is_approver(user)
        if isinstance(command, RevokeCommand) and not approver:
            self._tell(channel, user, messages.REVOKE_APPROVERS_ONLY)
            return
        if not approver:
            refusal = self._d.authz.may_request(user)
            if refusal:
                self._tell(channel, user, refusal)
                return
        dep = self._find(user, channel, command.name)
        if dep is None:
            return
        kind = GrantAction if isinstance(command, GrantCommand) else RevokeAction
        action = kind(email=command.email, deployment=dep.name, project=dep.create.project)
        # Answered in the deployment's own thread, where its people already look.
        record = self._file(
            user, dep.create.channel, action, thread_ts=dep.create.thread_ts, directly=approver
        )
        if record is not None and not approver:
            self._tell(channel, user, messages.filed(record))

    def _delete(self, user: str, channel: str, command: DeleteCommand) -> None:
        dep = self._find(user, channel, command.name, failed_too=True)
        if dep is None:
            return
        refusal = self._d.authz.may_delete(dep.create.requester, user)
        if refusal:
            self._tell(channel, user, refusal)
            return
        assert isinstance(dep.create.action, CreateAction)
        spec = dep.create.action.spec
        action = DeleteAction(deployment=spec.name, project=spec.project, zone=spec.zone)
        record = self._file(user, dep.create.channel, action, thread_ts=dep.create.thread_ts)
        if record is not None:
            self._tell(channel, user, messages.filed(record))

    def _status(self, user: str, channel: str, command: StatusCommand) -> None:
        store = self._d.store
        target = command.target
        if target is None:
            mine = [self._approvals.refresh(r) for r in store.list(requester=user, limit=5)]
            text = "\n\n".join(messages.status_text(r) for r in mine) or messages.no_requests()
            self._tell(channel, user, text)
            return
        if is_request_id(target):
            record = store.get(target)
            if record is None:
                self._tell(channel, user, messages.no_such_request(target))
                return
            self._tell(channel, user, messages.status_text(self._approvals.refresh(record)))
            return
        known = deployments(store)
        dep = known.get(target)
        if dep is not None:
            # The deployment itself (its create request), and a delete under way if any.
            shown = [dep.create] + ([dep.deleting] if dep.deleting else [])
            text = "\n\n".join(messages.status_text(self._approvals.refresh(r)) for r in shown)
            self._tell(channel, user, text)
            return
        latest = store.list(deployment=target, limit=1)
        if not latest:
            self._tell(channel, user, messages.no_such_deployment(target, sorted(known)))
            return
        self._tell(channel, user, messages.status_text(self._approvals.refresh(latest[0])))
