"""A worker killed with SIGKILL mid-request, and two workers sharing a subscription.

Each crash scenario files and approves one create request through the bot side (in the
test, calling the stand-in Slack), on its own Pub/Sub topic and subscription on the real
emulator, with ``kubeflow-bot worker`` processes on ``KUBEFLOW_BOT_CLOUD=gcp`` against the
Google fakes.  The first worker is killed at a step boundary (a step's report stored as
done) or in the middle of a step (the fake has received the step's create call); a
second worker then takes over.  The emulator gives a dead subscriber's message to a new
one 10 s to minutes later, or not at all (measured here; the real service redelivers
at the ack deadline), so, as ``serve`` does every minute, the test sweeps for requests
left without a live lease or any activity (``requeue_stranded``), here after 8 s
instead of 20 minutes, and publishes them again.  The scenarios run side by side.

What must hold whatever the crash point: the request succeeds, with exactly one cluster,
one node pool, one address, three service accounts, no member bound twice, and one
status message in its thread.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.slack_chat import SlackChat, SlackDirectory, web_client
from bot.wiring import Runtime, build_runtime
from handlers.messages import MILESTONES
from provisioning.create_steps import account_email
from provisioning.records import RequestRecord, State
from provisioning.spec import DeploymentSpec
from tests.support.bot_process import BOT_TOKEN, read_records
from tests.support.google_fakes import PROJECT, GoogleFakes
from tests.support.paths import CONSOLE_SCRIPT, SAMPLE_POLICY
from tests.support.pubsub_emulator import TEST_PROJECT
from tests.support.slack_api import SlackApiStub
from tests.support.slack_driver import APPROVER, CHANNEL, REQUESTER

ZONE = "us-central1-a"
END = frozenset({State.SUCCEEDED, State.FAILED})
# Long enough for a kill, the emulator's redelivery (up to a minute) and the rest.
SCENARIO_TIMEOUT = 150.0
POLL = 0.005
BURST = 10
# Longer than a worker's deferral here (1 s polls, 5 s when a lease is held) and lease (3 s).
STALE_AFTER = timedelta(seconds=8)
# The Kubeflow step has this bundle to apply; the IAP step needs istio-system.
BUNDLE = "".join(
    f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
    for name in ("kubeflow", "istio-system")
)


def step_done(step: str) -> Callable[[GoogleFakes, RequestRecord | None, str], bool]:
    def reached(_fakes: GoogleFakes, record: RequestRecord | None, _name: str) -> bool:
        return record is not None and any(
            s.name == step and s.status == "done" for s in record.steps
        )

    reached.__name__ = f"after {step}"
    return reached


def received(method: str) -> Callable[[GoogleFakes, RequestRecord | None, str], bool]:
    """The GKE fake has received ``method`` for this scenario's cluster: mid-step."""

    def reached(fakes: GoogleFakes, _record: RequestRecord | None, name: str) -> bool:
        return any(
            request.parent.endswith(f"/clusters/{name}")
            or (method == "CreateCluster" and request.cluster.name == name)
            for request in fakes.gke.calls(method)
        )

    reached.__name__ = f"during {method}"
    return reached


KILL_POINTS = (
    step_done("apis"),
    step_done("gpu_zone"),
    step_done("service_accounts"),
    received("CreateCluster"),
    step_done("cluster"),
    received("CreateNodePool"),
    step_done("workload_identity"),
)


@dataclass
class Scenario:
    name: str
    kill_when: Callable[[GoogleFakes, RequestRecord | None, str], bool]
    topic: str = field(default_factory=lambda: f"crash-{uuid.uuid4().hex}")
    subscription: str = field(default_factory=lambda: f"crash-worker-{uuid.uuid4().hex}")
    request_id: str = ""
    killed_at: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)


@pytest.fixture
def fakes() -> Iterator[GoogleFakes]:
    with GoogleFakes(operation_seconds=0.5) as started:
        yield started


