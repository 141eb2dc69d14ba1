"""Prometheus triggers through the running operator: a real Prometheus scrapes a test
exporter; the operator scales out on a threshold, verifies on the metric, reverts the
scale, prunes old records, and reports query errors and outages on the policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.exporter import Exporter
from tests.support.operator import OperatorProcess
from tests.support.prometheus import PrometheusServer
from tests.support.workloads import deploy, eventually, first_remediation, policy, remediations


def _trigger(query: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "backlog",
        "prometheus": {
            "query": query,
            "workloadLabels": {"namespace": "namespace", "name": "deployment"},
            "for": "2s",
            "interval": "2s",
            **extra,
        },
    }


async def _ready(kube: k.Kube, ns: str, name: str, reason: str) -> dict[str, Any] | None:
    hp = await kube.get(k.group(API_VERSION, ns, "healingpolicies", name))
    for c in hp.get("status", {}).get("conditions", []):
        if c["type"] == "Ready" and c["reason"] == reason:
            return dict(c)
    return None


async def _replicas(kube: k.Kube, ns: str, name: str, want: int) -> bool:
    d = await kube.get(k.apps(ns, "deployments", name))
    return bool(d["spec"]["replicas"] == want)


async def test_threshold_scales_out_verifies_on_the_metric_reverts_and_prunes(
    kube: k.Kube,
    namespace: str,
    exporter: Exporter,
    prometheus: PrometheusServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    exporter.set_gauge("queue_depth", 100, namespace=ns, deployment="worker")
    await deploy(kube, ns, "worker", "registry.local/worker:v1")
    spec = {
        "triggers": [_trigger("max by (namespace, deployment) (queue_depth)", above=50)],
        "remediation": {
            "steps": [{"scale": {"by": 1, "max": 4, "revertAfterRecovery": True}}],
            "verify": {"for": "4s", "timeout": "60s"},
        },
    }
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("worker", selector={"app": "worker"}, spec=spec),
    )
    op = operator(
        namespaces=[ns],
        prometheus_url=prometheus.url,
        extra_env={"SELFHEAL_RETENTION_SECONDS": "8"},
    )
    await eventually(lambda: _replicas(kube, ns, "worker", 3), timeout=60, what="scaled to 3")
    # The extra replica drains the backlog.
    exporter.set_gauge("queue_depth", 10, namespace=ns, deployment="worker")

    rec = await eventually(
        lambda: first_remediation(kube, ns, phase="Resolved"), timeout=60, what="Resolved"
    )
    step = rec["status"]["steps"][0]
    assert (step["action"], step["change"]["fromReplicas"], step["change"]["toReplicas"]) == (
        "scale",
        2,
        3,
    )
    assert rec["status"]["cause"] == "ThresholdExceeded"
    await eventually(lambda: _replicas(kube, ns, "worker", 2), timeout=30, what="reverted to 2")
    hp = await kube.get(k.group(API_VERSION, ns, "healingpolicies", "worker"))
    seen = [(r["workload"], r["trigger"], r["health"]) for r in hp["status"]["recentSignals"]]
    assert ("worker", "backlog", "unhealthy") in seen
    assert seen[-1] == ("worker", "backlog", "healthy")
    assert op.metric("selfheal_remediations_total", {"action": "revert-scale"}) == 1

    async def pruned() -> bool:
        return not await remediations(kube, ns)

    await eventually(pruned, timeout=40, what="the record pruned after the retention")


async def test_query_errors_and_outages_are_reported_on_the_policy_and_never_acted_on(
    kube: k.Kube,
    namespace: str,
    exporter: Exporter,
    prometheus: PrometheusServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    exporter.set_gauge("queue_depth", 100, namespace=ns, deployment="api")
    await deploy(kube, ns, "api", "registry.local/api:v1")
    good = {
        "triggers": [_trigger("max by (namespace, deployment) (queue_depth)", above=500)],
        "remediation": {"steps": [{"restart": {}}]},
    }
    bad = {
        "triggers": [{**_trigger("nosuchfunction(queue_depth)", above=1), "name": "typo"}],
        "remediation": {"steps": [{"restart": {}}]},
    }
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("good", selector={"app": "api"}, spec=good),
    )
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("bad", selector={"app": "api"}, spec=bad),
    )
    operator(namespaces=[ns], prometheus_url=prometheus.url)

    failed = await eventually(
        lambda: _ready(kube, ns, "bad", "QueryFailed"),
        timeout=60,
        what="bad: Ready=False QueryFailed",
    )
    assert failed["status"] == "False"
    assert "typo" in failed["message"]
    # The other policy keeps being served.
    await eventually(lambda: _ready(kube, ns, "good", "Accepted"), timeout=30, what="good ok")

    prometheus.stop()
    down = await eventually(
        lambda: _ready(kube, ns, "good", "BackendUnavailable"),
        timeout=60,
        what="good: BackendUnavailable while Prometheus is down",
    )
    assert down["status"] == "False"
    prometheus.start()
    await eventually(lambda: _ready(kube, ns, "good", "Accepted"), timeout=60, what="good again")
    assert await remediations(kube, ns) == []
