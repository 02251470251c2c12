"""``KUBEFLOW_BOT_CLOUD=gcp`` end to end: Slack → Pub/Sub → worker → Google's APIs (fakes).

The fake GKE hands out the fake Kubernetes API server as the cluster's endpoint, with its
CA certificate; the worker reaches it with a token from the fake metadata server.

``kubeflow-bot serve`` and ``kubeflow-bot worker`` run as separate processes on the real
Pub/Sub emulator; the worker's Google clients reach the local fakes through the
``<API>_EMULATOR_HOST`` variables, and its progress reaches the stand-in Slack.
``KUBEFLOW_BOT_MAX_POLL_SECONDS=1`` makes the worker look at pending operations every
second instead of every thirty.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import container_v1

from bot import cli
from provisioning.actions import IAP_ACCESSOR_ROLE
from provisioning.create_steps import ACCOUNT_ROLES, REQUIRED_APIS, account_email
from provisioning.iap_objects import BACKEND_CONFIG, INGRESS, OAUTH_SECRET
from provisioning.records import State
from provisioning.spec import DeploymentSpec
from tests.support.bot_process import BotLauncher
from tests.support.google_fakes import GKE_ADDON_TOKEN, PROJECT, PROJECT_NUMBER, GoogleFakes
from tests.support.paths import SAMPLE_POLICY
from tests.support.pubsub_emulator import PubSubNames
from tests.support.slack_api import SlackApiStub
from tests.support.slack_driver import APPROVER, DEMO_URL, REQUESTER, USERS, Slack, text_of

ZONE = "us-central1-a"
HOST = f"demo.endpoints.{PROJECT}.cloud.goog"
FLOW_TIMEOUT = 60.0
# What of Kubeflow's bundle the IAP objects need, as a small stand-in bundle: the
# namespaces, Istio's RequestAuthentication kind and its ingress gateway Service, as
# upstream renders it (ClusterIP).
BUNDLE = (
    "".join(
        f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
        for name in ("kubeflow", "istio-system")
    )
    + """---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: requestauthentications.security.istio.io
spec:
  group: security.istio.io
  scope: Namespaced
  names: {kind: RequestAuthentication, plural: requestauthentications,
          singular: requestauthentication, listKind: RequestAuthenticationList}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1beta1
    served: true
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels: {app: istio-ingressgateway, istio: ingressgateway}
spec:
  type: ClusterIP
  selector: {app: istio-ingressgateway, istio: ingressgateway}
  ports:
  - {name: status-port, port: 15021, protocol: TCP, targetPort: 15021}
  - {name: http2, port: 80, protocol: TCP, targetPort: 8080}
  - {name: https, port: 443, protocol: TCP, targetPort: 8443}
