"""A stateful in-memory ``Cloud`` for tests: what the steps see when Google answers.

Real Google APIs cannot run here, so this is the edge the step and worker tests drive
(later layers put the real client libraries in front of local fakes).  It keeps the state
the ``ensure_*`` steps observe (enabled services, accelerator zones, global addresses,
service accounts, project and service-account IAM policies with etags, clusters and node
pools that provision over a configurable number of polls, objects applied to clusters,
Cloud Endpoints, the nodePorts a cluster gives NodePort Services, the backend services
GKE's ingress controller makes, project numbers) and behaves as strictly as the real
services where that catches step bugs: creating something that exists, enabling more
than 20 services at once, writing an IAM policy with a stale etag, or applying objects to
a cluster that is not running.

What tests read back:

* ``mutations``: a ``Counter`` of calls that changed state, per method name, so a test
  can say "created exactly once".  Idempotent writes (``apply_objects``,
  ``ensure_endpoint``, ``delete_endpoint``) count only when they changed something.
* ``calls``: a ``Counter`` of every call per method name, reads included.
* ``drain_calls()``: the calls made on the current thread since the last drain, as
  "method resource" strings (per thread, like ``DryRunCloud``, since steps run at once).
* accessors for the state (``project_policy``, ``cluster_request``, ...).

Fault injection: ``fail(method, error, times=1)`` makes ``method`` raise ``error``
(``times=None``: always) before it touches any state; ``before(method, action)`` runs
``action`` once just before ``method``, to interleave another writer.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioning.cloud import (
    ApplyProgress,
    ApplySummary,
    ClusterInfo,
    ClusterRequest,
    IamBinding,
    IamPolicy,
    IngressState,
    NodePoolRequest,
)
from provisioning.errors import ConcurrentChange, PermanentError, TemporaryError

SERVICE_USAGE_BATCH_LIMIT = 20
ETAG_CONFLICT_DELAY = 1.0

ClusterKey = tuple[str, str, str]  # project, zone, name
ObjectKey = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


@dataclass
class _Cluster:
    status: str
    labels: dict[str, str]
    request: ClusterRequest | None
    # get_cluster calls left before the status moves on (to RUNNING, or gone when STOPPING).
    polls_left: int
    endpoint: str = ""
    problem: str | None = None


@dataclass
class _NodePool:
    status: str
    request: NodePoolRequest
    polls_left: int
    problem: str | None = None


@dataclass
class _Fault:
    error: BaseException
    times: int | None


@dataclass
class _Policy:
    bindings: tuple[IamBinding, ...] = ()
    etag: str = ""


def _email(project: str, account_id: str) -> str:
    return f"{account_id}@{project}.iam.gserviceaccount.com"


def _object_key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(metadata.get("namespace", "")),
        str(metadata.get("name", "")),
    )


class MemoryCloud:
    """A ``Cloud`` that keeps state in memory; thread-safe, as the steps run at once."""

    def __init__(
        self,
        *,
        gpu_zones: Mapping[str, Iterable[str]] | None = None,
        cluster_polls: int = 0,
        node_pool_polls: int = 0,
        delete_polls: int = 0,
        apply_waits: int = 0,
    ) -> None:
        """``gpu_zones`` maps an accelerator type to the zones offering it.

        ``cluster_polls``/``node_pool_polls``: how many ``get_cluster`` /
        ``get_node_pool_status`` calls after creation still see PROVISIONING;
        ``delete_polls``: how many see STOPPING after a delete; ``apply_waits``: how many
        ``apply_objects`` calls report something still not ready.
        """
        self.gpu_zones: dict[str, frozenset[str]] = {
            gpu: frozenset(zones) for gpu, zones in (gpu_zones or {}).items()
        }
        self.cluster_polls = cluster_polls
        self.node_pool_polls = node_pool_polls
        self.delete_polls = delete_polls
        self.apply_waits = apply_waits
        self.mutations: Counter[str] = Counter()
        # What GKE reports for an applied Ingress; a test sets a state not ready yet.
        # None: ready, with one healthy backend named after the ingress gateway's http2
        # nodePort, as GKE's ingress controller names it.
        self.ingress: IngressState | None = None
        # Whether each backend the Ingress reports is in Compute yet (GKE makes both).
        self.backends_in_compute = True
        self.project_numbers: dict[str, str] = {}
        self.calls: Counter[str] = Counter()

        self._lock = threading.RLock()
        self._local = threading.local()
        self._etags = itertools.count(1)
        self._ips = itertools.count(10)
        self._services: dict[str, set[str]] = {}
        self._addresses: dict[tuple[str, str], str] = {}
        self._accounts: dict[tuple[str, str], str] = {}
        self._project_policies: dict[str, _Policy] = {}
        self._account_policies: dict[tuple[str, str], _Policy] = {}
        self._clusters: dict[ClusterKey, _Cluster] = {}
        self._node_pools: dict[tuple[str, str, str, str], _NodePool] = {}
        self._objects: dict[ClusterKey, dict[ObjectKey, Mapping[str, Any]]] = {}
        self._endpoints: dict[tuple[str, str], str] = {}
        self._faults: dict[str, _Fault] = {}
        # (cluster key, namespace, Service, port name) -> nodePort, kept across re-applies.
        self._node_ports: dict[tuple[ClusterKey, str, str, str], int] = {}
        self._next_node_port = itertools.count(30000)
        self._backend_ids: dict[tuple[str, str], str] = {}
        self._next_cluster_problem: str | None = None
        self._next_pool_problem: str | None = None
        self._before: dict[str, list[Callable[[], object]]] = {}

    # -- Fault injection -----------------------------------------------------------------

    def fail(self, method: str, error: BaseException, *, times: int | None = 1) -> None:
        """Make ``method`` raise ``error`` on its next ``times`` calls (None: always)."""
        if not hasattr(self, method):
            raise AttributeError(f"MemoryCloud has no method {method}")
        with self._lock:
            self._faults[method] = _Fault(error, times)

    def break_next_cluster(self, problem: str) -> None:
        """The next cluster created ends in ERROR for ``problem`` (a stock-out, say)."""
        with self._lock:
            self._next_cluster_problem = problem

    def break_next_node_pool(self, problem: str) -> None:
        with self._lock:
            self._next_pool_problem = problem

    def cluster_problem(self, project: str, zone: str, name: str) -> str | None:
        with self._lock:
            cluster = self._clusters.get((project, zone, name))
            return cluster.problem if cluster else None

    def node_pool_problem(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        with self._lock:
            pool = self._node_pools.get((project, zone, cluster, name))
            return pool.problem if pool else None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def before(self, method: str, action: Callable[[], object]) -> None:
        """Run ``action`` once, just before the next call of ``method``."""
        if not hasattr(self, method):
            raise AttributeError(f"MemoryCloud has no method {method}")
        with self._lock:
            self._before.setdefault(method, []).append(action)

    def _enter(self, method: str, resource: str) -> None:
        """Count and record the call, run a pending ``before`` action, raise a fault."""
        with self._lock:
            actions = self._before.pop(method, [])
        for action in actions:
            action()
        with self._lock:
            self.calls[method] += 1
            self._record(f"{method} {resource}")
            fault = self._faults.get(method)
            if fault is None:
                return
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[method]
            raise fault.error

    # -- Calls as recorded -----------------------------------------------------------------

    @property
    def dry_run(self) -> bool:
        return False

    def _record(self, call: str) -> None:
        calls: list[str] = getattr(self._local, "calls", None) or []
        calls.append(call)
        self._local.calls = calls

    def drain_calls(self) -> list[str]:
        calls: list[str] = getattr(self._local, "calls", None) or []
        self._local.calls = []
        return calls

    def _mutated(self, method: str) -> None:
        self.mutations[method] += 1

    # -- Seeding and reading state (for tests) -------------------------------------------

    def add_cluster(
        self,
        project: str,
        zone: str,
        name: str,
        *,
        status: str = "RUNNING",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """A cluster that was there before the test (made by someone else, say)."""
        with self._lock:
            self._clusters[(project, zone, name)] = _Cluster(
                status=status, labels=dict(labels or {}), request=None, polls_left=0
            )

    def add_project_members(self, project: str, role: str, members: Iterable[str]) -> None:
        """Another writer adds ``members`` to ``role``; the policy's etag changes."""
        with self._lock:
            current = self._project_policy(project)
            policy = IamPolicy(current.bindings, current.etag).with_members(
                role, frozenset(members)
            )
            self._store_policy(current, policy.bindings)

    def enable(self, project: str, services: Iterable[str]) -> None:
        with self._lock:
            self._services.setdefault(project, set()).update(services)

    def enabled(self, project: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._services.get(project, ()))

    def project_policy(self, project: str) -> IamPolicy:
        with self._lock:
            current = self._project_policy(project)
            return IamPolicy(current.bindings, current.etag)

    def account_policy(self, project: str, email: str) -> IamPolicy:
        with self._lock:
            current = self._account_policies.get((project, email), _Policy())
            return IamPolicy(current.bindings, current.etag)

    def service_accounts(self, project: str) -> dict[str, str]:
        """account id -> display name."""
        with self._lock:
            return {aid: title for (p, aid), title in self._accounts.items() if p == project}

    def addresses(self, project: str) -> dict[str, str]:
        """address name -> IP."""
        with self._lock:
            return {name: ip for (p, name), ip in self._addresses.items() if p == project}

    def cluster_names(self, project: str) -> list[str]:
        with self._lock:
            return sorted(name for (p, _, name) in self._clusters if p == project)

    def cluster_request(self, project: str, zone: str, name: str) -> ClusterRequest | None:
        with self._lock:
            cluster = self._clusters.get((project, zone, name))
            return None if cluster is None else cluster.request

    def node_pool_request(
        self, project: str, zone: str, cluster: str, name: str
    ) -> NodePoolRequest | None:
        with self._lock:
            pool = self._node_pools.get((project, zone, cluster, name))
            return None if pool is None else pool.request

    def objects(self, project: str, zone: str, cluster: str) -> dict[ObjectKey, Any]:
        with self._lock:
            return dict(self._objects.get((project, zone, cluster), {}))

    def endpoints(self, project: str) -> dict[str, str]:
        """host -> address name."""
        with self._lock:
            return {host: a for (p, host), a in self._endpoints.items() if p == project}

    # -- Service Usage -----------------------------------------------------------------------

    def enabled_services(self, project: str, services: Sequence[str]) -> frozenset[str]:
        self._enter("enabled_services", f"projects/{project} ({len(services)} services)")
        with self._lock:
            return frozenset(services) & frozenset(self._services.get(project, ()))

    def enable_services(self, project: str, services: Sequence[str]) -> None:
        self._enter("enable_services", f"projects/{project} [{', '.join(services)}]")
        if len(services) > SERVICE_USAGE_BATCH_LIMIT:
            raise PermanentError(
                f"batchEnable takes at most {SERVICE_USAGE_BATCH_LIMIT} services, "
                f"not {len(services)}"
            )
        with self._lock:
            self._services.setdefault(project, set()).update(services)
            self._mutated("enable_services")

    # -- Compute -------------------------------------------------------------------------

    def zones_offering(self, project: str, accelerator_type: str) -> frozenset[str] | None:
        self._enter("zones_offering", f"projects/{project} {accelerator_type}")
        return self.gpu_zones.get(accelerator_type, frozenset())

    def get_global_address(self, project: str, name: str) -> str | None:
        self._enter("get_global_address", f"projects/{project}/global/addresses/{name}")
        with self._lock:
            return self._addresses.get((project, name))

    def create_global_address(self, project: str, name: str) -> None:
        self._enter("create_global_address", f"projects/{project}/global/addresses/{name}")
        with self._lock:
            if (project, name) in self._addresses:
                raise PermanentError(f"global address {name} already exists")
            self._addresses[(project, name)] = f"34.120.0.{next(self._ips)}"
            self._mutated("create_global_address")

    def delete_global_address(self, project: str, name: str) -> None:
        self._enter("delete_global_address", f"projects/{project}/global/addresses/{name}")
        with self._lock:
            if self._addresses.pop((project, name), None) is None:
                raise PermanentError(f"global address {name} not found")
            self._mutated("delete_global_address")

    def backend_service_id(self, project: str, name: str) -> str | None:
        self._enter("backend_service_id", f"projects/{project}/global/backendServices/{name}")
        with self._lock:
            if not self.backends_in_compute:
                return None
            # GKE makes a backend service for each backend its Ingresses report.
            known = any(
                name in self._ingress_state(key).backends
                for key in self._clusters
                if key[0] == project and self._objects.get(key)
            )
            if not known:
                return None
            return self._backend_ids.setdefault(
                (project, name), str(7_000_000_000_000_000_000 + len(self._backend_ids))
            )

    # -- IAM and Resource Manager --------------------------------------------------------

    def project_number(self, project: str) -> str:
        self._enter("project_number", f"projects/{project}")
        with self._lock:
            return self.project_numbers.setdefault(
                project, str(100_000_000_001 + len(self.project_numbers))
            )

    def service_account_exists(self, project: str, account_id: str) -> bool:
        self._enter("service_account_exists", f"projects/{project}/serviceAccounts/{account_id}")
        with self._lock:
            return (project, account_id) in self._accounts

    def create_service_account(self, project: str, account_id: str, display_name: str) -> None:
        self._enter("create_service_account", f"projects/{project} accountId={account_id}")
        with self._lock:
            if (project, account_id) in self._accounts:
                raise PermanentError(f"service account {account_id} already exists")
            self._accounts[(project, account_id)] = display_name
            self._mutated("create_service_account")

    def _project_policy(self, project: str) -> _Policy:
        policy = self._project_policies.get(project)
        if policy is None:
            policy = _Policy(etag=f"etag-{next(self._etags)}")
            self._project_policies[project] = policy
        return policy

    def _store_policy(self, current: _Policy, bindings: tuple[IamBinding, ...]) -> str:
        current.bindings = bindings
        current.etag = f"etag-{next(self._etags)}"
        return current.etag

    def _set_policy(self, current: _Policy, policy: IamPolicy, what: str) -> IamPolicy:
        if policy.etag != current.etag:
            raise ConcurrentChange(
                f"{what}: the policy changed since it was read (etag {policy.etag!r} is "
                f"stale, now {current.etag!r}); read it again",
                delay=ETAG_CONFLICT_DELAY,
            )
        etag = self._store_policy(current, policy.bindings)
        return IamPolicy(policy.bindings, etag)

    def get_project_iam_policy(self, project: str) -> IamPolicy:
        self._enter("get_project_iam_policy", f"projects/{project}")
        with self._lock:
            current = self._project_policy(project)
            return IamPolicy(current.bindings, current.etag)

    def set_project_iam_policy(self, project: str, policy: IamPolicy) -> IamPolicy:
        self._enter("set_project_iam_policy", f"projects/{project} etag={policy.etag}")
        with self._lock:
            result = self._set_policy(self._project_policy(project), policy, f"projects/{project}")
            self._mutated("set_project_iam_policy")
            return result

    def _account_policy(self, project: str, email: str) -> _Policy:
        account_id, _, domain = email.partition("@")
        if domain != f"{project}.iam.gserviceaccount.com" or (
            (project, account_id) not in self._accounts
        ):
            raise PermanentError(f"service account {email} does not exist")
        policy = self._account_policies.get((project, email))
        if policy is None:
            policy = _Policy(etag=f"etag-{next(self._etags)}")
            self._account_policies[(project, email)] = policy
        return policy

    def get_service_account_iam_policy(self, project: str, email: str) -> IamPolicy:
        self._enter("get_service_account_iam_policy", f"projects/{project}/serviceAccounts/{email}")
        with self._lock:
            current = self._account_policy(project, email)
            return IamPolicy(current.bindings, current.etag)

    def set_service_account_iam_policy(
        self, project: str, email: str, policy: IamPolicy
    ) -> IamPolicy:
        self._enter(
            "set_service_account_iam_policy",
            f"projects/{project}/serviceAccounts/{email} etag={policy.etag}",
        )
        with self._lock:
            result = self._set_policy(self._account_policy(project, email), policy, email)
            self._mutated("set_service_account_iam_policy")
            return result

    # -- GKE -------------------------------------------------------------------------------

    def get_cluster(self, project: str, zone: str, name: str) -> ClusterInfo | None:
        key = (project, zone, name)
        self._enter("get_cluster", "/".join(key))
        with self._lock:
            cluster = self._clusters.get(key)
            if cluster is None:
                return None
            if cluster.status in ("PROVISIONING", "STOPPING"):
                if cluster.polls_left > 0:
                    cluster.polls_left -= 1
                elif cluster.status == "PROVISIONING":
                    cluster.status = "ERROR" if cluster.problem else "RUNNING"
                else:
                    self._forget_cluster(key)
                    return None
            return ClusterInfo(
                status=cluster.status,
                endpoint=cluster.endpoint,
                ca_certificate="",
                labels=dict(cluster.labels),
            )

    def create_cluster(self, request: ClusterRequest) -> None:
        key = (request.project, request.zone, request.name)
        self._enter("create_cluster", "/".join(key))
        with self._lock:
            if key in self._clusters:
                raise PermanentError(f"cluster {request.name} already exists")
            self._clusters[key] = _Cluster(
                status="PROVISIONING",
                labels=dict(request.labels),
                request=request,
                polls_left=self.cluster_polls,
                endpoint=f"10.0.0.{next(self._ips)}",
                problem=self._next_cluster_problem,
            )
            self._next_cluster_problem = None
            self._mutated("create_cluster")

    def delete_cluster(self, project: str, zone: str, name: str) -> None:
        key = (project, zone, name)
        self._enter("delete_cluster", "/".join(key))
        with self._lock:
            cluster = self._clusters.get(key)
            if cluster is None:
                raise PermanentError(f"cluster {name} not found")
            if cluster.status == "STOPPING":
                raise TemporaryError(f"cluster {name} is already being deleted")
            cluster.status = "STOPPING"
            cluster.polls_left = self.delete_polls
            self._mutated("delete_cluster")

    def _forget_cluster(self, key: ClusterKey) -> None:
        del self._clusters[key]
        self._objects.pop(key, None)
        for pool in [p for p in self._node_pools if p[:3] == key]:
            del self._node_pools[pool]

    def get_node_pool_status(self, project: str, zone: str, cluster: str, name: str) -> str | None:
        key = (project, zone, cluster, name)
        self._enter("get_node_pool_status", "/".join(key))
        with self._lock:
            pool = self._node_pools.get(key)
            if pool is None:
                return None
            if pool.status == "PROVISIONING":
                if pool.polls_left > 0:
                    pool.polls_left -= 1
                else:
                    pool.status = "ERROR" if pool.problem else "RUNNING"
            return pool.status

    def create_node_pool(self, request: NodePoolRequest) -> None:
        key = (request.project, request.zone, request.cluster, request.name)
        self._enter("create_node_pool", "/".join(key))
        with self._lock:
            cluster = self._clusters.get(key[:3])
            if cluster is None or cluster.status != "RUNNING":
                raise PermanentError(f"cluster {request.cluster} is not running")
            if key in self._node_pools:
                raise PermanentError(f"node pool {request.name} already exists")
            self._node_pools[key] = _NodePool(
                "PROVISIONING", request, self.node_pool_polls, self._next_pool_problem
            )
            self._next_pool_problem = None
            self._mutated("create_node_pool")

    # -- Kubernetes and Cloud Endpoints ------------------------------------------------

    def apply_objects(
        self,
        project: str,
        zone: str,
        cluster: str,
        objects: Sequence[Mapping[str, Any]],
        *,
        on_progress: ApplyProgress | None = None,
    ) -> ApplySummary:
        key = (project, zone, cluster)
        self._enter("apply_objects", f"{'/'.join(key)} ({len(objects)} objects)")
        with self._lock:
            found = self._clusters.get(key)
            if found is None or found.status != "RUNNING":
                raise PermanentError(f"cluster {cluster} is not running")
            stored = self._objects.setdefault(key, {})
            applied = unchanged = 0
            for settled, obj in enumerate(objects, start=1):
                object_key = _object_key(obj)
                if stored.get(object_key) == obj:
                    unchanged += 1
                else:
                    stored[object_key] = obj
                    applied += 1
                if on_progress is not None:
                    on_progress(settled, len(objects))
            if applied:
                self._mutated("apply_objects")
            waiting: tuple[str, ...] = ()
            if self.apply_waits > 0:
                self.apply_waits -= 1
                waiting = tuple(f"{k[1]} {k[3]}" for k in list(stored)[:1])
            return ApplySummary(applied=applied, unchanged=unchanged, waiting_for=waiting)

    def ingress_state(
        self,
        project: str,
        zone: str,
        cluster: str,
        *,
        namespace: str,
        ingress: str,
        certificate: str,
    ) -> IngressState | None:
        self._enter("ingress_state", f"{project}/{zone}/{cluster} {namespace}/{ingress}")
        with self._lock:
            if not self._objects.get((project, zone, cluster)):
                return IngressState()
            return self._ingress_state((project, zone, cluster))

    def _ingress_state(self, key: ClusterKey) -> IngressState:
        if self.ingress is not None:
            return self.ingress
        ports = self._node_ports_of(key, "istio-system", "istio-ingressgateway") or {}
        backend = f"k8s-be-{ports.get('http2', 30000)}--abc"
        return IngressState(
            address="34.120.0.1", backends={backend: "HEALTHY"}, certificate="Active"
        )

    def service_node_ports(
        self, project: str, zone: str, cluster: str, *, namespace: str, name: str
    ) -> Mapping[str, int] | None:
        self._enter("service_node_ports", f"{project}/{zone}/{cluster} {namespace}/{name}")
        with self._lock:
            return self._node_ports_of((project, zone, cluster), namespace, name)

    def _node_ports_of(self, key: ClusterKey, namespace: str, name: str) -> dict[str, int] | None:
        """As the API server does: each port of a NodePort or LoadBalancer Service gets a
        nodePort of its own unless the object names one, kept while the Service is."""
        service = self._objects.get(key, {}).get(("v1", "Service", namespace, name))
        if service is None:
            return None
        spec = service.get("spec") or {}
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            return {}
        ports: dict[str, int] = {}
        for port in spec.get("ports") or []:
            port_name = str(port.get("name", ""))
            given = port.get("nodePort")
            ports[port_name] = (
                int(given)
                if given
                else self._node_ports.setdefault(
                    (key, namespace, name, port_name), next(self._next_node_port)
                )
            )
        return ports

    def ensure_endpoint(self, project: str, host: str, address_name: str) -> bool:
        self._enter("ensure_endpoint", f"{host} -> {address_name}")
        with self._lock:
            if (project, address_name) not in self._addresses:
                raise PermanentError(f"global address {address_name} not found")
            if self._endpoints.get((project, host)) == address_name:
                return False
            self._endpoints[(project, host)] = address_name
            self._mutated("ensure_endpoint")
            return True

    def delete_endpoint(self, project: str, host: str) -> bool:
        self._enter("delete_endpoint", host)
        with self._lock:
            if self._endpoints.pop((project, host), None) is None:
                return False
            self._mutated("delete_endpoint")
            return True
