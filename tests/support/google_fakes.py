"""Every Google API the worker calls, as local fakes, started together for one project.

``GoogleFakes`` starts the GKE, Compute, Resource Manager, IAM and Service Usage fakes
and gives the ``<API>_EMULATOR_HOST`` variables that point ``KUBEFLOW_BOT_CLOUD=gcp`` at
them (SPEC.md, "Testing hooks").  Used by the end-to-end worker tests and the worker
benchmark; each fake's own tests live next to it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from tests.support.fake_compute import FakeCompute
from tests.support.fake_gke import FakeGke
from tests.support.fake_iam import FakeIam
from tests.support.fake_resource_manager import FakeResourceManager
from tests.support.fake_service_usage import FakeServiceUsage

_Fake = FakeGke | FakeCompute | FakeResourceManager | FakeIam | FakeServiceUsage

PROJECT = "demo-project"
PROJECT_NUMBER = 271828182845


class GoogleFakes:
    """The five fakes for ``project``; GKE and Compute operations take ``operation_seconds``."""

    def __init__(self, *, project: str = PROJECT, operation_seconds: float = 0.0) -> None:
        self.project = project
        projects = {project: PROJECT_NUMBER}
        self.gke = FakeGke(operation_seconds=operation_seconds, max_workers=32)
        # Operations finish by time alone: polls_to_done=0 would finish them at once.
        self.compute = FakeCompute(
            polls_to_done=0 if operation_seconds == 0 else 1_000_000,
            seconds_to_done=operation_seconds,
        )
        self.resource_manager = FakeResourceManager(projects=projects)
        self.iam = FakeIam(projects=[project])
        self.service_usage = FakeServiceUsage(
            projects=projects, operation_polls=0, operation_seconds=operation_seconds
        )

    def start(self) -> Self:
        for fake in self._all():
            fake.start()
        return self

    def stop(self) -> None:
        for fake in self._all():
            fake.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _all(
        self,
    ) -> tuple[FakeGke | FakeCompute | FakeResourceManager | FakeIam | FakeServiceUsage, ...]:
        return (self.gke, self.compute, self.resource_manager, self.iam, self.service_usage)

    def env(self) -> dict[str, str]:
        """The variables that send ``KUBEFLOW_BOT_CLOUD=gcp`` here."""
        return {
            "KUBEFLOW_BOT_CLOUD": "gcp",
            "CONTAINER_EMULATOR_HOST": self.gke.target,
            "COMPUTE_EMULATOR_HOST": self.compute.endpoint,
            "RESOURCEMANAGER_EMULATOR_HOST": self.resource_manager.target,
            "IAM_EMULATOR_HOST": self.iam.target,
            "SERVICEUSAGE_EMULATOR_HOST": self.service_usage.target,
        }
