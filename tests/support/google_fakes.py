"""Every Google API the worker calls, as local fakes, started together for one project.

``GoogleFakes`` starts the GKE, Compute, Resource Manager, IAM and Service Usage fakes,
a Kubernetes API server that the fake GKE hands out as every cluster's endpoint (with
its CA certificate, as GKE does), and a metadata server that serves Application Default
Credentials tokens; Compute's backend services are those GKE's ingress controller would
have made for the Ingresses on that server.  ``env()`` gives the variables that point
``KUBEFLOW_BOT_CLOUD=gcp`` at them (SPEC.md, "Testing hooks").  Used by the end-to-end
worker tests and the worker benchmark; each fake's own tests live next to it.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from types import TracebackType
from typing import Any, Self, TypeAlias

from tests.support.fake_compute import FakeCompute
from tests.support.fake_gke import FakeGke
from tests.support.fake_iam import FakeIam
from tests.support.fake_kube import BACKENDS_ANNOTATION, FakeKube
from tests.support.fake_metadata import FakeMetadata
from tests.support.fake_resource_manager import FakeResourceManager
from tests.support.fake_service_management import FakeServiceManagement
from tests.support.fake_service_usage import FakeServiceUsage

_Fake: TypeAlias = (
    FakeGke
    | FakeCompute
    | FakeResourceManager
    | FakeIam
    | FakeServiceUsage
    | FakeServiceManagement
    | FakeKube
    | FakeMetadata
)

PROJECT = "demo-project"


def _crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


# What GKE itself authenticates with when it installs its own objects, not the bot.
GKE_ADDON_TOKEN = "gke-addon-manager"
# Kinds every GKE cluster serves from the start, which the IAP objects use.
GKE_CRDS = (
    _crd("cloud.google.com", "BackendConfig", "backendconfigs"),
    _crd("networking.gke.io", "ManagedCertificate", "managedcertificates"),
)
PROJECT_NUMBER = 271828182845


class GoogleFakes:
    """The five fakes for ``project``; GKE and Compute operations take ``operation_seconds``."""

    def __init__(self, *, project: str = PROJECT, operation_seconds: float = 0.0) -> None:
        self.project = project
        projects = {project: PROJECT_NUMBER}
        self.kube = FakeKube()
        self.metadata = FakeMetadata(project=project)
        self.gke = FakeGke(
            operation_seconds=operation_seconds,
            max_workers=32,
            ca_certificate=self.kube.ca_base64,
        )
        # Operations finish by time alone: polls_to_done=0 would finish them at once.
        self.compute = FakeCompute(
            polls_to_done=0 if operation_seconds == 0 else 1_000_000,
            seconds_to_done=operation_seconds,
            backend_services=self._backend_services,
        )
        self.resource_manager = FakeResourceManager(projects=projects)
        self.iam = FakeIam(projects=[project])
        self.service_usage = FakeServiceUsage(
            projects=projects, operation_polls=0, operation_seconds=operation_seconds
        )
        self.service_management = FakeServiceManagement(
            projects=[project], operation_polls=0, operation_seconds=operation_seconds
        )

    def _backend_services(self, project: str) -> list[str]:
        """One backend service per backend a ready Ingress reports, as GKE makes them
        (every cluster shares the one fake API server)."""
        if project != self.project:
            return []
        names: list[str] = []
        for ingress in self.kube.objects("Ingress", group="networking.k8s.io"):
            raw = (ingress["metadata"].get("annotations") or {}).get(BACKENDS_ANNOTATION)
            names += json.loads(raw) if raw else []
        return names

    def start(self) -> Self:
        for fake in self._all():
            fake.start()
        # Known once the server listens: GKE reports a bare host (and here a port).
        self.gke.endpoint = self.kube.url.removeprefix("https://")
        for crd in GKE_CRDS:
            self._install(crd)
        return self

    def _install(self, crd: dict[str, Any]) -> None:
        """Server-side apply ``crd`` as GKE itself would have, before the bot arrives."""
        url = (
            f"{self.kube.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
            f"{crd['metadata']['name']}?fieldManager=gke"
        )
        request = urllib.request.Request(  # noqa: S310 - https to the local fake only
            url,
            data=json.dumps(crd).encode(),
            method="PATCH",
            headers={
                "Content-Type": "application/apply-patch+yaml",
                "Authorization": f"Bearer {GKE_ADDON_TOKEN}",
            },
        )
        context = ssl.create_default_context(cadata=self.kube.ca_pem.decode())
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(request, timeout=10) as answer:
            answer.read()

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

    def _all(self) -> tuple[_Fake, ...]:
        return (
            self.kube,
            self.metadata,
            self.gke,
            self.compute,
            self.resource_manager,
            self.iam,
            self.service_usage,
            self.service_management,
        )

    def env(self) -> dict[str, str]:
        """The variables that send ``KUBEFLOW_BOT_CLOUD=gcp`` here."""
        return {
            "KUBEFLOW_BOT_CLOUD": "gcp",
            "CONTAINER_EMULATOR_HOST": self.gke.target,
            "COMPUTE_EMULATOR_HOST": self.compute.endpoint,
            "RESOURCEMANAGER_EMULATOR_HOST": self.resource_manager.target,
            "IAM_EMULATOR_HOST": self.iam.target,
            "SERVICEUSAGE_EMULATOR_HOST": self.service_usage.target,
            "SERVICEMANAGEMENT_EMULATOR_HOST": self.service_management.target,
            # Application Default Credentials from the fake metadata server, and nothing
            # else: no key file, no gcloud login.
            "GCE_METADATA_HOST": self.metadata.host,
            "GCE_METADATA_IP": self.metadata.host,
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "CLOUDSDK_CONFIG": os.devnull,
        }
