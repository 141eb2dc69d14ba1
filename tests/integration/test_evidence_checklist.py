"""Collection feeding the checklist, against the real API server and the kubelet stand-in:
a log of long lines keeps its end (the final stack trace), a pod stuck pulling its image
or missing a Secret yields the checks that name the image, the pull secrets, the Secret.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from selfheal.clients import kube as k
from selfheal.detect.signal import WorkloadRef
from selfheal.evidence import Redactor, collect, render_description
from selfheal.evidence.checklist import checklist
from selfheal.evidence.dependencies import dependency_health
from selfheal.policy.model import HealingPolicy
from tests.integration.test_evidence import crashed_pod, eventually
from tests.support.cluster import Cluster
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.workloads import blind_client

pytestmark = pytest.mark.integration

FINAL = 'RuntimeError: the very last line, after megabytes of "noise"'


def deployment(name: str, image: str, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
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
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 5,
                            },
                        }
                    ],
                    **pod_spec,
                },
            },
        },
    }


async def waiting_pod(kube: k.Kube, namespace: str, app: str) -> str:
    found: list[str] = []

    async def waiting() -> bool:
        pods = await kube.get(k.core(namespace, "pods"), labelSelector=f"app={app}")
        for p in pods.get("items", []):
            for s in (p.get("status") or {}).get("containerStatuses") or []:
                if (s.get("state") or {}).get("waiting"):
                    found.append(p["metadata"]["name"])
                    return True
        return False

    await eventually("a pod of the Deployment is waiting", waiting)
    return found[0]


async def gather(kube: k.Kube, namespace: str, name: str, **kw: Any) -> Any:
    return await collect(
        kube=kube,
        namespace=namespace,
        deployment=name,
        pod=None,
        container=None,
        redactor=Redactor(),
        trigger_evidence={},
        steps=[],
        **kw,
    )


async def test_a_log_of_long_lines_keeps_its_end(
    kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    # 600 lines of 4 KiB: the last 500 lines are 2 MiB, beyond the 1 MiB asked at first;
    # limitBytes would keep their head and drop the final stack trace.
    noise = "".join(f"{i:05d} {'x' * 4090}\n" for i in range(600))
    crash = (
        "Traceback (most recent call last):\n"
        '  File "/app/main.py", line 7, in <module>\n'
        "    main()\n"
        f"{FINAL}\n"
    )
    image = f"registry.local/shop/noisy:{uuid.uuid4().hex[:6]}"
    kubelet.behave(
        image,
        Behaviour(kind="crashloop", restart_every=0.2, max_restarts=3, previous_logs=noise + crash),
    )
    await kube.create(k.apps(namespace, "deployments"), deployment("noisy", image))
    await crashed_pod(kube, namespace, "noisy")

    bundle = await gather(kube, namespace, "noisy", log_max_bytes=64 * 1024)
    assert bundle.logs_source == "previous"
    assert bundle.logs.endswith(FINAL + "\n")
    assert len(bundle.logs.encode()) <= 64 * 1024 + 100
    assert "logs" in bundle.truncated
    assert bundle.stack is not None
    assert bundle.stack.message.startswith("the very last line")


async def test_an_image_pull_failure_names_the_image_the_history_and_the_pull_secrets(
    kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    image = f"registry.local/shop/pull:{uuid.uuid4().hex[:6]}"
    kubelet.behave(image, Behaviour(kind="imagepull"))
    body = deployment("pull", image, imagePullSecrets=[{"name": "regcred"}])
    await kube.create(k.apps(namespace, "deployments"), body)
    await waiting_pod(kube, namespace, "pull")

    bundle = await gather(kube, namespace, "pull")
    assert bundle.waiting is not None
    assert bundle.waiting.reason == "ImagePullBackOff"
    assert bundle.pull_secrets == ("regcred",)
    assert bundle.probes["liveness"] == (
        "HTTP GET :8080/healthz every 5s, timeout 1s, fails after 3"
    )
    checks = {c.title: c.detail for c in checklist(bundle, cause="ImagePullBackOff")}
    assert checks["The image reference"].startswith(image)
    assert checks["Did this tag run before?"].startswith("no earlier revision ran it")
    assert checks["Pull secrets"].startswith("the pod uses regcred")

    text = render_description(
        bundle,
        policy=HealingPolicy(namespace=namespace, name="pull", generation=1),
        workload=WorkloadRef(namespace=namespace, name="pull"),
        trigger="crashloop",
        cause="ImagePullBackOff",
    )
    assert "h3. What to check first" in text
    assert f'||Waiting|ImagePullBackOff: Back-off pulling image "{image}"|' in text


async def test_a_missing_secret_is_named(kube: k.Kube, namespace: str, kubelet: Kubelet) -> None:
    image = f"registry.local/shop/cfg:{uuid.uuid4().hex[:6]}"
    kubelet.behave(
        image,
        Behaviour(
            kind="configerror",
            message="couldn't find key FEATURES in ConfigMap " + namespace + "/checkout-config",
        ),
    )
    await kube.create(k.apps(namespace, "deployments"), deployment("cfg", image))
    await waiting_pod(kube, namespace, "cfg")

    bundle = await gather(kube, namespace, "cfg")
    [first, *_] = checklist(bundle, cause="CreateContainerConfigError")
    assert first.title == "Missing key FEATURES in ConfigMap checkout-config"
    assert first.detail.startswith(
        f"key FEATURES is missing from ConfigMap checkout-config in {namespace}"
    )


async def test_what_changed_since_the_previous_revision(
    kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    good = f"registry.local/shop/diff:good-{uuid.uuid4().hex[:6]}"
    bad = f"registry.local/shop/diff:bad-{uuid.uuid4().hex[:6]}"
    kubelet.behave(good, Behaviour(kind="running"))
    kubelet.behave(bad, Behaviour(kind="crashloop", restart_every=0.2, max_restarts=3))
    body = deployment("diff", good)
    app = body["spec"]["template"]["spec"]["containers"][0]
    app["env"] = [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "DB_PASSWORD", "value": "first-s3cret-value"},
    ]
    app["resources"] = {"limits": {"memory": "512Mi"}}
    await kube.create(k.apps(namespace, "deployments"), body)

    async def revision(n: int) -> bool:
        rss = await kube.get(k.apps(namespace, "replicasets"), labelSelector="app=diff")
        revs = {
            (r["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
            for r in rss.get("items", [])
        }
        return str(n) in revs

    await eventually("revision 1", lambda: revision(1))
    app["image"] = bad
    app["env"] = [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "DB_PASSWORD", "value": "second-s3cret-value"},
    ]
    app["resources"] = {"limits": {"memory": "256Mi"}}
    await kube.replace(k.apps(namespace, "deployments", "diff"), body)
    await eventually("revision 2", lambda: revision(2))
    await crashed_pod(kube, namespace, "diff")

    bundle = await gather(kube, namespace, "diff")
    assert bundle.revision == "2"
    assert bundle.changes_since == 1
    got = {c.field: (c.before, c.after) for c in bundle.changes}
    assert got["image"] == (good, bad)
    assert got["env LOG_LEVEL"] == ('"info"', '"debug"')
    assert got["resources.limits.memory"] == ("512Mi", "256Mi")
    assert "env DB_PASSWORD" in got
    everything = b"".join(bundle.attachments().values()).decode()
    assert "first-s3cret-value" not in everything
    assert "second-s3cret-value" not in everything
    assert '"field": "image"' in bundle.attachments()["evidence.json"].decode()


def endpoint_slice(service: str, ready: list[bool]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-manual",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "tests.selfheal.dev",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [f"10.244.0.{i + 10}"], "conditions": {"ready": r}}
            for i, r in enumerate(ready)
        ],
    }


async def test_dependencies_named_in_logs_and_env_with_their_ready_endpoints(
    kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    for name in ("payments", "db"):
        # No selector: the endpoint slice controller leaves their slices to us.
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 8080}]},
        }
        await kube.create(k.core(namespace, "services"), svc)
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    await kube.create(slices, endpoint_slice("payments", [False, False, False]))
    await kube.create(slices, endpoint_slice("db", [True, True]))

    image = f"registry.local/shop/deps:{uuid.uuid4().hex[:6]}"
    log = (
        "starting\nPOST http://payments:8080/charge: connection refused\n"
        "Traceback (most recent call last):\n"
        '  File "/app/pay.py", line 3, in charge\n'
        "ConnectionRefusedError: [Errno 111] Connection refused\n"
    )
    kubelet.behave(
        image, Behaviour(kind="crashloop", restart_every=0.2, max_restarts=3, previous_logs=log)
    )
    body = deployment("deps", image)
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "DB_HOST", "value": f"db.{namespace}.svc.cluster.local"}
    ]
    await kube.create(k.apps(namespace, "deployments"), body)
    await crashed_pod(kube, namespace, "deps")

    bundle = await gather(kube, namespace, "deps", dependencies=True)
    lines = sorted(d.line() for d in bundle.dependencies)
    assert lines == [
        f"db.{namespace}: 2 of 2 endpoints ready",
        f"payments.{namespace}: 0 of 3 endpoints ready",
    ]
    [first, *_] = checklist(bundle, cause="CrashLoopBackOff")
    assert first.title == f"Dependency payments.{namespace} is down"
    # The env value was searched, not stored: the pod snapshot has it redacted.
    assert f"db.{namespace}.svc.cluster.local" not in bundle.snapshots["pod"]


async def test_dependency_health_without_permission_says_so_and_never_raises(
    cluster: Cluster, kube: k.Kube, namespace: str
) -> None:
    blind = await blind_client(cluster, kube, namespace)
    try:
        report = await dependency_health(
            kube=blind, namespace=namespace, texts=["GET http://payments:8080/ refused"]
        )
    finally:
        await blind.close()
    assert report.dependencies == []
    assert report.unavailable["services"].startswith("403 Forbidden")
    assert "(cluster-wide: 403 Forbidden)" in report.unavailable["services"]


async def test_a_configmap_edited_after_the_healthy_revision_is_named(
    kube: k.Kube, namespace: str, kubelet: Kubelet
) -> None:
    data = {"FEATURES": "checkout-v1", "LIMIT": "3"}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flags"}, "data": data}
    await kube.create(k.core(namespace, "configmaps"), cm)
    good = f"registry.local/shop/cfgdiff:good-{uuid.uuid4().hex[:6]}"
    bad = f"registry.local/shop/cfgdiff:bad-{uuid.uuid4().hex[:6]}"
    kubelet.behave(good, Behaviour(kind="running"))
    kubelet.behave(bad, Behaviour(kind="crashloop", restart_every=0.2, max_restarts=3))
    body = deployment("cfgdiff", good)
    app = body["spec"]["template"]["spec"]["containers"][0]
    app["env"] = [
        {"name": "F", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "FEATURES"}}},
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "api", "key": "tok"}}},
    ]
    await kube.create(k.apps(namespace, "deployments"), body)

    async def revisions() -> set[str]:
        rss = await kube.get(k.apps(namespace, "replicasets"), labelSelector="app=cfgdiff")
        return {
            (r["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "")
            for r in rss.get("items", [])
        }

    async def has(n: str) -> bool:
        return n in await revisions()

    await eventually("revision 1", lambda: has("1"))
    # Timestamps have whole seconds: the edit must land in a later second.
    await asyncio.sleep(1.1)
    data["FEATURES"] = "checkout-v2-broken"
    await kube.replace(k.core(namespace, "configmaps", "flags"), cm)
    app["image"] = bad
    await kube.replace(k.apps(namespace, "deployments", "cfgdiff"), body)
    await eventually("revision 2", lambda: has("2"))
    await crashed_pod(kube, namespace, "cfgdiff")

    bundle = await gather(kube, namespace, "cfgdiff", config_changes=True)
    lines = {c.name: c for c in bundle.config_changes}
    assert lines["flags"].changed is True
    assert lines["flags"].keys == ("FEATURES",)
    assert lines["api"].changed is None  # a Secret: never read
    assert "configmap flags" not in bundle.unavailable
    [first, *_] = checklist(bundle)
    assert first.title == "ConfigMap flags changed"
    everything = b"".join(bundle.attachments().values()).decode()
    assert "checkout-v2-broken" not in everything
