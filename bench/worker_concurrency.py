"""Wall time, memory and threads of one ``kubeflow-bot worker`` with 100 requests in flight.

Runs the real ``kubeflow-bot worker`` process on ``KUBEFLOW_BOT_CLOUD=gcp`` against the
local Google fakes, whose long-running operations take T seconds, fed through the real
Pub/Sub emulator.  The bot side (filing with ``commands.handle``, approving with
``approvals.approve``) runs in this process on a console chat; the worker reports
progress to Slack as in production, here a local Slack Web API stand-in.  Two runs, each on a fresh
topic, subscription, store, set of fakes and worker process: one request, then N (100)
requests approved at once.  A request counts as ended when its cluster and GPU pool are
both ready (their steps stored ``done``), or when it reached ``succeeded`` / ``failed``
first: a later step (Kubeflow, IAP) that fails can end a request before its GPU pool is
seen done, so the figures say how many got there, and why the others failed.

Reported: each run's wall time (all approvals published -> last request ended) over T,
``ratio = wall_N / wall_1``, the per-request overhead ``(wall_N - wall_1) / N``, and the
worker's peak RSS (``VmHWM``) and peak thread count (sampled every 50 ms) in each run.
Targets: ratio under 1.3, RSS under 300 MB, threads independent of the requests in
flight.  The last line printed is a JSON object with the figures; nothing is asserted.

    .venv/bin/python bench/worker_concurrency.py [--requests N] [--operation-seconds T]
        [--concurrency C] [--timeout SECONDS] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.console import ConsoleChat  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.wiring import Runtime, build_runtime  # noqa: E402
from provisioning.records import RequestRecord, State, StepStatus  # noqa: E402
from tests.support.bot_process import read_records  # noqa: E402
from tests.support.google_fakes import GoogleFakes  # noqa: E402
from tests.support.paths import CONSOLE_SCRIPT, SAMPLE_POLICY  # noqa: E402
from tests.support.pubsub_emulator import (  # noqa: E402
    EMULATOR,
    HOST,
    START_TIMEOUT_SECONDS,
    TEST_PROJECT,
    _answers_ok,
    _free_port,
    _stop,
)
from tests.support.slack_api import DEFAULT_TOKENS, SlackApiStub  # noqa: E402

ZONE = "us-central1-a"
GPU = "nvidia-tesla-t4:1"
CHANNEL = "C_BENCH"
APPROVER = "U_APPROVER"  # the sample policy's approver
REQUESTERS = ("U_BENCH1", "U_BENCH2", "U_BENCH3", "U_BENCH4")
READY_STEPS = frozenset({"cluster", "gpu_pool"})
TERMINAL = frozenset({State.SUCCEEDED, State.FAILED})
# Two Namespaces: the Kubeflow step applies the bundle; the IAP step needs istio-system.
BUNDLE = "".join(
    f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
    for name in ("kubeflow", "istio-system")
)
SAMPLE_SECONDS = 0.05
# The worker's log lines for taking a delivery and deferring it ("letting go").
DELIVERY_LINE = re.compile(
    r"^(?P<at>\S+ \S+) INFO provisioning\.worker: request (?P<id>\S+): "
    r"(?:working on it|letting go \(looking again in (?P<after>[\d.]+) s\))"
)
STOP_TIMEOUT_SECONDS = 60.0
TARGET_RATIO = 1.3
TARGET_RSS_MB = 300


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # Fields after the parenthesised command name; utime and stime are 14th and 15th.
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int | None:
    """A number from ``/proc/PID/status`` (``Threads``, ``VmHWM`` in kB), None once gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name == key:
                    return int(value.split()[0])
    except (OSError, ValueError):
        return None
    return None


