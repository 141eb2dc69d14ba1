"""The Pod cache's filing, the Pods each workload is judged on, and the coalescing of
evaluations: pure, no cluster."""

from __future__ import annotations

import asyncio
import dataclasses

from selfheal.detect.crashloop import PodSummary
from selfheal.handlers import summaries, watch
from selfheal.handlers.podcache import Coalescer, Index, PodCache


def _pod(name: str, *, owner: str = "web-1", ready: bool = True, ns: str = "shop") -> PodSummary:
    return PodSummary(
        namespace=ns,
        name=name,
        uid=f"uid-{name}",
        owner_kind="ReplicaSet",
        owner=owner,
        replicaset=owner,
        ready=ready,
    )


def test_pods_are_filed_by_namespace_and_owner() -> None:
    cache = PodCache()
    a, b, c = _pod("a"), _pod("b"), _pod("c", owner="web-2")
    for p in (a, b, c):
        cache.apply(None, p)
    cache.apply(None, _pod("d", ns="other"))
    assert set(cache.get(("shop", "ReplicaSet", "web-1"))) == {a, b}
    assert list(cache.get(("shop", "ReplicaSet", "web-2"))) == [c]
    assert list(cache.get(("shop", "ReplicaSet", "nobody"))) == []
    assert sorted(cache.owners("shop")) == [("ReplicaSet", "web-1"), ("ReplicaSet", "web-2")]
    assert len(cache) == 4


def test_a_change_replaces_and_a_deletion_removes() -> None:
    cache = PodCache()
    a = _pod("a", ready=False)
    cache.apply(None, a)
    a2 = _pod("a", ready=True)
    cache.apply(a, a2)
    assert list(cache.get(("shop", "ReplicaSet", "web-1"))) == [a2]
    cache.apply(a2, None)
    assert list(cache.get(("shop", "ReplicaSet", "web-1"))) == []
    assert cache.owners("shop") == []


def test_a_pod_without_a_controller_is_not_filed() -> None:
    cache = PodCache()
    cache.apply(None, PodSummary(namespace="shop", name="bare", uid="u"))
    assert len(cache) == 0


def test_owners_with_unready_pods_are_counted_as_pods_change() -> None:
    cache = PodCache()
    a, b = _pod("a", ready=False), _pod("b", ready=False)
    cache.apply(None, a)
    cache.apply(None, b)
    cache.apply(None, _pod("c", owner="web-2"))
    assert list(cache.unready_owners("shop")) == ["web-1"]
    cache.apply(a, _pod("a", ready=True))
    assert list(cache.unready_owners("shop")) == ["web-1"]  # b still is not
    cache.apply(b, None)
    assert list(cache.unready_owners("shop")) == []


async def test_a_burst_of_asks_is_one_run_and_one_more_for_asks_during_it() -> None:
    seen: list[str] = []
    gate = asyncio.Event()

    async def work(key: str) -> None:
        seen.append(key)
        await gate.wait()

    c: Coalescer[str] = Coalescer(work)
    for _ in range(5):
        c.want("web")
    c.want("db")
    await asyncio.sleep(0)
    assert sorted(seen) == ["db", "web"]
    c.want("web")  # while it runs: one more run after this one
    c.want("web")
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sorted(seen) == ["db", "web", "web"]
    assert c.pending == 0


async def test_a_failing_evaluation_does_not_stop_the_others() -> None:
    done: list[str] = []

    async def work(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        done.append(key)

    c: Coalescer[str] = Coalescer(work)
    c.want("bad")
    c.want("good")
    for _ in range(5):
        await asyncio.sleep(0)
    assert done == ["good"]
    c.want("bad")  # asked again, it runs again
    await asyncio.sleep(0)
    assert c.runs == 3


def test_a_statefulset_and_a_daemonset_of_one_name_are_judged_on_their_own_pods() -> None:
    # One namespace, one name, three kinds of owner.
    cache = PodCache()
    sts = [_pod(f"logs-{i}", owner="logs", ready=True) for i in range(2)]
    sts = [dataclasses.replace(p, owner_kind="StatefulSet", replicaset="") for p in sts]
    ds = dataclasses.replace(
        _pod("logs-x7k2p", owner="logs", ready=False), owner_kind="DaemonSet", replicaset=""
    )
    rs = _pod("logs-5d8f9-a", owner="logs")  # a ReplicaSet named like them too
    for p in (*sts, ds, rs):
        cache.apply(None, p)
    none = Index()
    assert (
        watch.workload_pods(
            "shop", "logs", rs_by_deployment=none, pods_by_rs=cache, kind="StatefulSet"
        )
        == sts
    )
    assert watch.workload_pods(
        "shop", "logs", rs_by_deployment=none, pods_by_rs=cache, kind="DaemonSet"
    ) == [ds]
    by_deployment = Index()
    by_deployment.add(("shop", "web"), "logs", summaries.RsInfo("logs", "web", 1, "5d8f9"))
    assert watch.workload_pods("shop", "web", rs_by_deployment=by_deployment, pods_by_rs=cache) == [
        rs
    ]
