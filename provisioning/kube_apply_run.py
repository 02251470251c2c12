"""One apply of a bundle: each object goes out as soon as what it needs is in place.

Called by ``kube_applier.KubeApplier.apply``, once per call, after the applier has read
discovery for the bundle's group-versions and, on a cluster that already has the bundle,
the digests of what is stored.  Runs on the caller's thread; requests run on the
applier's pools (one for applies, a small one for polls).

What waits for what (the orderings a fresh cluster needs; nothing else waits):

* an object in one of the bundle's Namespaces, for that Namespace;
* an object of a kind that one of the bundle's CustomResourceDefinitions defines, for
  that CRD to be Established (a CRD not Established ``settle_seconds`` after it was
  applied is reported "to be established");
* admission webhook configurations, for every other object to be applied or given up,
  so that nothing of the bundle meets a webhook whose server is not running yet.

So Namespaces and CRDs go out first, everything else right behind them while the CRDs
are being established, custom resources as their kinds appear, webhook configurations
last.  A refusal that time cures (``kube_object_apply.Refused``) is retried until the
deadline, past which the object is reported as waiting (or, for a kind that neither the
cluster nor the bundle defines, fails the apply): when a webhook of the bundle refused
it, as soon as that webhook's server is up, otherwise in retry rounds that back off
from ``FIRST_BACKOFF`` to ``MAX_BACKOFF`` seconds.  The two waits on the cluster are
``kube_crd_waits`` and ``kube_webhook_waits``; their polls' timing, ``kube_polls``.
"""

from __future__ import annotations

import heapq
import queue
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from provisioning.errors import PermanentError
from provisioning.kube_bundle import BundleKinds, DefinedKind, Desired, scoped
from provisioning.kube_crd_waits import CrdWaits, KindKey
from provisioning.kube_discovery import Discovery, ServedKind
from provisioning.kube_http import KubeHttp
from provisioning.kube_object_apply import Refused, apply_object, unserved
from provisioning.kube_polls import Polls
from provisioning.kube_progress import Progress
from provisioning.kube_webhook_waits import WebhookWaits

# Backoff between retry rounds of refused objects (seconds, doubled each round).
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 4.0

StoredKey = tuple[str, str, str, str]  # (group, plural, namespace, name)


@dataclass
class Outcome:
    applied: int = 0
    unchanged: int = 0
    waiting_for: list[str] = field(default_factory=list)


@dataclass
class _Task:
    index: int  # in the bundle: what is reported comes out in bundle order
    item: Desired


