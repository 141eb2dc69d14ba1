"""Gather ``DependencyFacts`` for the machine, off the decision path.

The driver decides under a per-namespace lock, and the policy's pass feeds one
incident after the other: a log read and a few lists awaited there would hold back
every other incident of the namespace. So ``facts()`` never waits: it answers from a
cache and, when the entry is missing or older than ``ttl``, starts one background
gathering for that workload (at most ``concurrency`` at once, each bounded by
``timeout``). Until the first answer the machine holds the step (``Check``); the next
pass (each policy's timer, every 2 s) decides with the facts.

A gathering never raises: an error becomes an ``unknown`` fact, which never counts as
healthy (see ``dependency_gate``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from selfheal.clients import kube as k
from selfheal.detect.signal import WorkloadRef
from selfheal.evidence.collect import dependency_report
from selfheal.remediation.dependency_gate import DependencyFacts, facts_from

logger = logging.getLogger(__name__)

TTL = 10.0
"""Seconds before cached facts are gathered again (while a step may start)."""
TIMEOUT = 5.0
"""Seconds for each API read of one gathering."""
MAX_ENTRIES = 1024


class DependencyProbe:
    def __init__(
        self,
        *,
        kube: k.Kube,
        clock: Callable[[], float] = time.time,
        ttl: float = TTL,
        timeout: float = TIMEOUT,
        concurrency: int = 4,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.ttl = ttl
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._facts: dict[tuple[str, str], DependencyFacts] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def facts(
        self,
        workload: WorkloadRef,
        *,
        since: float,
        pod: str | None = None,
        container: str | None = None,
    ) -> DependencyFacts | None:
        """The latest facts for ``workload`` (``None``: none yet); gathered again in the
        background when older than ``ttl`` or than ``since``."""
        key = (workload.namespace, workload.name)
        cached = self._facts.get(key)
        stale = cached is None or cached.at < since or self.clock() - cached.at >= self.ttl
        if stale and key not in self._tasks:
            task = asyncio.create_task(self._gather(key, pod, container), name=f"deps {key}")
            self._tasks[key] = task
            task.add_done_callback(lambda _: self._tasks.pop(key, None))
        return cached

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _gather(self, key: tuple[str, str], pod: str | None, container: str | None) -> None:
        namespace, name = key
        async with self._slots:
            try:
                report = await asyncio.wait_for(
                    dependency_report(
                        kube=self.kube,
                        namespace=namespace,
                        deployment=name,
                        pod=pod,
                        container=container,
                        timeout=self.timeout,
                    ),
                    timeout=4 * self.timeout,
                )
                facts = facts_from(report, at=self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Never raised into the decision: an unreadable dependency is "unknown".
                logger.warning("dependencies of %s/%s not checked: %s", namespace, name, e)
                facts = DependencyFacts(
                    at=self.clock(), unknown=(f"dependency check: {type(e).__name__}: {e}",)
                )
        if facts.failing or facts.unknown:
            logger.info(
                "dependencies of %s/%s: %s",
                namespace,
                name,
                "; ".join(facts.failing + facts.unknown),
            )
        self._facts[key] = facts
        if len(self._facts) > MAX_ENTRIES:  # bounded: forget the oldest half
            for old in sorted(self._facts, key=lambda k_: self._facts[k_].at)[: MAX_ENTRIES // 2]:
                del self._facts[old]


__all__ = ["TIMEOUT", "TTL", "DependencyProbe"]
