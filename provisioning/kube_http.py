"""The few requests the applier makes, straight through the ``ApiClient``, and their errors.

Called by ``kube_discovery`` (discovery documents), ``kube_object_apply`` (one
server-side apply) and ``kube_applier`` (LISTs), with the ``ApiClient`` of
``kube_access``, which brings TLS, the Bearer token and timeouts.  Bodies go out as bytes
serialized once by the caller and answers come back as bytes or decoded JSON: the
client's own model walk (``sanitize_for_serialization``) over a megabyte CRD and its
response handling were the largest CPU cost of applying the Kubeflow bundle.

``translated`` turns library and transport errors into ``TemporaryError`` /
``PermanentError`` at the edge of one apply; no ``kubernetes`` type leaves the applier.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from provisioning.errors import PermanentError, TemporaryError

APPLY_PATCH = "application/apply-patch+yaml"
REQUEST_TIMEOUT = (10.0, 60.0)
# Seconds before the step engine tries again after a transport failure.
TRANSIENT_DELAY = 10.0
TEMPORARY_STATUS = (429, 500, 502, 503, 504)

Json = dict[str, Any]


class KubeHttp:
    """GET and server-side apply over one cluster's ``ApiClient``.  Thread-safe."""

    def __init__(self, api_client: ApiClient) -> None:
        self._api = api_client
        self.host = str(api_client.configuration.host)

    def get(self, path: str, *, accept: str = "application/json") -> Json:
        """The decoded answer to ``GET path``; ``ApiException`` for any non-2xx."""
        found = json.loads(self._call("GET", path, headers={"Accept": accept}))
        if not isinstance(found, dict):
            raise ApiException(status=500, reason=f"GET {path} answered {type(found).__name__}")
        return found

    def apply(self, path: str, body: bytes, *, field_manager: str) -> None:
        """Server-side apply of ``body`` at ``path``, taking over conflicting fields."""
        # The answer (the whole stored object) is read, so the connection can be reused,
        # but not decoded: nothing in it is needed.
        self._call(
            "PATCH",
            path,
            headers={"Accept": "application/json", "Content-Type": APPLY_PATCH},
            query=[("fieldManager", field_manager), ("force", "true")],
            body=body,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        query: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> bytes:
        # param_serialize adds the Bearer token (through the client's refresh hook) and
        # the user agent; given bytes, it passes the body through untouched.
        method, url, header_params, sent, _ = self._api.param_serialize(
            method,
            path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(
            method, url, header_params=header_params, body=sent, _request_timeout=REQUEST_TIMEOUT
        )
        data = response.read()
        response.response.release_conn()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return bytes(data)


def api_message(e: ApiException) -> str:
    """The ``message`` of the API's ``Status`` answer, or what there is instead."""
    try:
        decoded = json.loads(e.body or "")
    except (TypeError, ValueError):
        decoded = None
    if isinstance(decoded, dict) and decoded.get("message"):
        return str(decoded["message"])
    return f"HTTP {e.status} {e.reason or ''}".strip()


@contextmanager
def translated(host: str) -> Iterator[None]:
    """Transport and API errors, wherever they arise, as the two error kinds."""
    where = f"the cluster's API server at {host}"
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
        if e.status in TEMPORARY_STATUS:
            raise TemporaryError(
                f"{where} could not answer just now (HTTP {e.status})", delay=TRANSIENT_DELAY
            ) from e
        raise PermanentError(f"{where} refused a request: {api_message(e)}") from e
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