def scenario_env(
    scenario: Scenario, emulator: str, store: Path, stub: SlackApiStub, fakes: GoogleFakes
) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": TEST_PROJECT,
        "PUBSUB_TOPIC": scenario.topic,
        "PUBSUB_SUBSCRIPTION": scenario.subscription,
        "PUBSUB_EMULATOR_HOST": emulator,
        "KUBEFLOW_BOT_STORE": f"sqlite:///{store}",
        "KUBEFLOW_BOT_POLICY": str(SAMPLE_POLICY),
        "KUBEFLOW_BOT_MANIFESTS": str(store.parent / "bundle.yaml"),
        "KUBEFLOW_BOT_LEASE_SECONDS": "3",
        "KUBEFLOW_BOT_PUBSUB_LEASE_SECONDS": "10",
        "KUBEFLOW_BOT_MAX_POLL_SECONDS": "1",
        "SLACK_API_URL": stub.url,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        **fakes.env(),
    }


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "KUBEFLOW_BOT_", "PUBSUB_"))
    }
    with log.open("a", encoding="utf-8") as out:
        return subprocess.Popen(
            [str(CONSOLE_SCRIPT), "worker"],
            env={**base, **env, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


def stop_all(workers: list[subprocess.Popen[bytes]]) -> list[int | None]:
    """SIGTERM every worker still running, then wait; one that does not stop is killed
    (and its code is None), so no test leaves workers behind."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for worker in workers:
        try:
            codes.append(worker.wait(timeout=30))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
            codes.append(None)
    return codes


def file_and_approve(bot: Runtime, name: str) -> str:
    bot.commands.handle(REQUESTER, CHANNEL, f"create {name} --zone {ZONE} --gpu nvidia-tesla-t4:1")
    [record] = [r for r in bot.store.list() if r.deployment == name]
    bot.approvals.approve(APPROVER, CHANNEL, record.id)
    return record.id


class Sweeping:
    """What ``serve``'s sweeper does, for the bot sides built in the test: re-queue
    requests whose queue message is lost."""

    def __init__(self, bots: list[Runtime]) -> None:
        self._bots = bots
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sweeping:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            for bot in self._bots:
                bot.approvals.requeue_stranded(stale_after=STALE_AFTER)


def record_of(store: Path, request_id: str) -> RequestRecord | None:
    return next((r for r in read_records(store) if r.id == request_id), None)


def run_scenario(
    scenario: Scenario, fakes: GoogleFakes, env: dict[str, str], store: Path, logs: Path
) -> RequestRecord:
    scenario.workers.append(start_worker(env, logs / f"{scenario.name}-1.log"))
    deadline = time.monotonic() + SCENARIO_TIMEOUT
    while not scenario.kill_when(fakes, record_of(store, scenario.request_id), scenario.name):
        assert time.monotonic() < deadline, f"{scenario.name}: never reached its kill point"
        time.sleep(POLL)
    scenario.workers[0].send_signal(signal.SIGKILL)
    scenario.workers[0].wait(timeout=10)
    record = record_of(store, scenario.request_id)
    scenario.killed_at = ", ".join(
        f"{s.name}={s.status}" for s in (record.steps if record else ()) if s.status != "pending"
    )
    scenario.workers.append(start_worker(env, logs / f"{scenario.name}-2.log"))
    while True:
        record = record_of(store, scenario.request_id)
        if record is not None and record.state in END:
            return record
        assert time.monotonic() < deadline, f"{scenario.name}: did not finish ({record})"
        time.sleep(0.1)


@pytest.mark.timeout(SCENARIO_TIMEOUT + 60)
def test_a_worker_killed_at_any_point_is_taken_over_without_doing_anything_twice(
    tmp_path: Path, pubsub_emulator: str, stub: SlackApiStub, fakes: GoogleFakes
) -> None:
    store = tmp_path / "state.db"
    (tmp_path / "bundle.yaml").write_text(BUNDLE)
    scenarios = [Scenario(f"crash-{n}", kill) for n, kill in enumerate(KILL_POINTS)]
    bots: list[Runtime] = []
    chat_client = web_client(BOT_TOKEN, stub.url)
    try:
        for scenario in scenarios:
            env = scenario_env(scenario, pubsub_emulator, store, stub, fakes)
            settings = Settings(**env)  # type: ignore[arg-type]
            # The bot side creates the topic and subscription before anything is published.
            bot = build_runtime(settings, SlackChat(chat_client), SlackDirectory(chat_client))
            bots.append(bot)
            scenario.request_id = file_and_approve(bot, scenario.name)
        with Sweeping(bots), ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
            finished = list(
                pool.map(
                    lambda s: run_scenario(
                        s,
                        fakes,
                        scenario_env(s, pubsub_emulator, store, stub, fakes),
                        store,
                        tmp_path,
                    ),
                    scenarios,
                )
            )
    finally:
        stop_all([w for scenario in scenarios for w in scenario.workers])
        for bot in bots:
            bot.close()

    for scenario, record in zip(scenarios, finished, strict=True):
        where = f"{scenario.name} killed {scenario.kill_when.__name__} ({scenario.killed_at})"
        assert record.state is State.SUCCEEDED, (where, record.reason)
        assert_made_once(fakes, scenario.name, where)
        assert_one_status_message(stub, record, where)
    assert_no_member_bound_twice(fakes)


def assert_made_once(fakes: GoogleFakes, name: str, where: str) -> None:
    clusters = [c for c in fakes.gke.calls("CreateCluster") if c.cluster.name == name]
    assert len(clusters) == 1, where
    assert fakes.gke.cluster(PROJECT, ZONE, name) is not None, where
    pools = [c for c in fakes.gke.calls("CreateNodePool") if c.parent.endswith(f"/{name}")]
    assert len(pools) == 1, where
    assert fakes.gke.node_pool(PROJECT, ZONE, name, "gpu-pool") is not None, where
    inserts = [
        r
        for r in fakes.compute.requests
        if r.method == "POST"
        and r.path.endswith("/global/addresses")
        and (r.body or {}).get("name") == f"{name}-ip"
        and r.status == 200
    ]
    assert len(inserts) == 1, where
    spec = DeploymentSpec(name=name, project=PROJECT, zone=ZONE)
    for suffix in ("vm", "admin", "user"):
        assert fakes.iam.account(account_email(spec, suffix)) is not None, where


def assert_one_status_message(stub: SlackApiStub, record: RequestRecord, where: str) -> None:
    head = f"`{record.id}` {record.deployment}:"
    status_posts = [
        c
        for c in stub.calls_to("chat.postMessage")
        if c.ok
        and c.params.get("thread_ts") == record.thread_ts
        and str(c.params.get("text", "")).startswith(head)
        and not any(words in str(c.params.get("text", "")) for words in MILESTONES.values())
    ]
    assert len(status_posts) == 1, (where, [c.params.get("text") for c in status_posts])


def assert_no_member_bound_twice(fakes: GoogleFakes) -> None:
    policy = fakes.resource_manager.policy(PROJECT)
    roles = [b.role for b in policy.bindings if not b.HasField("condition")]
    assert len(roles) == len(set(roles))
    for binding in policy.bindings:
        assert len(binding.members) == len(set(binding.members)), binding.role
    assert fakes.resource_manager.blind_sets == 0
    assert fakes.iam.blind_sets == 0


# -- two workers, one subscription -------------------------------------------------------

LOG_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO .*request (?P<id>kf-[a-z0-9]+): "
    r"(?P<what>working on it|letting go)"
)


def acting_intervals(log: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per request, when this worker held it: from "working on it" to "letting go"."""
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    started: dict[str, datetime] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f")
        if match["what"] == "working on it":
            assert match["id"] not in started, f"{match['id']} taken twice by one worker"
            started[match["id"]] = at
        else:
            spans.setdefault(match["id"], []).append((started.pop(match["id"]), at))
    return spans


def test_two_workers_share_a_burst_and_never_act_on_one_request_at_once(
    tmp_path: Path, pubsub_emulator: str, stub: SlackApiStub, fakes: GoogleFakes
) -> None:
    store = tmp_path / "state.db"
    (tmp_path / "bundle.yaml").write_text(BUNDLE)
    shared = Scenario("burst", step_done("never"))
    env = scenario_env(shared, pubsub_emulator, store, stub, fakes)
    chat_client = web_client(BOT_TOKEN, stub.url)
    bot = build_runtime(
        Settings(**env),  # type: ignore[arg-type]
        SlackChat(chat_client),
        SlackDirectory(chat_client),
    )
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [start_worker(env, log) for log in logs]
    names = [f"burst-{n}" for n in range(BURST)]
    try:
        ids = [file_and_approve(bot, name) for name in names]
        deadline = time.monotonic() + SCENARIO_TIMEOUT
        with Sweeping([bot]):
            while True:
                records = {r.id: r for r in read_records(store)}
                if all(records[i].state in END for i in ids):
                    break
                assert time.monotonic() < deadline, [records[i].state for i in ids]
                time.sleep(0.2)
    finally:
        codes = stop_all(workers)
        bot.close()

    assert codes == [0, 0]
    spans = [acting_intervals(log) for log in logs]
    assert all(spans), "each worker took some of the burst"
    for request_id in ids:
        held = sorted(s for per_worker in spans for s in per_worker.get(request_id, ()))
        assert held, request_id
        for (_, end), (start, _) in itertools.pairwise(held):
            assert start >= end, f"{request_id} was acted on by two workers at once"
    for name, request_id in zip(names, ids, strict=True):
        assert_made_once(fakes, name, request_id)
    assert_no_member_bound_twice(fakes)
