"""Custom resources waiting for their CustomResourceDefinition to be Established.

Called by ``kube_apply_run.ApplyRun``: it ``hold``s an object whose kind one of the
bundle's CRDs defines while discovery does not serve that kind, ``watch``es each CRD of
the bundle once it is applied or found unchanged, and tells ``lost`` of a CRD it gave
up on.  A watched CRD's group-version document is polled (``kube_polls``) until it
lists the kind, which the API server does once the CRD is Established: a few hundred
bytes a poll, where a GET of the CRD would carry its whole schema.  Then the held
objects are started; a CRD whose kind is not served ``settle_seconds`` after it was
applied is reported "to be established" and its objects are given up, for next time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from provisioning.kube_bundle import BundleKinds, DefinedKind, GroupVersion
from provisioning.kube_discovery import Discovery, ServedKind
from provisioning.kube_polls import Polls

# Polls of a new CRD's group-version until discovery serves its kind (seconds, growing
# by half each time): CRDs are usually Established well within a second.
CRD_POLL = 0.1
MAX_CRD_POLL = 0.5

KindKey = tuple[str, str, str]  # (group, version, kind)
Task = TypeVar("Task")


class CrdWaits(Generic[Task]):
    """The held objects and the watched CRDs of one apply (the run's thread only)."""

    def __init__(
        self,
        *,
        discovery: Discovery,
        kinds: BundleKinds,
        polls: Polls,
        settle_seconds: float,
        clock: Callable[[], float],
        start: Callable[[Task], None],
        give_up: Callable[[Task], None],
        report: Callable[[str], None],
    ) -> None:
        self._discovery = discovery
        self._kinds = kinds
        self._polls = polls
        self._settle_seconds = settle_seconds
        self._clock = clock
        self._start = start
        self._give_up = give_up
        self._report = report  # told the name of each CRD not Established in time
        self._held: dict[KindKey, list[Task]] = {}
        self._unserved: dict[GroupVersion, set[str]] = {}  # kinds of watched CRDs
        self.unestablished: set[str] = set()  # CRDs given up on, by name

    def hold(self, key: KindKey, task: Task) -> None:
        """Keep ``task`` until its kind is served; given up at once if its CRD was."""
        if self._kinds.defined[key].crd in self.unestablished:
            self._give_up(task)
        else:
            self._held.setdefault(key, []).append(task)

    def watch(self, defined: DefinedKind) -> None:
        """The CRD defining ``defined`` is in place: start what waits once it is served."""
        now = self._clock()
        for version in defined.versions:
            if self._discovery.kind(defined.group, version, defined.kind) is not None:
                self._served((defined.group, version, defined.kind))
                continue
            group_version = (defined.group, version)
            self._unserved.setdefault(group_version, set()).add(defined.kind)
            self._polls.add(
                ("kinds", group_version),
                now=now,
                check=partial(self._discovery.load, *group_version, again=True),
                on_result=partial(self._polled, group_version),
                on_expiry=partial(self._expired, group_version),
                first=CRD_POLL,
                longest=MAX_CRD_POLL,
                until=now + self._settle_seconds,
            )

    def lost(self, defined: DefinedKind) -> None:
        """The CRD was given up (it is named with its own reason): so are its objects."""
        self.unestablished.add(defined.crd)
        for version in defined.versions:
            for task in self._held.pop((defined.group, version, defined.kind), []):
                self._give_up(task)

    def strays(self) -> list[Task]:
        """Whatever is still held, handed back (when nothing else can happen)."""
        tasks = [task for held in self._held.values() for task in held]
        self._held.clear()
        return tasks

    def _polled(self, group_version: GroupVersion, document: dict[str, ServedKind] | None) -> bool:
        kinds = self._unserved[group_version]
        for kind in [k for k in kinds if k in (document or {})]:
            kinds.discard(kind)
            self._served((*group_version, kind))
        if kinds:
            return False
        del self._unserved[group_version]
        return True

    def _served(self, key: KindKey) -> None:
        for task in self._held.pop(key, []):
            self._start(task)

    def _expired(self, group_version: GroupVersion) -> None:
        for kind in sorted(self._unserved.pop(group_version, set())):
            key = (*group_version, kind)
            crd = self._kinds.defined[key].crd
            if crd not in self.unestablished:
                self.unestablished.add(crd)
                self._report(crd)
            for task in self._held.pop(key, []):
                self._give_up(task)
