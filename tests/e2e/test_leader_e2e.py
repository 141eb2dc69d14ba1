"""Leader election with the chart's identity: its RBAC carries the Lease, and two
operator processes started as the chart starts them elect one leader.

The chart is installed with the real ``helm``; the elector and the operator run with a
token of the chart's ServiceAccount, so the real authorizer judges every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from selfheal.clients import kube as k
from selfheal.clients.lease import API_VERSION, JITTER_FACTOR, LeaderElector, Record, Timings
from tests.e2e.test_rbac_e2e import requests_by, run_as_chart
from tests.support.cluster import BIN_DIR, Cluster
from tests.support.fixtures.helm import InstallRelease, Release
from tests.support.operator import OperatorProcess
from tests.support.workloads import deployment

pytestmark = pytest.mark.e2e

T = Timings()
POLL = T.retry_period * (1 + JITTER_FACTOR)


def namespaced_release(helm_release: InstallRelease, namespace: str) -> Release:
    # Namespaced mode: the Lease's Role must work without any ClusterRole for it.
    return helm_release(
        values={"crds": {"install": False}, "rbac": {"namespaced": True},
                "watchNamespaces": [namespace]}
    )  # fmt: skip


async def can_i(cluster: Cluster, token: str, *args: str) -> str:
    """``kubectl auth can-i`` as the token's identity (a SelfSubjectAccessReview)."""
    as_sa = ["--kubeconfig", str(cluster.kubeconfig_for_token(token))]
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(BIN_DIR / "kubectl"), *as_sa, "auth", "can-i", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip()


async def test_the_charts_identity_may_campaign_for_its_lease_and_for_no_other(
    cluster: Cluster, crds: Any, namespace: str, helm_release: InstallRelease
) -> None:
    release = namespaced_release(helm_release, namespace)
    (lease_name,) = release.arg("leader-election-name")
    assert "--leader-election" in release.operator_args
    ns = release.namespace
    token = cluster.token_for(ns, release.service_account)

    # What the chart grants, as the API server's authorizer answers for that identity.
    lease = f"leases.coordination.k8s.io/{lease_name}"
    for args, expect in (
        (("create", "leases.coordination.k8s.io", "-n", ns), "yes"),
        (("get", lease, "-n", ns), "yes"),
        (("update", lease, "-n", ns), "yes"),
        (("update", "leases.coordination.k8s.io/someone-elses", "-n", ns), "no"),
        (("delete", lease, "-n", ns), "no"),
        (("create", "leases.coordination.k8s.io", "-n", namespace), "no"),
    ):
        assert await can_i(cluster, token, *args) == expect, args

    kube = k.Kube.from_token(host=cluster.server, token=token, ca_file=str(cluster.ca_file))
    elector = LeaderElector(kube=kube, namespace=ns, name=lease_name, identity="chart_1")
    other = LeaderElector(kube=kube, namespace=ns, name="not-the-charts", identity="chart_2")
    tasks = [asyncio.create_task(e.run()) for e in (elector, other)]
    try:
        await asyncio.wait_for(elector.wait_for_leadership(), timeout=10)  # get 404, create
        first = Record.of(await kube.get(k.group(API_VERSION, ns, "leases", lease_name)))
        await asyncio.sleep(T.retry_period * 1.5)
        renewed = Record.of(await kube.get(k.group(API_VERSION, ns, "leases", lease_name)))
        assert renewed.holder == "chart_1"
        assert renewed.renew_time != first.renew_time  # update (PUT) was allowed
        assert elector.is_leader
        # Another Lease: created (create is not limited by name), then never readable:
        # the missing permission shows as an elector that never leads, still trying.
        assert not other.is_leader
        assert not tasks[1].done()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    released = Record.of(await kube.get(k.group(API_VERSION, ns, "leases", lease_name)))
    assert released.holder == ""  # release on cancel: an update too
    await kube.close()

    user = f"system:serviceaccount:{ns}:{release.service_account}"
    made = requests_by(cluster, user)
    on_leases = {
        p: codes for p, codes in made.items() if p[:2] == ("coordination.k8s.io", "leases")
    }
    assert {verb for _, _, verb in on_leases} >= {"get", "create", "update"}
    # The only refusals are the other Lease's reads (and its create's 409 is not a 403).
    assert on_leases[("coordination.k8s.io", "leases", "get")] >= {403}
    assert 403 not in on_leases[("coordination.k8s.io", "leases", "update")]
    assert 403 not in on_leases[("coordination.k8s.io", "leases", "create")]


_LEADER = re.compile(r'^selfheal_leader\{identity="([^"]+)"\} ([0-9.]+)$', re.MULTILINE)


def leadership(op: OperatorProcess) -> dict[str, float]:
    """identity -> selfheal_leader, from the process's /metrics."""
    _, text = op.get("/metrics")
    return {m[1]: float(m[2]) for m in _LEADER.finditer(text)}


def leads(op: OperatorProcess) -> bool:
    with contextlib.suppress(OSError):
        return 1.0 in leadership(op).values()
    return False


async def until(what: str, check: Any, *, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic()


async def test_two_operators_as_the_chart_runs_them_one_leads_both_ready_then_hand_over(
    cluster: Cluster,
    crds: Any,
    namespace: str,
    helm_release: InstallRelease,
    tmp_path: Path,
    kube: k.Kube,
) -> None:
    release = namespaced_release(helm_release, namespace)
    (lease_name,) = release.arg("leader-election-name")
    # Readiness comes with the first event kopf hands over: give it pods to watch.
    await kube.create(
        k.apps(namespace, "deployments"), deployment("shop", "registry.local/shop:v1")
    )
    first = run_as_chart(cluster, release, tmp_path, name="first")
    second = run_as_chart(cluster, release, tmp_path, name="second")
    ops = (first, second)
    try:
        for op in ops:
            await until(f"{op.log_dir.name} ready", lambda o=op: o.get("/readyz")[0] == 200,
                        timeout=60)  # fmt: skip
        await until("someone leads", lambda: any(map(leads, ops)), timeout=20)
        await asyncio.sleep(POLL)  # the standby has had its attempts by now
        assert [leads(op) for op in ops].count(True) == 1
        leader, standby = (first, second) if leads(first) else (second, first)
        # The standby is Ready (it keeps its caches warm), it only does not act.
        assert standby.get("/readyz")[0] == 200
        (leader_id,) = leadership(leader)
        (standby_id,) = leadership(standby)
        assert leadership(standby) == {standby_id: 0.0}
        path = k.group(API_VERSION, release.namespace, "leases", lease_name)
        assert Record.of(await kube.get(path)).holder == leader_id

        # A graceful stop (SIGTERM, as on a rollout or a drain) releases the Lease once
        # kopf has stopped its handlers: the standby takes over at its next attempt.
        stopping = time.monotonic()
        await asyncio.to_thread(leader.stop)
        took_over = await until("the standby leads", lambda: leads(standby), timeout=POLL + 10)
        print(f"\nhandover after SIGTERM to the leading operator: {took_over - stopping:.2f}s")
        assert Record.of(await kube.get(path)).holder == standby_id
    finally:
        for op in ops:
            op.stop()
    assert "stopped leading" in leader.log.read_text()
    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    refused = {p: c for p, c in requests_by(cluster, user).items() if 403 in c}
    assert refused == {}, "the chart's RBAC refused the operators something"
