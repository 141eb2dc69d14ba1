"""The test bed is real: the API server, its RBAC, the controller-manager and the
kubelet stand-in behave as a cluster does, seen from a client."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from selfheal.clients.kube import Body, Forbidden, Kube, KubeError, apps, core
from tests.support.cluster import Cluster
from tests.support.fixtures.cluster import Kubectl
from tests.support.kubelet import NODE_NAME, Behaviour, Kubelet

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, what: str, within: float = 30.0
) -> T:
    """Polls ``probe`` until it returns something truthy; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.2)
    pytest.fail(f"{what}: not within {within:.0f}s (last seen: {last!r})")


def deployment(name: str, image: str, replicas: int = 2) -> Body:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def pod(name: str, image: str) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def container(p: Body) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = p.get("status", {}).get("containerStatuses") or [{}]
    return statuses[0]


def condition(obj: Body, kind: str) -> str | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c["type"] == kind:
            return str(c["status"])
    return None


async def test_node_is_registered_ready_with_its_log_endpoint(kube: Kube, kubelet: Kubelet) -> None:
    node = await kube.get(f"/api/v1/nodes/{NODE_NAME}")
    assert condition(node, "Ready") == "True"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    pods = node["status"]["allocatable"]["pods"]  # the API server canonicalises 110000
    assert (int(pods[:-1]) * 1000 if pods.endswith("k") else int(pods)) == 110_000
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == kubelet.port


async def test_deployment_gets_replicaset_ready_pods_and_a_second_revision(
    kube: Kube, namespace: str
) -> None:
    await kube.create(apps(namespace, "deployments"), deployment("web", "example.com/web:1.0"))

    async def available() -> Body | None:
        d = await kube.get(apps(namespace, "deployments", "web"))
        s = d.get("status", {})
        return d if s.get("availableReplicas") == 2 and s.get("readyReplicas") == 2 else None

    d = await eventually(available, what="Deployment web 2/2 available")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    rss = (await kube.get(apps(namespace, "replicasets")))["items"]
    assert [rs["metadata"]["ownerReferences"][0]["name"] for rs in rss] == ["web"]
    pods = (await kube.get(core(namespace, "pods")))["items"]
    assert len(pods) == 2
    for p in pods:
        assert p["spec"]["nodeName"] == NODE_NAME
        assert p["status"]["phase"] == "Running"
        assert condition(p, "Ready") == "True"
        c = container(p)
        assert c["ready"] is True
        assert c["restartCount"] == 0
        assert "startedAt" in c["state"]["running"]
        assert c["containerID"].startswith("containerd://")

    await kube.patch(
        apps(namespace, "deployments", "web"),
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "image": "example.com/web:1.1"}]}
                }
            }
        },
    )

    async def rolled_out() -> list[Body] | None:
        d = await kube.get(apps(namespace, "deployments", "web"))
        s = d.get("status", {})
        if d["metadata"]["annotations"].get("deployment.kubernetes.io/revision") != "2":
            return None
        if (s.get("updatedReplicas"), s.get("availableReplicas"), s.get("replicas")) != (2, 2, 2):
            return None
        pods: list[Body] = (await kube.get(core(namespace, "pods")))["items"]
        # The old Pods are gone only when the stand-in confirmed their termination.
        images = {p["spec"]["containers"][0]["image"] for p in pods}
        return pods if len(pods) == 2 and images == {"example.com/web:1.1"} else None

    await eventually(rolled_out, what="revision 2 rolled out, old Pods deleted")
    rss = (await kube.get(apps(namespace, "replicasets")))["items"]
    revisions = {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs["spec"]["replicas"]
        for rs in rss
    }
    assert revisions == {"1": 0, "2": 2}


