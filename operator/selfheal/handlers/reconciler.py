"""The operator-wide pass over stored Remediations that no policy's timer covers.

Each served policy's timer reconciles its own records (``policies.tick``). What is
left is found here, level-triggered, from the records kopf's index holds:

- open records whose HealingPolicy is gone end ``Closed`` with reason
  ``PolicyDeleted`` (confirmed with a GET, so a policy not loaded yet after a restart
  is never mistaken for a deleted one), which releases their guardrail slots;
- finished records of such policies still tell their ticket that the incident ended.

It also turns the operator Ready once kopf's caches are filled, even when there is
nothing to watch, so a fresh install becomes Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from selfheal import API_VERSION
from selfheal.clients import kube as k
from selfheal.handlers import policies, watch
from selfheal.handlers.runtime import Runtime
from selfheal.remediation import machine
from selfheal.remediation.driver import Facts

logger = logging.getLogger(__name__)

PERIOD = 10.0
"""Seconds between two passes when no record changed (a change wakes it at once)."""
READY_POLL = 0.5
"""Seconds between two looks at kopf's caches while they fill."""
POLICY_CHECK = 60.0
"""Seconds an answer "this policy exists" is trusted before it is asked again."""


async def await_ready(rt: Runtime) -> None:
    """Ready once every index is filled: a decision is possible from then on."""
    # kopf creates its indexed-set after start-up and signals nothing we can await.
    while not watch.caches_synced():  # noqa: ASYNC110
        await asyncio.sleep(READY_POLL)
    rt.health.set(ready=True, reason="caches synced")


async def run(rt: Runtime, kube: k.Kube) -> None:
    """Pass over orphaned records every ``PERIOD`` seconds, or sooner when woken."""
    exists: dict[tuple[str, str], float] = {}
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.wake.wait(), timeout=PERIOD)
        rt.wake.clear()
        if not rt.is_leader or "remediations" not in rt.indexes:
            continue
        await watch.isolated(reconcile_orphans(rt, kube, exists), what="the orphan pass")


async def reconcile_orphans(
    rt: Runtime, kube: k.Kube, exists: dict[tuple[str, str], float]
) -> None:
    remediations = rt.indexes["remediations"]
    now = time.time()
    for namespace, store in list(remediations.items()):
        for rec in list(store):
            spec, status = rec["spec"], rec["status"]
            key = (namespace, str(spec.get("policy")))
            if key in rt.policies or not status.get("phase"):
                continue  # served: its own timer reconciles it
            final = status.get("phase") in policies.FINAL
            if final and not policies.work_pending(status):
                continue
            name = str(rec["metadata"]["name"])
            facts = Facts(records=list(store))
            if final or key in rt.invalid:
                # The policy exists but does not parse (its incidents wait for a fix),
                # or is gone: telling a filed ticket needs no policy.
                await watch.isolated(
                    rt.driver.work(namespace=namespace, name=name, facts=facts, policy=None),
                    what=f"remediation {namespace}/{name}",
                )
                continue
            if now < exists.get(key, 0.0) or await _policy_exists(kube, *key):
                exists.setdefault(key, now + POLICY_CHECK)
                continue
            await watch.isolated(
                rt.driver.end(
                    namespace=namespace,
                    name=name,
                    reason=machine.EndReason.POLICY_DELETED,
                    facts=facts,
                    policy=None,
                ),
                what=f"remediation {namespace}/{name}",
            )
        for key in [k_ for k_, until in exists.items() if until < now]:
            del exists[key]


async def _policy_exists(kube: k.Kube, namespace: str, name: str) -> bool:
    try:
        await kube.get(k.group(API_VERSION, namespace, "healingpolicies", name))
    except k.NotFound:
        return False
    return True


__all__ = ["await_ready", "run"]
