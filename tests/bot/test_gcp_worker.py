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

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import container_v1

from provisioning.actions import IAP_ACCESSOR_ROLE
from provisioning.create_steps import ACCOUNT_ROLES, REQUIRED_APIS, account_email
from provisioning.iap_objects import INGRESS
from provisioning.records import State
from provisioning.spec import DeploymentSpec
from tests.support.bot_process import BotLauncher
from tests.support.google_fakes import GKE_ADDON_TOKEN, PROJECT, GoogleFakes
from tests.support.pubsub_emulator import PubSubNames
from tests.support.slack_api import SlackApiStub
from tests.support.slack_driver import APPROVER, DEMO_URL, REQUESTER, USERS, Slack, text_of

ZONE = "us-central1-a"
HOST = f"demo.endpoints.{PROJECT}.cloud.goog"
FLOW_TIMEOUT = 60.0
# The namespaces Kubeflow's bundle and the IAP objects need, as a small stand-in bundle.
BUNDLE = "".join(
    f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
    for name in ("kubeflow", "istio-system")
)


@pytest.fixture
def fakes() -> Iterator[GoogleFakes]:
    with GoogleFakes(operation_seconds=0.5) as started:
        yield started


@pytest.fixture
def stub() -> Iterator[SlackApiStub]:
    with SlackApiStub(users=USERS) as api:
        yield api
        assert api.errors == []


@pytest.fixture
def launcher(stub: SlackApiStub, tmp_path: Path) -> Iterator[BotLauncher]:
    launcher = BotLauncher(stub, tmp_path)
    yield launcher
    codes = launcher.stop_all()
    logs = {bot.log_path.name: bot.log() for bot in launcher.started}
    assert all(code == 0 for code in codes.values()), (codes, logs)


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
