"""``KUBEFLOW_BOT_CLOUD=gcp`` end to end: Slack → Pub/Sub → worker → Google's APIs (fakes).

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

from provisioning.create_steps import ACCOUNT_ROLES, REQUIRED_APIS, account_email
from provisioning.gcp_cloud import NOT_YET
from provisioning.records import State
from tests.support.bot_process import BotLauncher
from tests.support.google_fakes import PROJECT, GoogleFakes
from tests.support.pubsub_emulator import PubSubNames
from tests.support.slack_api import SlackApiStub
from tests.support.slack_driver import APPROVER, REQUESTER, USERS, Slack, text_of

ZONE = "us-central1-a"
FLOW_TIMEOUT = 60.0


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
        "KUBEFLOW_BOT_MANIFESTS": str(manifests),
        **fakes.env(),
    }


def test_an_approved_request_gets_its_cluster_and_gpu_pool_with_the_checklist_in_the_thread(  # noqa: PLR0917 - pytest fixtures
    launcher: BotLauncher,
    stub: SlackApiStub,
    fakes: GoogleFakes,
    tmp_path: Path,
    pubsub_emulator: str,
    pubsub_names: PubSubNames,
) -> None:
    manifests = tmp_path / "bundle.yaml"
    manifests.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kubeflow\n")
    env = gcp_env(fakes, pubsub_names, pubsub_emulator, manifests)
    shared = tmp_path / "shared.db"
    bot = launcher.start("serve", env=env, store_path=shared)
    launcher.start("worker", env=env, store_path=shared)
    slack = Slack.on(bot, stub)

    card = slack.file(f"create demo --zone {ZONE} --gpu nvidia-tesla-t4:2 --gpu-nodes 0-3")
    slack.approve(card)

    head = f"`{card.request_id}` demo:"
    slack.wait_reply(card, head, "the GKE cluster is running", timeout=FLOW_TIMEOUT)
    failed = slack.wait_reply(card, f"`{card.request_id}` failed", timeout=FLOW_TIMEOUT)
    # This version stops at the Kubeflow step, and says so in plain words; the GPU pool,
    # which Kubeflow does not wait for, was asked for by then.
    assert text_of(failed).startswith(f"<@{REQUESTER}>")
    assert NOT_YET in text_of(failed)

    # One status message, ticked off step by step in place.
    status, *others = [c for c in slack.thread_posts(card) if text_of(c).startswith(head)]
    assert [text_of(c) for c in others if "is running" not in text_of(c)] == []
    updates = [text_of(u) for u in slack.updates_of(str(status.response["ts"]))]
    assert len(updates) >= 4
    final = updates[-1]
    for title in ("Enable the project's APIs", "GKE cluster", "GPU node pool"):
        assert title in final
    record = bot.record(card.request_id)
    assert record.state is State.FAILED
    done = {s.name for s in record.steps if s.status == "done"}
    assert done >= {"apis", "gpu_zone", "service_accounts", "static_ip", "cluster"}
    assert "workload_identity" in done

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
    assert list(fakes.compute.addresses(PROJECT)) == ["demo-ip"]
    spec_like = record.action.spec  # type: ignore[union-attr]
    for suffix, roles in ACCOUNT_ROLES.items():
        email = account_email(spec_like, suffix)
        assert fakes.iam.account(email) is not None
        for role in roles:
            assert f"serviceAccount:{email}" in fakes.resource_manager.members(PROJECT, role)
    assert fakes.resource_manager.blind_sets == 0
    assert fakes.iam.blind_sets == 0
    assert APPROVER in text_of(slack.wait_reply(card, "Approved by"))
    assert stub.calls  # every Slack call was checked by the stub (its ``errors`` stay empty)
