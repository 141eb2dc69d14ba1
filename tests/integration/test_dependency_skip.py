"""A step skipped, or held, because the workload is a failing dependency's victim.

Through the running operator (under the chart's ServiceAccount) on the real control
plane: ``payments`` (a Deployment and its Service) has no ready endpoint because its
pods crash under the kubelet stand-in; ``checkout`` crash-loops with a stack trace
naming ``payments.<ns>.svc``. With ``remediation.dependencies.onUnhealthy: Escalate``
checkout is not restarted (the audit log shows no write), the step is recorded
``Refused`` with reason ``DependencyUnhealthy`` naming payments and its endpoints, an
Event says so, and the Jira ticket names payments. Without the option checkout is
restarted as before; with ``Wait`` the restart runs once payments is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from selfheal.evidence.collect import dependency_report
from selfheal.policy.model import DependencyRule, OnDependencyUnhealthy
from selfheal.remediation import dependency_gate as dg
from selfheal.remediation.state import Phase, RemediationState
from tests.support.audit import workload_writes
from tests.support.cluster import Cluster
from tests.support.fixtures.jira import JIRA_PASSWORD
from tests.support.jira_server import JiraServer
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    blind_client,
    deployment,
    eventually,
    jira_secret,
    policy,
    remediations,
)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def checkout_log(ns: str) -> str:
    # Its own Service is named too: it is the workload itself, never a dependency.
    return (
        f"serving on http://checkout.{ns}.svc:8080\n"
        "charging order 1042\n"
        "Traceback (most recent call last):\n"
        '  File "/app/checkout/pay.py", line 31, in charge\n'
        f'    resp = session.post("http://payments.{ns}.svc:8080/v1/charge", json=order)\n'
        f"requests.exceptions.ConnectionError: HTTPConnectionPool(host='payments.{ns}.svc', "
        "port=8080): Max retries exceeded (Caused by NewConnectionError: "
        "[Errno 111] Connection refused)\n"
    )


def spec(dependencies: dict[str, Any] | None) -> dict[str, Any]:
    remediation: dict[str, Any] = {
        "steps": [{"restart": {}}],
        "verify": {"for": "3s", "timeout": "6s"},
        "escalate": {"jira": {"project": "OPS", "issueType": "Bug"}},
    }
    if dependencies is not None:
        remediation["dependencies"] = dependencies
    return {
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
        "remediation": remediation,
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080}]},
    }


async def _shop(
    kube: k.Kube,
    ns: str,
    kubelet: Kubelet,
    jira: JiraServer,
    operator: Callable[..., OperatorProcess],
    dependencies: dict[str, Any] | None,
) -> str:
    """payments down (3 pods, none ready), checkout crash-looping on it; the operator
    started with a restart-only policy for checkout. Returns payments' image."""
    payments = f"registry.local/{ns}/payments:v1"
    kubelet.behave(payments, Behaviour(kind="crashloop", restart_every=5.0))
    checkout = f"registry.local/{ns}/checkout:v1"
    kubelet.behave(
        checkout,
        Behaviour(kind="crashloop", restart_every=1.0, previous_logs=checkout_log(ns)),
    )
    for name, image, replicas in (("payments", payments, 3), ("checkout", checkout, 1)):
        await kube.create(k.core(ns, "services"), service(name))
        await kube.create(k.apps(ns, "deployments"), deployment(name, image, replicas=replicas))

    async def payments_down() -> bool:
        slices = await kube.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            labelSelector="kubernetes.io/service-name=payments",
        )
        eps = [e for s in slices.get("items", []) for e in s.get("endpoints") or []]
        return len(eps) == 3 and not any((e.get("conditions") or {}).get("ready") for e in eps)

    await eventually(payments_down, timeout=60, what="payments: 0 of 3 endpoints ready")
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("checkout", selector={"app": "checkout"}, spec=spec(dependencies)),
    )
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    operator(namespaces=[ns], jira_url=jira.url, jira_secret=secret)
    return payments


async def _record(kube: k.Kube, ns: str, phase: str | None = None) -> dict[str, Any] | None:
    for rec in await remediations(kube, ns):
        status = rec.get("status") or {}
        if status.get("steps") and (phase is None or status.get("phase") == phase):
            return rec
    return None


async def _restarted(kube: k.Kube, ns: str) -> str | None:
    body = await kube.get(k.apps(ns, "deployments", "checkout"))
    annotations = body["spec"]["template"]["metadata"].get("annotations") or {}
    value = annotations.get(RESTARTED_AT)
    return str(value) if value else None


