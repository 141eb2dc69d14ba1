"""The closed loop on the real API server, controller-manager and kubelet stand-in:
detect a crash loop, roll back to the last healthy revision, verify, record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    available,
    deployment,
    eventually,
    image_of,
    policy,
    remediations,
    set_image,
)

CRASH_POLICY = {
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {
        "steps": [{"rollback": {"to": "LastHealthy"}}],
        "verify": {"for": "6s"},
    },
}


async def _phase(kube: k.Kube, ns: str, phase: str) -> list[dict[str, Any]] | None:
    items = await remediations(kube, ns)
    return items if items and all(r.get("status", {}).get("phase") == phase for r in items) else None


async def test_bad_release_is_rolled_back_verified_and_recorded(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    await kube.create(k.apps(ns, "deployments"), deployment("shop", "registry.local/shop:v1"))
    await eventually(lambda: available(kube, ns, "shop"), timeout=60, what="v1 available")
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"app": "shop"}, spec=CRASH_POLICY),
    )
    op = operator(namespaces=[ns])

    await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")
    items = await eventually(lambda: _phase(kube, ns, "Resolved"), timeout=120,
                             what="a Resolved remediation")
    assert len(items) == 1, items
    status = items[0]["status"]
    step = status["steps"][0]
    assert step["action"] == "rollback"
    assert step["result"] == "Succeeded"
    assert step["change"]["fromRevision"] == "2"
    assert status["cause"] == "Error"
    d = await eventually(lambda: available(kube, ns, "shop"), timeout=60, what="v1 back")
    assert image_of(d) == "registry.local/shop:v1"
    # kubectl semantics: rolling back re-numbers v1's ReplicaSet as revision 3.
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert op.metric("selfheal_remediations_total", {"action": "rollback", "result": "Succeeded"}) == 1
