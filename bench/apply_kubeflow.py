"""Applying the shared Kubeflow bundle: kubeflow-bot's ``KubeApplier`` against kubectl.

Every run gets a fresh fake Kubernetes API server (``tests/support/fake_kube.py``) in its
own process, answering each request after LATENCY ms (default 10), with the fake's
default delays (CRDs Established after 0.2 s, Deployments Available after 0.3 s, and
admission webhooks refusing until their Deployment is Available).  The bundle is
``../shared/data/kubeflow-26.03-example.yaml.gz`` (503 objects).

1. kubeflow-bot: ``KubeApplier.apply(bundle)`` is called until the bundle is applied:
   every object of the bundle is stored and ``waiting_for`` names nothing but
   Deployments not Available yet (no object refused, no CRD still being established).
   That is what kubectl's exit status 0 means too; the bot's step would return at that
   point and look at the Deployments later.  The time is the sum of those calls (parsing
   the YAML, which the worker does once, is reported apart).  Then the unchanged bundle
   is applied again on the same applier (target under 1 s), and once more with a fresh
   client and applier (new connections, new discovery).
2. kubectl's best case: ``kubectl apply --server-side --force-conflicts --validate=false
   -f BUNDLE`` in a loop until it exits 0, with no pause between passes; then once more
   on the unchanged bundle.
3. kubectl as the Kubeflow README runs it: the same loop with ``sleep 20`` (``--sleep``)
   after each failed pass.

Reported: the times, kubectl's passes, ``ratio_vs_kubectl`` (kubectl's best case over
the bot's first apply; target at least 10) and ``ratio_vs_kubectl_readme``.  Without
the bundle the run is skipped; without kubectl, or with ``--bot-only`` (a few seconds
instead of a minute, for quick iterations), only the bot is measured.  The last line
printed is a JSON object with the figures; nothing is asserted.

    .venv/bin/python bench/apply_kubeflow.py [--latency-ms MS] [--sleep SECONDS]
        [--max-passes N] [--kubectl PATH] [--bot-only]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioning.kube_access import api_client  # noqa: E402
from provisioning.kube_applier import KubeApplier  # noqa: E402
from tests.support.fake_kube import FakeKube  # noqa: E402
from tests.support.paths import SHARED_DATA  # noqa: E402

BUNDLE = SHARED_DATA / "kubeflow-26.03-example.yaml.gz"
TOKEN = "bench-token"  # noqa: S105 - any non-empty token is accepted by the local fake
MAX_BOT_CALLS = 20
PASS_TIMEOUT = 900.0

Json = dict[str, Any]


class StaticTokens:
    def token(self) -> str:
        return TOKEN


# -- the fake API server, in its own process: the bot's GIL is not the server's ---------


def run_fake(conn: Connection, latency_seconds: float) -> None:
    """Serve one fresh ``FakeKube`` until told to stop; answer questions about it."""
    kube = FakeKube(latency_seconds=latency_seconds).start()
    conn.send({"port": kube.port, "url": kube.url, "ca_base64": kube.ca_base64})
    try:
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(
                    {
                        "objects": len(kube.objects()),
                        "requests": kube.requests(),
                        "patches": kube.requests("PATCH"),
                        "errors": len(kube.errors),
                    }
                )
            elif command == "reset":
                kube.reset_counters()
                conn.send(None)
            else:
                break
    finally:
        kube.stop()
        conn.send(None)


class FakeProcess:
    """A fresh fake API server in a spawned process, as a context manager."""

    def __init__(self, latency_seconds: float) -> None:
        self._latency_seconds = latency_seconds
        self._conn, theirs = multiprocessing.Pipe()
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(target=run_fake, args=(theirs, latency_seconds))

    def __enter__(self) -> FakeProcess:
        self._process.start()
        info = self._conn.recv()
        self.port: int = info["port"]
        self.url: str = info["url"]
        self.ca_base64: str = info["ca_base64"]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
            self._conn.recv()
        except (OSError, EOFError):
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)

    def stats(self) -> dict[str, int]:
        self._conn.send("stats")
        return dict(self._conn.recv())

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def write_ca(self, path: Path) -> str:
        path.write_bytes(base64.b64decode(self.ca_base64))
        return str(path)


# -- kubeflow-bot ------------------------------------------------------------------------


def bundle_applied(waiting_for: tuple[str, ...], stored: int, expected: int) -> bool:
    """Every object stored, and nothing waited for but Deployments becoming Available.

    The applier names Deployments not Available yet ``deployment ns/name``; a refused
    object is named ``Kind ns/name (why)``, a CRD not Established
    ``CustomResourceDefinition name (to be established)``."""
    return stored >= expected and all(w.startswith("deployment ") for w in waiting_for)


@dataclass
class BotFigures:
    first_s: float
    calls: int
    applied: bool
    requests: int
    patches: int
    reapply_s: float
    reapply_requests: int
    reapply_patches: int
    fresh_reapply_s: float
    fake_errors: int


def timed_apply(applier: KubeApplier, docs: list[Json]) -> tuple[float, tuple[str, ...]]:
    began = time.perf_counter()
    summary = applier.apply(docs)
    return time.perf_counter() - began, summary.waiting_for


def measure_bot(docs: list[Json], latency_seconds: float) -> BotFigures:
    with FakeProcess(latency_seconds) as fake:
        expected = fake.stats()["objects"] + len(docs)
        fake.reset()
        applier = KubeApplier(api_client(f"127.0.0.1:{fake.port}", fake.ca_base64, StaticTokens()))
        first_s, calls, applied = 0.0, 0, False
        while calls < MAX_BOT_CALLS and not applied:
            took, waiting_for = timed_apply(applier, docs)
            first_s += took
            calls += 1
            applied = bundle_applied(waiting_for, fake.stats()["objects"], expected)
        first = fake.stats()
        print(
            f"kubeflow-bot first apply: {first_s:.2f} s in {calls} call(s), "
            f"{first['requests']} requests ({first['patches']} applies)",
            flush=True,
        )

        fake.reset()
        reapply_s, _ = timed_apply(applier, docs)
        again = fake.stats()
        print(
            f"kubeflow-bot re-apply (same applier): {reapply_s:.3f} s, "
            f"{again['requests']} requests ({again['patches']} applies)",
            flush=True,
        )

        fresh = KubeApplier(api_client(f"127.0.0.1:{fake.port}", fake.ca_base64, StaticTokens()))
        fresh_reapply_s, _ = timed_apply(fresh, docs)
        print(f"kubeflow-bot re-apply (fresh applier): {fresh_reapply_s:.3f} s", flush=True)
        return BotFigures(
            first_s=first_s,
            calls=calls,
            applied=applied,
            requests=first["requests"],
            patches=first["patches"],
            reapply_s=reapply_s,
            reapply_requests=again["requests"],
            reapply_patches=again["patches"],
            fresh_reapply_s=fresh_reapply_s,
            fake_errors=fake.stats()["errors"],
        )


# -- kubectl -------------------------------------------------------------------------------


@dataclass
class KubectlRun:
    seconds: float
    passes: int
    succeeded: bool
    requests: int = 0
    reapply_s: float | None = None


class Kubectl:
    """``kubectl apply --server-side`` against one fake, with no kubeconfig of the user's."""

    def __init__(self, kubectl: str, fake: FakeProcess, workdir: Path, bundle_file: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._command = [
            kubectl,
            f"--server={fake.url}",
            f"--certificate-authority={fake.write_ca(workdir / 'ca.pem')}",
            f"--token={TOKEN}",
            f"--cache-dir={workdir / 'kube-cache'}",
            "apply",
            "--server-side",
            "--force-conflicts",
            "--validate=false",
            "-f",
            str(bundle_file),
        ]
        # No user kubeconfig may leak in; the flags carry everything.
        self._env = {"KUBECONFIG": str(workdir / "no-kubeconfig"), "HOME": str(workdir)}

    def apply(self) -> tuple[bool, float, str]:
        """One pass: whether it exited 0, its seconds, and the first error it printed."""
        began = time.perf_counter()
        result = subprocess.run(
            self._command,
            capture_output=True,
            text=True,
            timeout=PASS_TIMEOUT,
            env=self._env,
            check=False,
        )
        took = time.perf_counter() - began
        first_error = next((line for line in result.stderr.splitlines() if line.strip()), "")
        return result.returncode == 0, took, first_error


def measure_kubectl(
    kubectl: str,
    bundle_file: Path,
    workdir: Path,
    latency_seconds: float,
    *,
    label: str,
    sleep_seconds: float,
    max_passes: int,
    reapply: bool,
) -> KubectlRun:
    """kubectl in a loop until it exits 0, sleeping ``sleep_seconds`` after each failure."""
    with FakeProcess(latency_seconds) as fake:
        runner = Kubectl(kubectl, fake, workdir, bundle_file)
        began = time.perf_counter()
        passes, succeeded = 0, False
        while passes < max_passes:
            passes += 1
            succeeded, took, error = runner.apply()
            outcome = "exit 0" if succeeded else f"failed: {error[:100]}"
            print(f"kubectl {label} pass {passes}: {took:.2f} s, {outcome}", flush=True)
            if succeeded:
                break
            if sleep_seconds > 0 and passes < max_passes:
                time.sleep(sleep_seconds)
        run = KubectlRun(time.perf_counter() - began, passes, succeeded, fake.stats()["requests"])
        if reapply and succeeded:
            ok, took, error = runner.apply()
            run.reapply_s = took
            print(
                f"kubectl re-apply: {took:.2f} s, {'exit 0' if ok else 'failed: ' + error}",
                flush=True,
            )
        return run


# -- the report ----------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float) -> float | None:
    if numerator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument(
        "--sleep", type=float, default=20.0, help="the README's pause between kubectl passes"
    )
    parser.add_argument("--max-passes", type=int, default=20)
    parser.add_argument("--kubectl", default=shutil.which("kubectl"))
    parser.add_argument(
        "--bot-only", action="store_true", help="measure kubeflow-bot alone (quick iterations)"
    )
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    started = time.perf_counter()

    figures: Json = {"benchmark": "apply_kubeflow", "latency_ms": args.latency_ms}
    if not BUNDLE.exists():
        reason = f"the shared Kubeflow bundle is absent ({BUNDLE})"
        print(f"skipped: {reason}")
        print(json.dumps({**figures, "skipped": reason}))
        return

    began = time.perf_counter()
    raw = gzip.decompress(BUNDLE.read_bytes())
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = [doc for doc in yaml.load_all(raw, Loader=loader) if doc]
    parse_s = time.perf_counter() - began
    figures["objects"] = len(docs)

    bot = measure_bot(docs, latency)
    figures.update(
        bot_first_apply_s=round(bot.first_s, 2),
        bot_first_apply_calls=bot.calls,
        bot_first_apply_complete=bot.applied,
        bot_first_apply_requests=bot.requests,
        bot_first_apply_patches=bot.patches,
        bot_reapply_s=round(bot.reapply_s, 3),
        bot_reapply_requests=bot.reapply_requests,
        bot_reapply_patches=bot.reapply_patches,
        bot_reapply_fresh_applier_s=round(bot.fresh_reapply_s, 3),
        bot_parse_s=round(parse_s, 2),
        fake_errors=bot.fake_errors,
    )

    best: KubectlRun | None = None
    readme: KubectlRun | None = None
    if args.bot_only:
        figures["kubectl_skipped"] = "--bot-only"
    elif args.kubectl is None or not Path(args.kubectl).exists():
        reason = f"kubectl not found ({args.kubectl or 'not on PATH'})"
        figures["kubectl_skipped"] = reason
        print(f"{reason}: only kubeflow-bot was measured", flush=True)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-apply-kubeflow-") as tmp:
            bundle_file = Path(tmp) / "kubeflow.yaml"
            bundle_file.write_bytes(raw)
            best = measure_kubectl(
                args.kubectl,
                bundle_file,
                Path(tmp) / "best",
                latency,
                label="best case",
                sleep_seconds=0,
                max_passes=args.max_passes,
                reapply=True,
            )
            readme = measure_kubectl(
                args.kubectl,
                bundle_file,
                Path(tmp) / "readme",
                latency,
                label=f"README (sleep {args.sleep:g})",
                sleep_seconds=args.sleep,
                max_passes=args.max_passes,
                reapply=False,
            )
        figures.update(
            kubectl_best_s=round(best.seconds, 2),
            kubectl_best_passes=best.passes,
            kubectl_best_succeeded=best.succeeded,
            kubectl_best_requests=best.requests,
            kubectl_readme_s=round(readme.seconds, 2),
            kubectl_readme_passes=readme.passes,
            kubectl_readme_succeeded=readme.succeeded,
            kubectl_readme_sleep_s=args.sleep,
            kubectl_reapply_s=None if best.reapply_s is None else round(best.reapply_s, 2),
        )

    # A kubectl loop that never succeeded gives no ratio: its time is only a lower bound.
    complete = bot.applied
    best_s = best.seconds if best is not None and best.succeeded and complete else None
    readme_s = readme.seconds if readme is not None and readme.succeeded and complete else None
    figures.update(
        ratio_vs_kubectl=ratio(best_s, bot.first_s),
        ratio_vs_kubectl_readme=ratio(readme_s, bot.first_s),
        target_ratio=10,
        target_reapply_s=1,
        total_s=round(time.perf_counter() - started, 1),
    )

    kubectl_words = (
        "kubectl skipped"
        if best is None or readme is None
        else (
            f"kubectl best case {best.seconds:.2f} s ({best.passes} passes, "
            f"x{figures['ratio_vs_kubectl']}), README loop {readme.seconds:.1f} s "
            f"({readme.passes} passes, x{figures['ratio_vs_kubectl_readme']}), "
            f"kubectl re-apply {figures['kubectl_reapply_s']} s"
        )
    )
    print(
        f"{len(docs)} objects at {args.latency_ms:g} ms per request: kubeflow-bot first apply "
        f"{bot.first_s:.2f} s, re-apply {bot.reapply_s:.3f} s "
        f"(fresh applier {bot.fresh_reapply_s:.3f} s); {kubectl_words}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
