"""Sharding by namespace against the real API server: two shards of two, each its own
Lease, each acting only in its own namespace.

Each shard runs as its own ServiceAccount with the chart's RBAC (the ClusterRole of the
plain install, and the leader election Role the chart renders with ``shards: 2``, which
names each shard's Lease), so the API server's audit log says which shard wrote what.
Both shards watch both namespaces; each drops the other's objects.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from selfheal import API_VERSION
from selfheal.clients import kube as k
from selfheal.clients.lease import API_VERSION as LEASE_API
from selfheal.clients.lease import Record
from selfheal.sharding import Shard, shard_of
from tests.support.audit import workload_writes
from tests.support.cluster import Cluster, ClusterError
from tests.support.fixtures.helm import Helm
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.operator import (
    RBAC,
    SYSTEM_NAMESPACE,
    OperatorProcess,
    _bind,
    _post,
    ensure_operator_identity,
)
from tests.support.workloads import deployment, eventually, policy, remediations

pytestmark = pytest.mark.integration

TOTAL = 2
BASE = "selfheal"  # --leader-election-name's default; the chart's for release "selfheal"
SPEC = {
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {"steps": [{"restart": {}}], "verify": {"for": "5s", "timeout": "60s"}},
}


def _user(shard: int) -> str:
    return f"system:serviceaccount:{SYSTEM_NAMESPACE}:selfheal-shard-{shard}"


@pytest.fixture
def shard_namespaces(cluster: Cluster, kubelet: Kubelet) -> Iterator[list[str]]:
    """One fresh namespace per shard (names drawn until each shard has one), index = shard."""
    found: dict[int, str] = {}
    while len(found) < TOTAL:
        name = f"t-shard-{uuid.uuid4().hex[:6]}"
        found.setdefault(shard_of(name, TOTAL), name)
    names = [found[i] for i in range(TOTAL)]
    for name in names:
        cluster.api(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    deadline = time.monotonic() + 30
    for name in names:  # Pods are refused until the `default` ServiceAccount exists
        while True:
            try:
                cluster.api("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
                break
            except ClusterError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    try:
        yield names
    finally:
        for name in names:
            try:
                cluster.api("DELETE", f"/api/v1/namespaces/{name}")
            except ClusterError as e:
                if "HTTP 404" not in str(e):
                    raise


def _shard_identities(cluster: Cluster, helm: Helm) -> list[Any]:
    """A kubeconfig per shard's ServiceAccount, with the chart's RBAC for ``shards: 2``."""
    docs = helm.template({"shards": TOTAL})
    (role,) = [
        d
        for d in docs
        if d.get("kind") == "Role" and d["metadata"]["name"].endswith("-leader-election")
    ]
    (rule,) = [r for r in role["rules"] if "resourceNames" in r]
    assert rule["resourceNames"] == [Shard(index=i, total=TOTAL).lease_name(BASE) for i in (0, 1)]
    role["metadata"]["name"] = "selfheal-leader-election-sharded"
    _post(cluster, f"{RBAC}/namespaces/{SYSTEM_NAMESPACE}/roles", role)
    out = []
    for i in range(TOTAL):
        name = f"selfheal-shard-{i}"
        out.append(ensure_operator_identity(cluster, name=name))
        _post(
            cluster,
            f"{RBAC}/namespaces/{SYSTEM_NAMESPACE}/rolebindings",
            _bind("Role", role["metadata"]["name"], name, SYSTEM_NAMESPACE),
        )
    return out


_LEADER = re.compile(r'^selfheal_leader\{identity="([^"]+)"\} ([0-9.]+)$', re.MULTILINE)


def _leading(op: OperatorProcess) -> str | None:
    """The identity of ``op`` when it leads its shard, else None (also when it is dead)."""
    try:
        _, text = op.get("/metrics")
    except OSError:
        return None
    for identity, value in _LEADER.findall(text):
        if float(value) == 1:
            return str(identity)
    return None


async def _lease(kube: k.Kube, shard: int) -> Record:
    name = Shard(index=shard, total=TOTAL).lease_name(BASE)
    return Record.of(await kube.get(k.group(LEASE_API, SYSTEM_NAMESPACE, "leases", name)))


async def test_two_shards_each_lead_their_own_lease_and_act_only_in_their_namespaces(
    kube: k.Kube,
    cluster: Cluster,
    kubelet: Kubelet,
    helm: Helm,
    crds: Any,
    shard_namespaces: list[str],
    operator: Callable[..., OperatorProcess],
) -> None:
    kubeconfigs = _shard_identities(cluster, helm)
    # A crash-looping Deployment and a policy in each shard's namespace.
    for ns in shard_namespaces:
        image = f"registry.local/{ns}/pay:v1"
        kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0))
        await kube.create(k.apps(ns, "deployments"), deployment("pay", image, replicas=1))
        body = policy("pay", selector={"app": "pay"}, spec=SPEC)
        # As an unsharded run leaves it: kopf's finalizer of one shard (for the timer).
        body["metadata"]["finalizers"] = ["selfheal.dev/finalizer"]
        await kube.create(k.group(API_VERSION, ns, "healingpolicies"), body)

    def start(shard: int) -> OperatorProcess:
        args = ["--shard", str(shard), "--total-shards", str(TOTAL)]
        return operator(kubeconfig=kubeconfigs[shard], namespaces=shard_namespaces, extra_args=args)

    # Shard 0 with a leader and a standby; shard 1 with one replica.
    shard0 = [start(0), start(0)]
    (shard1,) = [start(1)]
    for op, shard in ((shard0[0], 0), (shard0[1], 0), (shard1, 1)):
        assert op.metric("selfheal_shard", {"shard": str(shard), "shards": "2"}) == 1

    async def one_leader_each() -> tuple[OperatorProcess, OperatorProcess] | None:
        leaders0 = [op for op in shard0 if _leading(op)]
        if len(leaders0) == 1 and _leading(shard1):
            return leaders0[0], next(op for op in shard0 if op is not leaders0[0])
        return None

    leader0, standby0 = await eventually(one_leader_each, timeout=60, what="a leader per shard")
    lease0, lease1 = await _lease(kube, 0), await _lease(kube, 1)
    assert lease0.holder == _leading(leader0)
    assert lease1.holder == _leading(shard1)
    assert lease0.holder != lease1.holder

    async def acted(ns: str) -> list[dict[str, Any]] | None:
        recs = await remediations(kube, ns)
        return recs if any((r.get("status") or {}).get("steps") for r in recs) else None

    for shard, ns in enumerate(shard_namespaces):

        async def acted_here(ns: str = ns) -> list[dict[str, Any]] | None:
            return await acted(ns)

        async def patched(ns: str = ns, shard: int = shard) -> list[tuple[str, str, str]] | None:
            return workload_writes(cluster, ns, user=_user(shard)) or None

        await eventually(acted_here, timeout=120, what=f"an action in {ns}")
        await eventually(patched, timeout=30, what=f"the patch in {ns}")
    for shard, ns in enumerate(shard_namespaces):
        # Exactly one Remediation and one restart, written by this namespace's shard.
        assert len(await remediations(kube, ns)) == 1
        assert workload_writes(cluster, ns, user=_user(shard)) == [("patch", "deployments", "pay")]
        assert workload_writes(cluster, ns, user=_user(1 - shard)) == []
    # Each shard's leader took one step; the standby none. kopf never served the other
    # shard's policy (nothing indexed or handled there).
    assert leader0.metric("selfheal_remediations_total") == 1
    assert shard1.metric("selfheal_remediations_total") == 1
    assert standby0.metric("selfheal_remediations_total") == 0
    ns0, ns1 = shard_namespaces
    assert f"HealingPolicy {ns1}/pay served" not in leader0.tail(10_000)
    assert f"HealingPolicy {ns0}/pay served" not in shard1.tail(10_000)
    assert f"HealingPolicy {ns0}/pay served" in leader0.tail(10_000)

    # Each policy carries its own shard's finalizer only: the unsharded one was dropped
    # (nobody would remove it), and no shard strips another's (kopf removes a finalizer of
    # its name that it does not need: one shared name made the shards fight over it).
    for shard, ns in enumerate(shard_namespaces):
        got = await kube.get(k.group(API_VERSION, ns, "healingpolicies", "pay"))
        assert got["metadata"]["finalizers"] == [
            Shard(index=shard, total=TOTAL).name("selfheal.dev/finalizer")
        ]

    # SIGKILL shard 0's leader: its standby takes shard 0's Lease over; shard 1 is untouched.
    killed = time.monotonic()
    leader0.kill()

    async def standby_leads() -> bool:
        return _leading(standby0) is not None

    await eventually(standby_leads, timeout=40, what="shard 0's standby leading")
    failover = time.monotonic() - killed
    print(f"shard 0 failover after SIGKILL of its leader: {failover:.1f}s")
    assert failover <= 25  # 15 s lease + a jittered retry, on a loaded machine
    after0, after1 = await _lease(kube, 0), await _lease(kube, 1)
    assert after0.holder == _leading(standby0)
    assert after0.transitions == lease0.transitions + 1
    assert (after1.holder, after1.transitions) == (lease1.holder, lease1.transitions)
    # The new leader resumed the incident without acting again.
    assert workload_writes(cluster, ns0, user=_user(0)) == [("patch", "deployments", "pay")]
    assert len(await remediations(kube, ns0)) == 1
