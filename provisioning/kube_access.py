"""Access to a cluster's Kubernetes API from what GKE says of it: endpoint, CA, token.

Called by the gcp cloud when a step applies objects to a new cluster (the Kubeflow and
IAP steps, through ``KubeApplier``): ``KubeClients.for_cluster`` turns ``Cluster.endpoint``
and ``master_auth.cluster_ca_certificate`` (base64 of the CA's PEM), exactly as GKE's API
returns them, into a ``kubernetes.client.ApiClient`` that verifies the API server against
that CA and sends ``Authorization: Bearer <token>`` with a fresh token on every request.
No kubeconfig file and no gcloud: the worker's own Google credentials are the identity,
as ``gcloud container clusters get-credentials`` would arrange.

``AdcTokens`` is the token source for production (Application Default Credentials,
refreshed five minutes before expiry); tests inject any ``TokenSource``.  Setup errors
(no credentials, a CA that is not a certificate) are translated here into
``TemporaryError`` / ``PermanentError``; errors of the requests themselves are the
applier's to translate, since only it knows what it was doing.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import google.auth
import google.auth.transport.requests
import urllib3
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Credentials
from kubernetes.client import ApiClient, Configuration

from provisioning.errors import PermanentError, TemporaryError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Refresh this long before expiry: a token handed out must outlive the requests of one
# apply (minutes at most), and GKE refuses an expired token with 401 mid-apply.
REFRESH_MARGIN = timedelta(minutes=5)
# The applier's default concurrency (16 applies and 4 polls); the pool must be
# at least as large, or urllib3 discards the extra connections and every request beyond
# it pays a new TLS handshake.
DEFAULT_POOL_SIZE = 20
# Seconds; the client's default is no timeout at all, so a silent API server would hang
# a worker thread forever.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
# Clusters whose clients are kept; the least recently used beyond it is closed.
MAX_CACHED_CLUSTERS = 32
TOKEN_DELAY = 10.0

_AUTH_KEY = "authorization"


class TokenSource(Protocol):
    """Gives an OAuth access token valid for the next few minutes."""

    def token(self) -> str: ...


def _utcnow() -> datetime:
    # google-auth keeps ``expiry`` as a naive UTC datetime.
    return datetime.now(UTC).replace(tzinfo=None)


class AdcTokens:
    """Access tokens from Application Default Credentials (or given ``credentials``).

    The credentials are looked up on first use, not at construction, so building the
    worker never touches the network.  Thread-safe: one refresh at a time, and a token
    that is missing or expires within ``margin`` is refreshed before it is handed out.
    """

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        margin: timedelta = REFRESH_MARGIN,
        now: Callable[[], datetime] = _utcnow,
        request: Any = None,
    ) -> None:
        self._credentials = credentials
        self._margin = margin
        self._now = now
        self._request = request
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            credentials = self._credentials or self._load()
            if self._stale(credentials):
                self._refresh(credentials)
            token = credentials.token
            if not token:
                raise PermanentError(
                    "the bot's Google credentials gave no access token; "
                    "ask the bot's operators to check them"
                )
            return str(token)

    def _load(self) -> Credentials:
        try:
            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        except auth_exceptions.DefaultCredentialsError as e:
            raise PermanentError(
                "the bot has no Google credentials to reach the cluster with "
                "(Application Default Credentials); ask the bot's operators"
            ) from e
        self._credentials = credentials
        return credentials

    def _stale(self, credentials: Credentials) -> bool:
        if not credentials.token:
            return True
        expiry = credentials.expiry
        return expiry is not None and expiry - self._now() < self._margin

    def _refresh(self, credentials: Credentials) -> None:
        if self._request is None:
            # Made lazily: it holds a requests.Session, used only under our lock.
            self._request = google.auth.transport.requests.Request()
        try:
            credentials.refresh(self._request)
        except auth_exceptions.TransportError as e:
            raise TemporaryError(
                "could not reach Google to get an access token for the cluster",
                delay=TOKEN_DELAY,
            ) from e
        except auth_exceptions.RefreshError as e:
            # The metadata server being briefly unreachable arrives as a RefreshError
            # caused by a TransportError; a refused identity is not worth retrying.
            if e.retryable or isinstance(e.__cause__, auth_exceptions.TransportError):
                raise TemporaryError(
                    "Google did not give an access token for the cluster just now",
                    delay=TOKEN_DELAY,
                ) from e
            raise PermanentError(
                "Google refused to give the bot an access token for the cluster; "
                "ask the bot's operators to check its credentials"
            ) from e


def _ca_pem(ca_certificate: str) -> str:
    """The PEM text of GKE's base64 ``cluster_ca_certificate``, checked to load."""
    try:
        pem = base64.b64decode(ca_certificate, validate=True).decode("ascii")
        # Fails here, in plain words, rather than on the first connection.
        ssl.create_default_context(cadata=pem)
    except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError) as e:
        raise PermanentError(
            "GKE gave a cluster CA certificate that is not a base64 PEM certificate; "
            "ask the bot's operators"
        ) from e
    return pem


