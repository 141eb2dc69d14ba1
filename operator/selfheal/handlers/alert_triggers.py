"""A policy's alert triggers, evaluated on its timer from what the receiver has heard.

The verdicts are pure (``selfheal.detect.alerts.evaluate``); this only looks up the
owners of pods that alerts name (through the watch caches) and hands back Signals.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence

from selfheal import metrics
from selfheal.clients.alertmanager import AlertmanagerError
from selfheal.detect import alerts
from selfheal.detect.signal import Signal, WorkloadRef
from selfheal.handlers import summaries, watch
from selfheal.handlers.podcache import Index, PodCache
from selfheal.handlers.runtime import Runtime
from selfheal.policy.model import HealingPolicy, Trigger

logger = logging.getLogger(__name__)


def _pod_owners(
    namespace: str,
    workloads: Sequence[summaries.DeploymentInfo],
    wanted: set[tuple[str, str]],
    *,
    rs_by_deployment: Index,
    pods_by_rs: PodCache,
) -> dict[tuple[str, str], WorkloadRef]:
    """(namespace, pod) -> its Deployment, for the pods some alert names."""
    if not any(ns == namespace for ns, _ in wanted):
        return {}
    out: dict[tuple[str, str], WorkloadRef] = {}
    for info in workloads:
        pods = watch.workload_pods(
            namespace, info.name, rs_by_deployment=rs_by_deployment, pods_by_rs=pods_by_rs
        )
        for pod in pods:
            if (namespace, pod.name) in wanted:
                out[(namespace, pod.name)] = WorkloadRef(
                    namespace=namespace, name=info.name, uid=info.uid
                )
    return out


POLL_EVERY = 10.0
"""Seconds between two looks at Alertmanager's own list of a trigger's alerts."""


async def _poll(rt: Runtime, policy: HealingPolicy, trigger: Trigger, now: float) -> None:
    """With ``--alertmanager-url``, ask Alertmanager which of the trigger's alerts it holds:
    a silenced alert's resolution is never notified, and after a restart this answers at
    once instead of at the next resend. Errors leave the book as the webhook made it."""
    if rt.silencer is None or trigger.alert is None:
        return
    key = (policy.namespace, policy.name, trigger.name)
    if now < rt.next_eval.get(key, 0.0):
        return
    rt.next_eval[key] = now + POLL_EVERY
    wanted = {**trigger.alert.matchers, "alertname": trigger.alert.alertname}
    try:
        got = await rt.silencer.alertmanager.alerts(matchers=wanted)
    except AlertmanagerError as e:
        logger.warning("Alertmanager's alerts for trigger %s unavailable: %s", trigger.name, e)
        return
    # Only this shard's: another shard's namespaces are its to judge (and to resolve).
    mine, _ = alerts.split_by_shard(alerts.from_api(got), rt.shard.owns)
    changed = rt.alerts.replace_matching(trigger.alert, mine, now=now)
    if changed:
        logger.info("Alertmanager lists %d %s alert(s); %d changed", len(got), wanted, changed)


async def signals(
    rt: Runtime,
    policy: HealingPolicy,
    workloads: Sequence[summaries.DeploymentInfo],
    *,
    rs_by_deployment: Index,
    pods_by_rs: PodCache,
    now: float,
) -> list[tuple[str, list[Signal]]]:
    """(trigger name, one Signal per workload) for each alert trigger of the policy."""
    triggers = [t for t in policy.triggers if t.alert is not None]
    if not triggers:
        return []
    rt.alerts.prune(now=now)
    for trigger in triggers:
        await _poll(rt, policy, trigger, now)
    known = rt.alerts.alerts()
    owners = _pod_owners(
        policy.namespace,
        workloads,
        alerts.pods_named(known),
        rs_by_deployment=rs_by_deployment,
        pods_by_rs=pods_by_rs,
    )
    refs = [WorkloadRef(namespace=policy.namespace, name=w.name, uid=w.uid) for w in workloads]
    out = []
    for trigger in triggers:
        assert trigger.alert is not None  # filtered above
        got = alerts.evaluate(
            policy=policy.name,
            trigger_name=trigger.name,
            trigger=trigger.alert,
            alerts=known,
            workloads=refs,
            pod_owners=owners,
            now=now,
            listed_at=rt.alerts.listed_at(trigger.alert),
        )
        for sig in got:
            metrics.SIGNALS.labels("alert", str(sig.health)).inc()
        out.append((trigger.name, got))
    return out


async def poll_workloads(
    rt: Runtime, policy: HealingPolicy, workloads: Iterable[str], *, now: float
) -> None:
    """``verify.alertResolved``: Alertmanager's list of the alerts about each workload
    with an open incident (silenced ones too: their resolution is never notified)."""
    if rt.silencer is None or not policy.remediation.verify_alert_resolved:
        return
    for name in sorted(workloads):
        key = (policy.namespace, policy.name, f"verify:{name}")
        if now < rt.next_eval.get(key, 0.0):
            continue
        rt.next_eval[key] = now + POLL_EVERY
        ref = WorkloadRef(namespace=policy.namespace, name=name)
        try:
            got = await rt.silencer.alertmanager.alerts(
                matchers={"namespace": policy.namespace, "deployment": name}
            )
        except AlertmanagerError as e:
            logger.warning("Alertmanager's alerts for %s unavailable: %s", ref, e)
            continue
        mine, _ = alerts.split_by_shard(alerts.from_api(got), rt.shard.owns)
        rt.alerts.replace_listed(mine, covers=functools.partial(_about, ref), now=now)


def _about(ref: WorkloadRef, alert: alerts.Alert) -> bool:
    return alerts.about(alert, ref)
