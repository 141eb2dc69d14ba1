"""Escalation through the running operator, with the real `jira` client against the
Jira-compatible server: one ticket with the stack, logs and snapshots; no secret in
any byte sent; a verified recovery comments and transitions the ticket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.fixtures.jira import JIRA_PASSWORD
from tests.support.jira_server import JiraServer
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    deployment,
    eventually,
    jira_secret,
    policy,
    remediations,
    set_image,
)

DB_PASSWORD = "hunter2-Zq8v-s3cr3t"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwYXkifQ.c2lnbmF0dXJlLXNlY3JldA"
CRASH = f"""\
starting payments
connecting to postgres://pay:{DB_PASSWORD}@db:5432/pay
calling ledger with Authorization: Bearer {BEARER}
Traceback (most recent call last):
  File "/app/main.py", line 42, in <module>
    main()
  File "/app/ledger.py", line 17, in charge
    raise LedgerError("ledger refused the charge")
ledger.LedgerError: ledger refused the charge
"""


async def _ticketed(kube: k.Kube, ns: str) -> dict[str, Any] | None:
    for rec in await remediations(kube, ns):
        if rec.get("status", {}).get("ticket", {}).get("state") in ("Filed", "Commented"):
            return rec
    return None


async def test_one_redacted_ticket_with_the_evidence_then_resolved_on_recovery(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/pay:v1"
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0, previous_logs=CRASH))
    body = deployment("pay", image, replicas=1)
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "DB_PASSWORD", "value": DB_PASSWORD}
    ]
    await kube.create(k.apps(ns, "deployments"), body)
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    spec = {
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
        "remediation": {
            "steps": [{"restart": {}}],
            "verify": {"for": "4s", "timeout": "6s"},
            "escalate": {
                "jira": {
                    "project": "OPS",
                    "issueType": "Bug",
                    "priority": "High",
                    "labels": ["payments"],
                    "resolveTransition": "Done",
                }
            },
        },
    }
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("pay", selector={"app": "pay"}, spec=spec),
    )
    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)

    rec = await eventually(lambda: _ticketed(kube, ns), timeout=120, what="a filed ticket")
    issues = jira_server.issues()
    assert len(issues) == 1
    issue = issues[0]
    assert rec["status"]["ticket"]["key"] == issue["key"]
    fields = issue["fields"]
    assert "payments" in fields["labels"]
    assert any(label.startswith("selfheal-") for label in fields["labels"])
    assert "LedgerError: ledger refused the charge" in fields["description"]
    assert "{noformat}" in fields["description"] or "{code" in fields["description"]
    names = set(issue["attachments"])
    assert {"pod.yaml", "deployment.yaml"} <= names
    assert any(n.endswith("logs.txt") for n in names), names
    sent = jira_server.all_bytes_received()
    assert DB_PASSWORD.encode() not in sent
    assert BEARER.encode() not in sent
    assert b"ledger refused the charge" in sent  # the evidence itself did go out

    # A person rolls out the fix: the workload is healthy again.
    await set_image(kube, ns, "pay", f"registry.local/{ns}/pay:v2")

    async def resolved() -> dict[str, Any] | None:
        got = jira_server.issues()[0]
        return got if got["status"] == "Done" and got["comments"] else None

    done = await eventually(resolved, timeout=90, what="the ticket commented and Done")
    assert len(jira_server.issues()) == 1
    assert any("heal" in c.lower() or "recover" in c.lower() for c in done["comments"])


async def _condition(kube: k.Kube, ns: str, name: str, type_: str) -> dict[str, Any] | None:
    hp = await kube.get(k.group(API_VERSION, ns, "healingpolicies", name))
    for cond in hp.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None


async def test_the_jira_project_is_checked_and_a_wrong_one_named_on_the_policy(
    kube: k.Kube,
    namespace: str,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    for name, project in (("good", "OPS"), ("typo", "OSP")):
        spec = {
            "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 3}}],
            "remediation": {"escalate": {"jira": {"project": project}}},
        }
        await kube.create(
            k.group(API_VERSION, ns, "healingpolicies"),
            policy(name, selector={"app": name}, spec=spec),
        )
    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)

    good = await eventually(
        lambda: _condition(kube, ns, "good", "EscalationReady"),
        timeout=60,
        what="good: EscalationReady",
    )
    assert (good["status"], good["reason"]) == ("True", "JiraReachable")
    typo = await eventually(
        lambda: _condition(kube, ns, "typo", "EscalationReady"),
        timeout=60,
        what="typo: EscalationReady",
    )
    assert (typo["status"], typo["reason"]) == ("False", "JiraRejected")
    assert "spec.remediation.escalate.jira.project" in typo["message"]
    assert "OSP" in typo["message"]
