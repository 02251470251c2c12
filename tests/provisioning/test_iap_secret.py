"""The custom OAuth client's secret goes to the cluster's Secret and nowhere else.

A create with a custom client runs through the real worker, store (SQLite), chat
notifier and step engine over a ``MemoryCloud``; the secret must then be found in the
applied Secret only: not in the stored request (steps, plan, calls, history), the log
or any chat message.  A refused apply of that Secret, on the fake Kubernetes API server
through the real applier, names the object without its body.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from handlers.progress import ChatNotifier
from provisioning.actions import CreateAction
from provisioning.create_steps import REQUIRED_APIS
from provisioning.iap_objects import oauth_secret
from provisioning.kube_access import api_client
from provisioning.kube_applier import KubeApplier
from provisioning.oauth import OAuthClient
from provisioning.queue import Ack
from provisioning.queue_message import QueueMessage
from provisioning.records import RequestRecord, State
from provisioning.spec import DeploymentSpec
from provisioning.sqlite_store import SqliteStore
from provisioning.worker import Worker
from tests.support.clocks import FakeMonotonic
from tests.support.fake_kube import FakeKube
from tests.support.memory_cloud import MemoryCloud
from tests.support.recording_chat import RecordingChat

SECRET = "GOCSPX-kfb-very-secret-7f3a9c"
SECRET_B64 = base64.b64encode(SECRET.encode()).decode()
CLIENT = OAuthClient("1234-abc.apps.googleusercontent.com", SecretStr(SECRET))
PROJECT = "demo-project"
ZONE = "us-central1-a"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GATEWAY_BUNDLE: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {
            "type": "ClusterIP",
            "ports": [
                {"name": "status-port", "port": 15021},
                {"name": "http2", "port": 80},
            ],
        },
    },
]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def leaks(text: str) -> bool:
    return SECRET in text or SECRET_B64 in text


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "requests.db") as opened:
        yield opened


def test_a_create_with_a_custom_client_keeps_its_secret_out_of_record_log_and_chat(
    store: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cloud = MemoryCloud()
    cloud.enable(PROJECT, REQUIRED_APIS)
    chat = RecordingChat()
    clock = Clock()
    action = CreateAction(
        spec=DeploymentSpec(name="demo", project=PROJECT, zone=ZONE),
        requester_email="ada@example.com",
    )
    store.add(
        RequestRecord(
            id="kf-sec001",
            action=action,
            requester="U0ADA",
            channel="C0KUBEFLOW",
            state=State.QUEUED,
            created_at=T0,
            updated_at=T0,
        )
    )
    notifier = ChatNotifier(chat, store, clock, min_interval=0.0)
    worker = Worker(
        store, cloud, notifier, clock, manifests=lambda: GATEWAY_BUNDLE, oauth_client=CLIENT
    )
    message = QueueMessage(
        request_id="kf-sec001", action=action, approved_by="U0APPROVER", approved_at=T0
    )

    for attempt in range(1, 30):
        if isinstance(worker.handle(message, attempt), Ack):
            break
    notifier.close()

    record = store.get("kf-sec001")
    assert record is not None
    assert record.state is State.SUCCEEDED, record.reason
    # It went where it belongs...
    [secret] = [
        obj
        for (_, kind, _, _), obj in cloud.objects(PROJECT, ZONE, "demo").items()
        if kind == "Secret"
    ]
    assert secret["data"]["client_secret"] == SECRET_B64
    # ...and nowhere else.
    assert not leaks(record.model_dump_json())
    assert not leaks((tmp_path / "requests.db").read_bytes().decode("latin-1"))
    assert caplog.records
    assert not leaks(caplog.text)
    assert chat.calls
    assert not any(leaks(repr(call)) for call in chat.calls)


class Tokens:
    def token(self) -> str:
        return "bot-token"


def test_a_refused_secret_apply_names_the_secret_but_not_what_it_holds(
    tmp_path: Path,
) -> None:
    clock = FakeMonotonic()
    hook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "secret-check"},
        "webhooks": [
            {
                "name": "secret-check.example.com",
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                # Nothing serves it: every Secret write is refused.
                "clientConfig": {"service": {"namespace": "istio-system", "name": "nobody"}},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["secrets"],
                    }
                ],
            }
        ],
    }
    with FakeKube(clock=clock) as kube:
        applier = KubeApplier(
            api_client(f"127.0.0.1:{kube.port}", kube.ca_base64, Tokens()),
            clock=clock,
            sleep=clock.advance,
            retry_deadline_seconds=5.0,
        )
        applier.apply([GATEWAY_BUNDLE[0], hook])
        summary = applier.apply([oauth_secret(CLIENT)])

        assert kube.refusals
        assert kube.find("Secret", "kubeflow-oauth", "istio-system") is None
    waiting = ", ".join(summary.waiting_for)
    assert "Secret istio-system/kubeflow-oauth" in waiting
    assert not leaks(waiting)
