"""The objects of a manifest bundle as the applier sends them, and what orders them.

Called by ``kube_applier.KubeApplier.apply`` (``desired`` for each object of the bundle,
``BundleKinds`` once per bundle) and by ``kube_apply_run`` (``scoped`` and ``wire_body``
just before an object is sent).  Pure data: no requests are made here.

An object is sent as compact JSON with its server-owned metadata and status removed
and the annotation ``kubeflow-bot/applied-hash`` set to its hash; the applier skips an
object whose stored annotation already matches.  The hash is SHA-256 of the cleaned
object without that annotation as canonical JSON (keys sorted), as the bot has always
computed it, so that objects applied by an earlier release are still recognised.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from provisioning.errors import PermanentError

FIELD_MANAGER = "kubeflow-bot"
HASH_ANNOTATION = "kubeflow-bot/applied-hash"
CRD_GROUP = "apiextensions.k8s.io"
ADMISSION_GROUP = "admissionregistration.k8s.io"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
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

Json = dict[str, Any]
GroupVersion = tuple[str, str]


@dataclass(frozen=True)
class Desired:
    """One object of the bundle, as it will be sent (``wire_body`` adds the hash)."""

    body: Json  # metadata cleaned, namespace fixed once its scope is known
    group: str
    version: str
    kind: str
    name: str
    namespace: str  # "" for cluster-scoped kinds
    hashed: Json | None = None  # what ``digest`` covers when not ``body``: before scoping

    @cached_property
    def digest(self) -> str:
        """The hash of the object as the bundle gives it.  Computed on first use, which
        for a fresh cluster is in the worker thread that sends the object: hashing the
        Kubeflow bundle takes a tenth of a second that no request should wait for."""
        if self.hashed is None and self._fields is not None:
            return _hash(_joined(self._fields))  # the same text as _digest's, made once
        return _digest(self.body if self.hashed is None else self.hashed)

    @cached_property
    def _fields(self) -> dict[str, str] | None:
        """Each top-level field of ``body`` as canonical JSON, shared by the hash and the
        apply body so that a megabyte CRD is serialized once; None when a value is not
        plain JSON (a YAML timestamp), which the two must spell differently."""
        plain = True

        def other(value: object) -> str:
            nonlocal plain
            plain = False
            return str(value)

        fields = {key: _canonical(value, other) for key, value in self.body.items()}
        return fields if plain else None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` (``Kind name`` when cluster-scoped), for people."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    @property
    def is_namespace(self) -> bool:
        return (self.group, self.kind) == ("", "Namespace")

    @property
    def is_crd(self) -> bool:
        return (self.group, self.kind) == (CRD_GROUP, "CustomResourceDefinition")

    @property
    def is_webhook_configuration(self) -> bool:
        return self.group == ADMISSION_GROUP and self.kind in WEBHOOK_KINDS


@dataclass(frozen=True)
class DefinedKind:
    """A kind that one of the bundle's CustomResourceDefinitions defines."""

    crd: str  # the CRD's name, ``<plural>.<group>``
    group: str
    versions: tuple[str, ...]  # the served ones
    kind: str
    plural: str
    namespaced: bool


def desired(obj: Mapping[str, Any]) -> Desired:
    """``obj`` cleaned (hashed on first use); a PermanentError when it is not an object
    at all."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not (isinstance(api_version, str) and isinstance(kind, str) and name):
        raise PermanentError(
            f"the manifest bundle holds an object without apiVersion, kind or name "
            f"({kind or 'no kind'} {name or 'unnamed'}); ask the bot's operators"
        )
    assert isinstance(metadata, Mapping)
    group, _, version = api_version.rpartition("/")
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
    return Desired(body, group, version, kind, str(name), namespace)


def scoped(item: Desired, *, namespaced: bool) -> Desired:
    """``item`` with its namespace as the API will see it.

    Some bundles give cluster-scoped objects a namespace (the API ignores it, but the URL
    must not carry it); kubectl puts namespaced ones without one in "default"."""
    namespace = (item.namespace or "default") if namespaced else ""
    if namespace == item.namespace:
        return item
    metadata = dict(item.body["metadata"])
    if namespace:
        metadata["namespace"] = namespace
    else:
        metadata.pop("namespace", None)
    hashed = item.body if item.hashed is None else item.hashed
    return replace(
        item, body={**item.body, "metadata": metadata}, namespace=namespace, hashed=hashed
    )


def wire_body(item: Desired) -> bytes:
    """The apply body with the hash annotation: compact JSON, which
    ``application/apply-patch+yaml`` accepts (JSON is YAML).  Serialized here once, so
    the client never walks the object again."""
    metadata = item.body["metadata"]
    annotations = {**(metadata.get("annotations") or {}), HASH_ANNOTATION: item.digest}
    metadata = {**metadata, "annotations": annotations}
    fields = item._fields
    if fields is not None:
        return _joined({**fields, "metadata": _canonical(metadata, _json_value)}).encode()
    body = {**item.body, "metadata": metadata}
    return json.dumps(body, separators=(",", ":"), default=_json_value).encode()


class BundleKinds:
    """What the bundle itself says about ordering: its namespaces, its CRDs and the kinds
    they define, and the group-versions it uses."""

    def __init__(self, items: Sequence[Desired]) -> None:
        self.namespaces = {item.name for item in items if item.is_namespace}
        self.defined: dict[tuple[str, str, str], DefinedKind] = {}
        for item in items:
            if item.is_crd:
                for kind in _defined_kind(item):
                    for version in kind.versions:
                        self.defined[(kind.group, version, kind.kind)] = kind
        self.by_crd: dict[str, DefinedKind] = {k.crd: k for k in self.defined.values()}

    def group_versions(self, items: Iterable[Desired]) -> list[GroupVersion]:
        """Every group-version the bundle's objects use or its CRDs define, once each."""
        seen = {(item.group, item.version): None for item in items}
        for group, version, _ in self.defined:
            seen.setdefault((group, version), None)
        return list(seen)


def _defined_kind(crd: Desired) -> list[DefinedKind]:
    spec = crd.body.get("spec")
    if not isinstance(spec, Mapping):
        return []
    names = spec.get("names") or {}
    group, kind, plural = spec.get("group"), names.get("kind"), names.get("plural")
    if not (isinstance(group, str) and isinstance(kind, str) and isinstance(plural, str)):
        return []  # the API server will refuse it, naming it; nothing waits on it
    versions = tuple(
        str(v["name"])
        for v in spec.get("versions") or []
        if isinstance(v, Mapping) and v.get("name") and v.get("served", True)
    )
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    return [DefinedKind(crd.name, group, versions, kind, plural, namespaced)]


def _digest(body: Mapping[str, Any]) -> str:
    return _hash(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str))


def _hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _canonical(value: object, default: Callable[[object], str]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=default)


def _joined(fields: Mapping[str, str]) -> str:
    """The object whose top-level fields ``fields`` holds serialized: exactly what
    ``_canonical`` gives for the whole object, keys sorted."""
    return "{" + ",".join(f"{json.dumps(key)}:{fields[key]}" for key in sorted(fields)) + "}"


def _json_value(value: object) -> str:
    # YAML gives timestamps as datetimes; the API wants RFC 3339, as the client sent them.
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return str(value)
