"""Evidence collection against the real API server, controller-manager and kubelet stand-in.

A crash-looping Deployment whose env holds a secret and whose logs print it, plus a
bearer token and a GitHub token, yields a bundle (attachments, description, summary)
in which none of them appears, while the stack trace, the termination, the
snapshots, the rollout history and the events are there. Failed reads (404, 403,
no previous container) end up in ``unavailable``; ``collect`` never raises for them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from selfheal.clients import kube as k
from selfheal.detect.signal import WorkloadRef
from selfheal.evidence import Redactor, collect, render_description, render_summary
from selfheal.policy.model import HealingPolicy
from tests.support.cluster import Cluster, free_port
from tests.support.kubelet import Behaviour, Kubelet

pytestmark = pytest.mark.integration

DB_PASSWORD = "Zq8-s3cr3t-" + uuid.uuid4().hex[:8]
BEARER = "tok-" + uuid.uuid4().hex
GH_TOKEN = "ghp_" + uuid.uuid4().hex + "abcd"
SECRETS = (DB_PASSWORD, BEARER, GH_TOKEN)

CRASH_LOG = f"""\
2026-11-28T08:00:00.000Z starting checkout 1.4.2
2026-11-28T08:00:00.100Z dsn: host=db user=shop sslmode=disable {DB_PASSWORD}
2026-11-28T08:00:00.200Z calling pricing with headers {{'Authorization': 'Bearer {BEARER}'}}
2026-11-28T08:00:00.250Z git remote https://x-access-token:{GH_TOKEN}@github.com/shop/config
2026-11-28T08:00:00.300Z Traceback (most recent call last):
2026-11-28T08:00:00.300Z   File "/app/db.py", line 12, in connect
2026-11-28T08:00:00.300Z     return psycopg2.connect(dsn)
2026-11-28T08:00:00.300Z psycopg2.OperationalError: FATAL:  password authentication failed for user "shop"
2026-11-28T08:00:00.300Z
2026-11-28T08:00:00.300Z The above exception was the direct cause of the following exception:
2026-11-28T08:00:00.300Z
2026-11-28T08:00:00.300Z Traceback (most recent call last):
2026-11-28T08:00:00.300Z   File "/app/main.py", line 42, in <module>
2026-11-28T08:00:00.300Z     main()
2026-11-28T08:00:00.300Z   File "/app/main.py", line 37, in main
2026-11-28T08:00:00.300Z     db = connect(settings.database_url)
2026-11-28T08:00:00.300Z RuntimeError: database unavailable after 3 attempts
"""  # noqa: E501


def deployment_body(name: str, image: str) -> dict[str, Any]:
    last_applied = json.dumps({"spec": {"env": [{"name": "DB_PASSWORD", "value": DB_PASSWORD}]}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": last_applied,
                "kubernetes.io/change-cause": f"deploy with token {GH_TOKEN}",
            },
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "env": [
                                {"name": "DB_PASSWORD", "value": DB_PASSWORD},
                                {
                                    "name": "API_TOKEN",
                                    "valueFrom": {"secretKeyRef": {"name": "api", "key": "tok"}},
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                        }
                    ]
                },
            },
        },
    }


async def eventually(
    what: str, check: Callable[[], Awaitable[bool]], *, within: float = 60.0
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(0.1)


async def crashed_pod(kube: k.Kube, namespace: str, app: str) -> str:
    """The name of the Deployment's pod once its container has crashed at least once."""
    found: list[str] = []

    async def crashed() -> bool:
        pods = await kube.get(k.core(namespace, "pods"), labelSelector=f"app={app}")
        for p in pods.get("items", []):
            for s in (p.get("status") or {}).get("containerStatuses") or []:
                if (s.get("lastState") or {}).get("terminated"):
                    found.append(p["metadata"]["name"])
                    return True
        return False

    await eventually("a pod of the Deployment crashed once", crashed)
    return found[0]


def assert_no_secret(*texts: str | bytes) -> None:
    for t in texts:
        data = t.encode() if isinstance(t, str) else t
        for s in SECRETS:
            assert s.encode() not in data, f"secret {s[:6]}... leaked"


