"""Ack latency of ``kubeflow-bot serve`` under a burst of signed slash commands.

Starts the real ``kubeflow-bot serve`` process against the stand-in Slack Web API, fires
1,000 signed ``/kubeflow`` commands (half ``create``, half ``status``) from 50 concurrent
keep-alive connections, and reports how fast Slack would get its answers.  Slack
gives an app 3 seconds; the target here is p99 under 50 ms with no failures.  The last
line printed is a JSON object with the figures.

    .venv/bin/python bench/ack_latency.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.slack_api import SlackApiStub  # noqa: E402
from tests.support.slack_signing import sign, slash_command_body  # noqa: E402

SECRET = "bench-signing-secret"  # noqa: S105 - a made-up secret for a local stand-in
TOKEN = "xoxb-valid"  # noqa: S105 - the stand-in's test token
SLACK_DEADLINE = 3.0


def run_stub(conn: Connection) -> None:
    """The stand-in Slack, in its own process: the clients' GIL is not the server's."""
    stub = SlackApiStub(valid_tokens={TOKEN}).start()
    conn.send(stub.url)
    expected_cards = conn.recv()
    cards = stub.wait_for("chat.postMessage", count=expected_cards, timeout=120)
    conn.send(len(cards))
    stub.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"kubeflow-bot serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("kubeflow-bot serve did not become healthy")


def signed_requests(port: int, count: int, connection: int, webhook: str) -> list[bytes]:
    """Raw HTTP requests for one connection, signed now as Slack signs them.

    Signed before the clock starts, so the load generator spends its time sending and
    waiting, not hashing; Slack accepts a signature for five minutes."""
    now = int(time.time())
    out = []
    for n in range(count):
        text = f"create bench-{connection:02d}-{n:03d}" if n % 2 == 0 else "status"
        body = slash_command_body(
            text, f"U_BENCH{connection:02d}", "C_BENCH", response_url=f"{webhook}/{connection}"
        )
        headers = sign(SECRET, body, now)
        head = (
            f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _connection(
    port: int, requests: list[bytes], results: list[tuple[int, float]], start: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await start.wait()
    for raw in requests:
        began = time.perf_counter()
        writer.write(raw)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        took = time.perf_counter() - began
        parts = status_line.split()
        results.append((int(parts[1]) if len(parts) > 1 else 0, took))
    writer.close()


async def _fire(port: int, batches: list[list[bytes]]) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    start = asyncio.Event()
    tasks = [asyncio.create_task(_connection(port, b, results, start)) for b in batches]
    await asyncio.sleep(0.2)  # let every connection open before the clock starts
    start.set()
    await asyncio.gather(*tasks)
    return results


def fire(port: int, requests: int, concurrency: int, webhook: str) -> tuple[list[float], int, int]:
    """Send ``requests`` over ``concurrency`` keep-alive connections, each one request at
    a time, as many connections as Slack might hold open at once."""
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    batches = [signed_requests(port, count, i, webhook) for i, count in enumerate(shares)]
    results = asyncio.run(_fire(port, batches))
    latencies = [took for _, took in results]
    failures = sum(1 for status, _ in results if status != 200)
    slow = sum(1 for status, took in results if status == 200 and took > SLACK_DEADLINE)
    return latencies, failures, slow


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()

    ours, theirs = multiprocessing.Pipe()
    stub = multiprocessing.get_context("spawn").Process(target=run_stub, args=(theirs,))
    stub.start()
    stub_url = ours.recv()
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "KUBEFLOW_BOT_", "PUBSUB_")) or k.endswith("_THREADS")
        }
        env.update(
            SLACK_API_URL=stub_url,
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            KUBEFLOW_BOT_HOST="127.0.0.1",
            PORT=str(port),
            KUBEFLOW_BOT_STORE=f"sqlite:///{state}/bench.db",
            KUBEFLOW_BOT_POLICY=str(REPO / "policy.example.yaml"),
            KUBEFLOW_BOT_LOG_LEVEL="WARNING",
        )
        serve = subprocess.Popen(
            [str(Path(sys.executable).parent / "kubeflow-bot"), "serve"],
            env=env,
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(port, serve)
            began = time.perf_counter()
            # Replies through response_url land on the stand-in's webhook path.
            webhook = stub_url.removesuffix("/api/") + "/webhook/bench"
            latencies, failures, slow = fire(port, args.requests, args.concurrency, webhook)
            elapsed = time.perf_counter() - began
            # Every create posts a card: wait for the bot to finish the work it acked.
            ours.send((args.requests + 1) // 2)
            cards = ours.recv()
            drained = time.perf_counter() - began
        finally:
            serve.terminate()
            serve.wait(timeout=30)
            stub.join(timeout=150)

    ms = [t * 1000 for t in latencies]
    figures = {
        "benchmark": "ack_latency",
        "requests": len(ms),
        "concurrency": args.concurrency,
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "failures": failures,
        "over_3s": slow,
        "requests_per_second": round(len(ms) / elapsed, 1),
        "cards_posted": cards,
        "all_work_done_seconds": round(drained, 2),
        "target_p99_ms": 50,
    }
    print(
        f"{figures['requests']} signed commands at {args.concurrency} connections: "
        f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms, "
        f"{failures} failures, {slow} over 3 s; {cards} cards posted in {drained:.1f} s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
