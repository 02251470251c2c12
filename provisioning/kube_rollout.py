"""Whether Deployments are Available, and which Deployments serve a webhook.

Called by ``kube_applier`` (to name the bundle's Deployments not Available yet) and by
``kube_apply_run`` (an object refused by a webhook is retried as soon as a Deployment
behind that webhook is Available, rather than after a blind backoff).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from provisioning.kube_bundle import Desired

DEPLOYMENTS_PATH = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"

Json = dict[str, Any]
NamespacedName = tuple[str, str]


def available(deployment: Mapping[str, Any]) -> bool:
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


def webhook_backends(items: Sequence[Desired]) -> dict[str, tuple[NamespacedName, ...]]:
    """For each webhook of the bundle's webhook configurations that calls a Service of
    the bundle, the bundle's Deployments whose pods that Service selects."""
    services: dict[NamespacedName, Mapping[str, Any]] = {}
    deployments: list[tuple[NamespacedName, Mapping[str, Any]]] = []
    for item in items:
        where = (item.namespace or "default", item.name)
        spec = item.body.get("spec") or {}
        if (item.group, item.kind) == ("", "Service"):
            services[where] = spec.get("selector") or {}
        elif (item.group, item.kind) == ("apps", "Deployment"):
            template = spec.get("template") or {}
            deployments.append((where, (template.get("metadata") or {}).get("labels") or {}))
    backends: dict[str, tuple[NamespacedName, ...]] = {}
    for item in items:
        if not item.is_webhook_configuration:
            continue
        for hook in item.body.get("webhooks") or []:
            service = (hook.get("clientConfig") or {}).get("service") or {}
            key = (service.get("namespace") or "", service.get("name") or "")
            selector = services.get(key)
            if not hook.get("name") or not selector:
                continue  # a URL webhook, or a Service from elsewhere: nothing to watch
            backends[str(hook["name"])] = tuple(
                where
                for where, labels in deployments
                if where[0] == key[0] and all(labels.get(k) == v for k, v in selector.items())
            )
    return {name: found for name, found in backends.items() if found}


def unavailable(
    deployments: Sequence[Desired],
    stored: Mapping[NamespacedName, Json],
    waiting: Sequence[str],
) -> list[str]:
    """``deployment ns/name`` for each of the bundle's Deployments not Available yet."""
    out = []
    for item in deployments:
        namespace = item.namespace or "default"
        if any(w.startswith(f"Deployment {namespace}/{item.name} ") for w in waiting):
            continue  # already named as refused
        found = stored.get((namespace, item.name))
        if found is None or not available(found):
            out.append(f"deployment {namespace}/{item.name}")
    return out
