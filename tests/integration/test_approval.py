"""Approval through the running operator (the real kube-apiserver, the kubelet stand-in,
the Jira-compatible server): an incident in mode Approve waits in AwaitingApproval with
the exact patch; the annotation's approval acts once; an approval left to expire files
the escalation ticket and acts on nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.fixtures.jira import JIRA_PASSWORD
from tests.support.jira_server import JiraServer
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.notify_receivers import Webhook
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    deployment,
    eventually,
    jira_secret,
    notify_secret,
    policy,
    remediations,
)


def _spec(timeout: str, *, notify: bool = False) -> dict[str, Any]:
    escalate: dict[str, Any] = {"jira": {"project": "OPS", "issueType": "Bug"}}
    if notify:
        escalate["notify"] = {"secretRef": {"name": "oncall"}}
    return {
        "mode": "Approve",
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
        "remediation": {
            "steps": [{"restart": {}}],
            "approvalTimeout": timeout,
            "verify": {"for": "3s", "timeout": "6s"},
            "escalate": escalate,
        },
    }


async def _start(
    kube: k.Kube,
    ns: str,
    kubelet: Kubelet,
    jira: JiraServer,
    operator: Callable[..., OperatorProcess],
    timeout: str,
    webhook: Webhook | None = None,
) -> dict[str, Any]:
    """The incident once it awaits approval with its proposed change."""
    image = f"registry.local/{ns}/shop:v1"
    if webhook is not None:
        await notify_secret(kube, ns, urls=[webhook.url("/hooks/oncall")])
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0))
    await kube.create(k.apps(ns, "deployments"), deployment("shop", image, replicas=1))
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"app": "shop"}, spec=_spec(timeout, notify=webhook is not None)),
    )
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    operator(namespaces=[ns], jira_url=jira.url, jira_secret=secret)
    return await eventually(lambda: _proposed(kube, ns), timeout=120, what="AwaitingApproval")


async def _phase(kube: k.Kube, ns: str, phase: str) -> dict[str, Any] | None:
    hits = [
        r for r in await remediations(kube, ns) if (r.get("status") or {}).get("phase") == phase
    ]
    return hits[0] if hits else None


async def _proposed(kube: k.Kube, ns: str) -> dict[str, Any] | None:
    rec = await _phase(kube, ns, "AwaitingApproval")
    return rec if rec and "change" in rec["status"].get("approval", {}) else None


async def _generation(kube: k.Kube, ns: str) -> int:
    return int((await kube.get(k.apps(ns, "deployments", "shop")))["metadata"]["generation"])


async def test_an_approved_step_runs_once_with_the_patch_it_showed(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    webhook: Webhook,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    rec = await _start(kube, ns, kubelet, jira_server, operator, timeout="10m", webhook=webhook)
    approval = rec["status"]["approval"]
    assert (approval["action"], approval["state"]) == ("restart", "Pending")
    # The exact JSON patch the restart sends, from a server-side dry run of it.
    patch = json.loads(approval["change"]["patch"])
    assert any(
        op["op"] in ("add", "replace") and "restartedAt" in json.dumps(op) for op in patch
    ), patch
    name = rec["metadata"]["name"]
    assert approval["approve"] == (
        f"kubectl -n {ns} annotate remediation {name} selfheal.io/approve=true --overwrite"
    )
    assert rec["status"].get("steps") in (None, [])  # nothing done while it waits

    # The on-call is asked, with the command (apprise to a loopback JSON webhook).
    async def asked() -> list[dict[str, Any]] | None:
        got = [m for m in webhook.messages() if "approval needed" in str(m.get("title"))]
        return got or None

    [message] = await eventually(asked, timeout=60, what="the approval message")
    assert approval["approve"] in message["message"]
    assert approval["reject"] in message["message"]
    before = await _generation(kube, ns)

    # What the command does: annotate the Remediation.
    await kube.patch(
        k.group(API_VERSION, ns, "remediations", name),
        {"metadata": {"annotations": {"selfheal.io/approve": "true"}}},
    )

    async def acted() -> dict[str, Any] | None:
        got = await kube.get(k.group(API_VERSION, ns, "remediations", name))
        steps = got["status"].get("steps") or []
        return got if steps and steps[0].get("result") else None

    done = await eventually(acted, timeout=60, what="the approved step")
    assert done["status"]["approval"]["state"] == "Approved"
    [step] = done["status"]["steps"]
    assert (step["action"], step["result"]) == ("restart", "Succeeded")
    # The restart still cannot heal a crash loop: escalated, and one restart in all.
    await eventually(lambda: _phase(kube, ns, "Escalated"), timeout=60, what="Escalated")
    assert await _generation(kube, ns) == before + 1
    [final] = await remediations(kube, ns)
    assert len(final["status"]["steps"]) == 1


async def test_an_approval_left_to_expire_files_the_escalation_ticket_and_acts_on_nothing(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    await _start(kube, ns, kubelet, jira_server, operator, timeout="8s")
    before = await _generation(kube, ns)
    rec = await eventually(lambda: _phase(kube, ns, "Escalated"), timeout=60, what="Escalated")
    assert "expired" in rec["status"]["escalation"]["reason"]
    assert rec["status"]["approval"]["state"] == "Expired"

    async def ticket() -> list[dict[str, Any]]:
        return list(jira_server.issues())

    [issue] = await eventually(ticket, timeout=60, what="the escalation ticket")
    assert "approval" in issue["fields"]["description"].lower()
    assert await _generation(kube, ns) == before  # nothing was changed
    assert rec["status"].get("steps") in (None, [])
