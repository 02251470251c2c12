"""Server-side apply of one object, and what its refusal means: wait, or fail now.

Called by ``kube_apply_run`` from its worker threads, once per object and attempt.  A
refusal that time cures comes back as a ``Refused``: a webhook not serving yet (HTTP 500
``failed calling webhook``), a kind not served yet (404 from the collection), a
namespace not there yet (404 ``namespaces "x" not found``).  Any other refusal is raised
at once as a ``PermanentError`` naming the object (or a ``TemporaryError`` when the API
server itself is struggling), so a broken object never costs the retry deadline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from provisioning.errors import PermanentError, TemporaryError
from provisioning.kube_bundle import FIELD_MANAGER, Desired, wire_body
from provisioning.kube_discovery import ServedKind
from provisioning.kube_http import TEMPORARY_STATUS, TRANSIENT_DELAY, KubeHttp, api_message

_WEBHOOK_NAME = re.compile(r'failed calling webhook "([^"]+)"')
_MISSING_NAMESPACE = re.compile(r'namespaces "([^"]+)" not found')


@dataclass(frozen=True)
class Refused:
    """An apply that time may cure; ``why`` completes "waiting for ...".

    ``unknown_kind`` marks a kind the cluster does not serve (yet); ``webhook`` names the
    admission webhook that could not be called."""

    why: str
    unknown_kind: bool = False
    webhook: str | None = None


def unserved(item: Desired) -> Refused:
    return Refused(f"{item.api_version} {item.kind} to be served", unknown_kind=True)


def apply_object(http: KubeHttp, served: ServedKind, item: Desired) -> Refused | None:
    """Apply ``item`` (already scoped to ``served``): None when applied, or why not yet."""
    try:
        http.apply(
            served.path(name=item.name, namespace=item.namespace or None),
            wire_body(item),
            field_manager=FIELD_MANAGER,
        )
    except ApiException as e:
        message = api_message(e)
        if e.status == 500 and (hook := _WEBHOOK_NAME.search(message)):
            return Refused(f'webhook "{hook.group(1)}" to serve', webhook=hook.group(1))
        if e.status == 404:
            missing = _MISSING_NAMESPACE.search(message)
            if missing:
                return Refused(f"namespace {missing.group(1)}")
            return unserved(item)
        raise _refusal(e, item, message) from e
    return None


def _refusal(e: ApiException, item: Desired, message: str) -> Exception:
    if e.status in (401, 403):
        return PermanentError(
            f"the bot's credentials were refused by the cluster's API server "
            f"(HTTP {e.status}) when applying {item.ref}; ask the bot's operators to "
            "check that its service account may administer the cluster"
        )
    if e.status in TEMPORARY_STATUS:
        return TemporaryError(
            f"the cluster's API server could not take {item.ref} just now "
            f"(HTTP {e.status}: {message})",
            delay=TRANSIENT_DELAY,
        )
    return PermanentError(f"{item.ref}: {message}")
