"""Which kinds a cluster serves, from its discovery documents, kept between applies.

Called by ``kube_applier.KubeApplier`` (one ``Discovery`` per applier, so per cluster) and
by ``kube_apply_run`` (to look kinds up, and to see a new CRD's kind being served).
One GET of ``/api/v1`` or ``/apis/GROUP/VERSION`` per group-version the bundle uses,
never the whole of discovery: a bundle names the exact apiVersion of each object.  A
kind is served once its group-version's document lists it; for a CRD that is when the
API server has Established it (it adds the version to discovery only then), so the
document of a CRD's group-version is also the cheap way to wait for the CRD: a few
hundred bytes, where a GET of the CRD itself carries its whole schema.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from provisioning.errors import PermanentError
from provisioning.kube_http import KubeHttp

GroupVersion = tuple[str, str]


@dataclass(frozen=True)
class ServedKind:
    """A kind as discovery lists it: where its objects live."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        """The URL path of the collection, or of one object when ``name`` is given."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


class Discovery:
    """Served kinds by group-version, fetched on first use.  Thread-safe: concurrent
    lookups of one group-version make one request."""

    def __init__(self, http: KubeHttp) -> None:
        self._http = http
        self._lock = threading.Lock()
        self._fetching: dict[GroupVersion, threading.Lock] = {}
        # None: the group-version is not served (404), until looked at again.
        self._documents: dict[GroupVersion, dict[str, ServedKind] | None] = {}

    def kind(self, group: str, version: str, kind: str) -> ServedKind | None:
        """The served kind, or None when the cluster does not serve it (as last seen)."""
        key = (group, version)
        with self._lock:
            known = key in self._documents
            document = self._documents.get(key)
        if not known:
            document = self.load(group, version)
        return None if document is None else document.get(kind)

    def load(
        self, group: str, version: str, *, again: bool = False
    ) -> dict[str, ServedKind] | None:
        """The kinds of one group-version, fetched unless known (``again``: fetched anew)."""
        key = (group, version)
        with self._lock:
            fetching = self._fetching.setdefault(key, threading.Lock())
        with fetching:
            with self._lock:
                if not again and key in self._documents:
                    return self._documents[key]
            document = self._fetch(group, version)
            with self._lock:
                self._documents[key] = document
            return document

    def forget_unserved(self) -> None:
        """Look up again, on next use, every group-version last found not served: a
        CRD may have been Established since (called at the start of each apply)."""
        with self._lock:
            for key in [k for k, document in self._documents.items() if document is None]:
                del self._documents[key]

    def forget(self, group: str, version: str) -> None:
        """Look this group-version up again on next use (a kind was refused as unknown)."""
        with self._lock:
            self._documents.pop((group, version), None)

    def _fetch(self, group: str, version: str) -> dict[str, ServedKind] | None:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            answer = self._http.get(path)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        kinds: dict[str, ServedKind] = {}
        for entry in answer.get("resources") or []:
            served = _served(group, version, entry)
            if served is None:
                continue
            if served.kind in kinds:
                api_version = f"{group}/{version}" if group else version
                raise PermanentError(
                    f"the cluster serves {served.kind} ({api_version}) more than once; "
                    "ask the bot's operators"
                )
            kinds[served.kind] = served
        return kinds


def _served(group: str, version: str, entry: Mapping[str, Any]) -> ServedKind | None:
    name, kind = entry.get("name"), entry.get("kind")
    if not isinstance(name, str) or not isinstance(kind, str) or "/" in name:
        return None  # subresources (``deployments/status``) share their parent's kind
    return ServedKind(group, version, kind, name, bool(entry.get("namespaced")))
