"""Reconciling stored Remediations, level-triggered, from the records the watch holds.

``reconcile_policy``: each served policy's timer passes over its records: time moves
every open incident on (verify windows, deadlines), due ticket and notification work
runs, scale steps are reverted, and an incident whose workload is gone ends ``Closed``
with reason ``WorkloadDeleted``.

``run``: the operator-wide pass over the records no policy's timer covers:

- open records whose HealingPolicy is gone end ``Closed`` with reason
  ``PolicyDeleted`` (confirmed with a GET, so a policy not loaded yet after a restart
  is never mistaken for a deleted one), which releases their guardrail slots;
- finished records of such policies still tell their ticket that the incident ended.

It also turns the operator Ready once kopf's caches and the Pod cache are filled, even
when there is nothing to watch, so a fresh install becomes Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from selfheal.detect.signal import WorkloadRef
from selfheal.handlers import summaries, watch
from selfheal.handlers.runtime import Runtime
from selfheal.policy.model import HealingPolicy
from selfheal.remediation import machine, silences
from selfheal.remediation.acting import reverts_due
from selfheal.remediation.facts import Facts
from selfheal.remediation.records import Record

logger = logging.getLogger(__name__)

PERIOD = 10.0
"""Seconds between two passes when no record changed (a change wakes it at once)."""
READY_POLL = 0.05
"""Seconds between two looks at kopf's caches while they fill (a look is a counter read:
a long period only delays readiness)."""
POLICY_CHECK = 60.0
"""Seconds an answer "this policy exists" is trusted before it is asked again."""


async def await_ready(rt: Runtime) -> None:
    """Ready once every index and the Pod cache are filled: a decision is possible from
    then on. Then every covered workload is judged once (its Pods arrived before kopf's
    indexes could place them)."""
    await asyncio.gather(*(w.wait_synced() for w in rt.pods.watchers))
    # kopf creates its indexed-set after start-up and signals nothing we can await.
    while not (watch.caches_synced() and rt.pods.synced):  # noqa: ASYNC110
        await asyncio.sleep(READY_POLL)
    rt.health.set(ready=True, reason="caches synced")
    rt.judging = True  # changes from now on queue their owner; evaluate_all, what came before
    watch.evaluate_all(rt)


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
    store = rt.indexes["remediations"]
    now = time.time()
    for namespace in list(store.keys()):
        records = watch.records_of(store, namespace)
        facts = Facts(records=records)
        for rec in records:
            key = (namespace, rec.policy)
            if key in rt.policies or rec.state is None:
                continue  # served: its own timer reconciles it
            if rec.final and not rec.work_pending():
                continue
            if rec.final or key in rt.invalid:
                # The policy exists but does not parse (its incidents wait for a fix),
                # or is gone: telling a filed ticket needs no policy.
                await watch.isolated(
                    rt.driver.work(namespace=namespace, name=rec.name, facts=facts, policy=None),
                    what=f"remediation {namespace}/{rec.name}",
                )
                continue
            if now < exists.get(key, 0.0) or await _policy_exists(kube, *key):
                exists.setdefault(key, now + POLICY_CHECK)
                continue
            await _end(rt, rec, machine.EndReason.POLICY_DELETED, facts, policy=None)
        for key in [k_ for k_, until in exists.items() if until < now]:
            del exists[key]


async def reconcile_policy(
    rt: Runtime,
    policy: HealingPolicy,
    *,
    remediations: Any,
    deployments: Any,
    rs_by_deployment: Any,
    statefulsets: Any = None,
    daemonsets: Any = None,
) -> None:
    """Time passes for every open incident of ``policy``, and every record with work
    due, open or not: all of it read from the stored status."""
    namespace = policy.namespace
    for rec in watch.records_of(remediations, namespace).of_policy(policy.name):
        silence_owed = rt.silencer is not None and silences.pending(rec.status)
        if rec.state is None or (rec.final and not _due(rec, policy) and not silence_owed):
            continue
        info = watch.find_workload(
            namespace,
            rec.workload_kind,
            rec.workload,
            deployments=deployments,
            statefulsets=statefulsets,
            daemonsets=daemonsets,
        )
        facts = watch.facts_for(
            namespace,
            info or _gone(rec),
            rt=rt,
            remediations=remediations,
            rs_by_deployment=rs_by_deployment,
        )
        what = f"remediation {namespace}/{rec.name}"
        gone = info is None or (bool(rec.workload_uid) and info.uid != rec.workload_uid)
        if gone and not rec.final:
            # The workload is gone (or was recreated): nothing left to heal or to file.
            await _end(rt, rec, machine.EndReason.WORKLOAD_DELETED, facts, policy=policy)
            continue
        ref = WorkloadRef(
            namespace=namespace,
            name=rec.workload,
            uid=info.uid if info else "",
            kind=rec.workload_kind,
        )
        await watch.isolated(
            rt.driver.handle(
                event=rec.approval_decision() or machine.Tick(),
                policy=policy,
                workload=ref,
                trigger=rec.trigger,
                facts=facts,
                name=rec.name,
            ),
            what=what,
        )
        if silence_owed and rt.silencer is not None:
            await watch.isolated(
                rt.silencer.reconcile(
                    namespace=namespace,
                    name=rec.name,
                    status=rec.status,
                    policy=policy,
                    now=time.time(),
                ),
                what=f"silence of {namespace}/{rec.name}",
            )


async def _end(
    rt: Runtime,
    rec: Record,
    reason: machine.EndReason,
    facts: Facts,
    *,
    policy: HealingPolicy | None,
) -> None:
    await watch.isolated(
        rt.driver.end(
            namespace=rec.namespace, name=rec.name, reason=reason, facts=facts, policy=policy
        ),
        what=f"remediation {rec.namespace}/{rec.name}",
    )


def _due(rec: Record, policy: HealingPolicy) -> bool:
    """A finished record still has ticket work or scale reverts to do."""
    return rec.work_pending() or reverts_due(rec.state, policy)


def _gone(rec: Record) -> summaries.DeploymentInfo:
    """What is known of a workload the cache no longer holds."""
    return summaries.DeploymentInfo(
        name=rec.workload,
        uid=rec.workload_uid,
        labels=(),
        desired=0,
        available=0,
        kind=rec.workload_kind,
    )


async def _policy_exists(kube: k.Kube, namespace: str, name: str) -> bool:
    try:
        await kube.get(k.group(API_VERSION, namespace, "healingpolicies", name))
    except k.NotFound:
        return False
    return True


__all__ = ["await_ready", "reconcile_policy", "run"]
