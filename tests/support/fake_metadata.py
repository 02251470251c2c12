"""A local stand-in for the GCE metadata server, so ``google.auth.default()`` works offline.

Used by ``tests/provisioning/test_kube_access.py`` to give ``AdcTokens`` real Compute
Engine credentials whose tokens come from here.  ``FakeMetadata`` binds 127.0.0.1 on a
free port (plain HTTP/1.1, keep-alive, Nagle off) and answers what google-auth 2.x asks,
only when the request carries ``Metadata-Flavor: Google`` (403 otherwise), and always
with that header back (google-auth's GCE detection checks it):

* ``GET /``: the ping google-auth sends to ``GCE_METADATA_IP`` to detect GCE.
* ``/computeMetadata/v1/project/project-id`` and ``.../numeric-project-id``.
* ``/computeMetadata/v1/instance/service-accounts/default/email``, and
  ``.../default/?recursive=true`` (``{"email", "scopes", "aliases"}``, read before each
  token; after the first, google-auth asks by email instead of ``default``: both work).
* ``/computeMetadata/v1/instance/service-accounts/default/token``: ``{"access_token",
  "expires_in", "token_type": "Bearer"}``, a new token (``token-1``, ``token-2``, ...)
  each call, valid ``expires_in`` seconds (a plain attribute).  Tokens handed out are in
  ``tokens``, the scopes asked for in ``scopes_asked``.
* ``/computeMetadata/v1/universe/universe-domain``: ``googleapis.com``.

``use(monkeypatch)`` points google-auth here: ``GCE_METADATA_HOST`` / ``GCE_METADATA_IP``,
no ``GOOGLE_APPLICATION_CREDENTIALS``, an empty gcloud configuration directory.  google-auth
reads ``GCE_METADATA_HOST`` once, at import, into ``_metadata._GCE_METADATA_HOST``; that is
patched too.  google-auth 2.x does not cache the GCE check itself.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from google.auth.compute_engine import _metadata

from tests.support.serving import BackgroundServer, ConnectionTracking

HOST = "127.0.0.1"
ROOT = "/computeMetadata/v1/"
ACCOUNTS = "instance/service-accounts/"
FLAVOR = ("Metadata-Flavor", "Google")


class _Server(ConnectionTracking, ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeMetadata

    def __init__(self, fake: FakeMetadata) -> None:
        self.fake = fake
        super().__init__((HOST, 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._handle()

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        if self.headers.get(FLAVOR[0]) != FLAVOR[1]:
            self._send(403, "text/plain", b"Missing Metadata-Flavor:Google header.")
            return
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        status, answer = self.server.fake._answer(split.path, query)
        if isinstance(answer, str):
            self._send(status, "application/text", answer.encode())
        else:
            self._send(status, "application/json", json.dumps(answer).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header(*FLAVOR)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FakeMetadata(BackgroundServer):
    """The metadata server of a VM running as ``email`` in ``project``; see the docstring."""

    thread_name = "fake-metadata"

    def __init__(
        self,
        *,
        project: str = "demo-project",
        email: str = "kubeflow-bot@demo-project.iam.gserviceaccount.com",
        expires_in: int = 3599,
    ) -> None:
        self.project = project
        self.email = email
        self.expires_in = expires_in
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        self._tokens: list[str] = []
        self._scopes_asked: list[str] = []
        self._paths: list[str] = []

    def _new_server(self) -> _Server:
        return _Server(self)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, for ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP``."""
        return f"{HOST}:{self.port}"

    @property
    def tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    @property
    def scopes_asked(self) -> list[str]:
        with self._lock:
            return list(self._scopes_asked)

    @property
    def paths(self) -> list[str]:
        """Paths asked for, in order."""
        with self._lock:
            return list(self._paths)

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make ``google.auth.default()`` find Compute Engine credentials served here."""
        monkeypatch.setenv("GCE_METADATA_HOST", self.host)
        monkeypatch.setenv("GCE_METADATA_IP", self.host)
        monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", self.host)
        monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", False)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        monkeypatch.delenv("NO_GCE_CHECK", raising=False)
        monkeypatch.delenv("GCE_METADATA_MTLS_MODE", raising=False)
        # No gcloud user credentials may be found before the metadata server.
        monkeypatch.setenv("CLOUDSDK_CONFIG", os.devnull)
        for proxy in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(proxy, raising=False)

    def _answer(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        with self._lock:
            self._paths.append(path)
            if path == "/":
                return 200, "ok"
            if not path.startswith(ROOT):
                return 404, "not found"
            rest = path[len(ROOT) :]
            if rest == "project/project-id":
                return 200, self.project
            if rest == "project/numeric-project-id":
                return 200, "271828182845"
            if rest == "universe/universe-domain":
                return 200, "googleapis.com"
            account, _, leaf = rest.removeprefix(ACCOUNTS).partition("/")
            if not rest.startswith(ACCOUNTS) or account not in ("default", self.email):
                return 404, "not found"
            if leaf == "email":
                return 200, self.email
            if leaf == "":
                scopes = ["https://www.googleapis.com/auth/cloud-platform"]
                return 200, {"email": self.email, "scopes": scopes, "aliases": ["default"]}
            if leaf == "token":
                token = f"token-{next(self._serial)}"
                self._tokens.append(token)
                self._scopes_asked.append(query.get("scopes", ""))
                return 200, {
                    "access_token": token,
                    "expires_in": self.expires_in,
                    "token_type": "Bearer",
                }
            return 404, "not found"