async def test_escalate_skips_the_restart_and_the_ticket_names_the_failing_dependency(
    cluster: Cluster,
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    await _shop(kube, ns, kubelet, jira_server, operator, {"onUnhealthy": "Escalate"})
    rec = await eventually(
        lambda: _record(kube, ns, "Escalated"), timeout=120, what="an escalated incident"
    )
    [step] = rec["status"]["steps"]
    assert (step["action"], step["result"], step["reason"]) == (
        "restart",
        "Refused",
        "DependencyUnhealthy",
    )
    down = f"payments.{ns}: 0 of 3 endpoints ready"
    assert down in step["message"]
    assert f"checkout.{ns}" not in step["message"]  # its own Service is no dependency
    assert down in rec["status"]["escalation"]["reason"]

    async def event() -> list[str] | None:
        got = await kube.get(k.core(ns, "events"))
        found = [
            e["message"] for e in got.get("items", []) if e.get("reason") == "DependencyUnhealthy"
        ]
        return found or None

    messages = await eventually(event, timeout=30, what="a DependencyUnhealthy Event")
    assert any(down in m for m in messages)

    async def ticket() -> dict[str, Any] | None:
        issues = [i for i in jira_server.issues() if i["attachments"]]
        return issues[0] if issues else None

    issue = await eventually(ticket, timeout=90, what="the ticket")
    summary, text = issue["fields"]["summary"], issue["fields"]["description"]
    assert f"restart skipped: dependency unhealthy: {down}" in summary
    assert f"Dependency payments.{ns} is down" in text  # what to check first
    assert down in text
    # Nothing touched checkout: no restart annotation, no write in the audit log.
    assert await _restarted(kube, ns) is None
    assert workload_writes(cluster, ns) == []


async def test_without_the_option_checkout_is_restarted_as_before(
    cluster: Cluster,
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    await _shop(kube, ns, kubelet, jira_server, operator, None)
    rec = await eventually(lambda: _record(kube, ns), timeout=120, what="a restart step")
    step = rec["status"]["steps"][0]
    assert step["action"] == "restart"
    assert step.get("reason", "") == ""
    await eventually(lambda: _restarted(kube, ns), timeout=30, what="the restart annotation")
    assert ("patch", "deployments", "checkout") in workload_writes(cluster, ns)


async def test_wait_holds_the_restart_until_payments_is_back_then_runs_it(
    cluster: Cluster,
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    payments = await _shop(
        kube, ns, kubelet, jira_server, operator, {"onUnhealthy": "Wait", "waitFor": "5m"}
    )

    async def waiting() -> str | None:
        for rec in await remediations(kube, ns):
            why = str((rec.get("status") or {}).get("waitingFor") or "")
            if why.startswith("waiting for a dependency"):
                return why
        return None

    why = await eventually(waiting, timeout=120, what="the step waiting for payments")
    assert f"payments.{ns}: 0 of 3 endpoints ready" in why
    assert workload_writes(cluster, ns) == []
    assert await _restarted(kube, ns) is None

    kubelet.behave(payments, Behaviour(kind="running"))  # payments is back
    await eventually(lambda: _restarted(kube, ns), timeout=90, what="the restart after payments")
    assert workload_writes(cluster, ns) == [("patch", "deployments", "checkout")]
    rec = await eventually(lambda: _record(kube, ns), timeout=30, what="the restart step")
    step = rec["status"]["steps"][0]
    assert step["action"] == "restart"
    assert step["result"] != "Refused"


async def test_the_facts_name_an_open_incident_never_the_own_service_and_never_raise(
    crds: list[str], cluster: Cluster, kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    """``dependency_report`` (what the driver gathers before a step) on the real API:
    payments has ready endpoints but an open incident of its own; checkout's own Service
    is named in its log and left out; without permission the facts say what is unknown."""
    ns = namespace
    checkout = f"registry.local/{ns}/checkout:facts"
    kubelet.behave(
        checkout, Behaviour(kind="crashloop", restart_every=0.5, previous_logs=checkout_log(ns))
    )
    for name, image, replicas in (
        ("payments", f"registry.local/{ns}/payments:ok", 2),
        ("checkout", checkout, 1),
    ):
        await kube.create(k.core(ns, "services"), service(name))
        await kube.create(k.apps(ns, "deployments"), deployment(name, image, replicas=replicas))
    incident = {
        "apiVersion": API_VERSION,
        "kind": "Remediation",
        "metadata": {"name": "payments-error-ratio-0a1b2c-1"},
        "spec": {
            "policy": "payments",
            "workload": {"kind": "Deployment", "name": "payments", "uid": "u"},
            "trigger": {"name": "error-ratio", "kind": "prometheus"},
        },
    }
    path = k.group(API_VERSION, ns, "remediations")
    await kube.create(path, incident)
    now = time.time()
    status = RemediationState(phase=Phase.ESCALATED, detected_at=now, escalated_at=now)
    await kube.patch(
        f"{path}/payments-error-ratio-0a1b2c-1",
        {"status": status.to_status()},
        subresource="status",
    )

    async def facts() -> dg.DependencyFacts | None:
        report = await dependency_report(kube=kube, namespace=ns, deployment="checkout")
        got = dg.facts_from(report, at=time.time())
        return got if got.failing and "2 of 2" in got.failing[0] else None

    got = await eventually(facts, timeout=60, what="payments ready with its open incident")
    assert got.failing == (
        f"payments.{ns}: 2 of 2 endpoints ready; open incident payments-error-ratio-0a1b2c-1",
    )
    assert got.unknown == ()
    assert not any(f"checkout.{ns}" in line for line in got.failing)

    blind = await blind_client(cluster, kube, ns)
    try:
        report = await dependency_report(kube=blind, namespace=ns, deployment="checkout")
    finally:
        await blind.close()
    unknown = dg.facts_from(report, at=time.time())
    assert unknown.failing == ()
    [why] = unknown.unknown
    assert why.startswith("deployment: 403 Forbidden")
    # Unreadable is never healthy under Wait; Escalate acts, saying what it could not read.
    wait = dg.gate(
        DependencyRule(on_unhealthy=OnDependencyUnhealthy.WAIT), unknown, now=time.time(), since=0
    )
    assert wait.verdict is dg.Verdict.WAIT
