"""Objects refused by a webhook of the bundle, waiting for its server to be up.

Called by ``kube_apply_run.ApplyRun`` when a webhook refused an object: ``hold`` takes
the object if the webhook calls a Service of the bundle whose pods a Deployment of the
bundle runs (``kube_rollout.webhook_backends``).  Those Deployments are polled
(``kube_polls``) until one is Available, and the held objects are started again at once,
rather than on a blind backoff schedule that could leave them waiting seconds after the
server came up; past the deadline they are given up with the refusal's reason.  Only
once per webhook: refused again after its Deployment was seen Available (its
certificate not injected yet, say), an object goes to the run's ordinary retry rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Generic, TypeVar

from kubernetes.client.exceptions import ApiException

from provisioning.kube_bundle import Desired
from provisioning.kube_http import KubeHttp
from provisioning.kube_object_apply import Refused
from provisioning.kube_polls import Polls
from provisioning.kube_rollout import DEPLOYMENTS_PATH, NamespacedName, available, webhook_backends

# Polls of the Deployments behind a webhook (seconds, growing by half each time):
# webhook servers take seconds to tens of seconds to start.
BACKEND_POLL = 0.25
MAX_BACKEND_POLL = 1.0

Task = TypeVar("Task")


class WebhookWaits(Generic[Task]):
    """The objects held for webhook servers during one apply (the run's thread only)."""

    def __init__(
        self,
        *,
        http: KubeHttp,
        items: Sequence[Desired],
        polls: Polls,
        deadline: float,
        start: Callable[[Task], None],
        give_up: Callable[[Task, str], None],
    ) -> None:
        self._http = http
        self._backends = webhook_backends(items)
        self._polls = polls
        self._deadline = deadline
        self._start = start
        self._give_up = give_up
        self._seen_up: set[str] = set()
        self._held: dict[str, list[tuple[Task, Refused]]] = {}

    def hold(self, task: Task, refused: Refused, now: float) -> bool:
        """Whether ``task`` is held until its webhook's server is up (else: back off)."""
        hook = refused.webhook
        if hook is None or hook not in self._backends or hook in self._seen_up:
            return False
        if now >= self._deadline:
            return False
        self._held.setdefault(hook, []).append((task, refused))
        self._polls.add(
            ("webhook", hook),
            now=now,
            check=partial(self._any_available, self._backends[hook]),
            on_result=partial(self._polled, hook),
            on_expiry=partial(self._expired, hook),
            first=BACKEND_POLL,
            longest=MAX_BACKEND_POLL,
            until=self._deadline,
        )
        return True

    def _any_available(self, deployments: Sequence[NamespacedName]) -> bool:
        """Whether one of ``deployments`` is Available (on the poll pool)."""
        for namespace, name in deployments:
            try:
                found = self._http.get(DEPLOYMENTS_PATH.format(namespace=namespace, name=name))
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            if available(found):
                return True
        return False

    def _polled(self, hook: str, up: bool) -> bool:
        if not up:
            return False
        self._seen_up.add(hook)
        for task, _ in self._held.pop(hook, []):
            self._start(task)
        return True

    def _expired(self, hook: str) -> None:
        for task, refused in self._held.pop(hook, []):
            self._give_up(task, refused.why)