"""
)
OAUTH_CLIENT_ID = "1234-kfbot.apps.googleusercontent.com"
OAUTH_CLIENT_SECRET = "GOCSPX-e2e-secret-value-9c1d"


@pytest.fixture
def fakes() -> Iterator[GoogleFakes]:
    with GoogleFakes(operation_seconds=0.5) as started:
        yield started


def gcp_env(
    fakes: GoogleFakes, names: PubSubNames, emulator: str, manifests: Path
) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": names.project,
        "PUBSUB_TOPIC": names.topic,
        "PUBSUB_SUBSCRIPTION": names.subscription,
        "PUBSUB_EMULATOR_HOST": emulator,
        "KUBEFLOW_BOT_MAX_POLL_SECONDS": "1",
        "KUBEFLOW_BOT_PUBSUB_LEASE_SECONDS": "10",
        "KUBEFLOW_BOT_MANIFESTS": str(manifests),
        "KUBEFLOW_BOT_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
        "KUBEFLOW_BOT_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET,
        **fakes.env(),
    }


def test_an_approved_request_runs_to_its_url_with_the_checklist_in_the_thread(  # noqa: PLR0917 - pytest fixtures
    launcher: BotLauncher,
    stub: SlackApiStub,
    fakes: GoogleFakes,
    tmp_path: Path,
    pubsub_emulator: str,
    pubsub_names: PubSubNames,
) -> None:
    manifests = tmp_path / "bundle.yaml"
    manifests.write_text(BUNDLE)
    env = gcp_env(fakes, pubsub_names, pubsub_emulator, manifests)
    shared = tmp_path / "shared.db"
    bot = launcher.start("serve", env=env, store_path=shared)
    launcher.start("worker", env=env, store_path=shared)
    slack = Slack.on(bot, stub)

    card = slack.file(f"create demo --zone {ZONE} --gpu nvidia-tesla-t4:2 --gpu-nodes 0-3")
    slack.approve(card)

    head = f"`{card.request_id}` demo:"
    milestones = [
        slack.wait_reply(card, head, words, timeout=FLOW_TIMEOUT)
        for words in (
            "the GKE cluster is running",
            "the GPU node pool is ready",
            "Kubeflow is installed",
        )
    ]
    ready = slack.wait_reply(card, "`demo` is ready: " + DEMO_URL, timeout=FLOW_TIMEOUT)
    assert text_of(ready).startswith(f"<@{REQUESTER}>")
    assert "nvidia-tesla-t4" in text_of(ready)
    assert "/kubeflow grant EMAIL demo" in text_of(ready)
    assert stub.calls.index(milestones[0]) < stub.calls.index(ready)

    # One status message, ticked off step by step in place.
    status, *others = [c for c in slack.thread_posts(card) if text_of(c).startswith(head)]
    assert len(others) == len(milestones)
    assert all(m in others for m in milestones)
    updates = [text_of(u) for u in slack.updates_of(str(status.response["ts"]))]
    assert len(updates) >= 4
    final = updates[-1]
    for title in ("Enable the project's APIs", "GKE cluster", "GPU node pool", "Kubeflow"):
        assert title in final
    record = bot.record(card.request_id)
    assert record.state is State.SUCCEEDED
    assert record.url == DEMO_URL
    assert {s.status for s in record.steps} == {"done"}

    # What Google was asked for, once each.
    assert fakes.service_usage.enabled(PROJECT) >= frozenset(REQUIRED_APIS)
    assert fakes.gke.count("CreateCluster") == 1
    assert fakes.gke.count("CreateNodePool") == 1
    created = fakes.gke.cluster(PROJECT, ZONE, "demo")
    assert created is not None
    assert created.status == container_v1.Cluster.Status.RUNNING
    assert created.resource_labels["managed-by"] == "kubeflow-bot"
    assert created.resource_labels["kubeflow-bot-request"] == card.request_id
    assert created.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"
    gpu_pool = fakes.gke.node_pool(PROJECT, ZONE, "demo", "gpu-pool")
    assert gpu_pool is not None
    [accelerator] = gpu_pool.config.accelerators
    assert (accelerator.accelerator_type, accelerator.accelerator_count) == ("nvidia-tesla-t4", 2)
    assert (gpu_pool.autoscaling.min_node_count, gpu_pool.autoscaling.max_node_count) == (0, 3)
    [address] = fakes.compute.addresses(PROJECT).values()
    assert address["name"] == "demo-ip"
    spec = DeploymentSpec(name="demo", project=PROJECT, zone=ZONE)
    for suffix, roles in ACCOUNT_ROLES.items():
        email = account_email(spec, suffix)
        assert fakes.iam.account(email) is not None
        for role in roles:
            assert f"serviceAccount:{email}" in fakes.resource_manager.members(PROJECT, role)
    assert fakes.resource_manager.members(PROJECT, IAP_ACCESSOR_ROLE) == {
        f"user:{USERS[REQUESTER]}"
    }
    assert fakes.resource_manager.blind_sets == 0
    assert fakes.iam.blind_sets == 0
    # Kubeflow and IAP on the cluster, with the bot's token from the metadata server.
    assert fakes.kube.find("Namespace", "kubeflow") is not None
    assert fakes.kube.find("Ingress", INGRESS, namespace="istio-system") is not None
    bot_tokens = set(fakes.kube.tokens_seen) - {GKE_ADDON_TOKEN}
    assert bot_tokens
    assert bot_tokens <= set(fakes.metadata.tokens)
    assert fakes.service_management.target_of(HOST) == address["address"]
    assert APPROVER in text_of(slack.wait_reply(card, "Approved by"))
    assert_gke_overlay_and_iap(fakes)
    # The OAuth client's secret reached the cluster's Secret, and nothing the bot says.
    secret = fakes.kube.find("Secret", OAUTH_SECRET, namespace="istio-system")
    assert secret is not None
    assert base64.b64decode(secret["data"]["client_secret"]).decode() == OAUTH_CLIENT_SECRET
    assert OAUTH_CLIENT_SECRET not in record.model_dump_json()
    assert all(OAUTH_CLIENT_SECRET not in bot.log() for bot in launcher.started)
    assert all(OAUTH_CLIENT_SECRET not in repr(call) for call in stub.calls)


def assert_gke_overlay_and_iap(fakes: GoogleFakes) -> None:
    """The gateway Service as GKE's Ingress needs it, the health check on its status
    port, and the gateway checking IAP's JWT for the backend service GKE made."""
    gateway = fakes.kube.find("Service", "istio-ingressgateway", namespace="istio-system")
    assert gateway is not None
    assert gateway["spec"]["type"] == "NodePort"
    annotations = gateway["metadata"]["annotations"]
    assert annotations["cloud.google.com/backend-config"] == (
        '{"ports": {"http2":"iap-backendconfig"}}'
    )
    assert annotations["cloud.google.com/neg"] == '{"ingress":false}'
    node_ports = {p["name"]: p["nodePort"] for p in gateway["spec"]["ports"]}

    config = fakes.kube.find("BackendConfig", BACKEND_CONFIG, namespace="istio-system")
    assert config is not None
    assert config["spec"]["healthCheck"]["port"] == node_ports["status-port"]
    assert config["spec"]["iap"]["oauthclientCredentials"] == {"secretName": OAUTH_SECRET}

    ingress = fakes.kube.find("Ingress", INGRESS, namespace="istio-system")
    assert ingress is not None
    [backend] = json.loads(ingress["metadata"]["annotations"]["ingress.kubernetes.io/backends"])
    assert backend.startswith(f"k8s-be-{node_ports['http2']}--")
    backend_id = fakes.compute.put_backend_service(PROJECT, backend)  # the one GKE made
    policy = fakes.kube.find("RequestAuthentication", "ingress-jwt", namespace="istio-system")
    assert policy is not None
    assert policy["apiVersion"] == "security.istio.io/v1"
    [rule] = policy["spec"]["jwtRules"]
    assert rule["audiences"] == [f"/projects/{PROJECT_NUMBER}/global/backendServices/{backend_id}"]
    assert rule["issuer"] == "https://cloud.google.com/iap"
    assert rule["jwksUri"] == "https://www.gstatic.com/iap/verify/public_key-jwk"
    assert rule["fromHeaders"] == [{"name": "x-goog-iap-jwt-assertion"}]
    assert policy["spec"]["selector"] == {"matchLabels": {"app": "istio-ingressgateway"}}


OAUTH_SETTINGS = {
    "KUBEFLOW_BOT_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
    "KUBEFLOW_BOT_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET,
}


@pytest.mark.parametrize(
    ("variable", "missing"),
    [
        ("KUBEFLOW_BOT_OAUTH_CLIENT_ID", "KUBEFLOW_BOT_OAUTH_CLIENT_SECRET"),
        ("KUBEFLOW_BOT_OAUTH_CLIENT_SECRET", "KUBEFLOW_BOT_OAUTH_CLIENT_ID"),
    ],
)
def test_one_oauth_setting_without_the_other_stops_the_start_with_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    variable: str,
    missing: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from the working directory
    for name in OAUTH_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, OAUTH_SETTINGS[variable])
    monkeypatch.setenv("KUBEFLOW_BOT_POLICY", str(SAMPLE_POLICY))

    assert cli.main(["console"]) == cli.EXIT_CONFIG

    err = capsys.readouterr().err
    assert f"{missing} is not set" in err
    assert "Traceback" not in err
    assert OAUTH_CLIENT_SECRET not in err