async def test_crash_loop_shows_in_status_with_growing_bounded_restarts(
    kube: Kube, kubelet: Kubelet, namespace: str
) -> None:
    image = f"example.com/worker:{uuid.uuid4().hex[:8]}"
    kubelet.behave(
        image,
        Behaviour(
            kind="crashloop",
            exit_code=3,
            reason="Error",
            message="bad config",
            restart_every=0.5,
            max_restarts=4,
        ),
    )
    await kube.create(core(namespace, "pods"), pod("worker", image))

    async def crashing() -> dict[str, Any] | None:
        c = container(await kube.get(core(namespace, "pods", "worker")))
        return c if c.get("state", {}).get("waiting", {}).get("reason") else None

    first = await eventually(crashing, what="worker waiting")
    assert first["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert first["ready"] is False
    terminated = first["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (
        3,
        "Error",
        "bad config",
    )
    assert terminated["startedAt"] <= terminated["finishedAt"]

    async def at_max() -> dict[str, Any] | None:
        c = container(await kube.get(core(namespace, "pods", "worker")))
        return c if c["restartCount"] == 4 else None

    await eventually(at_max, what="restartCount reaching max_restarts=4", within=15)
    assert first["restartCount"] < 4
    await asyncio.sleep(1.5)  # three more restart periods: the loop must have stopped
    p = await kube.get(core(namespace, "pods", "worker"))
    assert container(p)["restartCount"] == 4
    assert p["status"]["phase"] == "Running"
    assert condition(p, "Ready") == "False"
    events = (await kube.get(core(namespace, "events")))["items"]
    assert any(e["reason"] == "BackOff" and e["involvedObject"]["name"] == "worker" for e in events)


@pytest.mark.parametrize(
    ("tag", "waiting", "terminated"),
    [
        ("crash-1", "CrashLoopBackOff", ("Error", 1)),
        ("oom-1", "CrashLoopBackOff", ("OOMKilled", 137)),
        ("badpull-1", "ImagePullBackOff", None),
        ("configerror-1", "CreateContainerConfigError", None),
    ],
)
async def test_image_tag_alone_chooses_the_behaviour(
    kube: Kube, namespace: str, tag: str, waiting: str, terminated: tuple[str, int] | None
) -> None:
    await kube.create(core(namespace, "pods"), pod("p", f"example.com/shop/api:{tag}"))

    async def waiting_reason() -> Body | None:
        p = await kube.get(core(namespace, "pods", "p"))
        return p if container(p).get("state", {}).get("waiting") else None

    p = await eventually(waiting_reason, what=f"pod of tag {tag} waiting")
    c = container(p)
    assert c["state"]["waiting"]["reason"] == waiting
    if terminated is None:
        assert p["status"]["phase"] == "Pending"
        assert c["lastState"] == {}
    else:
        t = c["lastState"]["terminated"]
        assert (t["reason"], t["exitCode"]) == terminated


async def test_previous_logs_come_back_through_the_api_server(
    kube: Kube, kubelet: Kubelet, kubectl: Kubectl, namespace: str
) -> None:
    image = f"example.com/crasher:{uuid.uuid4().hex[:8]}"
    previous = "line one\nline two\npanic: nil map write\ngoroutine 1 [running]:\n"
    kubelet.behave(
        image,
        Behaviour(kind="crashloop", restart_every=60, logs="retrying\n", previous_logs=previous),
    )
    await kube.create(core(namespace, "pods"), pod("crasher", image))

    async def restarted() -> bool:
        p = await kube.get(core(namespace, "pods", "crasher"))
        return bool(container(p).get("restartCount"))

    await eventually(restarted, what="crasher restarted once")
    log_path = core(namespace, "pods", "crasher") + "/log"
    assert await kube.text(log_path, container="app", previous=True) == previous
    assert await kube.text(log_path, container="app") == "retrying\n"
    tail = await kube.text(log_path, container="app", previous=True, tailLines=2)
    assert tail == "panic: nil map write\ngoroutine 1 [running]:\n"
    assert await kube.text(log_path, previous=True, limitBytes=8) == "line one"
    stamped = (await kube.text(log_path, previous=True, timestamps=True)).splitlines()
    assert len(stamped) == 4
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", line) for line in stamped)

    out = kubectl("logs", "-n", namespace, "crasher", "--previous")
    assert out.stdout == previous


async def test_previous_logs_of_a_container_that_never_crashed_are_an_error(
    kube: Kube, namespace: str
) -> None:
    await kube.create(core(namespace, "pods"), pod("fine", "example.com/fine:1"))

    async def running() -> bool:
        return bool(container(await kube.get(core(namespace, "pods", "fine"))).get("ready"))

    await eventually(running, what="fine Ready")
    log_path = core(namespace, "pods", "fine") + "/log"
    assert await kube.text(log_path) == "starting server\nlistening on :8080\nready\n"
    with pytest.raises(KubeError) as err:
        await kube.text(log_path, previous=True)
    assert err.value.status == 400
    assert "previous terminated container" in err.value.message


async def test_deleted_pod_is_finalized_by_the_stand_in(kube: Kube, namespace: str) -> None:
    await kube.create(core(namespace, "pods"), pod("doomed", "example.com/fine:1"))

    async def bound() -> bool:
        p = await kube.get(core(namespace, "pods", "doomed"))
        return bool(p["spec"].get("nodeName") and p.get("status", {}).get("containerStatuses"))

    await eventually(bound, what="doomed bound and running")
    await kube.delete(core(namespace, "pods", "doomed"))  # default 30 s grace period

    async def gone() -> bool:
        try:
            await kube.get(core(namespace, "pods", "doomed"))
        except KubeError as e:
            return e.status == 404
        return False

    await eventually(gone, what="doomed deleted", within=10)


async def test_service_account_without_rights_gets_403_from_rbac(
    kube: Kube, cluster: Cluster, namespace: str
) -> None:
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}}
    await kube.create(core(namespace, "serviceaccounts"), sa)
    token = await asyncio.to_thread(cluster.token_for, namespace, "nobody", 600)
    as_sa = Kube.from_token(host=cluster.server, token=token, ca_file=str(cluster.ca_file))
    try:
        with pytest.raises(Forbidden) as err:
            await as_sa.get(core(namespace, "pods"))
        assert f"system:serviceaccount:{namespace}:nobody" in err.value.message

        # The same token works once RBAC grants the verb: authentication was fine.
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "nobody-reads-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        }
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        await kube.create(f"{rbac}/roles", role)
        await kube.create(f"{rbac}/rolebindings", binding)

        async def allowed() -> bool:
            try:
                await as_sa.get(core(namespace, "pods"))
            except Forbidden:
                return False
            return True

        await eventually(allowed, what="list pods allowed after the RoleBinding", within=10)
        with pytest.raises(Forbidden):
            await as_sa.get(core(namespace, "secrets"))
    finally:
        await as_sa.close()


