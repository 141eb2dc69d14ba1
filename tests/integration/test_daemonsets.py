"""DaemonSets healed through the running operator (the chart's ServiceAccount), on the
real API server and controller-manager, with the kubelet stand-in running three Nodes
and the pods the daemonset controller pins to each: v2 and then v3 crash-loop, and both
times the DaemonSet lands on v1, one Ready pod per Node; an OnDelete DaemonSet has its
bad pods deleted by selfheal, one at a time. Writes are counted from the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support import sets
from tests.support.audit import workload_writes
from tests.support.cluster import Cluster
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import OperatorProcess
from tests.support.workloads import eventually

DS = "DaemonSet"
NODES = 3
WRITES = frozenset({"daemonsets", "pods"})
SPEC: dict[str, Any] = {
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {
        "steps": [{"rollback": {"to": "LastHealthy"}}],
        "verify": {"for": "5s", "timeout": "90s"},
    },
    "guardrails": {"cooldown": "1s", "window": "1h", "maxRemediations": 10},
}


async def _start(
    kube: k.Kube,
    kubelet: Kubelet,
    ns: str,
    operator: Callable[..., OperatorProcess],
    body: dict[str, Any],
    *,
    spec: dict[str, Any] = SPEC,
) -> list[str]:
    nodes = kubelet.add_nodes(NODES)
    await kube.create(k.apps(ns, "daemonsets"), body)
    await eventually(
        lambda: sets.settled(kube, DS, ns, "agent", sets.image_of(body), count=len(nodes)),
        timeout=90,
        what="v1 on every node",
    )
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"), sets.set_policy(DS, "agent", spec=spec)
    )
    operator(namespaces=[ns])
    return nodes


async def _on_every_node(
    kube: k.Kube, ns: str, image: str, nodes: list[str]
) -> list[dict[str, Any]] | None:
    live = await sets.settled(kube, DS, ns, "agent", image, count=len(nodes))
    if live is None or sorted(p["spec"].get("nodeName", "") for p in live) != sorted(nodes):
        return None
    return live


async def test_a_daemonset_on_three_nodes_rolls_back_to_v1_twice_never_to_v2(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1, v2, v3 = sets.releases(kubelet, ns, "agent", "v1", "v2", "v3", bad=("v2", "v3"))
    nodes = await _start(kube, kubelet, ns, operator, sets.daemonset("agent", v1))
    assert len(nodes) == NODES

    await sets.set_image(kube, DS, ns, "agent", v2)
    [first] = await eventually(lambda: sets.resolved(kube, ns, 1), timeout=180, what="v2 healed")
    await eventually(lambda: _on_every_node(kube, ns, v1, nodes), timeout=90, what="v1 back")
    await sets.set_image(kube, DS, ns, "agent", v3)
    done = await eventually(lambda: sets.resolved(kube, ns, 2), timeout=180, what="v3 healed")
    await eventually(lambda: _on_every_node(kube, ns, v1, nodes), timeout=90, what="v1 again")

    hashes = await sets.revision_hashes(kube, ns, "agent")
    steps = [r["status"]["steps"][0] for r in done]
    assert [(s["action"], s["result"]) for s in steps] == [("rollback", "Succeeded")] * 2
    assert [s["change"]["toTemplateHash"] for s in steps] == [hashes[v1]] * 2  # never v2
    assert sorted(s["change"]["fromTemplateHash"] for s in steps) == sorted(
        [hashes[v2], hashes[v3]]
    )
    assert first["spec"]["workload"]["kind"] == DS
    # RollingUpdate: the controller replaced the bad pods itself; selfheal only patched.
    assert workload_writes(cluster, ns, resources=WRITES) == [("patch", "daemonsets", "agent")] * 2


async def test_an_on_delete_daemonset_has_its_bad_pods_deleted_one_at_a_time(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1, v2 = sets.releases(kubelet, ns, "agent", "v1", "v2", bad=("v2",))
    body = sets.daemonset("agent", v1, strategy={"type": "OnDelete"})
    nodes = await _start(kube, kubelet, ns, operator, body)

    # OnDelete: the new template reaches a node only when its pod is deleted. Two are.
    await sets.set_image(kube, DS, ns, "agent", v2)
    by_node = {p["spec"]["nodeName"]: p for p in await sets.pods(kube, ns, "agent")}
    deleted_by_hand = [by_node[n]["metadata"]["name"] for n in nodes[1:]]
    for name in deleted_by_hand:
        await kube.delete(k.core(ns, "pods", name))
    [rec] = await eventually(lambda: sets.resolved(kube, ns, 1), timeout=180, what="Resolved")
    live = await eventually(lambda: _on_every_node(kube, ns, v1, nodes), timeout=90, what="v1")

    writes = workload_writes(cluster, ns, resources=WRITES)
    assert writes[0] == ("patch", "daemonsets", "agent")
    deleted = [name for verb, res, name in writes[1:] if (verb, res) == ("delete", "pods")]
    assert len(deleted) == 2  # the two v2 pods, each once
    assert sorted(deleted) == sorted(rec["status"]["steps"][0]["change"]["deletedPods"])
    # The first node's pod (still v1) was never touched.
    survivor = next(p for p in live if p["spec"]["nodeName"] == nodes[0])
    assert survivor["metadata"]["uid"] == by_node[nodes[0]]["metadata"]["uid"]


async def test_a_restart_of_an_on_delete_daemonset_is_refused_and_says_why(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/agent:v1"
    body = sets.daemonset("agent", image, strategy={"type": "OnDelete"})
    spec = {
        **SPEC,
        "remediation": {"steps": [{"restart": {}}], "verify": {"for": "5s", "timeout": "90s"}},
    }
    await _start(kube, kubelet, ns, operator, body, spec=spec)
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0))

    step = await eventually(
        lambda: sets.first_step(kube, ns), timeout=180, what="the restart step decided"
    )
    assert (step["action"], step["result"]) == ("restart", "Refused")
    assert "OnDelete" in step["message"]
    ds = await sets.get(kube, DS, ns, "agent")
    assert "annotations" not in ds["spec"]["template"]["metadata"]  # no restartedAt
    assert workload_writes(cluster, ns, resources=WRITES) == []
