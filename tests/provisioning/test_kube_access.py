"""``kube_access``: a cluster's API client from GKE's endpoint and CA, with fresh tokens.

Against ``FakeKube`` (TLS with its own CA, Bearer tokens recorded) and ``FakeMetadata``
(google-auth's Compute Engine credentials, served from loopback).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Credentials
from kubernetes import client

from provisioning.errors import PermanentError, TemporaryError
from provisioning.kube_access import AdcTokens, KubeClients, api_client
from provisioning.kube_applier import KubeApplier
from tests.support.fake_kube import FakeKube
from tests.support.fake_metadata import FakeMetadata
from tests.support.kube_ca import make_certificates

CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "settings", "namespace": "default"},
    "data": {"mode": "a"},
}


class StaticTokens:
    def __init__(self, value: str = "static") -> None:
        self.value = value

    def token(self) -> str:
        return self.value


class ManualCredentials(Credentials):
    """Credentials whose tokens and expiry the test decides; counts refreshes."""

    def __init__(self, lifetime: timedelta, now: datetime) -> None:
        super().__init__()
        self.lifetime = lifetime
        self.now = now
        self.refreshes = 0
        self.fail_with: Exception | None = None

    def refresh(self, request: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.refreshes += 1
        self.token = f"manual-{self.refreshes}"
        self.expiry = self.now + self.lifetime


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        yield fake
        assert fake.errors == []


def endpoint(kube: FakeKube) -> str:
    return f"127.0.0.1:{kube.port}"  # what GKE's Cluster.endpoint is: an address


# -- TLS and the client ----------------------------------------------------------------


def test_the_client_trusts_the_ca_gke_hands_out_and_sends_a_bearer_token(
    kube: FakeKube,
) -> None:
    api = api_client(endpoint(kube), kube.ca_base64, StaticTokens("abc"))
    assert client.VersionApi(api).get_code().git_version.startswith("v1.32")
    assert api.configuration.host == f"https://{endpoint(kube)}"
    assert kube.tokens_seen == ["abc"]


def test_a_server_not_signed_by_the_cluster_ca_is_refused_at_once(kube: FakeKube) -> None:
    other_ca = make_certificates().ca_base64
    api = api_client(endpoint(kube), other_ca, StaticTokens())
    with pytest.raises(urllib3.exceptions.MaxRetryError) as refused:
        client.VersionApi(api).get_code()
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert kube.tokens_seen == []  # the token never left the client


def test_the_applier_reports_a_wrong_ca_as_a_temporary_error_in_plain_words(
    kube: FakeKube, tmp_path: Path
) -> None:
    api = api_client(endpoint(kube), make_certificates().ca_base64, StaticTokens())
    with pytest.raises(TemporaryError) as refused:
        KubeApplier(api).apply([CONFIG_MAP])
    assert "not signed by the cluster's CA" in str(refused.value)
    assert "static" not in str(refused.value)


def test_a_ca_that_is_not_a_base64_certificate_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError) as bad:
        api_client("127.0.0.1:1", "not base64 at all!", StaticTokens())
    assert "not a base64 PEM certificate" in bad.value.user_message
    with pytest.raises(PermanentError):
        api_client("127.0.0.1:1", "aGVsbG8=", StaticTokens())  # base64 of "hello"


def test_a_refused_connection_is_a_temporary_error(tmp_path: Path) -> None:
    with FakeKube() as kube:
        address, ca = endpoint(kube), kube.ca_base64
    api = api_client(address, ca, StaticTokens())
    with pytest.raises(TemporaryError) as refused:
        KubeApplier(api).apply([CONFIG_MAP])
    assert "connection refused" in str(refused.value)


def test_clients_are_kept_per_endpoint_and_ca(kube: FakeKube) -> None:
    clients = KubeClients(StaticTokens(), pool_size=8, max_clusters=2)
    first = clients.for_cluster(endpoint(kube), kube.ca_base64)
    assert clients.for_cluster(endpoint(kube), kube.ca_base64) is first
    assert first.configuration.connection_pool_maxsize == 8
    rotated = clients.for_cluster(endpoint(kube), make_certificates().ca_base64)
    assert rotated is not first
    clients.for_cluster("127.0.0.2:443", kube.ca_base64)  # evicts the least recently used
    assert clients.for_cluster(endpoint(kube), kube.ca_base64) is not first
    clients.close()


# -- tokens -------------------------------------------------------------------------------


@pytest.fixture
def metadata(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetadata]:
    with FakeMetadata(expires_in=600) as fake:
        fake.use(monkeypatch)
        yield fake


def test_adc_tokens_come_from_the_metadata_server_and_are_refreshed_near_expiry(
    kube: FakeKube, metadata: FakeMetadata
) -> None:
    shift = timedelta()
    # google-auth keeps expiry in naive UTC.
    tokens = AdcTokens(now=lambda: datetime.now(UTC).replace(tzinfo=None) + shift)
    api = api_client(endpoint(kube), kube.ca_base64, tokens)
    version = client.VersionApi(api)
    version.get_code()
    version.get_code()
    assert kube.tokens_seen == ["token-1", "token-1"]  # valid for 10 minutes: kept
    assert metadata.scopes_asked == ["https://www.googleapis.com/auth/cloud-platform"]

    shift = timedelta(minutes=6)  # 4 minutes left: inside the 5-minute margin
    version.get_code()
    assert kube.tokens_seen[-1] == "token-2"
    assert metadata.tokens == ["token-1", "token-2"]


def test_a_token_shorter_than_the_margin_is_refreshed_for_every_request(
    kube: FakeKube, metadata: FakeMetadata
) -> None:
    metadata.expires_in = 120
    api = api_client(endpoint(kube), kube.ca_base64, AdcTokens())
    for _ in range(3):
        client.VersionApi(api).get_code()
    assert kube.tokens_seen == ["token-1", "token-2", "token-3"]


def test_injected_credentials_refresh_once_for_many_threads() -> None:
    now = datetime(2026, 3, 2, 9, 0)
    credentials = ManualCredentials(timedelta(hours=1), now)
    tokens = AdcTokens(credentials, now=lambda: credentials.now)
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(tokens.token())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == ["manual-1"] * 16
    assert credentials.refreshes == 1

    credentials.now = now + timedelta(minutes=56)  # 4 minutes before expiry
    assert tokens.token() == "manual-2"
    assert tokens.token() == "manual-2"


def test_token_failures_become_the_two_error_kinds() -> None:
    now = datetime(2026, 3, 2, 9, 0)
    credentials = ManualCredentials(timedelta(hours=1), now)
    tokens = AdcTokens(credentials, now=lambda: now)
    credentials.fail_with = auth_exceptions.TransportError("metadata server unreachable")
    with pytest.raises(TemporaryError):
        tokens.token()
    credentials.fail_with = auth_exceptions.RefreshError("invalid_grant: account disabled")
    with pytest.raises(PermanentError) as refused:
        tokens.token()
    assert "refused to give the bot an access token" in refused.value.user_message
