"""Kubernetes Events about incidents: posted off the decision path, rate-limited."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from selfheal.clients import kube as k

logger = logging.getLogger(__name__)


def obj_ref(kind: str, api: str, namespace: str, name: str, uid: str = "") -> dict[str, str]:
    """An Event's ``involvedObject``."""
    ref = {"kind": kind, "apiVersion": api, "namespace": namespace, "name": name}
    if uid:
        ref["uid"] = uid
    return ref


class EventRecorder:
    """Kubernetes Events, rate-limited so an incident cannot flood the namespace.

    The same (object, reason, message) is posted at most once per ``window`` seconds;
    at most ``burst`` Events per ``window`` per namespace in all.
    """

    def __init__(
        self,
        *,
        kube: k.Kube,
        clock: Callable[[], float] = time.time,
        window: float = 60.0,
        burst: int = 30,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.window = window
        self.burst = burst
        self._seen: dict[tuple[str, str, str], float] = {}
        self._recent: dict[str, list[float]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.suppressed = 0

    def allow(self, *, namespace: str, key: tuple[str, str, str]) -> bool:
        now = self.clock()
        if now - self._seen.get(key, -1e18) < self.window:
            return False
        recent = [t for t in self._recent.get(namespace, []) if now - t < self.window]
        if len(recent) >= self.burst:
            self._recent[namespace] = recent
            return False
        recent.append(now)
        self._recent[namespace] = recent
        self._seen[key] = now
        if len(self._seen) > 4096:  # bounded memory: forget the oldest half
            for old in sorted(self._seen, key=self._seen.__getitem__)[:2048]:
                del self._seen[old]
        return True

    def emit_soon(
        self,
        *,
        namespace: str,
        involved: Sequence[Mapping[str, str]],
        reason: str,
        message: str,
        type: str,
    ) -> None:
        """Post in a background task; ``drain`` waits for the ones in flight."""
        task = asyncio.create_task(
            self.emit(
                namespace=namespace, involved=involved, reason=reason, message=message, type=type
            )
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def emit(
        self,
        *,
        namespace: str,
        involved: Sequence[Mapping[str, str]],
        reason: str,
        message: str,
        type: str,
    ) -> None:
        stamp = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        for obj in involved:
            key = (f"{obj['kind']}/{obj['name']}", reason, message)
            if not self.allow(namespace=namespace, key=key):
                self.suppressed += 1
                continue
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{obj['name'][:200]}.", "namespace": namespace},
                "involvedObject": dict(obj),
                "reason": reason,
                "message": message[:1024],
                "type": type,
                "source": {"component": "selfheal"},
                "reportingComponent": "selfheal.dev/operator",
                "reportingInstance": "selfheal",
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            try:
                await self.kube.create(k.core(namespace, "events"), body)
            except k.KubeError as e:
                # Events are best effort: never let them fail a remediation.
                logger.warning("event %s on %s not posted: %s", reason, obj["name"], e)


__all__ = ["EventRecorder", "obj_ref"]
