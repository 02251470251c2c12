"""Who may do what, decided in one place from the policy.

Called by the command and approval handlers before they act.  Approvers are the
policy's user ids, plus members of its user groups and the users behind its emails,
both looked up through the chat ``Directory`` and cached for ``cache_seconds`` so a
burst of clicks does not become a burst of API calls.  Each check returns None when
allowed, or the refusal text to show the user.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from handlers import messages
from handlers.chat import Directory
from handlers.policy import People, Policy
from provisioning.records import RequestRecord, State


class Authz:
    def __init__(
        self,
        policy: Policy,
        directory: Directory,
        *,
        cache_seconds: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._directory = directory
        self._ttl = cache_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, frozenset[str]]] = {}

    def _resolve(self, people: People) -> frozenset[str]:
        key = id(people)
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self._ttl:
                return hit[1]
        users = set(people.users)
        complete = True
        for handle in people.groups:
            members = self._directory.group_members(handle.lstrip("@"))
            complete &= bool(members)
            users |= members
        for email in people.emails:
            user = self._directory.user_for_email(email)
            complete &= user is not None
            if user:
                users.add(user)
        resolved = frozenset(users)
        # An empty group or an unknown email may be a look-up that failed for a moment:
        # only a complete answer is kept, so an approver is not refused for minutes.
        if complete:
            with self._lock:
                self._cache[key] = (now, resolved)
        return resolved

    def is_approver(self, user: str) -> bool:
        return user in self._resolve(self._policy.approvers)

    def may_request(self, user: str) -> str | None:
        if self._policy.requesters.empty or self.is_approver(user):
            return None
        if user in self._resolve(self._policy.requesters):
            return None
        return messages.NOT_A_REQUESTER

    def may_decide(self, record: RequestRecord, user: str, *, approving: bool) -> str | None:
        """Why ``user`` may not approve (or deny) ``record`` now, or None.

        Only approvers decide; four-eyes keeps them from approving, not from denying,
        their own request."""
        if not self.is_approver(user):
            return messages.not_an_approver(record.id)
        if record.state is not State.PENDING:
            return messages.already_decided(record)
        if approving and self._policy.four_eyes and record.requester == user:
            return messages.OWN_REQUEST
        return None

    def may_delete(self, owner: str, user: str) -> str | None:
        if user == owner or self.is_approver(user):
            return None
        return messages.NOT_OWNER