async def test_crashloop_bundle_has_the_stack_and_no_secret(
    kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    image = f"registry.local/shop/checkout:crash-{uuid.uuid4().hex[:6]}"
    kubelet.behave(
        image,
        Behaviour(
            kind="crashloop",
            exit_code=1,
            reason="Error",
            restart_every=0.2,
            max_restarts=5,
            previous_logs=CRASH_LOG,
            logs="2026-11-28T08:00:05Z starting checkout 1.4.2\n",
        ),
    )
    await kube.create(k.apps(namespace, "deployments"), deployment_body("checkout", image))
    pod = await crashed_pod(kube, namespace, "checkout")

    policy = HealingPolicy(namespace=namespace, name="checkout", generation=1)
    bundle = await collect(
        kube=kube,
        namespace=namespace,
        deployment="checkout",
        pod=None,  # chosen: the pod with the most restarts
        container=None,
        redactor=Redactor.for_policy(policy.redact_patterns),
        prometheus_usage={"app": {"cpu": 0.412, "memory": 250 * 2**20}},
        trigger_evidence={"restarts": 3, "note": f"seen with Bearer {BEARER}"},
        steps=[{"action": "rollback", "result": "NotHealed", "detail": "no healthy revision"}],
    )

    # The secrets are nowhere: not in a single byte of what would leave the process.
    workload = WorkloadRef(namespace=namespace, name="checkout")
    description = render_description(
        bundle, policy=policy, workload=workload, trigger="crashloop", cause="CrashLoopBackOff"
    )
    summary = render_summary(
        workload=workload, trigger="crashloop", cause="CrashLoopBackOff",
        outcome="rollback did not heal", bundle=bundle,
    )  # fmt: skip
    attachments = bundle.attachments()
    assert_no_secret(description, summary, bundle.summary(), *attachments.values())
    assert bundle.redaction_count >= 4

    # The stack trace was found in the previous container's logs.
    assert bundle.pod == pod
    assert bundle.container == "app"
    assert bundle.logs_source == "previous"
    assert bundle.stack is not None
    assert (bundle.stack.runtime, bundle.stack.exception_type) == ("python", "RuntimeError")
    assert bundle.stack.root_cause.startswith("psycopg2.OperationalError: FATAL:  password")
    assert "{code:python}" in description
    assert (
        "RuntimeError: database unavailable after 3 attempts" in attachments["stack.txt"].decode()
    )

    # The crashed container's termination, as the pod status says.
    assert bundle.termination is not None
    assert (bundle.termination.exit_code, bundle.termination.reason) == (1, "Error")
    assert bundle.termination.restart_count >= 1
    assert "||Exit code|1 (Error)|" in description

    # Snapshots: redacted env values with their names, references kept, no managedFields.
    assert set(attachments) >= {
        "previous-logs.txt", "stack.txt", "pod.yaml", "replicaset.yaml", "deployment.yaml",
        "rollout-history.txt", "evidence.json",
    }  # fmt: skip
    dep_yaml = attachments["deployment.yaml"].decode()
    assert "name: DB_PASSWORD" in dep_yaml
    assert "value: '[REDACTED]'" in dep_yaml
    assert "secretKeyRef:" in dep_yaml
    assert "managedFields" not in dep_yaml
    assert "last-applied-configuration: '[REDACTED]'" in dep_yaml
    assert "kind: Pod" in attachments["pod.yaml"].decode()

    # History, events, resources beside usage, steps.
    assert [h.revision for h in bundle.rollout_history] == [1]
    assert bundle.rollout_history[0].images == (image,)
    assert bundle.revision == "1"
    assert any(e.reason == "ScalingReplicaSet" for e in bundle.events)
    assert "events.txt" in attachments
    res = bundle.resources[0]
    assert (res.container, res.requests["cpu"], res.limits["memory"]) == ("app", "100m", "256Mi")
    assert res.usage == {"cpu": "412m", "memory": "250Mi"}
    assert "|1|rollback|NotHealed|-|no healthy revision|" in description
    assert bundle.unavailable == {}

    evidence = json.loads(attachments["evidence.json"])
    assert evidence["stack"]["exception_type"] == "RuntimeError"
    assert evidence["triggerEvidence"]["restarts"] == 3


async def test_missing_objects_are_recorded_not_raised(kube: k.Kube, namespace: str) -> None:
    bundle = await collect(
        kube=kube,
        namespace=namespace,
        deployment="nope",
        pod="nope-123",
        container="app",
        redactor=Redactor(),
        prometheus_usage=None,
        trigger_evidence={},
        steps=[],
    )
    assert bundle.unavailable["deployment"].startswith("404 NotFound")
    assert bundle.unavailable["pod"].startswith("404 NotFound")
    assert bundle.logs_source == "unavailable"
    assert bundle.stack is None
    assert bundle.usage_source == "unavailable: Prometheus not configured"
    assert "evidence.json" in bundle.attachments()
    policy = HealingPolicy(namespace=namespace, name="p", generation=1)
    text = render_description(
        bundle,
        policy=policy,
        workload=WorkloadRef(namespace=namespace, name="nope"),
        trigger="crashloop",
        cause="CrashLoopBackOff",
    )
    assert "* deployment: 404 NotFound" in text


async def test_running_pod_falls_back_to_current_logs(
    kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    image = f"registry.local/shop/web:ok-{uuid.uuid4().hex[:6]}"
    kubelet.behave(image, Behaviour(kind="running", logs="ready\nserving on :8080\n"))
    body = deployment_body("web", image)
    await kube.create(k.apps(namespace, "deployments"), body)

    async def running() -> bool:
        pods = await kube.get(k.core(namespace, "pods"), labelSelector="app=web")
        return any((p.get("status") or {}).get("phase") == "Running" for p in pods.get("items", []))

    await eventually("the web pod runs", running)
    bundle = await collect(
        kube=kube,
        namespace=namespace,
        deployment="web",
        pod=None,
        container=None,
        redactor=Redactor(),
        prometheus_usage=None,
        trigger_evidence={},
        steps=[],
    )
    assert bundle.logs_source == "current"
    assert "serving on :8080" in bundle.logs
    assert "previous logs" not in bundle.unavailable  # never crashed: not even asked
    assert "current-logs.txt" in bundle.attachments()
    assert bundle.termination is None


async def test_forbidden_reads_are_recorded_and_the_rest_is_collected(
    cluster: Cluster, kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    image = f"registry.local/shop/api:crash-{uuid.uuid4().hex[:6]}"
    kubelet.behave(
        image,
        Behaviour(kind="crashloop", restart_every=0.2, max_restarts=3, previous_logs=CRASH_LOG),
    )
    await kube.create(k.apps(namespace, "deployments"), deployment_body("api", image))
    pod = await crashed_pod(kube, namespace, "api")
    # A reader allowed Deployments and Pods only: no logs, no ReplicaSets, no events.
    await kube.create(
        k.core(namespace, "serviceaccounts"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "narrow"}},
    )
    await kube.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "narrow"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
            ],
        },
    )
    await kube.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "narrow"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "narrow"},
            "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": namespace}],
        },
    )
    token = await asyncio.to_thread(cluster.token_for, namespace, "narrow")
    narrow = k.Kube.from_token(host=cluster.server, token=token, ca_file=str(cluster.ca_file))
    try:
        bundle = await collect(
            kube=narrow,
            namespace=namespace,
            deployment="api",
            pod=pod,
            container=None,
            redactor=Redactor(),
            prometheus_usage=None,
            trigger_evidence={},
            steps=[],
        )
    finally:
        await narrow.close()
    for what in ("previous logs", "current logs", "replicaset", "rollout history"):
        assert bundle.unavailable[what].startswith("403 Forbidden"), what
    assert bundle.unavailable["events of Pod"].startswith("403 Forbidden")
    assert bundle.logs_source == "unavailable"
    # What was allowed is there, redacted.
    assert bundle.termination is not None
    assert bundle.termination.exit_code == 1
    assert set(bundle.snapshots) == {"pod", "deployment"}
    assert_no_secret(*bundle.attachments().values())


async def test_an_unreachable_api_server_still_yields_a_bundle(cluster: Cluster) -> None:
    # A port nothing listens on: every read fails with a connection error.
    down = k.Kube.from_token(
        host=f"https://127.0.0.1:{free_port()}", token="x", ca_file=str(cluster.ca_file)
    )
    try:
        bundle = await asyncio.wait_for(
            collect(
                kube=down,
                namespace="shop",
                deployment="checkout",
                pod="checkout-1",
                container=None,
                redactor=Redactor(),
                prometheus_usage=None,
                trigger_evidence={"restarts": 4},
                steps=[],
                request_timeout=2.0,
            ),
            timeout=30,
        )
    finally:
        await down.close()
    assert bundle.unavailable["deployment"].startswith("ConnectionError")
    assert bundle.unavailable["pod"].startswith("ConnectionError")
    assert bundle.logs_source == "unavailable"
    assert json.loads(bundle.attachments()["evidence.json"])["triggerEvidence"] == {"restarts": 4}
