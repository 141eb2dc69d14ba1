"""HealingPolicy handlers: parse on every change, keep status current, drive time.

A policy that does not parse is marked ``Ready=False`` with the reason and the
field; it is not served, and every other policy goes on. The timer evaluates the
policy's Prometheus triggers when due, ticks its open incidents (verify windows,
deadlines, ticket retries), refreshes crash-loop verdicts of workloads with open
incidents (time alone can heal: restarts leave the window), and writes status only
when it changed.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import kopf

from selfheal import GROUP, VERSION, metrics
from selfheal.clients.jira import JiraError, JiraRejected
from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.handlers import alert_triggers, reconciler, summaries, watch
from selfheal.handlers.podcache import Index
from selfheal.handlers.runtime import Runtime
from selfheal.policy import conditions as c
from selfheal.policy.model import HealingPolicy, Mode, PolicyError
from selfheal.policy.parse import parse
from selfheal.policy.selector import selector_matches

logger = logging.getLogger(__name__)

PRUNE_EVERY = 30.0
"""Seconds between two retention sweeps of one namespace's Remediations."""
TICK = 2.0
"""Seconds between two timer runs of one policy: the resolution of verify windows."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(
    patch: kopf.Patch,
    status: kopf.Status,
    *,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    type: str = c.READY,
) -> None:
    before = list(patch.status.get("conditions") or status.get("conditions") or [])
    conditions = c.set_condition(
        before,
        type=type,
        status=c.TRUE if ok else c.FALSE,
        reason=reason,
        message=message,
        generation=generation,
        now=_now(),
    )
    if conditions != list(status.get("conditions") or []):
        patch.status["conditions"] = conditions
    if status.get("observedGeneration") != generation:
        patch.status["observedGeneration"] = generation


def _serving(policy: HealingPolicy, *, workloads: int | None) -> tuple[str, str]:
    """Reason and message of Ready=True; ``workloads`` None: not counted yet."""
    if policy.mode is Mode.PAUSED:
        return c.PAUSED, "spec.mode is Paused: nothing is detected or acted on"
    if workloads == 0:
        return c.NO_WORKLOADS, "spec.target.selector matches no Deployment in this namespace"
    on = "" if workloads is None else f" on {workloads} workload(s)"
    return c.ACCEPTED, f"serving {len(policy.triggers)} trigger(s){on} in mode {policy.mode}"


def _count_ready(rt: Runtime) -> None:
    metrics.POLICIES.labels("true").set(len(rt.policies))
    metrics.POLICIES.labels("false").set(len(rt.invalid))


@kopf.on.resume(GROUP, VERSION, "healingpolicies", when=watch.in_shard)
@kopf.on.create(GROUP, VERSION, "healingpolicies", when=watch.in_shard)
@kopf.on.update(GROUP, VERSION, "healingpolicies", field="spec", when=watch.in_shard)  # type: ignore[arg-type]
async def load(
    body: kopf.Body,
    namespace: str,
    name: str,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    rt: Runtime = memo["runtime"]
    watch.drop_stale_finalizers(body, patch, memo)
    key = (namespace, name)
    generation = int(body.get("metadata", {}).get("generation") or 0)
    try:
        policy = parse(body)
    except PolicyError as e:
        rt.policies.pop(key, None)
        rt.invalid[key] = str(e)
        logger.warning("HealingPolicy %s/%s is not served: %s", namespace, name, e)
        _ready(
            patch, status, ok=False, reason=c.INVALID_SPEC, message=str(e), generation=generation
        )
        kopf.warn(body, reason=c.INVALID_SPEC, message=str(e))
        _count_ready(rt)
        return
    rt.invalid.pop(key, None)
    logger.info(
        "HealingPolicy %s/%s served: mode %s, %d trigger(s), %d step(s)",
        namespace,
        name,
        policy.mode,
        len(policy.triggers),
        len(policy.remediation.steps),
    )
    old = rt.policies.get(key)
    rt.policies[key] = policy
    if old is not None:
        for trig in old.triggers:
            if policy.trigger(trig.name) != trig:
                rt.prometheus.forget(namespace=namespace, policy=name, trigger=trig.name)
    reason, message = _serving(policy, workloads=None)
    _ready(patch, status, ok=True, reason=reason, message=message, generation=generation)
    _count_ready(rt)


@kopf.on.delete(GROUP, VERSION, "healingpolicies", optional=True, when=watch.in_shard)  # type: ignore[arg-type]
async def unload(
    namespace: str, name: str, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    rt: Runtime = memo["runtime"]
    watch.drop_stale_finalizers(body, patch, memo)  # or the deletion would wait for them
    rt.policies.pop((namespace, name), None)
    rt.invalid.pop((namespace, name), None)
    rt.prometheus.forget(namespace=namespace, policy=name)
    _count_ready(rt)


@kopf.timer(GROUP, VERSION, "healingpolicies", interval=TICK, sharp=True, when=watch.in_shard)  # type: ignore[arg-type]
async def tick(
    namespace: str,
    name: str,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    remediations: kopf.Index[Any, Any],
    statefulsets: kopf.Index[Any, Any],
    daemonsets: kopf.Index[Any, Any],
    controller_revisions: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    rt: Runtime = memo["runtime"]
    # kopf's indexes are live objects: Pod evaluations (not kopf handlers) read them.
    rt.indexes.update(
        remediations=remediations,
        statefulsets=statefulsets,
        daemonsets=daemonsets,
        controller_revisions=controller_revisions,
    )
    rs_by_deployment, deployments = rt.rs_by_deployment, rt.deployments
    policy = rt.policies.get((namespace, name))
    if policy is None or not rt.is_leader:
        return  # a standby evaluates nothing and writes nothing: the leader does
    now = time.time()
    workloads = _targets(rt, policy, deployments) + [
        info
        for info in watch.workload_infos(namespace, statefulsets, daemonsets)
        if policy in watch.matching_policies(rt, namespace, info)
    ]
    by_name = {w.name: w for w in workloads}
    trigger_status: list[dict[str, Any]] = []
    backend_problem: tuple[str, str] | None = None
    if policy.mode is not Mode.PAUSED:
        signals: list[tuple[HealingPolicy, Signal, summaries.DeploymentInfo]] = []
        for trigger in policy.triggers:
            if trigger.prometheus is None:
                continue
            key = (namespace, name, trigger.name)
            if now < rt.next_eval.get(key, 0.0):
                continue
            rt.next_eval[key] = now + trigger.prometheus.interval
            refs = [
                WorkloadRef(namespace=namespace, name=w.name, uid=w.uid, kind=w.kind)
                for w in workloads
            ]
            got = await rt.prometheus.evaluate(
                policy=policy, trigger=trigger, workloads=refs, now=now
            )
            for sig in got:
                metrics.SIGNALS.labels("prometheus", str(sig.health)).inc()
                signals.append((policy, sig, by_name[sig.workload.name]))
            problem = _backend_problem(got)
            if problem is not None:
                backend_problem = (problem[0], f"trigger {trigger.name}: {problem[1]}")
            trigger_status.append(_trigger_status(trigger.name, got))
        for alerted, got in await alert_triggers.signals(
            rt, policy, workloads, rs_by_deployment=rs_by_deployment, pods_by_rs=rt.pods, now=now
        ):
            signals.extend((policy, sig, by_name[sig.workload.name]) for sig in got)
            trigger_status.append(_trigger_status(alerted, got))
        # Crash-loop verdicts move with time too (a pull error past its grace, restarts
        # leaving the window): refresh workloads with open incidents or unready pods,
        # found from the Pod cache's count, not by looking at every workload's pods.
        # Every other change of a Pod is judged when it happens (watch.pod_changed).
        open_names = watch.records_of(remediations, namespace).open_workloads(policy.name)
        due = set(open_names)
        for owner in rt.pods.unready_owners(namespace):
            # A ReplicaSet's Pods count for its Deployment; a StatefulSet or DaemonSet
            # owns its Pods directly.
            deployment = watch.one(rt.rs_owner, (namespace, owner))
            due.add(str(deployment) if deployment is not None else owner)
        has_crash = any(t.crash_loop is not None for t in policy.triggers)
        for target in (by_name[n] for n in sorted(due) if n in by_name) if has_crash else ():
            pods = watch.workload_pods(
                namespace,
                target.name,
                rs_by_deployment=rs_by_deployment,
                pods_by_rs=rt.pods,
                kind=target.kind,
            )
            signals.extend(
                s
                for s in watch.crash_signals(rt, namespace, target, pods=pods, now=now)
                if s[0] is policy
            )
        await alert_triggers.poll_workloads(rt, policy, open_names, now=now)
        await watch.feed(rt, signals, remediations=remediations, rs_by_deployment=rs_by_deployment)
    if now >= rt.next_prune.get(namespace, 0.0):
        rt.next_prune[namespace] = now + min(PRUNE_EVERY, rt.settings.retention / 2)
        pruned = await rt.driver.prune(
            records=watch.records_of(remediations, namespace), retention=rt.settings.retention
        )
        if pruned:
            logger.info(
                "pruned %d remediation(s) older than the retention in %s", pruned, namespace
            )
    await reconciler.reconcile_policy(
        rt,
        policy,
        remediations=remediations,
        deployments=deployments,
        rs_by_deployment=rs_by_deployment,
        statefulsets=statefulsets,
        daemonsets=daemonsets,
    )
    if policy.remediation.jira is not None:
        ok, reason, message = await _check_jira(rt, policy.remediation.jira.project, now)
        _ready(
            patch,
            status,
            ok=ok,
            reason=reason,
            message=message,
            generation=policy.generation,
            type=c.ESCALATION_READY,
        )
    _write_status(
        patch,
        status,
        policy=policy,
        workloads=len(workloads),
        rt=rt,
        remediations=remediations,
        triggers=trigger_status,
        problem=backend_problem,
    )


def _targets(
    rt: Runtime, policy: HealingPolicy, deployments: Index
) -> list[summaries.DeploymentInfo]:
    """The Deployments the policy targets. Matched again only when a Deployment of its
    namespace changed (or the policy did), so an idle tick does not grow with them."""
    ns = policy.namespace
    store = deployments.get(ns, ())
    key = (rt.deployment_versions.get(ns, 0), len(store))
    cached = rt.targets.get((ns, policy.name))
    if cached is not None and cached[0] == key and cached[1] is policy:
        return cached[2]
    found = [
        info
        for info in store
        if policy.target.kind == info.kind and selector_matches(policy.target, dict(info.labels))
    ]
    rt.targets[(ns, policy.name)] = (key, policy, found)
    return found


JIRA_RECHECK = 300.0
"""Seconds a Jira project check is trusted (one check serves every policy of a project)."""


async def _check_jira(rt: Runtime, project: str, now: float) -> tuple[bool, str, str]:
    """Can tickets be filed in ``project``? Cached per project for ``JIRA_RECHECK``."""
    cached = rt.jira_checks.get(project)
    if cached is not None and now - cached[0] < JIRA_RECHECK:
        return cached[1]
    jira = rt.driver.jira
    if jira is None:
        verdict = (
            False,
            c.JIRA_NOT_CONFIGURED,
            "spec.remediation.escalate.jira is set but the operator has no Jira URL "
            "(--jira-url / SELFHEAL_JIRA_URL, the chart's jira.url): escalations "
            "become Events only",
        )
    else:
        try:
            await jira.check(project=project)
            verdict = (True, c.JIRA_REACHABLE, f"Jira project {project} can be filed in")
        except JiraRejected as e:
            verdict = (False, c.JIRA_REJECTED, str(e))
        except JiraError as e:
            verdict = (False, c.JIRA_UNAVAILABLE, f"Jira did not answer: {e}; retried")
    rt.jira_checks[project] = (now, verdict)
    return verdict


def _backend_problem(signals: list[Signal]) -> tuple[str, str] | None:
    for sig in signals:
        if sig.health is Health.UNKNOWN and sig.cause in ("BackendUnavailable", "QueryFailed"):
            return sig.cause, sig.detail
    return None


def _trigger_status(trigger: str, signals: list[Signal]) -> dict[str, Any]:
    worst = Health.HEALTHY
    reason, message = "", ""
    for sig in signals:
        if sig.health is Health.UNHEALTHY or (
            sig.health is Health.UNKNOWN and worst is Health.HEALTHY
        ):
            worst, reason, message = sig.health, sig.cause, sig.detail
    if not signals:
        worst, reason, message = Health.UNKNOWN, "NoWorkloads", "no workload matches the selector"
    return {
        "name": trigger,
        "health": str(worst),
        "reason": reason or "Healthy",
        "message": message[:512],
        "lastEvaluated": _now(),
    }


def _write_status(
    patch: kopf.Patch,
    status: kopf.Status,
    *,
    policy: HealingPolicy,
    workloads: int,
    rt: Runtime,
    remediations: kopf.Index[Any, Any],
    triggers: list[dict[str, Any]],
    problem: tuple[str, str] | None,
) -> None:
    records = watch.records_of(remediations, policy.namespace)
    active = records.active(policy.name)
    outcome = records.last_outcome(policy.name)
    if status.get("workloads") != workloads:
        patch.status["workloads"] = workloads
    if status.get("activeRemediations") != active:
        patch.status["activeRemediations"] = active
    recent = list(rt.recent.get((policy.namespace, policy.name), ()))
    if recent and status.get("recentSignals") != recent:
        patch.status["recentSignals"] = recent
    if outcome and status.get("lastOutcome") != outcome:
        patch.status["lastOutcome"] = outcome
    if triggers:
        old = {t.get("name"): t for t in status.get("triggers") or []}
        merged = dict(old)
        changed = False
        for t in triggers:
            prev = old.get(t["name"]) or {}
            if (prev.get("health"), prev.get("reason")) != (t["health"], t["reason"]):
                changed = True
            merged[t["name"]] = t
        if changed:
            patch.status["triggers"] = list(merged.values())
    gen = policy.generation
    if problem is not None:
        _ready(patch, status, ok=False, reason=problem[0], message=problem[1], generation=gen)
    else:
        reason, message = _serving(policy, workloads=workloads)
        _ready(patch, status, ok=True, reason=reason, message=message, generation=gen)
