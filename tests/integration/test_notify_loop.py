"""Notifying the on-duty expert, through the running operator (the chart's RBAC plus a
Role on the notify Secret) and apprise's real code path to a loopback JSON webhook:
a crash loop that a restart does not heal ends in one Jira ticket and one message that
carries its key (and one mail through a loopback SMTP server), the ticket assigned to
and watched by the on-call; a SIGKILLed operator's successor sends no duplicate; the recovery of
the escalated incident sends one recovery message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.fixtures.jira import JIRA_PASSWORD
from tests.support.jira_server import JiraServer
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.notify_receivers import Smtp, Webhook
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    deployment,
    eventually,
    jira_secret,
    notify_secret,
    policy,
    remediations,
    set_image,
)

CRASH = "Traceback (most recent call last):\nRuntimeError: payments down\n"
SPEC: dict[str, Any] = {
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {
        "steps": [{"restart": {}}],
        "verify": {"for": "3s", "timeout": "6s"},
        "escalate": {
            "jira": {
                "project": "OPS",
                "issueType": "Bug",
                "assignee": "oncall-alice",
                "watchers": ["oncall-bob"],
            },
            "notify": {"secretRef": {"name": "oncall", "key": "urls"}},
        },
    },
}


def _entry(rec: dict[str, Any], kind: str) -> dict[str, Any]:
    for n in (rec.get("status") or {}).get("notifications") or ():
        if n.get("kind") == kind:
            return dict(n)
    return {}


async def _sent(kube: k.Kube, ns: str, kind: str) -> dict[str, Any] | None:
    for rec in await remediations(kube, ns):
        if _entry(rec, kind).get("state") == "Sent":
            return rec
    return None


async def test_escalation_is_notified_once_with_the_ticket_and_recovery_once(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    webhook: Webhook,
    smtp: Smtp,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/pay:v1"
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0, previous_logs=CRASH))
    await kube.create(k.apps(ns, "deployments"), deployment("pay", image, replicas=1))
    await notify_secret(kube, ns, urls=[webhook.url("/hooks/oncall"), smtp.url()])
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("pay", selector={"app": "pay"}, spec=SPEC),
    )
    first = operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    rec = await eventually(
        lambda: _sent(kube, ns, "Escalation"), timeout=120, what="the escalation notified"
    )
    [issue] = jira_server.issues()
    [msg] = webhook.messages()
    assert rec["status"]["ticket"]["key"] == issue["key"]
    assert issue["key"] in msg["message"]
    assert msg["title"] == "[selfheal] escalated: " + f"{ns}/pay ({rec['status']['cause']})"
    assert "step 1 (restart)" in msg["message"]
    assert "Traceback" not in msg["message"]  # the summary, never the raw logs
    entry = _entry(rec, "Escalation")
    assert entry["attempts"] == 1
    assert entry["sentAt"]
    assert len(entry["delivered"]) == 2
    [mail] = smtp.mails
    assert mail.subject == msg["title"]
    assert issue["key"] in mail.text
    # The on-call on the ticket: assigned on create, and watching.
    assert issue["fields"]["assignee"] == "oncall-alice"
    assert "oncall-bob" in issue["watchers"]

    # SIGKILL, and a successor reads the stored status: nothing is sent again.
    first.kill()
    second = operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    await asyncio.sleep(6)  # three policy ticks, and the orphan pass
    assert len(webhook.messages()) == 1
    assert len(jira_server.issues()) == 1

    await set_image(kube, ns, "pay", f"registry.local/{ns}/pay:v2")  # a person fixes it
    rec = await eventually(
        lambda: _sent(kube, ns, "Recovery"), timeout=120, what="the recovery notified"
    )
    assert rec["status"]["phase"] == "Closed"
    messages = webhook.messages()
    assert len(messages) == 2
    assert len(smtp.mails) == 2
    assert messages[1]["title"].startswith(f"[selfheal] recovered: {ns}/pay")
    assert issue["key"] in messages[1]["message"]
    await asyncio.sleep(4)
    assert len(webhook.messages()) == 2
    assert len(smtp.mails) == 2
    assert second.metric("selfheal_gave_up_total", {"what": "notification"}) == 0


async def _setup(
    kube: k.Kube, kubelet: Kubelet, ns: str, webhook: Webhook, spec: dict[str, Any]
) -> None:
    image = f"registry.local/{ns}/pay:v1"
    kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0, previous_logs=CRASH))
    await kube.create(k.apps(ns, "deployments"), deployment("pay", image, replicas=1))
    await notify_secret(kube, ns, urls=[webhook.url("/hooks/oncall")])
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("pay", selector={"app": "pay"}, spec=spec),
    )


async def test_jira_down_notifies_at_once_then_says_the_ticket_was_given_up(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    webhook: Webhook,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    await _setup(kube, kubelet, ns, webhook, SPEC)
    jira_server.down()
    operator(
        namespaces=[ns],
        jira_url=jira_server.url,
        jira_secret=secret,
        extra_env={"SELFHEAL_TICKET_HORIZON_SECONDS": "20"},
    )
    await eventually(
        lambda: _sent(kube, ns, "Escalation"), timeout=120, what="the escalation notified"
    )
    [first] = webhook.messages()
    assert "Ticket: not filed yet, still retrying" in first["message"]
    rec = await eventually(
        lambda: _sent(kube, ns, "GiveUp"), timeout=120, what="the give-up notified"
    )
    assert rec["status"]["ticket"]["gaveUp"] is True
    messages = webhook.messages()
    assert len(messages) == 2
    assert messages[1]["title"].startswith(f"[selfheal] no ticket could be filed: {ns}/pay")
    assert "gave up after" in messages[1]["message"]


async def test_a_target_that_never_takes_it_is_given_up_loudly(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    webhook: Webhook,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    spec = {
        **SPEC,
        "remediation": {
            **SPEC["remediation"],
            "escalate": {"notify": {"secretRef": {"name": "oncall"}}},  # no Jira
        },
    }
    webhook.fail_next(10_000)
    await _setup(kube, kubelet, ns, webhook, spec)
    op = operator(namespaces=[ns], extra_env={"SELFHEAL_TICKET_HORIZON_SECONDS": "20"})

    async def failed() -> dict[str, Any] | None:
        for rec in await remediations(kube, ns):
            if _entry(rec, "Escalation").get("state") == "Failed":
                return rec
        return None

    rec = await eventually(failed, timeout=150, what="the notification given up")
    entry = _entry(rec, "Escalation")
    assert entry["lastError"].startswith("gave up after")
    assert "target 1 (json)" in entry["lastError"]
    assert "/hooks/oncall" not in entry["lastError"]  # the URL is never written down
    assert entry["attempts"] >= 2
    assert op.metric("selfheal_gave_up_total", {"what": "notification"}) == 1

    async def warned() -> list[dict[str, Any]] | None:
        events = await kube.get(k.core(ns, "events"))
        hits = [
            e
            for e in events.get("items", [])
            if e.get("reason") == "NotificationFailed"
            and e["involvedObject"]["name"] == rec["metadata"]["name"]
        ]
        return hits or None

    [event] = await eventually(warned, timeout=30, what="a NotificationFailed Event")
    assert event["type"] == "Warning"
    refused = webhook.refused
    await asyncio.sleep(5)
    assert webhook.refused == refused  # nothing is retried past the horizon
    assert webhook.messages() == []
