"""Tickets that diagnose, through the running operator: the real kube-apiserver and
controller-manager, the kubelet stand-in, the real Prometheus and the Jira-compatible
server. What a person on call reads first must be in the ticket Jira received."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.exporter import Exporter
from tests.support.fixtures.jira import JIRA_PASSWORD
from tests.support.jira_server import JiraServer
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import OperatorProcess
from tests.support.prometheus import PrometheusServer
from tests.support.workloads import (
    available,
    deployment,
    eventually,
    jira_secret,
    policy,
)

MI = 2**20
RESTART_ONLY = {
    # A restart cannot heal a bad release: the incident escalates with its evidence.
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {
        "steps": [{"restart": {}}],
        "verify": {"for": "3s", "timeout": "6s"},
        "escalate": {"jira": {"project": "OPS", "issueType": "Bug"}},
    },
}


def _shown(name: str, text: str) -> bool:
    """``name`` in the wiki markup, where an underscore is escaped (Jira shows ``_``)."""
    return name in text or name.replace("_", "\\_") in text


async def _ticket(jira: JiraServer) -> dict[str, Any] | None:
    issues = [i for i in jira.issues() if i["attachments"]]
    return issues[0] if issues else None


async def _start(
    kube: k.Kube,
    ns: str,
    body: dict[str, Any],
    jira: JiraServer,
    operator: Callable[..., OperatorProcess],
    **kw: Any,
) -> None:
    await kube.create(k.apps(ns, "deployments"), body)
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"app": body["metadata"]["name"]}, spec=RESTART_ONLY),
    )
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    operator(namespaces=[ns], jira_url=jira.url, jira_secret=secret, **kw)


async def test_a_bad_releases_ticket_shows_what_changed_since_the_healthy_revision(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    body = deployment("shop", f"registry.local/{ns}/shop:v1", replicas=1)
    await _start(kube, ns, body, jira_server, operator)
    await eventually(lambda: available(kube, ns, "shop"), timeout=60, what="v1 available")
    bad = f"registry.local/{ns}/shop:v2"
    kubelet.behave(bad, Behaviour(kind="crashloop", restart_every=1.0))
    # The bad release: a new image and a new setting.
    await kube.patch(
        k.apps(ns, "deployments", "shop"),
        [
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": bad},
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/env",
                "value": [{"name": "FEATURE_FAST_CHECKOUT", "value": "on"}],
            },
        ],
        content_type=k.JSON_PATCH,
    )
    issue = await eventually(lambda: _ticket(jira_server), timeout=150, what="the ticket")
    text = issue["fields"]["description"]
    assert "registry.local" in text
    assert f"{ns}/shop:v1" in text  # the healthy image, beside the bad one
    assert f"{ns}/shop:v2" in text
    assert _shown("FEATURE_FAST_CHECKOUT", text)
    assert "None" not in text.split()


async def test_a_config_error_ticket_names_the_missing_secret(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/shop:v1"
    message = 'couldn\'t find key DB_URL in Secret shop/"payments-db"'
    kubelet.behave(image, Behaviour(kind="configerror", message=message))
    spec = {
        **RESTART_ONLY,
        "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 1, "within": "10m"}}],
    }
    await kube.create(k.apps(ns, "deployments"), deployment("shop", image, replicas=1))
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"app": "shop"}, spec=spec),
    )
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    operator(namespaces=[ns], jira_url=jira_server.url, jira_secret=secret)
    # CreateContainerConfigError is judged after its 60 s grace.
    issue = await eventually(lambda: _ticket(jira_server), timeout=200, what="the ticket")
    text = issue["fields"]["description"]
    assert "CreateContainerConfigError" in text
    assert "payments-db" in text
    assert _shown("DB_URL", text)


async def test_an_oom_ticket_shows_memory_against_the_limit_from_prometheus(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    jira_server: JiraServer,
    exporter: Exporter,
    prometheus: PrometheusServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    image = f"registry.local/{ns}/shop:oom"
    # The image tag ``oom`` makes the kubelet stand-in OOMKill the container (exit 137).
    body = deployment("shop", image, replicas=1)
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }

    async def cadvisor() -> None:
        # cAdvisor's series for every pod, as the kubelet's /metrics/cadvisor serves them
        # (the restart step replaces the pods: the new ones get series too).
        seen: set[str] = set()
        for _ in range(600):  # bounded: 5 minutes
            got = await kube.get(k.core(ns, "pods"))
            for pod in {p["metadata"]["name"] for p in got.get("items", [])} - seen:
                seen.add(pod)
                labels = {"namespace": ns, "pod": pod, "container": "app"}
                exporter.set_gauge("container_memory_working_set_bytes", 250 * MI, **labels)
                exporter.set_rate("container_cpu_usage_seconds_total", 0.2, **labels)
            await asyncio.sleep(0.5)

    await kube.create(k.apps(ns, "deployments"), body)
    feeder = asyncio.create_task(cadvisor())
    # In a thread: the feeder runs on this event loop meanwhile.
    await asyncio.to_thread(
        prometheus.wait_until,
        f'container_memory_working_set_bytes{{namespace="{ns}"}}',
        lambda r: len(r) >= 1,
    )
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"app": "shop"}, spec=RESTART_ONLY),
    )
    secret = await jira_secret(kube, ns, password=JIRA_PASSWORD)
    operator(
        namespaces=[ns], jira_url=jira_server.url, jira_secret=secret, prometheus_url=prometheus.url
    )
    try:
        issue = await eventually(lambda: _ticket(jira_server), timeout=150, what="the ticket")
    finally:
        feeder.cancel()
    text = issue["fields"]["description"]
    assert "OOMKilled" in text
    assert "250Mi" in text or "250 Mi" in text  # the working set, from Prometheus
    assert "256Mi" in text  # the limit beside it
