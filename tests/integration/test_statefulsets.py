"""StatefulSets healed through the running operator (the chart's ServiceAccount), on the
real API server and controller-manager, with the kubelet stand-in running the pods the
statefulset controller creates: rollback to the last healthy ControllerRevision for each
update strategy, restart, scale, and a ticket when no revision is healthy. Writes are
counted from the API server's audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support import sets
from tests.support.audit import workload_writes
from tests.support.cluster import Cluster
from tests.support.exporter import Exporter
from tests.support.fixtures.jira import JIRA_PASSWORD
from tests.support.jira_server import JiraServer
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import OperatorProcess
from tests.support.prometheus import PrometheusServer
from tests.support.workloads import eventually, jira_secret, remediations

STS = "StatefulSet"
WRITES = frozenset({"statefulsets", "statefulsets/scale", "pods"})
ROLLBACK: dict[str, Any] = {
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {
        "steps": [{"rollback": {"to": "LastHealthy"}}],
        "verify": {"for": "5s", "timeout": "90s"},
    },
}


async def _start(
    kube: k.Kube,
    ns: str,
    operator: Callable[..., OperatorProcess],
    body: dict[str, Any],
    *,
    spec: dict[str, Any] = ROLLBACK,
    **kw: Any,
) -> OperatorProcess:
    """The StatefulSet at v1, settled; its policy; the operator."""
    name = body["metadata"]["name"]
    await kube.create(k.apps(ns, "statefulsets"), body)
    await eventually(
        lambda: sets.settled(
            kube, STS, ns, name, sets.image_of(body), count=body["spec"]["replicas"]
        ),
        timeout=90,
        what="v1 settled",
    )
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"), sets.set_policy(STS, name, spec=spec)
    )
    return operator(namespaces=[ns], **kw)


async def test_a_crash_looping_v2_is_rolled_back_to_v1_and_verified(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1, v2 = sets.releases(kubelet, ns, "web", "v1", "v2", bad=("v2",))
    op = await _start(kube, ns, operator, sets.statefulset("web", v1, replicas=2))

    await sets.set_image(kube, STS, ns, "web", v2)
    [rec] = await eventually(lambda: sets.resolved(kube, ns, 1), timeout=180, what="Resolved")
    step = rec["status"]["steps"][0]
    assert (step["action"], step["result"]) == ("rollback", "Succeeded")
    hashes = await sets.revision_hashes(kube, ns, "web")
    assert step["change"]["toTemplateHash"] == hashes[v1]
    assert step["change"]["fromTemplateHash"] == hashes[v2]
    assert rec["spec"]["workload"]["kind"] == STS
    # Both pods run v1 again: the OrderedReady controller waited on the crashing web-1,
    # so selfheal deleted it (once) after restoring the template.
    await eventually(
        lambda: sets.settled(kube, STS, ns, "web", v1, count=2), timeout=60, what="v1 back"
    )
    assert workload_writes(cluster, ns, resources=WRITES) == [
        ("patch", "statefulsets", "web"),
        ("delete", "pods", "web-1"),
    ]
    assert (
        op.metric("selfheal_remediations_total", {"action": "rollback", "result": "Succeeded"}) == 1
    )


async def test_v2_bad_then_v3_bad_lands_on_v1_never_on_v2(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1, v2, v3 = sets.releases(kubelet, ns, "web", "v1", "v2", "v3", bad=("v2", "v3"))
    spec = {**ROLLBACK, "guardrails": {"cooldown": "1s", "window": "1h", "maxRemediations": 10}}
    await _start(kube, ns, operator, sets.statefulset("web", v1, replicas=2), spec=spec)

    await sets.set_image(kube, STS, ns, "web", v2)
    await eventually(lambda: sets.resolved(kube, ns, 1), timeout=180, what="the first incident")
    await eventually(
        lambda: sets.settled(kube, STS, ns, "web", v1, count=2), timeout=60, what="v1 back"
    )
    await sets.set_image(kube, STS, ns, "web", v3)
    done = await eventually(lambda: sets.resolved(kube, ns, 2), timeout=180, what="the second")
    await eventually(
        lambda: sets.settled(kube, STS, ns, "web", v1, count=2), timeout=60, what="v1 again"
    )
    hashes = await sets.revision_hashes(kube, ns, "web")
    targets = sorted(r["status"]["steps"][0]["change"]["toTemplateHash"] for r in done)
    assert targets == [hashes[v1], hashes[v1]]  # never v2, the newer but known-bad one
    patches = [w for w in workload_writes(cluster, ns, resources=WRITES) if w[0] == "patch"]
    assert patches == [("patch", "statefulsets", "web")] * 2


async def test_a_partitioned_canary_is_rolled_back_without_touching_the_held_pods(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1, v2 = sets.releases(kubelet, ns, "web", "v1", "v2", bad=("v2",))
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    body = sets.statefulset("web", v1, replicas=3, strategy=strategy)
    await _start(kube, ns, operator, body)
    held = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await sets.pods(kube, ns, "web")}

    await sets.set_image(kube, STS, ns, "web", v2)  # only web-2 (ordinal >= 2) gets v2
    await eventually(lambda: sets.resolved(kube, ns, 1), timeout=180, what="Resolved")
    live = await eventually(
        lambda: sets.settled(kube, STS, ns, "web", v1, count=3), timeout=60, what="v1 back"
    )
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in live}
    # The pods below the partition were never replaced; the partition stays the user's.
    assert now["web-0"] == held["web-0"]
    assert now["web-1"] == held["web-1"]
    assert now["web-2"] != held["web-2"]
    sts = await sets.get(kube, STS, ns, "web")
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 2
    assert workload_writes(cluster, ns, resources=WRITES) == [
        ("patch", "statefulsets", "web"),
        ("delete", "pods", "web-2"),
    ]


async def test_an_on_delete_statefulset_has_its_bad_pods_deleted_one_at_a_time(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1, v2 = sets.releases(kubelet, ns, "web", "v1", "v2", bad=("v2",))
    body = sets.statefulset("web", v1, replicas=3, strategy={"type": "OnDelete"}, parallel=True)
    await _start(kube, ns, operator, body)

    # OnDelete: the new template reaches a pod only when that pod is deleted. Two are.
    await sets.set_image(kube, STS, ns, "web", v2)
    for pod in ("web-1", "web-2"):
        await kube.delete(k.core(ns, "pods", pod))
    await eventually(lambda: sets.resolved(kube, ns, 1), timeout=180, what="Resolved")
    await eventually(
        lambda: sets.settled(kube, STS, ns, "web", v1, count=3), timeout=60, what="v1 back"
    )
    writes = workload_writes(cluster, ns, resources=WRITES)
    assert writes[0] == ("patch", "statefulsets", "web")
    # Exactly the two bad pods, each once; web-0 (still v1) was left alone.
    assert sorted(writes[1:]) == [("delete", "pods", "web-1"), ("delete", "pods", "web-2")]
    [rec] = await remediations(kube, ns)
    assert sorted(rec["status"]["steps"][0]["change"]["deletedPods"]) == ["web-1", "web-2"]


async def test_a_restart_replaces_the_pods_of_a_statefulset(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/web:v1"
    spec = {
        # Three restarts: the replacement may crash once before the fault clears, and
        # comes back up as its second restart; that must not count as a new crash loop.
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 3, "within": "10m"}}],
        "remediation": {"steps": [{"restart": {}}], "verify": {"for": "5s", "timeout": "90s"}},
    }
    await _start(kube, ns, operator, sets.statefulset("web", image, replicas=1), spec=spec)
    [before] = await sets.pods(kube, ns, "web")
    # A transient fault (a dependency down): the container crash-loops on the same image.
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=3.0))

    async def replaced() -> list[dict[str, Any]] | None:
        live = await sets.pods(kube, ns, "web")
        return live if live and live[0]["metadata"]["uid"] != before["metadata"]["uid"] else None

    # The OrderedReady controller waits on the crash-looping web-0 forever: selfheal
    # deletes it after setting restartedAt. Only then does the dependency come back.
    await eventually(replaced, timeout=120, what="web-0 replaced")
    kubelet.forget(image)
    [rec] = await eventually(lambda: sets.resolved(kube, ns, 1), timeout=120, what="Resolved")
    [step] = rec["status"]["steps"]
    assert (step["action"], step["result"]) == ("restart", "Succeeded")
    assert step["change"]["deletedPods"] == ["web-0"]
    [after] = await sets.pods(kube, ns, "web")
    assert sets.pod_hash("web", after) != sets.pod_hash("web", before)
    sts = await sets.get(kube, STS, ns, "web")
    assert "kubectl.kubernetes.io/restartedAt" in sts["spec"]["template"]["metadata"]["annotations"]
    assert workload_writes(cluster, ns, resources=WRITES) == [
        ("patch", "statefulsets", "web"),
        ("delete", "pods", "web-0"),
    ]


async def test_a_scale_step_adds_a_replica_through_the_scale_subresource(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/web:v1"
    spec = {
        **ROLLBACK,
        "remediation": {
            "steps": [{"scale": {"by": 1, "max": 3}}],
            "verify": {"for": "3s", "timeout": "6s"},
        },
    }
    body = sets.statefulset("web", image, replicas=2, parallel=True)
    await _start(kube, ns, operator, body, spec=spec)
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0))

    step = await eventually(lambda: sets.first_step(kube, ns), timeout=120, what="the scale step")
    assert (step["action"], step["result"]) == ("scale", "Succeeded")
    assert (step["change"]["fromReplicas"], step["change"]["toReplicas"]) == (2, 3)
    sts = await sets.get(kube, STS, ns, "web")
    assert sts["spec"]["replicas"] == 3
    names = await eventually(
        lambda: _names_if(kube, ns, 3), timeout=60, what="the third replica created"
    )
    assert names == ["web-0", "web-1", "web-2"]
    assert workload_writes(cluster, ns, resources=WRITES) == [
        ("patch", "statefulsets/scale", "web")
    ]


async def _names_if(kube: k.Kube, ns: str, count: int) -> list[str] | None:
    names = sorted(p["metadata"]["name"] for p in await sets.pods(kube, ns, "web"))
    return names if len(names) == count else None


async def test_a_ticket_when_no_revision_is_healthy(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1 = f"registry.local/{ns}/web:v1"
    spec = {
        **ROLLBACK,
        "remediation": {
            **ROLLBACK["remediation"],
            "escalate": {"jira": {"project": "OPS", "issueType": "Bug"}},
        },
    }
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    await _start(
        kube,
        ns,
        operator,
        sets.statefulset("web", v1, replicas=1),
        spec=spec,
        jira_url=jira_server.url,
        jira_secret=secret,
    )
    # Its only revision turns bad: there is nothing healthy to roll back to.
    kubelet.behave(v1, Behaviour(kind="crashloop", restart_every=1.0))
    issue = await eventually(lambda: _ticket(jira_server), timeout=180, what="the ticket")
    [rec] = await remediations(kube, ns)
    [step] = rec["status"]["steps"]
    assert (step["action"], step["result"]) == ("rollback", "Refused")
    assert "keeps no revision older" in step["message"]
    assert "StatefulSet" in step["message"]
    text = issue["fields"]["description"]
    assert "ControllerRevision" in text  # the StatefulSet's rollout history
    assert "rollout history statefulset/web" in text
    assert {"pod.yaml", "deployment.yaml", "rollout-history.txt"} <= set(issue["attachments"])
    assert workload_writes(cluster, ns, resources=WRITES) == []  # refused: nothing written


async def _ticket(jira: JiraServer) -> dict[str, Any] | None:
    issues = [i for i in jira.issues() if i["attachments"]]
    return issues[0] if issues else None


async def test_a_gitops_managed_statefulset_is_not_rolled_back(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    cluster: Cluster,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    v1, v2 = sets.releases(kubelet, ns, "web", "v1", "v2", bad=("v2",))
    body = sets.statefulset("web", v1, replicas=1)
    body["metadata"]["labels"]["argocd.argoproj.io/instance"] = "shop"
    await _start(kube, ns, operator, body)

    await sets.set_image(kube, STS, ns, "web", v2)

    step = await eventually(
        lambda: sets.first_step(kube, ns), timeout=180, what="the rollback step decided"
    )
    assert (step["action"], step["result"]) == ("rollback", "Refused")
    assert "Argo CD" in step["message"]
    assert step["change"]["gitOps"] == "Argo CD (label argocd.argoproj.io/instance=shop)"
    assert sets.image_of(await sets.get(kube, STS, ns, "web")) == v2  # left to Git
    assert workload_writes(cluster, ns, resources=WRITES) == []


async def test_a_prometheus_trigger_names_the_statefulset_scales_it_and_reverts(
    kube: k.Kube,
    namespace: str,
    exporter: Exporter,
    prometheus: PrometheusServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    # kube-state-metrics' label for a StatefulSet's name is `statefulset`.
    exporter.set_gauge("queue_depth", 100, namespace=ns, statefulset="web")
    spec = {
        "triggers": [
            {
                "name": "backlog",
                "prometheus": {
                    "query": "max by (namespace, statefulset) (queue_depth)",
                    "workloadLabels": {"namespace": "namespace", "name": "statefulset"},
                    "above": 50,
                    "for": "2s",
                    "interval": "2s",
                },
            }
        ],
        "remediation": {
            "steps": [{"scale": {"by": 1, "max": 4, "revertAfterRecovery": True}}],
            "verify": {"for": "4s", "timeout": "60s"},
        },
    }
    body = sets.statefulset("web", f"registry.local/{ns}/web:v1", replicas=2, parallel=True)
    await _start(kube, ns, operator, body, spec=spec, prometheus_url=prometheus.url)

    async def replicas(want: int) -> bool:
        return bool((await sets.get(kube, STS, ns, "web"))["spec"]["replicas"] == want)

    await eventually(lambda: replicas(3), timeout=90, what="scaled to 3")
    exporter.set_gauge("queue_depth", 10, namespace=ns, statefulset="web")  # drained
    [rec] = await eventually(lambda: sets.resolved(kube, ns, 1), timeout=90, what="Resolved")
    assert rec["status"]["cause"] == "ThresholdExceeded"
    workload = rec["spec"]["workload"]
    assert (workload["kind"], workload["name"]) == (STS, "web")
    hashes = await sets.revision_hashes(kube, ns, "web")
    assert workload["templateHash"] == hashes[sets.image_of(body)]
    await eventually(lambda: replicas(2), timeout=60, what="reverted to 2")
