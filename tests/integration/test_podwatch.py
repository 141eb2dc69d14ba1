"""The light Pod watcher against the real kube-apiserver, as the operator's ServiceAccount.

It lists in pages and then watches; it sees Pods created, changed (the kubelet stand-in
making them Ready, a crash loop's restarts, a deletion held by a finalizer) and deleted;
it resumes a watch the server ended without listing again; and when its resourceVersion
is too old (410 Gone, here after an API server restart) it lists again and reports every
change it missed, losing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from selfheal.clients import kube as k
from selfheal.clients.podwatch import PodWatcher
from selfheal.detect.crashloop import PodSummary, summarize
from selfheal.sharding import Shard, shard_of
from tests.support.cluster import Cluster
from tests.support.operator import ensure_operator_identity
from tests.support.workloads import eventually

Change = tuple[PodSummary | None, PodSummary | None]


def _pod(name: str, image: str = "registry.local/app:v1") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "watched"}},
        "spec": {
            "containers": [{"name": "app", "image": image}],
            "terminationGracePeriodSeconds": 0,
        },
    }


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: Cluster) -> Path:
    return ensure_operator_identity(cluster)


@pytest.fixture
async def op_kube(operator_kubeconfig: Path) -> AsyncIterator[k.Kube]:
    client = await k.Kube.connect(kubeconfig=str(operator_kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def watching(
    watcher: PodWatcher[PodSummary],
) -> AsyncIterator[PodWatcher[PodSummary]]:
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.wait_synced(), timeout=30)
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _recorder() -> tuple[list[Change], Callable[[PodSummary | None, PodSummary | None], None]]:
    changes: list[Change] = []

    def record(old: PodSummary | None, new: PodSummary | None) -> None:
        changes.append((old, new))

    return changes, record


def _names(w: PodWatcher[PodSummary]) -> set[str]:
    return {s.name for s in w.items.values()}


async def _until(pred: Callable[[], bool], what: str, timeout: float = 30) -> None:
    async def probe() -> bool:
        return pred()

    await eventually(probe, timeout=timeout, what=what, every=0.1)


async def test_list_then_watch_sees_create_update_delete(
    kube: k.Kube, op_kube: k.Kube, namespace: str
) -> None:
    for name in ("before-1", "before-2"):
        await kube.create(k.core(namespace, "pods"), _pod(name))
    changes, record = _recorder()
    w = PodWatcher(op_kube, summarize=summarize, on_change=record, namespace=namespace)
    async with watching(w):
        assert _names(w) == {"before-1", "before-2"}
        assert w.stats.lists == 1
        # Created after the listing: seen on the watch, and made Ready by the kubelet.
        await kube.create(k.core(namespace, "pods"), _pod("after", "registry.local/app:crash"))
        await _until(lambda: "after" in _names(w), "the new Pod in the cache")
        await _until(
            lambda: any(s.name == "after" and s.restarts >= 2 for s in w.items.values()),
            "the crash loop's restarts counted",
        )
        added = [new for old, new in changes if old is None and new and new.name == "after"]
        assert len(added) == 1
        assert added[0].namespace == namespace
        grown = [
            (old, new)
            for old, new in changes
            if old is not None and new is not None and new.name == "after"
        ]
        assert grown
        assert all(o.uid == n.uid and o != n for o, n in grown)
        await kube.delete(k.core(namespace, "pods", "before-1"))
        await _until(lambda: _names(w) == {"before-2", "after"}, "the deleted Pod gone")
        deleted = [old for old, new in changes if new is None]
        assert [d.name for d in deleted if d] == ["before-1"]
        # One listing for all of it: the rest came from the watch.
        assert w.stats.lists == 1
        assert w.stats.events >= 3


async def test_watch_resumes_after_the_server_ends_it(
    kube: k.Kube, op_kube: k.Kube, namespace: str
) -> None:
    # The server ends each watch after a second; every resume continues where it was.
    w = PodWatcher(op_kube, summarize=summarize, namespace=namespace, watch_timeout=1)
    async with watching(w):
        await _until(lambda: w.stats.watches >= 3, "two watches ended and resumed")
        for i in range(3):
            await kube.create(k.core(namespace, "pods"), _pod(f"late-{i}"))
            await asyncio.sleep(1.2)  # spread over several watches
        await _until(lambda: _names(w) == {"late-0", "late-1", "late-2"}, "every Pod seen")
        assert w.stats.lists == 1
        assert w.stats.gone == 0


async def test_too_old_resource_version_relists_and_loses_nothing(
    cluster: Cluster, kube: k.Kube, op_kube: k.Kube, namespace: str
) -> None:
    for name in ("stays", "deleted-meanwhile", "changed-meanwhile"):
        await kube.create(k.core(namespace, "pods"), _pod(name))
    w = PodWatcher(op_kube, summarize=summarize, namespace=namespace)
    async with watching(w):
        await _until(
            lambda: len(w.items) == 3 and all(s.ready for s in w.items.values()),
            "three Ready Pods",
        )
    # Not watching: the world moves on.
    ready_before = {s.name: s for s in w.items.values()}
    await kube.delete(k.core(namespace, "pods", "deleted-meanwhile"))
    await kube.create(k.core(namespace, "pods"), _pod("created-meanwhile"))
    await kube.patch(
        k.core(namespace, "pods", "changed-meanwhile"),
        {"metadata": {"finalizers": ["selfheal.test/hold"]}},
    )
    await kube.delete(k.core(namespace, "pods", "changed-meanwhile"))

    async def gone() -> bool:
        pods = await kube.get(k.core(namespace, "pods"))
        return all(p["metadata"]["name"] != "deleted-meanwhile" for p in pods["items"])

    await eventually(gone, timeout=30, what="the deletion done")
    changes, record = _recorder()
    w.on_change = record
    # A restarted API server's watch cache starts at the current resourceVersion: the
    # watcher's (older) one is answered with 410 Gone, as after a compaction.
    stopped_at = w.resource_version
    cluster.restart_apiserver()  # from the main thread (the test's loop runs there)
    try:
        async with watching(w):
            await _until(lambda: w.stats.lists == 2, "a relist after 410 Gone")
            assert w.stats.gone == 1
            assert int(w.resource_version) > int(stopped_at)
            assert _names(w) == {"stays", "changed-meanwhile", "created-meanwhile"}
            by_name = {s.name: s for s in w.items.values()}
            assert by_name["changed-meanwhile"].deleting
            reported = {
                (old.name if old else None, new.name if new else None) for old, new in changes
            }
            assert ("deleted-meanwhile", None) in reported
            assert ("changed-meanwhile", "changed-meanwhile") in reported
            assert any(o is None and n == "created-meanwhile" for o, n in reported)
            # What did not change is not reported again.
            assert ("stays", "stays") not in reported
            assert by_name["stays"] == ready_before["stays"]
    finally:
        await kube.patch(
            k.core(namespace, "pods", "changed-meanwhile"), {"metadata": {"finalizers": None}}
        )


async def test_paged_listing_with_small_pages(
    kube: k.Kube, op_kube: k.Kube, namespace: str
) -> None:
    names = {f"paged-{i}" for i in range(7)}
    for name in sorted(names):
        await kube.create(k.core(namespace, "pods"), _pod(name))
    w = PodWatcher(op_kube, summarize=summarize, namespace=namespace, page_limit=2)
    async with watching(w):
        assert _names(w) == names
        assert w.stats.pages == 4  # 2 + 2 + 2 + 1
        assert w.stats.ahead == 3  # each next page asked for before its predecessor decoded
        assert all(s.namespace == namespace for s in w.items.values())


async def test_cluster_wide_watch_sees_every_namespace(
    kube: k.Kube, op_kube: k.Kube, namespace: str
) -> None:
    w = PodWatcher(op_kube, summarize=summarize, page_limit=50)
    async with watching(w):
        await kube.create(k.core(namespace, "pods"), _pod("anywhere"))
        await _until(
            lambda: any(
                s.namespace == namespace and s.name == "anywhere" for s in w.items.values()
            ),
            "a Pod of a namespace created after the listing",
        )


async def test_a_shard_watches_cluster_wide_and_keeps_only_its_namespaces(
    kube: k.Kube, op_kube: k.Kube, namespace: str, cluster: Cluster
) -> None:
    shard = Shard(index=shard_of(namespace, 2), total=2)
    other = next(n for n in (f"{namespace}-x{i}" for i in range(50)) if not shard.owns(n))
    cluster.api(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
    )
    try:

        async def default_account() -> bool:
            try:
                return bool(await kube.get(k.core(other, "serviceaccounts", "default")))
            except k.NotFound:
                return False  # Pods are refused until the controller-manager made it

        await eventually(default_account, timeout=30, what=f"{other}'s default ServiceAccount")
        await kube.create(k.core(namespace, "pods"), _pod("mine-1"))
        await kube.create(k.core(other, "pods"), _pod("theirs-1"))
        summarised: list[str] = []

        def summarize_counted(obj: Mapping[str, Any]) -> PodSummary:
            summarised.append(obj["metadata"]["namespace"])
            return summarize(obj)

        w = PodWatcher(op_kube, summarize=summarize_counted, keep=shard.owns)  # cluster-wide
        async with watching(w):
            assert "mine-1" in _names(w)
            assert "theirs-1" not in _names(w)
            await kube.create(k.core(other, "pods"), _pod("theirs-2"))
            await kube.create(k.core(namespace, "pods"), _pod("mine-2"))
            await _until(lambda: "mine-2" in _names(w), "this shard's new Pod")
            assert all(shard.owns(s.namespace) for s in w.items.values())
            assert all(shard.owns(ns) for ns in summarised)  # never summarised, not just hidden
            assert w.stats.dropped >= 2  # theirs-1 listed, theirs-2 (and its changes) watched
    finally:
        cluster.api("DELETE", f"/api/v1/namespaces/{other}")