class _BoundedApiClient(ApiClient):
    """An ``ApiClient`` whose requests time out unless the caller says otherwise.

    ``DynamicClient`` discovery passes no timeout, and ``None`` means "wait forever".
    """

    def __init__(self, configuration: Configuration, timeout: tuple[float, float]) -> None:
        super().__init__(configuration)
        self._default_timeout = timeout

    def call_api(  # type: ignore[no-untyped-def]
        self,
        method,
        url,
        header_params=None,
        body=None,
        post_params=None,
        _request_timeout=None,
    ):
        return super().call_api(
            method,
            url,
            header_params,
            body,
            post_params,
            _request_timeout or self._default_timeout,
        )


def api_client(
    endpoint: str,
    ca_certificate: str,
    tokens: TokenSource,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
) -> ApiClient:
    """A client for ``https://{endpoint}`` trusting only the cluster's CA.

    ``endpoint`` and ``ca_certificate`` are GKE's ``Cluster.endpoint`` (an address, or
    ``host:port``) and ``master_auth.cluster_ca_certificate``.  Every request asks
    ``tokens`` for its token, so a long-lived client never sends an expired one.
    """
    if not endpoint:
        raise TemporaryError("the cluster has no API endpoint yet", delay=TOKEN_DELAY)
    configuration = Configuration(
        host=f"https://{endpoint}",
        ca_cert_data=_ca_pem(ca_certificate),
        api_key={_AUTH_KEY: ""},
        api_key_prefix={_AUTH_KEY: "Bearer"},
        connection_pool_maxsize=pool_size,
        # Retry a refused or reset connection twice, quickly; never a request the server
        # may have acted on, and never a TLS failure (a wrong CA will not get better).
        retries=urllib3.Retry(
            total=2, connect=2, read=0, redirect=0, status=0, other=0, backoff_factor=0.1
        ),
    )

    def refresh(config: Configuration) -> None:
        # Called by the client before it reads the key for each request.
        config.api_key[_AUTH_KEY] = tokens.token()

    # Typed as None by the library, though it is documented as this hook.
    configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]
    return _BoundedApiClient(configuration, timeout)


class KubeClients:
    """One ``ApiClient`` per cluster, kept so connections and discovery are reused.

    Keyed by endpoint and CA, so a rotated CA or a re-created cluster gets a new client;
    the least recently used beyond ``max_clusters`` is closed.  Thread-safe.
    """

    def __init__(
        self,
        tokens: TokenSource,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_clusters: int = MAX_CACHED_CLUSTERS,
    ) -> None:
        self._tokens = tokens
        self._pool_size = pool_size
        self._max_clusters = max_clusters
        self._clients: OrderedDict[tuple[str, str], ApiClient] = OrderedDict()
        self._lock = threading.Lock()

    def for_cluster(self, endpoint: str, ca_certificate: str) -> ApiClient:
        key = (endpoint, ca_certificate)
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            client = api_client(endpoint, ca_certificate, self._tokens, pool_size=self._pool_size)
            self._clients[key] = client
            evicted = []
            while len(self._clients) > self._max_clusters:
                evicted.append(self._clients.popitem(last=False)[1])
        for old in evicted:
            old.close()
        return client

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
