"""Acting on a workload: one step's action, its retries, and undoing scale steps.

The driver calls these after the decision to act is stored; what they did comes back
as an ``ActionDone`` event (or, for reverts, as the steps' ``change.reverted``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from selfheal import metrics
from selfheal.actions import restart as restart_action
from selfheal.actions import revisions as revisions_action
from selfheal.actions import rollback as rollback_action
from selfheal.actions import scale as scale_action
from selfheal.actions.result import ActionResult, failed
from selfheal.clients import kube as k
from selfheal.detect.signal import WorkloadRef
from selfheal.policy import ownership
from selfheal.policy.model import (
    HealingPolicy,
    Mode,
    RestartStep,
    RollbackStep,
    ScaleStep,
    Step,
    step_action,
)
from selfheal.remediation import machine
from selfheal.remediation.state import Phase, RemediationState, StepResult

logger = logging.getLogger(__name__)

ACT_RETRIES = (1.0, 2.0, 4.0)
"""Seconds before each retry of a step whose action failed transiently, sending nothing."""


async def act_once(
    kube: k.Kube,
    eff: machine.Act,
    *,
    policy: HealingPolicy,
    workload: WorkloadRef,
    cause: str,
    known_bad: frozenset[str],
    now: float,
    replicasets: Sequence[Mapping[str, Any]] | None = None,
    cached: Mapping[str, Any] | None = None,
) -> ActionResult:
    step: Step = eff.step
    ns, name = workload.namespace, workload.name
    try:
        if isinstance(step, RollbackStep) and workload.kind in ownership.KINDS:
            return await revisions_action.rollback_revision(
                kube=kube,
                kind=workload.kind,
                namespace=ns,
                name=name,
                to=step.to,
                known_bad=known_bad,
                allow_gitops=policy.guardrails.allow_gitops,
                dry_run=eff.dry_run,
                min_available=policy.guardrails.min_available,
            )
        if isinstance(step, RollbackStep):
            return await rollback_action.rollback(
                kube=kube,
                namespace=ns,
                name=name,
                to=step.to,
                known_bad=known_bad,
                allow_gitops=policy.guardrails.allow_gitops,
                dry_run=eff.dry_run,
                change_cause=cause,
                replicasets=replicasets,
                deployment=cached,
            )
        if isinstance(step, ScaleStep):
            return await scale_action.scale(
                kube=kube,
                namespace=ns,
                name=name,
                by=step.by,
                max_replicas=step.max,
                dry_run=eff.dry_run,
                kind=workload.kind,
            )
        if isinstance(step, RestartStep):
            return await restart_action.restart(
                kube=kube,
                namespace=ns,
                name=name,
                dry_run=eff.dry_run,
                requested_at=datetime.datetime.fromtimestamp(now, datetime.UTC),
                kind=workload.kind,
                min_available=policy.guardrails.min_available,
            )
    except k.KubeError as e:
        # Actions report API errors themselves; this is the last line of defence.
        return failed(step_action(step), e, doing=step_action(step), change={})
    raise TypeError(f"unknown step {step!r}")


async def act(
    kube: k.Kube,
    eff: machine.Act,
    *,
    policy: HealingPolicy,
    workload: WorkloadRef,
    record_name: str,
    known_bad: frozenset[str],
    clock: Callable[[], float],
    replicasets: Sequence[Mapping[str, Any]] | None = None,
    workload_body: Callable[[], Mapping[str, Any] | None] | None = None,
) -> ActionResult:
    """Run the step; retry it while it fails transiently before sending anything.

    ``replicasets`` and ``workload_body``: what the watch caches hold of the workload's
    ReplicaSets and of the workload (a rollback reads them instead of the API); a retry
    reads the API.
    """
    cause = f"selfheal: {policy.name}/{record_name} step {eff.index + 1} ({step_action(eff.step)})"

    async def once(*, cache: bool) -> ActionResult:
        return await act_once(
            kube,
            eff,
            policy=policy,
            workload=workload,
            cause=cause,
            known_bad=known_bad,
            now=clock(),
            replicasets=replicasets,
            cached=workload_body() if cache and workload_body is not None else None,
        )

    result = await once(cache=True)
    for delay in ACT_RETRIES:
        # A transient error before anything was sent (429, 5xx, a lost race): the same
        # step again, not the next one. Once a patch went out its outcome is ambiguous,
        # and the step's deadline decides instead.
        if result.ok or not result.retryable or result.change.get("patch"):
            break
        logger.info("%s: %s retried in %.0fs: %s", workload, record_name, delay, result.message)
        await asyncio.sleep(delay)
        result = await once(cache=False)
    return result


def action_done(eff: machine.Act, result: ActionResult) -> machine.ActionDone:
    return machine.ActionDone(
        index=eff.index,
        result=StepResult(str(result.result)),
        message=result.message,
        change=status_change(result.change),
    )


def _revert_wanted(rec: Any, policy: HealingPolicy) -> bool:
    steps = policy.remediation.steps
    spec = steps[rec.index] if rec.index < len(steps) else None
    return (
        isinstance(spec, ScaleStep)
        and spec.revert_after_recovery
        and rec.result is StepResult.SUCCEEDED
        and bool(rec.change.get("target"))
        and not rec.change.get("reverted")
    )


def reverts_due(state: RemediationState | None, policy: HealingPolicy) -> bool:
    """A verified heal has scale steps still to undo."""
    if state is None or state.phase is not Phase.RESOLVED:
        return False
    return any(_revert_wanted(rec, policy) for rec in state.steps)


async def revert_scales(
    kube: k.Kube, state: RemediationState, policy: HealingPolicy, workload: WorkloadRef
) -> RemediationState:
    """After a verified heal, undo the scale steps whose policy asks for it. Each undo
    is recorded in its step's change (``reverted``), so it is done once; one the API
    failed is left for the next pass."""
    steps = list(state.steps)
    for i, rec in enumerate(steps):
        if not _revert_wanted(rec, policy):
            continue
        result = await scale_action.revert_scale(
            kube=kube,
            namespace=workload.namespace,
            name=workload.name,
            change=rec.change,
            dry_run=policy.mode is Mode.DRY_RUN,
        )
        metrics.REMEDIATIONS.labels(result.action, str(result.result)).inc()
        logger.info("%s: %s", workload, result.message)
        if not result.ok and result.retryable:
            continue
        steps[i] = dataclasses.replace(rec, change={**rec.change, "reverted": str(result.result)})
    return dataclasses.replace(state, steps=tuple(steps))


def status_change(change: Mapping[str, Any]) -> dict[str, Any]:
    """An action's change as the Remediation status stores it: the patch as JSON text,
    revisions as strings, nothing null."""
    out: dict[str, Any] = {}
    for key, value in change.items():
        if value is None:
            continue
        if key == "patch" and not isinstance(value, str):
            value = json.dumps(value, sort_keys=True)
        elif key in ("fromRevision", "toRevision"):
            value = str(value)
        out[key] = value
    return out


__all__ = ["ACT_RETRIES", "act", "action_done", "revert_scales", "reverts_due", "status_change"]
