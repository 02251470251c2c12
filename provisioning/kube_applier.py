"""Server-side apply of a bundle of Kubernetes objects, in the order a fresh cluster needs.

Called by the gcp cloud's ``apply_objects`` (the Kubeflow step with the manifest bundle,
the IAP step with its few objects) with an ``ApiClient`` from ``kube_access``.  One call
never waits minutes: what is not ready yet comes back in ``ApplySummary.waiting_for`` and
the step runs again later, when re-applying what is already in place costs one LIST per
kind and no write.

``KubeApplier.apply`` reads discovery for the bundle's group-versions and, unless none
of the bundle's namespaces exists yet (a fresh cluster), what is stored; then
``kube_apply_run`` applies (Namespaces and CRDs first, the rest as soon as what it needs
is there, admission webhook configurations last, refusals that time cures retried until
a deadline, any other refusal a ``PermanentError`` naming the object); last, it names
the bundle's Deployments that are not Available yet.  Every applied object carries
``kubeflow-bot/applied-hash``, the hash of what was applied; an object whose stored hash
matches is skipped and counted unchanged (a change made to it by hand is therefore not
undone until the bundle itself changes).

The other modules: ``kube_bundle`` (objects as sent, and what orders them),
``kube_discovery`` (served kinds), ``kube_object_apply`` (one apply and its refusals),
``kube_apply_run`` (one apply's ordering and retries) with ``kube_polls`` (its waits)
and ``kube_progress``, ``kube_rollout`` (Deployments Available), ``kube_http``
(requests and error translation).  No ``kubernetes`` type leaves here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client import ApiClient

from provisioning.cloud import ApplySummary
from provisioning.kube_apply_run import ApplyRun, StoredKey
from provisioning.kube_bundle import FIELD_MANAGER, HASH_ANNOTATION, BundleKinds, Desired, desired
from provisioning.kube_discovery import Discovery, ServedKind
from provisioning.kube_http import KubeHttp, translated
from provisioning.kube_progress import Progress, ProgressCallback
from provisioning.kube_rollout import unavailable

__all__ = ["FIELD_MANAGER", "HASH_ANNOTATION", "KubeApplier", "ProgressCallback"]

# A metadata-only LIST (annotations are all the skip check needs); servers that do not
# know it (the test fake) fall back to full objects.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
# Threads for polls (discovery while CRDs are being established, Deployments behind a
# webhook that refused an object); the ApiClient's connection pool should hold
# ``max_parallel`` plus these, as kube_access sizes it.
POLL_THREADS = 4

Json = dict[str, Any]


class KubeApplier:
    """Applies bundles to one cluster; see the module docstring.  Thread-safe.

    ``settle_seconds`` bounds the wait for each new CRD to become Established;
    ``retry_deadline_seconds`` bounds the retries of refused objects (both per call).
    ``on_progress(settled, total)`` is told, from the calling thread, as objects are
    applied (or found unchanged, or given up), at least every 2% of the bundle and once
    at the end with ``settled == total``.
    Keep one applier per cluster: it keeps the cluster's discovery between calls.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        max_parallel: int = 16,
        settle_seconds: float = 5.0,
        retry_deadline_seconds: float = 60.0,
        on_progress: ProgressCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = KubeHttp(api_client)
        self._discovery = Discovery(self._http)
        self._max_parallel = max_parallel
        self._settle_seconds = settle_seconds
        self._retry_deadline_seconds = retry_deadline_seconds
        self._on_progress = on_progress
        self._clock = clock
        self._sleep = sleep
        self._random = random.Random()  # noqa: S311 (jitter, not secrets)

    def apply(
        self, objects: Sequence[Mapping[str, Any]], *, on_progress: ProgressCallback | None = None
    ) -> ApplySummary:
        """Apply ``objects``; what is not ready yet is named in ``waiting_for``."""
        progress = Progress(len(objects), on_progress or self._on_progress)
        deadline = self._clock() + self._retry_deadline_seconds
        with (
            translated(self._http.host),
            ThreadPoolExecutor(self._max_parallel) as pool,
            ThreadPoolExecutor(POLL_THREADS) as polls,
        ):
            # The first reads go out before the objects are hashed (a tenth of a second
            # for the Kubeflow bundle), and are answered meanwhile.
            self._discovery.forget_unserved()
            namespaces = pool.submit(self._http.get, "/api/v1/namespaces", accept=METADATA_ONLY)
            loads = [
                pool.submit(self._discovery.load, *group_version)
                for group_version in _group_versions(objects)
            ]
            items = [desired(obj) for obj in objects]
            kinds = BundleKinds(items)
            for load in loads:
                load.result()
            listed_namespaces = list(namespaces.result().get("items") or [])
            stored, deployments = self._read_cluster(pool, items, kinds, listed_namespaces)
            outcome = ApplyRun(
                items,
                http=self._http,
                discovery=self._discovery,
                kinds=kinds,
                stored=stored,
                pool=pool,
                max_parallel=self._max_parallel,
                polls=polls,
                progress=progress,
                clock=self._clock,
                sleep=self._sleep,
                rng=self._random,
                deadline=deadline,
                settle_seconds=self._settle_seconds,
            ).run()
            mine = [d for d in items if (d.group, d.kind) == ("apps", "Deployment")]
            if mine and (deployments is None or outcome.applied):
                deployments = self._deployments()
            waiting = outcome.waiting_for
            waiting += unavailable(mine, deployments or {}, waiting)
        return ApplySummary(outcome.applied, outcome.unchanged, tuple(waiting))

    # -- reads ---------------------------------------------------------------------------

    def _read_cluster(
        self,
        pool: ThreadPoolExecutor,
        items: Sequence[Desired],
        kinds: BundleKinds,
        listed_namespaces: list[Json],
    ) -> tuple[dict[StoredKey, str], dict[tuple[str, str], Json] | None]:
        """Digests of what is stored, by (group, plural, namespace, name), and the stored
        Deployments by (namespace, name); nothing on a fresh cluster (None: not read).

        Discovery of the group-versions the bundle's CRDs define (those its objects use
        are known by now), then one LIST per served kind of the bundle, at once."""
        list(pool.map(lambda gv: self._discovery.load(*gv), kinds.group_versions(items)))
        existing = {(obj.get("metadata") or {}).get("name") for obj in listed_namespaces}
        if kinds.namespaces and not kinds.namespaces & existing:
            # None of the bundle's namespaces there yet: a fresh cluster, where listing
            # each kind to find what is already applied would find nothing.
            return {}, None
        served: dict[tuple[str, str], ServedKind] = {}
        for item in items:
            kind = self._discovery.kind(item.group, item.version, item.kind)
            if kind is not None:
                served.setdefault((kind.group, kind.plural), kind)
        # The Namespaces are in hand already.
        lists = pool.map(
            lambda kind: listed_namespaces if _is_namespace(kind) else self._list(kind),
            served.values(),
        )
        stored: dict[StoredKey, str] = {}
        deployments: dict[tuple[str, str], Json] | None = None
        for kind, listed in zip(served.values(), lists, strict=True):
            if _is_deployment(kind):
                deployments = _by_name(listed)
            for obj in listed:
                metadata = obj.get("metadata") or {}
                digest = (metadata.get("annotations") or {}).get(HASH_ANNOTATION)
                if digest:
                    key = (kind.group, kind.plural, metadata.get("namespace") or "")
                    stored[(*key, metadata.get("name", ""))] = str(digest)
        return stored, deployments

    def _list(self, kind: ServedKind) -> list[Json]:
        # Deployments whole: their status says whether they are Available.
        accept = "application/json" if _is_deployment(kind) else METADATA_ONLY
        return list(self._http.get(kind.path(), accept=accept).get("items") or [])

    def _deployments(self) -> dict[tuple[str, str], Json]:
        kind = self._discovery.kind("apps", "v1", "Deployment")
        return {} if kind is None else _by_name(self._list(kind))


def _group_versions(objects: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The group-versions of the objects' apiVersions, once each (malformed ones are
    ``desired``'s to report)."""
    found: dict[tuple[str, str], None] = {}
    for obj in objects:
        api_version = obj.get("apiVersion")
        if isinstance(api_version, str) and api_version:
            group, _, version = api_version.rpartition("/")
            found.setdefault((group, version), None)
    return list(found)


def _is_namespace(kind: ServedKind) -> bool:
    return (kind.group, kind.kind) == ("", "Namespace")


def _is_deployment(kind: ServedKind) -> bool:
    return (kind.group, kind.kind) == ("apps", "Deployment")


def _by_name(objects: list[Json]) -> dict[tuple[str, str], Json]:
    found = {}
    for obj in objects:
        metadata = obj.get("metadata") or {}
        found[(metadata.get("namespace") or "", metadata.get("name", ""))] = obj
    return found
