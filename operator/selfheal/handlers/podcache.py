"""The operator's Pod cache: summaries filed by (namespace, controller owner).

Fed by the light watchers of ``selfheal.clients.podwatch`` (one per watched namespace,
or one cluster-wide), never by kopf: no Pod body outlives its summary. Read like the
kopf index it replaces (``get((namespace, owner), ())`` gives that owner's Pods), so
the lookups over ReplicaSets stay as they were; a StatefulSet or DaemonSet owner files
its Pods the same way (the summary carries the owner's kind and revision label).

It also counts, per owner, the Pods that are not Ready, so the policy timer can find
the workloads whose crash-loop verdict may move with time alone without looking at
every Pod.

:class:`Coalescer` turns a burst of Pod changes of one owner into one evaluation (and
one more when changes arrive while it runs), as a controller-runtime work queue does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from selfheal.clients import kube as k
from selfheal.clients.podwatch import PodWatcher, scopes
from selfheal.detect.crashloop import PodSummary, summarize

logger = logging.getLogger(__name__)

Key = tuple[str, str, str]
"""(namespace, controller owner kind, owner name): a StatefulSet, a DaemonSet and a
ReplicaSet may share a name in one namespace, and each is judged on its own Pods."""
OnChange = Callable[[PodSummary | None, PodSummary | None], None]


class PodCache:
    def __init__(self) -> None:
        self._by_owner: dict[Key, dict[str, PodSummary]] = {}
        self._unready: dict[str, dict[str, int]] = {}
        self.watchers: list[PodWatcher[Any]] = []
        """Every light watcher the operator's caches hang on (Pods, and the ReplicaSets and
        Deployments that own them): readiness waits for all."""

    # --- reads (the shape of the kopf index it replaces) ---------------------------------

    def get(self, key: Key, default: Collection[PodSummary] = ()) -> Collection[PodSummary]:
        pods = self._by_owner.get(key)
        return pods.values() if pods else default

    def __len__(self) -> int:
        return sum(len(p) for p in self._by_owner.values())

    def owners(self, namespace: str) -> list[tuple[str, str]]:
        """(kind, name) of every Pod owner in ``namespace``."""
        return [(kind, owner) for ns, kind, owner in self._by_owner if ns == namespace]

    def unready_owners(self, namespace: str) -> Collection[str]:
        """Names of the owners in ``namespace`` with at least one Pod that is not Ready."""
        return self._unready.get(namespace, {}).keys()

    @property
    def synced(self) -> bool:
        """Every watcher has its first listing in (also when there is nothing to list)."""
        return bool(self.watchers) and all(w.synced for w in self.watchers)

    # --- writes -----------------------------------------------------------------------

    def apply(self, old: PodSummary | None, new: PodSummary | None) -> None:
        """File one change (``old`` None: a new Pod; ``new`` None: a deleted one)."""
        if old is not None:
            key = (old.namespace, old.owner_kind, old.owner)
            pods = self._by_owner.get(key)
            if pods is not None:
                pods.pop(old.uid, None)
                if not pods:
                    del self._by_owner[key]
            if old.owner and not old.ready:
                self._count(old.namespace, old.owner, -1)
        if new is not None and new.owner:
            self._by_owner.setdefault((new.namespace, new.owner_kind, new.owner), {})[new.uid] = new
            if not new.ready:
                self._count(new.namespace, new.owner, +1)

    def _count(self, namespace: str, owner: str, delta: int) -> None:
        counts = self._unready.setdefault(namespace, {})
        n = counts.get(owner, 0) + delta
        if n > 0:
            counts[owner] = n
        else:
            counts.pop(owner, None)
            if not counts:
                del self._unready[namespace]

    def watch(
        self,
        kube: k.Kube,
        *,
        namespaces: tuple[str, ...],
        on_change: OnChange,
        keep: Callable[[str], bool] | None = None,
    ) -> list[Coroutine[Any, Any, None]]:
        """The watchers' loops (to run as tasks); each change is filed, then passed on.
        ``keep(namespace)``: this shard's namespaces (others' Pods are never summarised)."""

        def changed(old: PodSummary | None, new: PodSummary | None) -> None:
            self.apply(old, new)
            on_change(old, new)

        self.watchers = [
            PodWatcher(kube, summarize=summarize, on_change=changed, namespace=ns, keep=keep)
            for ns in scopes(namespaces)
        ]
        return [w.run() for w in self.watchers]


class Index:
    """What a kopf index offers, for caches fed by the light watchers: ``get(key, ())``
    gives the values filed under ``key``; each object files under its own identity, so
    its next version replaces (or its deletion removes) exactly its entries."""

    def __init__(self) -> None:
        self._store: dict[Hashable, dict[Hashable, Any]] = {}

    def get(self, key: Hashable, default: Collection[Any] = ()) -> Collection[Any]:
        store = self._store.get(key)
        return store.values() if store else default

    def add(self, key: Hashable, ident: Hashable, value: Any) -> None:
        self._store.setdefault(key, {})[ident] = value

    def discard(self, key: Hashable, ident: Hashable) -> None:
        store = self._store.get(key)
        if store is not None:
            store.pop(ident, None)
            if not store:
                del self._store[key]

    def __len__(self) -> int:
        return sum(len(s) for s in self._store.values())


K = TypeVar("K", bound=Hashable)


class Coalescer(Generic[K]):
    """``work(key)`` for each key asked for, one run per key at a time."""

    def __init__(self, work: Callable[[K], Awaitable[None]]) -> None:
        self._work = work
        self._running: dict[K, asyncio.Task[None]] = {}
        self._again: set[K] = set()
        self.runs = 0
        """Evaluations started (a burst of asks for one key is one or two)."""

    def want(self, key: K) -> None:
        if key in self._running:
            self._again.add(key)  # changed while it runs: once more after it
            return
        self._running[key] = asyncio.get_running_loop().create_task(
            self._run(key), name=f"evaluate {key}"
        )

    async def _run(self, key: K) -> None:
        try:
            while True:
                self._again.discard(key)
                self.runs += 1
                try:
                    await self._work(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("evaluating %s failed; the next change retries it", key)
                if key not in self._again:
                    return
        finally:
            del self._running[key]

    @property
    def pending(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["Coalescer", "Index", "PodCache"]
