"""Server-side apply of a bundle of Kubernetes objects, in the order a fresh cluster needs.

Called by the gcp cloud's ``apply_objects`` (the Kubeflow step with the manifest bundle,
the IAP step with its few objects) with an ``ApiClient`` from ``kube_access``.  One call
never waits minutes: what is not ready yet comes back in ``ApplySummary.waiting_for`` and
the step runs again later, when re-applying what is already in place costs one LIST per
kind and no write.

Order: Namespaces; CustomResourceDefinitions, then a short wait until they are
Established and one refresh of discovery; everything else concurrently; admission webhook
configurations last, so that the objects above do not meet webhooks whose servers are
not running yet.  Refusals that time cures (a webhook not serving yet, a kind not served
yet, a namespace not there yet) are retried with backoff until a deadline; any other
refusal stops the apply with a ``PermanentError`` naming the object.  Every applied
object carries ``kubeflow-bot/applied-hash``, the hash of what was applied; an object
whose stored hash matches is skipped and counted unchanged (a change made to it by hand
is therefore not undone until the bundle itself changes).

Library and transport errors are translated here into ``TemporaryError`` /
``PermanentError``; no ``kubernetes`` type leaves this module.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.discovery import LazyDiscoverer
from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError

from provisioning.cloud import ApplySummary
from provisioning.errors import PermanentError, TemporaryError

FIELD_MANAGER = "kubeflow-bot"
HASH_ANNOTATION = "kubeflow-bot/applied-hash"
APPLY_PATCH = "application/apply-patch+yaml"
# A metadata-only LIST (annotations are all the skip check needs); servers that do not
# know it (the test fake) fall back to full objects.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
REQUEST_TIMEOUT = (10.0, 60.0)
# Seconds before the step engine tries again after a transport failure.
TRANSIENT_DELAY = 10.0
# Backoff between retry rounds of refused objects (seconds, doubled each round).
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 4.0
# Polls for CRDs to be Established (seconds, doubled each time up to the maximum).
CRD_POLL = 0.1
MAX_CRD_POLL = 1.0

_CRD_GROUP = "apiextensions.k8s.io"
_ADMISSION_GROUP = "admissionregistration.k8s.io"
_WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
# Server-owned metadata that exported manifests carry; resourceVersion in an apply body
# would even be a precondition.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
)
_WEBHOOK_NAME = re.compile(r'failed calling webhook "([^"]+)"')
_MISSING_NAMESPACE = re.compile(r'namespaces "([^"]+)" not found')
_TEMPORARY_STATUS = (429, 500, 502, 503, 504)

ProgressCallback = Callable[[int, int], None]
Json = dict[str, Any]


@dataclass(frozen=True)
class _Desired:
    """One object of the bundle, as it will be sent."""

    body: Json  # metadata cleaned, hash annotation set, namespace fixed once scope is known
    group: str
    version: str
    kind: str
    name: str
    namespace: str  # "" for cluster-scoped kinds
    digest: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` (``Kind name`` when cluster-scoped), for people."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass(frozen=True)
class _Refused:
    """An apply that time may cure; ``why`` completes "waiting for ...".

    ``unknown_kind`` marks a kind the cluster does not serve; past the deadline that is
    permanent unless the bundle's own CRDs define it."""

    why: str
    unknown_kind: bool = False


@dataclass
class _Tally:
    applied: int = 0
    unchanged: int = 0


