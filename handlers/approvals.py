"""The approval flow: file a request with its card, approve, deny, expire, queue.

Called by the command handlers (filing), by the button and modal listeners that ``bot``
registers (approve, deny), by the console's ``approve``/``deny`` lines, and by the
sweeper (expiry, re-queueing).  Every decision is one compare-and-set transition in the
store, so double clicks, two approvers at once and replayed payloads decide a request
at most once and queue it at most once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from handlers import cards, messages
from handlers.deps import Deps
from provisioning.ids import is_request_id
from provisioning.queue_message import QueueMessage
from provisioning.records import MessageRef, RequestRecord, State
from provisioning.store import TransitionRefused

log = logging.getLogger(__name__)

STRANDED_AFTER = timedelta(minutes=1)
# A queued or running request nobody has touched for this long, with no live lease, has
# lost its queue message (a worker died and the queue did not give the message back):
# longer than the longest a worker defers a request (10 minutes) and its lease.
STALE_AFTER = timedelta(minutes=20)


class Approvals:
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    # Filing

    def file(self, record: RequestRecord, *, thread_ts: str | None = None) -> RequestRecord:
        """Store a new pending record (the caller handles DeploymentBusy) and post its
        card: in ``thread_ts``'s thread when given, else as a new thread root."""
        d = self._d
        d.store.add(record)
        try:
            root = d.chat.post(
                record.channel,
                messages.request_card(record),
                thread_ts=thread_ts,
                blocks=cards.pending_card(record),
            )
        except Exception:
            # Nobody can see or click a request without its card: free the name again.
            d.store.transition(
                record.id,
                expected={State.PENDING},
                new=State.CANCELLED,
                actor="kubeflow-bot",
                at=d.clock(),
                detail="its card could not be posted",
            )
            raise
        refs = [root]
        if d.policy.approvals_channel and d.policy.approvals_channel != record.channel:
            refs.append(
                d.chat.post(
                    d.policy.approvals_channel,
                    messages.request_card(record),
                    blocks=cards.pending_card(record),
                )
            )
        return d.store.update(
            record.id,
            changes={"thread_ts": thread_ts or root.ts, "cards": tuple(refs)},
            at=d.clock(),
        )

    def approve_directly(self, record: RequestRecord, *, thread_ts: str | None) -> RequestRecord:
        """An approver's own grant or revoke: stored approved, announced, queued."""
        d = self._d
        now = d.clock()
        record = record.model_copy(update={"thread_ts": thread_ts})
        d.store.add(record)
        record = d.store.transition(
            record.id,
            expected={State.PENDING},
            new=State.APPROVED,
            actor=record.requester,
            at=now,
            detail="approver acting directly",
            changes={"decided_by": record.requester, "decided_at": now},
        )
        ref = d.chat.post(record.channel, messages.approved_directly(record), thread_ts=thread_ts)
        record = d.store.update(record.id, changes={"thread_ts": thread_ts or ref.ts}, at=d.clock())
        return self._enqueue(record)

    # Decisions

    def _load(self, user: str, channel: str, request_id: str) -> RequestRecord | None:
        record = self._d.store.get(request_id) if is_request_id(request_id) else None
        if record is None:
            self._d.chat.ephemeral(channel, user, messages.no_such_request(request_id))
            return None
        return self._expire_if_due(record)

    def approve(self, user: str, channel: str, request_id: str) -> RequestRecord | None:
        d = self._d
        record = self._load(user, channel, request_id)
        if record is None:
            return None
        refusal = d.authz.may_decide(record, user, approving=True)
        if refusal:
            d.chat.ephemeral(channel, user, refusal)
            return None
        now = d.clock()
        try:
            record = d.store.transition(
                record.id,
                expected={State.PENDING},
                new=State.APPROVED,
                actor=user,
                at=now,
                changes={"decided_by": user, "decided_at": now},
            )
        except TransitionRefused as e:
            # Someone else decided between our read and our write.
            d.chat.ephemeral(channel, user, messages.already_decided(e.current))
            return None
        self._update_cards(record)
        self._reply(record, messages.approved_reply(record))
        return self._enqueue(record)

    def check_deny(self, user: str, channel: str, request_id: str) -> RequestRecord | None:
        """The record ``user`` may deny now, or None after telling them why not.

        The Deny button asks this before opening the reason dialog, so nobody types a
        reason only to be refused."""
        record = self._load(user, channel, request_id)
        if record is None:
            return None
        refusal = self._d.authz.may_decide(record, user, approving=False)
        if refusal:
            self._d.chat.ephemeral(channel, user, refusal)
            return None
        return record

    def deny(self, user: str, channel: str, request_id: str, reason: str) -> RequestRecord | None:
        d = self._d
        record = self._load(user, channel, request_id)
        if record is None:
            return None
        refusal = d.authz.may_decide(record, user, approving=False)
        if refusal:
            d.chat.ephemeral(channel, user, refusal)
            return None
        reason = " ".join(reason.split())
        if not reason:
            d.chat.ephemeral(channel, user, messages.DENY_NEEDS_REASON)
            return None
        now = d.clock()
        try:
            record = d.store.transition(
                record.id,
                expected={State.PENDING},
                new=State.DENIED,
                actor=user,
                at=now,
                detail=reason,
                changes={"decided_by": user, "decided_at": now, "reason": reason},
            )
        except TransitionRefused as e:
            d.chat.ephemeral(channel, user, messages.already_decided(e.current))
            return None
        self._update_cards(record)
        self._reply(record, messages.denied_reply(record))
        return record

    # Time and recovery

    def _expire_if_due(self, record: RequestRecord) -> RequestRecord:
        d = self._d
        now = d.clock()
        if (
            record.state is not State.PENDING
            or record.expires_at is None
            or now < record.expires_at
        ):
            return record
        try:
            record = d.store.transition(
                record.id,
                expected={State.PENDING},
                new=State.EXPIRED,
                actor="kubeflow-bot",
                at=now,
                changes={"decided_at": now},
            )
        except TransitionRefused as e:
            return e.current
        self._update_cards(record)
        self._reply(record, messages.expired_reply(record))
        return record

    def refresh(self, record: RequestRecord) -> RequestRecord:
        """``record`` as it stands now (a pending one past its TTL becomes expired)."""
        return self._expire_if_due(record)

    def expire_due(self) -> int:
        """Expire every pending request past its approval TTL; returns how many."""
        expired = 0
        for record in self._d.store.list(states={State.PENDING}, limit=10_000):
            if self._expire_if_due(record).state is State.EXPIRED:
                expired += 1
        return expired

    def requeue_stranded(
        self, *, older_than: timedelta = STRANDED_AFTER, stale_after: timedelta = STALE_AFTER
    ) -> int:
        """Publish requests whose queue message is missing; returns how many.

        Approved ones whose publish failed, once approved at least ``older_than`` ago (so
        one being published right now is not published twice); and queued or running
        ones with no live lease and no activity for ``stale_after``.  A message too many
        does no harm: the worker reads the stored request, and its lease lets one
        delivery act at a time."""
        count = 0
        now = self._d.clock()
        cutoff = now - older_than
        for record in self._d.store.list(states={State.APPROVED}, limit=10_000):
            if record.decided_at and record.decided_at > cutoff:
                continue
            if self._enqueue(record).state is State.QUEUED:
                count += 1
        idle_since = now - stale_after
        for record in self._d.store.list(states={State.QUEUED, State.RUNNING}, limit=10_000):
            leased = record.lease_until is not None and record.lease_until > now
            if leased or record.updated_at > idle_since:
                continue
            try:
                self._d.queue.publish(self._message(record))
            except Exception:
                log.exception("could not re-queue %s", record.id)
                continue
            log.info(
                "re-queued %s: %s and idle since %s", record.id, record.state, record.updated_at
            )
            count += 1
        return count

    def _message(self, record: RequestRecord) -> QueueMessage:
        return QueueMessage(
            request_id=record.id,
            action=record.action,
            approved_by=record.decided_by or "?",
            approved_at=record.decided_at or self._d.clock(),
        )

    def _enqueue(self, record: RequestRecord) -> RequestRecord:
        d = self._d
        try:
            d.queue.publish(self._message(record))
        except Exception:
            log.exception("could not queue %s", record.id)
            self._reply(record, messages.queue_failed(record))
            return record
        try:
            return d.store.transition(
                record.id,
                expected={State.APPROVED},
                new=State.QUEUED,
                actor="kubeflow-bot",
                at=d.clock(),
            )
        except TransitionRefused as e:
            # The worker was faster and already took it (APPROVED -> QUEUED -> RUNNING).
            return e.current

    # Chat

    def _update_cards(self, record: RequestRecord) -> None:
        for ref in record.cards:
            try:
                self._d.chat.update(
                    ref, messages.card_decided(record), blocks=cards.decided_card(record)
                )
            except Exception:
                log.exception("could not update the card of %s", record.id)

    def _reply(self, record: RequestRecord, text: str) -> MessageRef | None:
        try:
            return self._d.chat.post(record.channel, text, thread_ts=record.thread_ts)
        except Exception:
            log.exception("could not reply in the thread of %s", record.id)
            return None
