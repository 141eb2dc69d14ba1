"""The closed loop on the real API server, controller-manager and kubelet stand-in:
detect a crash loop, roll back to the last healthy revision, verify, record."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.audit import WORKLOAD_WRITES, workload_writes
from tests.support.cluster import Cluster
from tests.support.fixtures.jira import JIRA_PASSWORD
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    available,
    deploy,
    deployment,
    eventually,
    image_of,
    jira_secret,
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
    return (
        items if items and all(r.get("status", {}).get("phase") == phase for r in items) else None
    )


async def test_bad_release_is_rolled_back_verified_and_recorded(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess], cluster: Cluster
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
    items = await eventually(
        lambda: _phase(kube, ns, "Resolved"), timeout=120, what="a Resolved remediation"
    )
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
    assert (
        op.metric("selfheal_remediations_total", {"action": "rollback", "result": "Succeeded"}) == 1
    )
    # The short hot path, from the API server's audit log: the Remediation's create is the
    # only write before the rollback's patch (its status comes with the outcome, Events
    # after the patch).
    name = items[0]["metadata"]["name"]
    writes = workload_writes(
        cluster, ns, resources={*WORKLOAD_WRITES, "remediations", "remediations/status", "events"}
    )
    patch = writes.index(("patch", "deployments", "shop"))
    assert writes[:patch] == [("create", "remediations", name)]
    assert ("patch", "remediations/status", name) in writes[patch + 1 :]


async def _incident(kube: k.Kube, ns: str, phases: tuple[str, ...]) -> dict[str, Any] | None:
    items = await remediations(kube, ns)
    hits = [r for r in items if r.get("status", {}).get("phase") in phases]
    return hits[0] if hits else None


async def _policy(
    kube: k.Kube,
    ns: str,
    spec: dict[str, Any],
    *,
    name: str = "shop",
    selector: dict[str, str] | None = None,
) -> None:
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy(name, selector=selector or {"app": "shop"}, spec=spec),
    )


async def _revision(kube: k.Kube, ns: str, name: str) -> str:
    d = await kube.get(k.apps(ns, "deployments", name))
    return str(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


async def test_rollback_skips_every_bad_revision_and_never_rolls_forward_to_one(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    await deploy(kube, ns, "shop", "registry.local/shop:v1")
    # v2 is bad, but the operator is not running yet: nobody heals it.
    await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")
    await eventually(lambda: _rs_count(kube, ns, 2), timeout=30, what="revision 2")
    spec = {**CRASH_POLICY, "guardrails": {"cooldown": "1s", "window": "1h", "maxRemediations": 10}}
    await _policy(kube, ns, spec)
    op = operator(namespaces=[ns])
    first = await eventually(
        lambda: _incident(kube, ns, ("Resolved",)), timeout=120, what="the v2 incident resolved"
    )
    assert image_of(await kube.get(k.apps(ns, "deployments", "shop"))) == "registry.local/shop:v1"
    # v3 is bad too: the rollback must land on v1 again, skipping v2 (known bad).
    await set_image(kube, ns, "shop", "registry.local/shop:v3-crash")

    async def second() -> dict[str, Any] | None:
        items = [
            r
            for r in await remediations(kube, ns)
            if r["metadata"]["name"] != first["metadata"]["name"]
        ]
        return items[0] if items and items[0].get("status", {}).get("phase") == "Resolved" else None

    rec = await eventually(second, timeout=120, what="the v3 incident resolved")
    d = await eventually(lambda: available(kube, ns, "shop"), timeout=60, what="v1 back again")
    assert image_of(d) == "registry.local/shop:v1"
    assert rec["status"]["steps"][0]["result"] == "Succeeded"
    assert op.metric("selfheal_remediations_total", {"action": "rollback"}) == 2


async def _rs_count(kube: k.Kube, ns: str, n: int) -> bool:
    items = (await kube.get(k.apps(ns, "replicasets"))).get("items", [])
    return len(items) >= n


async def test_a_step_that_does_not_heal_leads_to_the_next_then_to_a_ticket(
    kube: k.Kube,
    namespace: str,
    operator: Callable[..., OperatorProcess],
    jira_server: Any,
    kubectl: Any,
) -> None:
    ns = namespace
    # A crash loop from the first revision: a restart or more replicas cannot fix it.
    await kube.create(k.apps(ns, "deployments"), deployment("shop", "registry.local/shop:v1-crash"))
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    spec = {
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
        "remediation": {
            "steps": [{"restart": {}}, {"scale": {"by": 1, "max": 4}}],
            "verify": {"for": "4s", "timeout": "8s"},
            "escalate": {"jira": {"project": "OPS", "issueType": "Bug", "priority": "High"}},
        },
    }
    await _policy(kube, ns, spec)
    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    rec = await eventually(
        lambda: _ticketed(kube, ns), timeout=150, what="an escalated record with a ticket"
    )
    steps = rec["status"]["steps"]
    assert [s["action"] for s in steps] == ["restart", "scale"]
    assert all(s["result"] == "Succeeded" for s in steps), steps
    issues = jira_server.issues()
    assert len(issues) == 1
    assert rec["status"]["ticket"]["key"] == issues[0]["key"]
    d = await kube.get(k.apps(ns, "deployments", "shop"))
    assert d["spec"]["replicas"] == 3  # scaled by one from 2


async def _ticketed(kube: k.Kube, ns: str) -> dict[str, Any] | None:
    rec = await _incident(kube, ns, ("Escalated",))
    if rec and rec["status"].get("ticket", {}).get("state") in ("Filed", "Commented"):
        return rec
    return None


async def test_dry_run_changes_nothing_and_records_the_intended_patch(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    await deploy(kube, ns, "shop", "registry.local/shop:v1")
    await _policy(kube, ns, {**CRASH_POLICY, "mode": "DryRun"})
    operator(namespaces=[ns])
    await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")
    before = None

    async def recorded() -> dict[str, Any] | None:
        items = await remediations(kube, ns)
        done = [r for r in items if (r.get("status", {}).get("steps") or [{}])[0].get("result")]
        return done[0] if done else None

    rec = await eventually(recorded, timeout=120, what="a DryRun record")
    step = rec["status"]["steps"][0]
    assert step["result"] == "DryRun"
    assert "registry.local/shop:v1" in step["change"]["patch"]
    d = await kube.get(k.apps(ns, "deployments", "shop"))
    before = d["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    assert image_of(d) == "registry.local/shop:v2-crash"
    assert before == "2"


async def test_killed_between_acting_and_verifying_resumes_without_acting_twice(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    await deploy(kube, ns, "shop", "registry.local/shop:v1")
    # The timeout leaves room for the new process to take over the Lease the killed one
    # held (up to about 19 s) before the verify window can complete.
    spec = {
        **CRASH_POLICY,
        "remediation": {"steps": [{"rollback": {}}], "verify": {"for": "15s", "timeout": "60s"}},
    }
    await _policy(kube, ns, spec)
    first = operator(namespaces=[ns])
    await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")
    await eventually(lambda: _incident(kube, ns, ("Verifying",)), timeout=120, what="Verifying")
    first.kill()
    second = operator(namespaces=[ns])
    rec = await eventually(lambda: _incident(kube, ns, ("Resolved",)), timeout=120, what="Resolved")
    assert len(rec["status"]["steps"]) == 1
    assert second.metric("selfheal_remediations_total") == 0  # the new process acted on nothing
    assert await _revision(kube, ns, "shop") == "3"  # one rollback: v1 became revision 3
    assert len(await remediations(kube, ns)) == 1


async def test_cooldown_holds_a_second_incident_back(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    await deploy(kube, ns, "shop", "registry.local/shop:v1")
    spec = {**CRASH_POLICY, "guardrails": {"cooldown": "30m"}}
    await _policy(kube, ns, spec)
    op = operator(namespaces=[ns])
    await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")
    await eventually(lambda: _incident(kube, ns, ("Resolved",)), timeout=120, what="Resolved")
    await set_image(kube, ns, "shop", "registry.local/shop:v3-crash")

    async def held() -> dict[str, Any] | None:
        rec = await _incident(kube, ns, ("Detected", "Escalated"))
        return (
            rec
            if rec
            and "cooldown"
            in (
                rec["status"].get("waitingFor", "")
                + rec["status"].get("escalation", {}).get("reason", "")
            ).lower()
            else None
        )

    rec = await eventually(held, timeout=60, what="a second incident held by the cooldown")
    assert rec["status"].get("steps", []) == []
    assert op.metric("selfheal_guardrail_refusals_total", {"guardrail": "Cooldown"}) >= 1
    assert op.metric("selfheal_remediations_total", {"action": "rollback"}) == 1
    assert (
        image_of(await kube.get(k.apps(ns, "deployments", "shop")))
        == "registry.local/shop:v3-crash"
    )


async def test_storm_brake_stops_acting_and_escalates_one_summary(
    kube: k.Kube, namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    names = [f"svc{i}" for i in range(4)]
    for n in names:
        await kube.create(
            k.apps(ns, "deployments"),
            deployment(n, "registry.local/app:v1", replicas=1, labels={"tier": "web"}),
        )
    for n in names:
        await eventually(functools.partial(available, kube, ns, n), timeout=60, what=n)
    spec = {
        **CRASH_POLICY,
        "guardrails": {"storm": {"maxUnhealthy": 2, "within": "5m"}, "maxConcurrent": 5},
    }
    await _policy(kube, ns, spec, selector={"tier": "web"})
    op = operator(namespaces=[ns])
    # A bad dependency: every workload crashes at once.
    for n in names:
        await set_image(kube, ns, n, "registry.local/app:v2-crash")

    async def summarised() -> list[dict[str, Any]] | None:
        items = await remediations(kube, ns)
        carriers = [
            r for r in items if r.get("status", {}).get("escalation", {}).get("stormSummary")
        ]
        return items if carriers and len(items) >= 3 else None

    items = await eventually(summarised, timeout=90, what="a storm summary")
    carriers = [r for r in items if r["status"]["escalation"].get("stormSummary")]
    assert len(carriers) == 1
    # Until a second workload turns unhealthy nothing tells a storm from one bad
    # release, so at most maxUnhealthy - 1 = 1 workload may have been acted on.
    assert op.metric("selfheal_remediations_total") <= 1
    untouched = [
        n
        for n in names
        if image_of(await kube.get(k.apps(ns, "deployments", n))) == "registry.local/app:v2-crash"
    ]
    assert len(untouched) >= len(names) - 1