class ApplyRun:
    """The state of one apply of ``items``; ``run`` once."""

    def __init__(
        self,
        items: Sequence[Desired],
        *,
        http: KubeHttp,
        discovery: Discovery,
        kinds: BundleKinds,
        stored: Mapping[StoredKey, str],
        pool: ThreadPoolExecutor,
        max_parallel: int,
        polls: ThreadPoolExecutor,
        progress: Progress,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        rng: random.Random,
        deadline: float,
        settle_seconds: float,
    ) -> None:
        self._http = http
        self._discovery = discovery
        self._kinds = kinds
        self._stored = stored
        self._pool = pool
        self._max_parallel = max_parallel
        self._progress = progress
        self._clock = clock
        self._sleep = sleep
        self._random = rng
        self._deadline = deadline
        self._tasks = [_Task(i, item) for i, item in enumerate(items)]
        self.outcome = Outcome()
        self._waiting: list[tuple[int, str]] = []
        # Ready to go, best first: the pool is fed from here only as applies finish, so
        # what becomes ready late (custom resources, retries) does not queue behind
        # everything that was ready early.
        self._ready: list[tuple[int, int, _Task, ServedKind]] = []
        self._in_flight: dict[Future[Refused | None], _Task] = {}
        # Finished requests, in the order they finished: waiting on this costs nothing
        # per request in flight, where ``concurrent.futures.wait`` visits them all.
        self._finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self._polls = Polls(polls, self._finished)
        self._namespaces_pending = set(kinds.namespaces)
        self._namespace_waiters: dict[str, list[_Task]] = {}
        self._crd_index = {t.item.name: t.index for t in self._tasks if t.item.is_crd}
        self._crds = CrdWaits[_Task](
            discovery=discovery,
            kinds=kinds,
            polls=self._polls,
            settle_seconds=settle_seconds,
            clock=clock,
            start=self._start,
            give_up=lambda task: self._give_up(task, None),  # its CRD is named instead
            report=self._not_established,
        )
        self._hooks = WebhookWaits[_Task](
            http=http,
            items=items,
            polls=self._polls,
            deadline=deadline,
            start=self._start,
            give_up=self._give_up,
        )
        self._webhooks = [t for t in self._tasks if t.item.is_webhook_configuration]
        self._others_left = len(self._tasks) - len(self._webhooks)
        self._retry: list[_Task] = []
        self._retry_at: float | None = None
        self._backoff = FIRST_BACKOFF

    def run(self) -> Outcome:
        try:
            for task in sorted(
                self._tasks, key=lambda t: (not t.item.is_namespace, not t.item.is_crd)
            ):
                if not task.item.is_webhook_configuration:
                    self._start(task)
            self._loop()
            self._strays()
        except BaseException:
            for future in self._in_flight:
                future.cancel()  # what has not started never will; the pools wait for the rest
            self._polls.cancel()
            raise
        self.outcome.waiting_for = [text for _, text in sorted(self._waiting)]
        return self.outcome

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            if self._others_left == 0 and self._webhooks:
                self._release_webhooks()
            self._feed()
            if not (self._in_flight or self._polls or self._retry):
                return
            due = self._polls.due()
            if self._retry_at is not None:
                due = self._retry_at if due is None else min(due, self._retry_at)
            now = self._clock()
            if self._in_flight or self._polls.busy():
                timeout = None if due is None else max(0.0, due - now)
                for future in self._drain(timeout):
                    if self._polls.owns(future):
                        self._polls.finished(future, self._clock())
                    else:
                        self._applied(future)
            elif due is not None and due > now:
                self._sleep(due - now)
            now = self._clock()
            self._polls.fire(now)
            if self._retry_at is not None and self._retry_at <= now:
                batch, self._retry, self._retry_at = self._retry, [], None
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
                for task in batch:
                    self._start(task)

    def _feed(self) -> None:
        while self._ready and len(self._in_flight) < self._max_parallel:
            _, _, task, served = heapq.heappop(self._ready)
            future = self._pool.submit(apply_object, self._http, served, task.item)
            self._in_flight[future] = task
            future.add_done_callback(self._finished.put)

    def _drain(self, timeout: float | None) -> list[Future[Any]]:
        """What finished: at least one unless ``timeout`` passes, and all there is."""
        try:
            done = [self._finished.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self._finished.get_nowait())
            except queue.Empty:
                return done

    # -- starting an object --------------------------------------------------------------

    def _start(self, task: _Task) -> None:
        item = task.item
        served = self._discovery.kind(item.group, item.version, item.kind)
        defined = self._kinds.defined.get(_key(item))
        if served is None:
            if defined is None:
                self._refused(task, unserved(item))  # nobody defines it: no request
            else:
                self._crds.hold(_key(item), task)
            return
        task.item = item = scoped(item, namespaced=served.namespaced)
        stored = self._stored.get((served.group, served.plural, item.namespace, item.name))
        if stored is not None and stored == item.digest:
            self.outcome.unchanged += 1
            self._settled(task, in_place=True)
            return
        if item.namespace in self._namespaces_pending and not item.is_namespace:
            self._namespace_waiters.setdefault(item.namespace, []).append(task)
            return
        heapq.heappush(self._ready, (_priority(item, defined), task.index, task, served))

    def _release_webhooks(self) -> None:
        webhooks, self._webhooks = self._webhooks, []
        if self._crds.unestablished:
            # Their custom resources are not in yet; webhooks go in after them, next time.
            for task in webhooks:
                self._give_up(task, "after every CustomResourceDefinition is established")
            return
        for task in webhooks:
            self._start(task)

    # -- outcomes ------------------------------------------------------------------------

    def _applied(self, future: Future[Refused | None]) -> None:
        task = self._in_flight.pop(future)
        refused = future.result()  # raises what apply_object raised
        if refused is not None:
            self._refused(task, refused)
            return
        self.outcome.applied += 1
        self._settled(task, in_place=True)

    def _settled(self, task: _Task, *, in_place: bool) -> None:
        """``task`` is done with (``in_place``: applied or unchanged; or given up):
        release what waits for it."""
        item = task.item
        self._progress.advance()
        if not item.is_webhook_configuration:
            self._others_left -= 1
        if item.is_namespace and item.name in self._namespaces_pending:
            self._namespaces_pending.discard(item.name)
            # Given up, they are tried anyway: refused, they are named with the reason.
            for waiter in self._namespace_waiters.pop(item.name, []):
                self._start(waiter)
        if item.is_crd and item.name in self._kinds.by_crd:
            defined = self._kinds.by_crd[item.name]
            if in_place:
                self._crds.watch(defined)
            else:
                self._crds.lost(defined)

    def _refused(self, task: _Task, refused: Refused) -> None:
        if refused.unknown_kind:
            self._discovery.forget(task.item.group, task.item.version)
        now = self._clock()
        if self._hooks.hold(task, refused, now):
            return
        if now + self._backoff > self._deadline:
            self._give_up(task, refused.why, unknown_kind=refused.unknown_kind)
            return
        self._retry.append(task)
        if self._retry_at is None:
            self._retry_at = now + self._backoff * self._random.uniform(0.5, 1.0)

    def _give_up(self, task: _Task, why: str | None, *, unknown_kind: bool = False) -> None:
        item = task.item
        if unknown_kind and _key(item) not in self._kinds.defined:
            raise PermanentError(
                f"{item.ref}: the cluster does not serve {item.kind} "
                f"({item.api_version}) and the bundle does not define it"
            )
        if why is not None:
            self._waiting.append((task.index, f"{item.ref} ({why})"))
        self._settled(task, in_place=False)

    def _not_established(self, crd: str) -> None:
        text = f"CustomResourceDefinition {crd} (to be established)"
        self._waiting.append((self._crd_index.get(crd, -1), text))

    def _strays(self) -> None:
        """Objects still waiting when nothing else can happen: named, never dropped."""
        strays = [t for ts in self._namespace_waiters.values() for t in ts]
        strays += self._crds.strays()
        self._namespace_waiters.clear()
        for task in strays:
            self._give_up(task, "what it needs to be applied first")
        if self._webhooks:
            self._loop()


def _priority(item: Desired, defined: DefinedKind | None) -> int:
    """Namespaces and CRDs first, since the most waits on them; custom resources next,
    since they become ready last; webhook configurations go when nothing else is left."""
    if item.is_namespace:
        return 0
    if item.is_crd:
        return 1
    return 2 if defined is not None else 3


def _key(item: Desired) -> KindKey:
    return (item.group, item.version, item.kind)