class ThreadSampler:
    """Samples a process's thread count every ``SAMPLE_SECONDS`` on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="thread-sampler", daemon=True)

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            threads = proc_status(self.pid, "Threads")
            if threads is not None:
                self.peak = max(self.peak, threads)
            self._stop.wait(SAMPLE_SECONDS)


def start_emulator(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The Pub/Sub emulator on a free loopback port, answering ``GET /``; its host:port."""
    port = _free_port()
    host_port = f"{HOST}:{port}"
    with log.open("wb") as output:
        # The start script ends in ``exec java``: this pid is the server itself.
        process = subprocess.Popen(
            [str(EMULATOR), f"--host={HOST}", f"--port={port}"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _answers_ok(f"http://{host_port}/"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise SystemExit(f"the Pub/Sub emulator did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process, host_port


def start_worker(env: dict[str, str], workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    """``kubeflow-bot worker`` with a clean environment plus ``env``, stderr to ``log``;
    returns once it logs that it is consuming."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "KUBEFLOW_BOT_", "PUBSUB_"))
        and k not in {"GOOGLE_CLOUD_PROJECT", "PORT"}
    }
    loopback = {"no_proxy": HOST, "NO_PROXY": HOST, "no_grpc_proxy": HOST}
    with log.open("w", encoding="utf-8") as out:
        worker = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "worker"],
            env={**base, **env, **loopback},
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 60
    while "worker consuming" not in log.read_text(encoding="utf-8", errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            stop_worker(worker)
            raise SystemExit(f"kubeflow-bot worker did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return worker


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(STOP_TIMEOUT_SECONDS)
    return int(worker.returncode)


def redelivery_lateness(log_text: str) -> list[float]:
    """For each deferral in the worker's log, how much later than asked the request was
    delivered again (Pub/Sub's share of the wall time, not the worker's)."""
    deferred: dict[str, tuple[datetime, float]] = {}
    late = []
    for line in log_text.splitlines():
        match = DELIVERY_LINE.match(line)
        if match is None:
            continue
        at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f")
        if match["after"] is not None:
            deferred[match["id"]] = (at, float(match["after"]))
        elif match["id"] in deferred:
            let_go, after = deferred.pop(match["id"])
            late.append((at - let_go).total_seconds() - after)
    return late


def ready(record: RequestRecord) -> bool:
    """Its cluster and GPU pool are both done."""
    done = {s.name for s in record.steps if s.status == StepStatus.DONE}
    return done >= READY_STEPS


@dataclass
class RunResult:
    requests: int
    approve_seconds: float  # filing excluded: first approval -> last one published
    wall_seconds: float  # last approval published -> last request ended
    median_end_seconds: float
    ended: int
    gpu_pool_ready: int  # cluster and GPU pool seen done (the rest ended failed first)
    states: dict[str, int]
    failure_reasons: dict[str, int]
    idle_threads: int  # consuming, before any request
    peak_threads: int
    peak_rss_mb: float
    worker_cpu_s: float  # the worker's CPU from the first approval to the last end
    slack_calls: int  # the worker's Slack Web API calls (status messages, replies)
    worker_exit_code: int
    log_errors: int  # ERROR lines and tracebacks in the worker's log
    deliveries: int  # deliveries of the requests' messages to the worker
    redelivery_late_s: list[float]  # per deferral: redelivered this much later than asked


def run(
    count: int,
    *,
    operation_seconds: float,
    concurrency: int,
    emulator: str,
    workdir: Path,
    timeout: float,
) -> RunResult:
    """File and approve ``count`` requests at once; time them through a fresh worker."""
    workdir.mkdir()
    store = workdir / "state.db"
    bundle = workdir / "bundle.yaml"
    bundle.write_text(BUNDLE, encoding="utf-8")
    suffix = uuid.uuid4().hex
    shared = {
        "GOOGLE_CLOUD_PROJECT": TEST_PROJECT,
        "PUBSUB_TOPIC": f"bench-requests-{suffix}",
        "PUBSUB_SUBSCRIPTION": f"bench-worker-{suffix}",
        "PUBSUB_EMULATOR_HOST": emulator,
        "KUBEFLOW_BOT_STORE": f"sqlite:///{store}",
        "KUBEFLOW_BOT_POLICY": str(SAMPLE_POLICY),
    }
    out = io.StringIO()
    chat = ConsoleChat(out)
    # The bot side files and approves (on the dry-run cloud, which it never calls); building
    # it creates the topic and subscription before anything is published.
    settings = Settings(**shared, KUBEFLOW_BOT_CLOUD="dry-run")  # type: ignore[arg-type]
    bot = build_runtime(settings, chat, chat)
    with GoogleFakes(operation_seconds=operation_seconds) as fakes, SlackApiStub() as slack:
        worker_env = {
            **shared,
            **fakes.env(),
            "SLACK_BOT_TOKEN": next(iter(DEFAULT_TOKENS)),
            "SLACK_API_URL": slack.url,
            "KUBEFLOW_BOT_MANIFESTS": str(bundle),
            "KUBEFLOW_BOT_MAX_POLL_SECONDS": "1",
            "KUBEFLOW_BOT_WORKER_CONCURRENCY": str(concurrency),
        }
        log = workdir / "worker.log"
        worker = start_worker(worker_env, workdir, log)
        try:
            with ThreadSampler(worker.pid) as sampler:
                time.sleep(0.5)
                idle_threads = sampler.peak
                cpu_before = cpu_seconds(worker.pid)
                ids = file_requests(bot, count, out)
                began = time.perf_counter()
                for request_id in ids:
                    bot.approvals.approve(APPROVER, CHANNEL, request_id)
                published = time.perf_counter()
                ends = wait_for_ends(store, ids, published, deadline=published + timeout)
                gave_up = time.perf_counter() - published
            worker_cpu = cpu_seconds(worker.pid) - cpu_before
            peak_rss_kb = proc_status(worker.pid, "VmHWM") or 0
        finally:
            exit_code = stop_worker(worker)
            bot.close()
        slack_calls = len(slack.calls)
    records = [r for r in read_records(store) if r.id in set(ids)]
    log_text = log.read_text(encoding="utf-8", errors="replace")
    times = list(ends.values())
    return RunResult(
        requests=count,
        approve_seconds=published - began,
        # Requests still going at the time-out count as ending then (``ended`` says so).
        wall_seconds=max(times) if len(times) == count else gave_up,
        median_end_seconds=statistics.median(times) if times else gave_up,
        ended=len(times),
        gpu_pool_ready=sum(1 for r in records if ready(r)),
        states=dict(Counter(str(r.state) for r in records)),
        failure_reasons=dict(Counter(r.reason or "" for r in records if r.state is State.FAILED)),
        idle_threads=idle_threads,
        peak_threads=sampler.peak,
        peak_rss_mb=peak_rss_kb / 1024,
        worker_cpu_s=worker_cpu,
        slack_calls=slack_calls,
        worker_exit_code=exit_code,
        log_errors=sum(
            1 for line in log_text.splitlines() if " ERROR " in line or line == "Traceback"
        ),
        deliveries=log_text.count(": working on it ("),
        redelivery_late_s=redelivery_lateness(log_text),
    )


def file_requests(bot: Runtime, count: int, out: io.StringIO) -> list[str]:
    """File ``count`` create requests, a few requesters taking turns; their ids."""
    names = [f"bench-{n:03d}" for n in range(count)]
    for n, name in enumerate(names):
        requester = REQUESTERS[n % len(REQUESTERS)]
        bot.commands.handle(requester, CHANNEL, f"create {name} --zone {ZONE} --gpu {GPU}")
    by_name = {r.deployment: r.id for r in bot.store.list(limit=count)}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise SystemExit(
            f"{len(missing)} requests were not filed; the chat said:\n{out.getvalue()}"
        )
    return [by_name[name] for name in names]


def progress_of(store: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """Each request's state and done steps, read without building the records: the
    watching must not take the CPU the worker is being measured on."""
    if not store.exists():
        return {}
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute(
            "SELECT id, json_extract(record, '$.state'), json_extract(record, '$.steps') "
            "FROM requests"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {
        request_id: (
            state,
            frozenset(s["name"] for s in json.loads(steps or "[]") if s["status"] == "done"),
        )
        for request_id, state, steps in rows
    }


def wait_for_ends(store: Path, ids: list[str], started: float, deadline: float) -> dict[str, float]:
    """Seconds from ``started`` to each request's end (ready or terminal), as first seen."""
    ends: dict[str, float] = {}
    wanted = set(ids)
    terminal = {str(state) for state in TERMINAL}
    while len(ends) < len(ids) and time.perf_counter() < deadline:
        now = time.perf_counter()
        for request_id, (state, done) in progress_of(store).items():
            if (
                request_id in wanted
                and request_id not in ends
                and (done >= READY_STEPS or state in terminal)
            ):
                ends[request_id] = now - started
        time.sleep(SAMPLE_SECONDS)
    return ends


def median_or_zero(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def figures_of(one: RunResult, many: RunResult, args: argparse.Namespace) -> dict[str, Any]:
    t = args.operation_seconds
    ratio = many.wall_seconds / one.wall_seconds
    run_figures = {
        f"run_{r.requests}": {
            "requests": r.requests,
            "wall_s": round(r.wall_seconds, 2),
            "wall_over_T": round(r.wall_seconds / t, 2),
            "median_end_s": round(r.median_end_seconds, 2),
            "approve_s": round(r.approve_seconds, 2),
            "ended": r.ended,
            "gpu_pool_ready": r.gpu_pool_ready,
            "states": r.states,
            "failure_reasons": r.failure_reasons,
            "idle_threads": r.idle_threads,
            "peak_threads": r.peak_threads,
            "peak_rss_mb": round(r.peak_rss_mb, 1),
            "worker_cpu_s": round(r.worker_cpu_s, 2),
            "slack_calls": r.slack_calls,
            "worker_exit_code": r.worker_exit_code,
            "worker_log_errors": r.log_errors,
            "deliveries": r.deliveries,
            "redelivery_late_median_s": round(median_or_zero(r.redelivery_late_s), 2),
            "redelivery_late_max_s": round(max(r.redelivery_late_s, default=0.0), 2),
        }
        for r in (one, many)
    }
    return {
        "benchmark": "worker_concurrency",
        "requests": many.requests,
        "operation_seconds": t,
        "concurrency": args.concurrency,
        **run_figures,
        "ratio": round(ratio, 3),
        "per_request_overhead_ms": round(
            (many.wall_seconds - one.wall_seconds) / many.requests * 1000, 1
        ),
        "peak_rss_mb": round(max(one.peak_rss_mb, many.peak_rss_mb), 1),
        "peak_threads_1": one.peak_threads,
        "peak_threads_n": many.peak_threads,
        "target_ratio": TARGET_RATIO,
        "target_rss_mb": TARGET_RSS_MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--operation-seconds", type=float, default=3.0, help="T")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="KUBEFLOW_BOT_WORKER_CONCURRENCY"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a run may take before giving up"
    )
    parser.add_argument(
        "--keep", type=Path, help="a new directory to run in and leave behind (logs, stores)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="worker-concurrency-") as tmp:
        workdir = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True)
            workdir = args.keep
        emulator_process, emulator = start_emulator(workdir / "pubsub-emulator.log")
        # The bot side's Pub/Sub clients read these; keep loopback gRPC off any proxy.
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator
        os.environ["no_grpc_proxy"] = HOST  # noqa: SIM112 - gRPC reads this lower-case name
        try:
            one, many = (
                run(
                    count,
                    operation_seconds=args.operation_seconds,
                    concurrency=args.concurrency,
                    emulator=emulator,
                    workdir=workdir / f"run-{count}",
                    timeout=args.timeout,
                )
                for count in (1, args.requests)
            )
        finally:
            _stop(emulator_process)

    figures = figures_of(one, many, args)
    n = many.requests
    print(
        f"T={args.operation_seconds:g} s, concurrency {args.concurrency}: 1 request "
        f"{one.wall_seconds:.1f} s ({one.wall_seconds / args.operation_seconds:.1f} T), "
        f"{n} requests {many.wall_seconds:.1f} s "
        f"({many.wall_seconds / args.operation_seconds:.1f} T), ratio {figures['ratio']} "
        f"(target < {TARGET_RATIO}), {figures['per_request_overhead_ms']} ms per request; "
        f"{many.gpu_pool_ready}/{n} reached the GPU pool, states {many.states}; "
        f"worker peak RSS {one.peak_rss_mb:.0f} / {many.peak_rss_mb:.0f} MB "
        f"(target < {TARGET_RSS_MB}), peak threads {one.peak_threads} / {many.peak_threads}; "
        f"deferred requests came back a median {median_or_zero(many.redelivery_late_s):.1f} s "
        f"later than asked"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
