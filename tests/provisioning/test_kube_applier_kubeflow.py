"""``KubeApplier`` with the shared Kubeflow bundle (503 objects) against ``FakeKube``.

Real time, 10 ms of latency per request and the fake's default delays: the first apply,
its progress reports, and a re-apply that writes nothing.
"""

from __future__ import annotations

import gzip
import logging
import time
from typing import Any

import pytest
import yaml

from provisioning.kube_access import api_client
from provisioning.kube_applier import KubeApplier
from tests.support.fake_kube import FakeKube
from tests.support.paths import SHARED_DATA

BUNDLE = SHARED_DATA / "kubeflow-26.03-example.yaml.gz"
Json = dict[str, Any]


class StaticTokens:
    def token(self) -> str:
        return "t"


def load_bundle() -> list[Json]:
    if not BUNDLE.exists():
        pytest.skip(f"the shared Kubeflow bundle is absent ({BUNDLE})")
    with gzip.open(BUNDLE, "rt") as f:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [doc for doc in yaml.load_all(f, Loader=loader) if doc]


def test_the_kubeflow_bundle_applies_and_reapplies_as_a_no_op(
    caplog: pytest.LogCaptureFixture,
) -> None:
    docs = load_bundle()
    with FakeKube(
        latency_seconds=0.01, crd_establish_seconds=0.2, deployment_ready_seconds=0.3
    ) as kube:
        api = api_client(f"127.0.0.1:{kube.port}", kube.ca_base64, StaticTokens())
        progress: list[tuple[int, int, int]] = []
        applier = KubeApplier(
            api,
            on_progress=lambda done, total: progress.append((done, total, kube.applies_changed)),
        )

        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="urllib3"):
            first = applier.apply(docs)
        first_seconds = time.monotonic() - started
        assert (first.applied, first.unchanged) == (503, 0)
        assert len(kube.objects()) == 503 + 4  # and default, kube-system, ...
        assert all(w.startswith("deployment ") for w in first.waiting_for)
        assert kube.refusals == []  # webhook configurations went in last
        # The connection pool holds every thread's connection: none is thrown away.
        assert not [r for r in caplog.records if "pool is full" in r.getMessage()]

        # Told as objects went in, in steps of 2%, up to all of them.
        assert 40 <= len(progress) <= 60
        assert [done for done, _, _ in progress] == sorted({done for done, _, _ in progress})
        assert progress[-1][:2] == (503, 503)
        assert all(total == 503 for _, total, _ in progress)
        halfway = next(stored for done, _, stored in progress if done >= 250)
        assert halfway < 503  # the callback came while objects were still going in

        kube.reset_counters()
        started = time.monotonic()
        again = applier.apply(docs)
        again_seconds = time.monotonic() - started
        assert (again.applied, again.unchanged) == (0, 503)
        assert kube.requests("PATCH") == 0
        print(f"\nfirst apply {first_seconds:.2f} s, re-apply {again_seconds:.2f} s")

        time.sleep(kube.deployment_ready_seconds)
        assert applier.apply(docs).waiting_for == ()
        assert kube.errors == []