def _digest(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _message(e: ApiException) -> str:
    """The ``message`` of the API's ``Status`` answer, or what there is instead."""
    try:
        decoded = json.loads(e.body or "")
    except (TypeError, ValueError):
        decoded = None
    if isinstance(decoded, dict) and decoded.get("message"):
        return str(decoded["message"])
    return f"HTTP {e.status} {e.reason or ''}".strip()


def _established(crd: Mapping[str, Any]) -> bool:
    for condition in (crd.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Established":
            return bool(condition.get("status") == "True")
    return False


def _available(deployment: Mapping[str, Any]) -> bool:
    """Rolled out and Available, as ``kubectl rollout status`` judges it."""
    metadata = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < metadata.get("generation", 0):
        return False
    if status.get("availableReplicas", 0) < status.get("updatedReplicas", 0):
        return False
    return any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


class _InMemoryDiscoverer(LazyDiscoverer):  # type: ignore[misc]
    """The DynamicClient's discoverer without its cache file: it rewrites the whole cache
    as JSON after every kind it looks up, the largest CPU cost in a profile of applying
    the Kubeflow bundle (though wall time, bound by the API server, hardly moved)."""

    def _write_cache(self) -> None:
        return


class KubeApplier:
    """Applies bundles to one cluster; see the module docstring.  Thread-safe.

    ``settle_seconds`` bounds the wait for new CRDs to become Established;
    ``retry_deadline_seconds`` bounds the retries of refused objects (both per call).
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
        self._api_client = api_client
        self._max_parallel = max_parallel
        self._settle_seconds = settle_seconds
        self._retry_deadline_seconds = retry_deadline_seconds
        self._on_progress = on_progress
        self._clock = clock
        self._sleep = sleep
        # Discovery lives in memory (``_InMemoryDiscoverer``); the DynamicClient still
        # wants a cache file name, and its default, /tmp/osrcp-<md5(host)>.json, is shared
        # by every process and by a later cluster on the same address: a name of our own
        # that is never written.
        self._cache_file = str(
            Path(tempfile.gettempdir()) / f"kubeflow-bot-discovery-{uuid.uuid4().hex}.json"
        )
        self._host = str(api_client.configuration.host)
        self._discovery_lock = threading.Lock()
        self._dynamic: DynamicClient | None = None
        self._resources: dict[tuple[str, str], Any] = {}
        # Kinds found missing since discovery was last refreshed: each lookup of a
        # missing kind makes the DynamicClient refetch all of discovery.
        self._unserved: set[tuple[str, str]] = set()
        self._random = random.Random()  # noqa: S311 (jitter, not secrets)

    # -- the one entry point -------------------------------------------------------------

    def apply(
        self, objects: Sequence[Mapping[str, Any]], *, on_progress: ProgressCallback | None = None
    ) -> ApplySummary:
        """Apply ``objects``; what is not ready yet is named in ``waiting_for``."""
        progress = _Progress(len(objects), on_progress or self._on_progress)
        deadline = self._clock() + self._retry_deadline_seconds
        desired = [self._desired(obj) for obj in objects]
        namespaces = [d for d in desired if (d.group, d.kind) == ("", "Namespace")]
        crds = [d for d in desired if (d.group, d.kind) == (_CRD_GROUP, "CustomResourceDefinition")]
        webhooks = [d for d in desired if d.group == _ADMISSION_GROUP and d.kind in _WEBHOOK_KINDS]
        first = {id(d) for d in (*namespaces, *crds, *webhooks)}
        rest = [d for d in desired if id(d) not in first]
        tally = _Tally()
        with self._translated(), ThreadPoolExecutor(self._max_parallel) as pool:
            listed = self._list_many(pool, [*namespaces[:1], *crds[:1]], full={_CRD_GROUP})
            crd_state = {key[3]: obj for key, obj in listed.items() if key[0] == _CRD_GROUP}
            # None of the bundle's namespaces there yet: a fresh cluster, where listing
            # each kind to find what is already applied would find nothing.
            fresh = bool(namespaces) and not any(
                key[:2] == ("", "namespaces") and key[3] in {n.name for n in namespaces}
                for key in listed
            )
            waiting = self._apply_phase(
                pool, namespaces, listed, tally=tally, progress=progress, deadline=deadline
            )
            crds_applied = tally.applied
            waiting += self._apply_phase(
                pool, crds, listed, tally=tally, progress=progress, deadline=deadline
            )
            crds_applied = tally.applied - crds_applied
            waiting += self._settle_crds(pool, crds, crd_state, applied=crds_applied > 0)
            if waiting:
                return ApplySummary(tally.applied, tally.unchanged, tuple(waiting))

            later = [*rest, *webhooks]
            listed = {} if fresh else self._list_many(pool, later, full={"apps"})
            applied_before = tally.applied
            waiting += self._apply_phase(
                pool, rest, listed, tally=tally, progress=progress, deadline=deadline
            )
            waiting += self._apply_phase(
                pool, webhooks, listed, tally=tally, progress=progress, deadline=deadline
            )
            deployments = [d for d in rest if (d.group, d.kind) == ("apps", "Deployment")]
            if deployments and tally.applied > applied_before:
                listed = self._list_many(pool, deployments[:1], full={"apps"})
            waiting += self._unavailable(deployments, listed, waiting)
        return ApplySummary(tally.applied, tally.unchanged, tuple(waiting))

    # -- preparing -----------------------------------------------------------------------

    def _desired(self, obj: Mapping[str, Any]) -> _Desired:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        metadata = obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not (isinstance(api_version, str) and isinstance(kind, str) and name):
            raise PermanentError(
                f"the manifest bundle holds an object without apiVersion, kind or name "
                f"({kind or 'no kind'} {name or 'unnamed'}); ask the bot's operators"
            )
        assert isinstance(metadata, Mapping)
        group, version = _split_api_version(api_version)
        # Shallow copies: only metadata changes, and the bundle is megabytes.
        cleaned = {k: v for k, v in metadata.items() if k not in _SERVER_METADATA}
        body: Json = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
        body["metadata"] = cleaned
        annotations = dict(cleaned.get("annotations") or {})
        annotations.pop(HASH_ANNOTATION, None)
        if annotations:
            cleaned["annotations"] = annotations
        else:
            cleaned.pop("annotations", None)
        namespace = str(cleaned.get("namespace") or "")
        digest = _digest(body)
        cleaned["annotations"] = {**annotations, HASH_ANNOTATION: digest}
        return _Desired(body, group, version, kind, str(name), namespace, digest)

    def _scoped(self, item: _Desired, resource: Any) -> _Desired:
        """``item`` with its namespace as the API will see it.

        Some bundles give cluster-scoped objects a namespace (the API ignores it, but
        the URL must not carry it); kubectl puts namespaced ones without one in
        "default"."""
        namespace = (item.namespace or "default") if resource.namespaced else ""
        if namespace == item.namespace:
            return item
        metadata = dict(item.body["metadata"])
        if namespace:
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        body = {**item.body, "metadata": metadata}
        return _Desired(
            body, item.group, item.version, item.kind, item.name, namespace, item.digest
        )

    # -- discovery (one thread at a time: the DynamicClient's discoverer is not safe) ----

    def _discovery(self) -> DynamicClient:
        if self._dynamic is None:
            self._dynamic = DynamicClient(
                self._api_client, cache_file=self._cache_file, discoverer=_InMemoryDiscoverer
            )
        return self._dynamic

    def _resource(self, group: str, version: str, kind: str) -> Any | None:
        """The served resource, or None when the cluster does not serve the kind now."""
        api_version = f"{group}/{version}" if group else version
        with self._discovery_lock:
            known = self._resources.get((api_version, kind))
            if known is not None or (api_version, kind) in self._unserved:
                return known
            # prefix "api" for the core group: without it the search is for version v1
            # of every group, and loads every group's resources to look.
            prefix = None if group else "api"
            try:
                found = self._discovery().resources.get(
                    prefix=prefix, api_version=api_version, kind=kind
                )
            except ResourceNotFoundError:
                self._unserved.add((api_version, kind))
                return None
            except ResourceNotUniqueError as e:
                raise PermanentError(
                    f"the cluster serves {kind} ({api_version}) more than once; "
                    "ask the bot's operators"
                ) from e
            self._resources[(api_version, kind)] = found
            return found

    def _refresh_discovery(self, *, fetch: bool) -> None:
        """Look missing kinds up again; with ``fetch``, reload discovery now."""
        with self._discovery_lock:
            self._unserved.clear()
            if fetch:
                self._discovery().resources.invalidate_cache()

    # -- reads ---------------------------------------------------------------------------

    def _list_many(
        self, pool: ThreadPoolExecutor, items: Iterable[_Desired], *, full: Collection[str]
    ) -> dict[tuple[str, str, str, str], Json]:
        """Stored objects of the kinds of ``items``, keyed (group, plural, namespace, name).

        One LIST per kind, all at once; kinds not served yet are left out.  Kinds whose
        group is in ``full`` are read whole (status is wanted), others metadata only."""
        resources: dict[tuple[str, str], Any] = {}
        for item in items:
            resource = self._resource(item.group, item.version, item.kind)
            if resource is not None:
                resources.setdefault((resource.group, resource.name), resource)
        lists = pool.map(
            lambda r: (r, self._list(r, full=r.group in full)), list(resources.values())
        )
        stored: dict[tuple[str, str, str, str], Json] = {}
        for resource, listed in lists:
            for obj in listed:
                metadata = obj.get("metadata") or {}
                key = (resource.group, resource.name, metadata.get("namespace") or "")
                stored[(*key, metadata.get("name", ""))] = obj
        return stored

    def _list(self, resource: Any, *, full: bool) -> list[Json]:
        headers = {} if full else {"Accept": METADATA_ONLY}
        response = self._discovery_client().request(
            "get",
            resource.path(),
            header_params=headers,
            serialize=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items = json.loads(response.data).get("items") or []
        response.release_conn()
        return list(items)

    def _get(self, resource: Any, name: str) -> Json:
        """The stored cluster-scoped object, or {} when there is none."""
        try:
            response = self._discovery_client().request(
                "get", resource.path(name=name), serialize=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as e:
            if e.status == 404:
                return {}
            raise
        found: Json = json.loads(response.data)
        response.release_conn()
        return found

    def _discovery_client(self) -> DynamicClient:
        with self._discovery_lock:
            return self._discovery()

    # -- writes --------------------------------------------------------------------------

    def _apply_phase(
        self,
        pool: ThreadPoolExecutor,
        items: Sequence[_Desired],
        stored: Mapping[tuple[str, str, str, str], Json],
        *,
        tally: _Tally,
        progress: _Progress,
        deadline: float,
    ) -> list[str]:
        """Apply what changed, retrying refusals until ``deadline``; "waiting for" texts."""
        pending: list[_Desired] = []
        for given in items:
            item = given
            resource = self._resource(item.group, item.version, item.kind)
            if resource is not None:
                item = self._scoped(item, resource)
                found = stored.get((resource.group, resource.name, item.namespace, item.name))
                annotations = ((found or {}).get("metadata") or {}).get("annotations") or {}
                if annotations.get(HASH_ANNOTATION) == item.digest:
                    tally.unchanged += 1
                    progress.advance()
                    continue
            pending.append(item)

        backoff = FIRST_BACKOFF
        while True:
            refused = self._apply_round(pool, pending, tally, progress)
            if not refused:
                return []
            if self._clock() + backoff > deadline:
                break
            self._sleep(backoff * self._random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)
            pending = [item for item, _ in refused]
            if any(why.unknown_kind for _, why in refused):
                # The next lookup of each missing kind refetches discovery by itself.
                self._refresh_discovery(fetch=False)

        for item, why in refused:
            if why.unknown_kind:
                raise PermanentError(
                    f"{item.ref}: the cluster does not serve {item.kind} "
                    f"({item.api_version}) and the bundle does not define it"
                )
        progress.advance(len(refused))
        return [f"{item.ref} ({why.why})" for item, why in refused]

    def _apply_round(
        self,
        pool: ThreadPoolExecutor,
        items: Sequence[_Desired],
        tally: _Tally,
        progress: _Progress,
    ) -> list[tuple[_Desired, _Refused]]:
        """Apply ``items`` at once; the refused ones, in bundle order.

        A refusal that is not worth retrying cancels what has not started and is raised."""
        futures: list[Future[_Refused | None]] = [pool.submit(self._apply_one, i) for i in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            for future in futures:
                future.cancel()
            wait(futures)
            for future in futures:
                error = None if future.cancelled() else future.exception()
                if error is not None:
                    raise error
        refused = []
        for item, future in zip(items, futures, strict=True):
            outcome = future.result()
            if outcome is None:
                tally.applied += 1
                progress.advance()
            else:
                refused.append((item, outcome))
        return refused

    def _apply_one(self, item: _Desired) -> _Refused | None:
        """Server-side apply of one object: None when applied, or why it was refused."""
        resource = self._resource(item.group, item.version, item.kind)
        if resource is None:
            return _Refused(f"{item.api_version} {item.kind} to be served", unknown_kind=True)
        item = self._scoped(item, resource)
        try:
            response = self._discovery_client().request(
                "patch",
                resource.path(name=item.name, namespace=item.namespace or None),
                body=item.body,
                content_type=APPLY_PATCH,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                serialize=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            _ = response.data  # read at once, or the connection never returns to the pool
            response.release_conn()
        except ApiException as e:
            message = _message(e)
            if e.status == 500 and (hook := _WEBHOOK_NAME.search(message)):
                return _Refused(f'webhook "{hook.group(1)}" to serve')
            if e.status == 404:
                missing = _MISSING_NAMESPACE.search(message)
                if missing:
                    return _Refused(f"namespace {missing.group(1)}")
                return _Refused(f"{item.api_version} {item.kind} to be served", unknown_kind=True)
            raise self._refusal(e, item, message) from e
        return None

    def _refusal(self, e: ApiException, item: _Desired, message: str) -> Exception:
        if e.status in (401, 403):
            return PermanentError(
                f"the bot's credentials were refused by the cluster's API server "
                f"(HTTP {e.status}) when applying {item.ref}; ask the bot's operators to "
                "check that its service account may administer the cluster"
            )
        if e.status in _TEMPORARY_STATUS:
            return TemporaryError(
                f"the cluster's API server could not take {item.ref} just now "
                f"(HTTP {e.status}: {message})",
                delay=TRANSIENT_DELAY,
            )
        return PermanentError(f"{item.ref}: {message}")

    # -- waiting, briefly --------------------------------------------------------------

    def _settle_crds(
        self,
        pool: ThreadPoolExecutor,
        crds: Sequence[_Desired],
        stored: Mapping[str, Json],
        *,
        applied: bool,
    ) -> list[str]:
        """Wait a little for the bundle's CRDs to be Established; those still not."""
        missing = [
            crd.name for crd in crds if applied or not _established(stored.get(crd.name) or {})
        ]
        if not missing:
            return []
        crd_resource = self._resource(_CRD_GROUP, "v1", "CustomResourceDefinition")
        settle_by = self._clock() + self._settle_seconds
        poll = CRD_POLL
        while True:
            # GETs of the ones still missing: a LIST would carry every CRD's schema.
            current = pool.map(lambda name: self._get(crd_resource, name), missing)
            missing = [
                name for name, crd in zip(missing, current, strict=True) if not _established(crd)
            ]
            if not missing or self._clock() + poll > settle_by:
                break
            self._sleep(poll)
            poll = min(poll * 2, MAX_CRD_POLL)
        if missing:
            return [f"CustomResourceDefinition {n} (to be established)" for n in missing]
        # Once, so the new kinds are found; a miss would refetch discovery per lookup.
        self._refresh_discovery(fetch=True)
        return []

    def _unavailable(
        self,
        deployments: Sequence[_Desired],
        stored: Mapping[tuple[str, str, str, str], Json],
        waiting: Sequence[str],
    ) -> list[str]:
        out = []
        for item in deployments:
            namespace = item.namespace or "default"
            ref = f"deployment {namespace}/{item.name}"
            if any(w.startswith(f"Deployment {namespace}/{item.name} ") for w in waiting):
                continue  # already named as refused
            found = stored.get(("apps", "deployments", namespace, item.name))
            if found is None or not _available(found):
                out.append(ref)
        return out

    # -- errors at the edge ------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Transport and API errors, wherever they arise, as the two error kinds."""
        where = f"the cluster's API server at {self._host}"
        try:
            yield
        except (PermanentError, TemporaryError):
            raise
        except ApiException as e:
            if e.status in (401, 403):
                raise PermanentError(
                    f"the bot's credentials were refused by {where} (HTTP {e.status}); "
                    "ask the bot's operators to check that its service account may "
                    "administer the cluster"
                ) from e
            if e.status in _TEMPORARY_STATUS:
                raise TemporaryError(
                    f"{where} could not answer just now (HTTP {e.status})", delay=TRANSIENT_DELAY
                ) from e
            raise PermanentError(f"{where} refused a request: {_message(e)}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise TemporaryError(_transport_words(e, where), delay=TRANSIENT_DELAY) from e


def _transport_words(e: BaseException, where: str) -> str:
    text = repr(e)
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text:
        return (
            f"could not verify {where}: its TLS certificate is not signed by the cluster's "
            "CA; will try again"
        )
    if "Timeout" in text or "timed out" in text:
        return f"{where} did not answer in time; will try again"
    if "Connection refused" in text or "NewConnectionError" in text:
        return f"could not connect to {where} (connection refused); will try again"
    return f"lost the connection to {where}; will try again"


class _Progress:
    """Counts settled objects and tells ``callback``, from the calling thread only."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._callback is not None and count:
            self._callback(self.done, self.total)
