"""What every handler shares: clients, parsed policies, detector state, the driver.

Built once by the start-up handler and kept in kopf's ``memo``. Nothing here is a
source of truth: policies and Remediations live in the API server, and this is
rebuilt from them after a restart.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Iterator
from typing import Any

from selfheal.clients.lease import LeaderElector
from selfheal.detect import alerts, crashloop
from selfheal.detect.prometheus import PrometheusEvaluator
from selfheal.handlers.podcache import Coalescer, Index, PodCache
from selfheal.handlers.web import Health
from selfheal.policy.model import HealingPolicy
from selfheal.remediation.driver import Driver
from selfheal.remediation.silences import Silencer
from selfheal.settings import Settings
from selfheal.sharding import Shard


@dataclasses.dataclass(kw_only=True)
class Runtime:
    settings: Settings
    driver: Driver
    prometheus: PrometheusEvaluator
    health: Health
    policies: dict[tuple[str, str], HealingPolicy] = dataclasses.field(default_factory=dict)
    """(namespace, name) -> the parsed policy, for every policy that parsed."""
    invalid: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    """(namespace, name) -> why the policy is not served."""
    rs_owner: Index = dataclasses.field(default_factory=Index)
    """(namespace, ReplicaSet) -> the Deployment that controls it (light watcher)."""
    rs_by_deployment: Index = dataclasses.field(default_factory=Index)
    """(namespace, Deployment) -> RsInfo of each of its ReplicaSets (light watcher)."""
    deployments: Index = dataclasses.field(default_factory=Index)
    """(namespace, name) -> DeploymentInfo, and namespace -> every DeploymentInfo there."""
    pods: PodCache = dataclasses.field(default_factory=PodCache)
    """Pod summaries by (namespace, controller owner), from the light Pod watchers."""
    evaluations: Coalescer[tuple[str, str, str]] = dataclasses.field(
        default_factory=lambda: Coalescer(_nothing)
    )
    """Per-owner crash-loop evaluations queued by Pod changes (set at start-up)."""
    judging: bool = False
    """Set once every cache is in (``reconciler.await_ready``). Before, a change only
    files its Pod: judging a workload from half a listing is wasted work that delays
    readiness, and every owner is judged once when the caches are in."""
    histories: dict[str, crashloop.PodHistory] = dataclasses.field(default_factory=dict)
    """Pod uid -> crash-loop history; only pods of namespaces some policy covers."""
    unhealthy: dict[str, dict[tuple[str, str], float]] = dataclasses.field(default_factory=dict)
    """Namespace -> (workload, trigger) -> unix time that trigger found it unhealthy
    (storm brake input): one trigger's "healthy" never erases another's "unhealthy"."""
    indexes: dict[str, Any] = dataclasses.field(default_factory=dict)
    """kopf's live index objects by name (``remediations``), kept by the handlers for the
    reconciler and the Pod evaluations."""
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set when a record changed: the reconciler makes a pass before its period."""
    recent: dict[tuple[str, str], collections.deque[dict[str, object]]] = dataclasses.field(
        default_factory=dict
    )
    """(namespace, policy) -> the last changes of a workload's health, newest last (status)."""
    jira_checks: dict[str, tuple[float, tuple[bool, str, str]]] = dataclasses.field(
        default_factory=dict
    )
    """Jira project -> (when checked, (ok, reason, message)) of its last check."""
    next_prune: dict[str, float] = dataclasses.field(default_factory=dict)
    """Namespace -> when its next retention sweep is due."""
    next_eval: dict[tuple[str, str, str], float] = dataclasses.field(default_factory=dict)
    """(namespace, policy, trigger) -> when its Prometheus query is due."""
    alerts: alerts.AlertBook = dataclasses.field(default_factory=alerts.AlertBook)
    """What Alertmanager's webhook said of each alert, by fingerprint (memory only: after
    a restart alert triggers are unknown until Alertmanager resends)."""
    silencer: Silencer | None = None
    """Alertmanager silences while healing (``--alertmanager-url``); ``None``: none."""
    deployment_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    """Namespace -> a counter bumped by every Deployment change seen there."""
    targets: dict[tuple[str, str], tuple[tuple[int, int], HealingPolicy, list[Any]]] = (
        dataclasses.field(default_factory=dict)
    )
    """(namespace, policy) -> ((version, count), the policy, its Deployments) (policies.tick)."""
    elector: LeaderElector | None = None
    """The Lease campaign (``--leader-election``); ``None``: election off, always leads."""
    shard: Shard = dataclasses.field(default_factory=Shard)
    """This process's shard (``--shard`` of ``--total-shards``): it serves only the
    namespaces it owns. The default, 0 of 1, owns every namespace."""

    @property
    def is_leader(self) -> bool:
        """True when this process may act: it holds the Lease, or election is off.
        Standbys stay Ready (/readyz) and keep their caches warm; they only do not act."""
        return self.elector is None or self.elector.is_leader

    def policies_in(self, namespace: str) -> Iterator[HealingPolicy]:
        for (ns, _), policy in self.policies.items():
            if ns == namespace:
                yield policy

    def remember(self, namespace: str, policy: str, entry: dict[str, object]) -> None:
        key = (namespace, policy)
        self.recent.setdefault(key, collections.deque(maxlen=10)).append(entry)

    def covers(self, namespace: str) -> bool:
        return any(ns == namespace for ns, _ in self.policies)

    def mark(
        self, namespace: str, workload: str, *, trigger: str, unhealthy: bool, now: float
    ) -> bool:
        """Record what ``trigger`` says of the workload's health; True when it changed."""
        seen = self.unhealthy.setdefault(namespace, {})
        key = (workload, trigger)
        if unhealthy:
            if key in seen:
                return False
            seen[key] = now
            return True
        return seen.pop(key, None) is not None

    def unhealthy_workloads(self, namespace: str) -> dict[str, float]:
        """Workload -> when it first turned unhealthy by any trigger (storm brake)."""
        out: dict[str, float] = {}
        for (workload, _), at in self.unhealthy.get(namespace, {}).items():
            out[workload] = min(at, out.get(workload, at))
        return out


async def _nothing(key: tuple[str, str, str]) -> None:
    """The placeholder evaluation until start-up sets the real one."""