def test_kubectl_works_with_the_admin_and_a_token_kubeconfig(
    cluster: Cluster, kubectl: Kubectl, kubelet: Kubelet
) -> None:
    out = kubectl("get", "nodes,pods", "-A").stdout
    assert re.search(rf"node/{NODE_NAME}\s+Ready", out), out
    token = cluster.token_for("default", "default", 600)
    kubeconfig = cluster.kubeconfig_for_token(token)
    denied = kubectl("--kubeconfig", str(kubeconfig), "get", "nodes", check=False)
    assert denied.returncode != 0
    assert 'User "system:serviceaccount:default:default" cannot list resource "nodes"' in (
        denied.stderr
    )


async def test_audit_log_records_requests_by_user(
    kube: Kube, cluster: Cluster, namespace: str
) -> None:
    name = f"marker-{uuid.uuid4().hex[:8]}"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    await kube.create(core(namespace, "configmaps"), cm)

    async def logged() -> dict[str, Any] | None:
        for line in cluster.audit_log.read_text().splitlines():
            if name in line:
                event: dict[str, Any] = json.loads(line)
                if event["verb"] == "create" and event["stage"] == "ResponseComplete":
                    return event
        return None

    event = await eventually(logged, what="the create in the audit log", within=10)
    assert event["user"]["username"] == "selfheal-admin"
    assert event["objectRef"]["resource"] == "configmaps"
    assert event["responseStatus"]["code"] == 201
    assert event["level"] == "Metadata"
