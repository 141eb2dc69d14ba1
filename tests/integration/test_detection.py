"""Detection through the running operator on the real API server: crash loops are
caught at the policy's restart threshold with the right cause, and watching never
writes to a Pod (counted from the API server's own audit log)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.cluster import Cluster
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    available,
    deployment,
    eventually,
    first_remediation,
    policy,
)

OPERATOR_USER = "system:serviceaccount:selfheal-system:selfheal-test"


def _audit(cluster: Cluster, namespace: str) -> Counter[tuple[str, str]]:
    """(verb, resource[/subresource]) -> count of the operator's requests in ``namespace``."""
    seen: Counter[tuple[str, str]] = Counter()
    for line in cluster.audit_log.read_text().splitlines():
        ev = json.loads(line)
        ref = ev.get("objectRef") or {}
        if ev.get("user", {}).get("username") != OPERATOR_USER:
            continue
        if ref.get("namespace") not in (namespace, None):
            continue
        resource = ref.get("resource", "") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        seen[(ev["verb"], resource)] += 1
    return seen


async def test_oom_crash_loop_is_detected_at_the_threshold_with_its_cause_and_no_pod_write(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/api:v1"
    # Restarts every 3 s, so the threshold is crossed well after the operator is up.
    kubelet.behave(
        image,
        Behaviour(
            kind="crashloop",
            exit_code=137,
            reason="OOMKilled",
            restart_every=3.0,
            previous_logs="java.lang.OutOfMemoryError: Java heap space\n",
        ),
    )
    spec = {
        "mode": "DryRun",  # decide and record only: detection is what is tested here
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 4, "within": "10m"}}],
        "remediation": {"steps": [{"restart": {}}], "verify": {"for": "1m"}},
    }
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("api", selector={"app": "api"}, spec=spec),
    )
    operator(namespaces=[ns])
    await kube.create(k.apps(ns, "deployments"), deployment("api", image, replicas=1))

    rec = await eventually(lambda: first_remediation(kube, ns), timeout=90, what="an incident")
    status = rec["status"]
    assert status["cause"] == "OOMKilled"
    # Detected at the threshold, not later: the pod had exactly 4 restarts then.
    assert status["evidence"]["restartCount"] == 4, status["evidence"]
    assert status["evidence"]["exitCode"] == 137
    assert rec["spec"]["workload"]["name"] == "api"

    calls = _audit(cluster, ns)
    pod_writes = {
        key: n
        for key, n in calls.items()
        if key[1].startswith("pods") and key[0] not in ("get", "list", "watch")
    }
    assert pod_writes == {}, pod_writes
    assert calls[("watch", "pods")] >= 1  # it did watch them


async def test_an_image_pull_failure_is_detected_after_its_grace_without_restarts(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    spec = {
        "mode": "DryRun",
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 3, "within": "10m"}}],
        "remediation": {"steps": [{"rollback": {}}], "verify": {"for": "1m"}},
    }
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("web", selector={"app": "web"}, spec=spec),
    )
    await kube.create(k.apps(ns, "deployments"), deployment("web", "registry.local/web:v1"))
    await eventually(lambda: available(kube, ns, "web"), timeout=60, what="web available")
    operator(namespaces=[ns])
    await kube.patch(
        k.apps(ns, "deployments", "web"),
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/image",
                "value": "registry.local/web:v2-badpull",
            }
        ],
        content_type=k.JSON_PATCH,
    )
    # The default grace is 60 s from the pod's start; the record must name the cause.
    rec = await eventually(
        lambda: first_remediation(kube, ns), timeout=120, what="an image-pull incident"
    )
    assert rec["status"]["cause"] == "ImagePullBackOff"


async def test_an_idle_policy_costs_no_writes(
    kube: k.Kube, namespace: str, cluster: Cluster, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    await kube.create(k.apps(ns, "deployments"), deployment("calm", "registry.local/calm:v1"))
    await eventually(lambda: available(kube, ns, "calm"), timeout=60, what="calm available")
    spec = {
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 3}}],
        "remediation": {"steps": [{"rollback": {}}]},
    }
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("calm", selector={"app": "calm"}, spec=spec),
    )
    operator(namespaces=[ns])

    async def settled() -> bool:
        hp = await kube.get(k.group(API_VERSION, ns, "healingpolicies", "calm"))
        return bool(hp.get("status", {}).get("workloads") == 1)

    await eventually(settled, timeout=30, what="the policy's status written once")
    await asyncio.sleep(3)
    before = sum(
        n for (verb, _), n in _audit(cluster, ns).items() if verb not in ("get", "list", "watch")
    )
    await asyncio.sleep(10)  # five timer ticks
    after = _audit(cluster, ns)
    writes = {key: n for key, n in after.items() if key[0] not in ("get", "list", "watch")}
    assert sum(writes.values()) == before, writes
