"""Scale a Deployment out within the policy's bounds, and put it back after recovery.

Without an autoscaler the replicas change through the ``scale`` subresource (the
RBAC grant is ``deployments/scale``, not the whole Deployment). When a
HorizontalPodAutoscaler targets the Deployment, writing replicas would fight it
(it rewrites them on its next sync), so its ``minReplicas`` is raised instead and
the HPA does the scaling. Both writes carry JSON-patch ``test`` ops on the value
the plan started from, so the decision is never applied to a changed object.

``revert_scale`` restores the recorded ``fromReplicas`` only while the value is
still the one the action set: a person's later change is never undone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from selfheal.actions.result import (
    ActionResult,
    Outcome,
    Reason,
    failed,
    guard,
    guarded_patch,
)
from selfheal.clients import kube as k
from selfheal.policy.ownership import PLURALS, STATEFULSET

ACTION = "scale"
REVERT = "revert-scale"
HPA_API = "autoscaling/v2"
HPA_KIND = "HorizontalPodAutoscaler"
SCALABLE = ("Deployment", STATEFULSET)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalePlan:
    """The pure decision: from how many to how many, or why not (``to_replicas`` ``None``)."""

    from_replicas: int
    to_replicas: int | None
    reason: Reason
    message: str


def plan_scale(
    *, current: int, by: int, max_replicas: int, hpa_max: int | None = None
) -> ScalePlan:
    """Add ``by`` to ``current`` without passing ``max_replicas`` (nor an HPA's maxReplicas).

    ``current`` is the Deployment's replicas, or the HPA's minReplicas when ``hpa_max``
    is given.
    """
    if by < 1:
        raise ValueError(f"by: must be at least 1, got {by}; set scale.by to a positive count")
    if max_replicas < 1:
        raise ValueError(f"max: must be at least 1, got {max_replicas}; set scale.max")
    what = "minReplicas of the HPA" if hpa_max is not None else "replicas"
    if current >= max_replicas:
        return ScalePlan(
            from_replicas=current,
            to_replicas=None,
            reason=Reason.AT_MAX,
            message=(
                f"{what} is already {current}, at or above the policy's max of {max_replicas}. "
                "Raise scale.max in the HealingPolicy, or investigate the cause."
            ),
        )
    limit = max_replicas
    if hpa_max is not None:
        if current >= hpa_max:
            return ScalePlan(
                from_replicas=current,
                to_replicas=None,
                reason=Reason.HPA_AT_MAX,
                message=(
                    f"the HPA's minReplicas is already {current}, its maxReplicas is {hpa_max}: "
                    "there is no room. Raise the HPA's maxReplicas to allow more."
                ),
            )
        limit = min(limit, hpa_max)
    to = min(current + by, limit)
    return ScalePlan(
        from_replicas=current,
        to_replicas=to,
        reason=Reason.HPA_MIN_RAISED if hpa_max is not None else Reason.SCALED,
        message=f"{what} from {current} to {to}",
    )


def targeting_hpa(
    hpas: Iterable[Mapping[str, Any]], *, name: str, kind: str = "Deployment"
) -> Mapping[str, Any] | None:
    """The HPA whose ``scaleTargetRef`` is the ``kind`` ``name`` (the first by name)."""
    matches = []
    for hpa in hpas:
        ref = hpa.get("spec", {}).get("scaleTargetRef") or {}
        api = str(ref.get("apiVersion", "apps/v1"))
        if ref.get("kind") == kind and ref.get("name") == name and api.startswith("apps/"):
            matches.append(hpa)
    matches.sort(key=lambda h: str(h.get("metadata", {}).get("name", "")))
    return matches[0] if matches else None


def _set(obj: Mapping[str, Any], field: str, value: int) -> list[dict[str, Any]]:
    # The lock pins the value the plan started from (not resourceVersion: status churns).
    # ``add`` also replaces; it works where the field is absent (replicas 0 is omitted).
    lock = guard(obj, ("/metadata/uid", "/metadata/generation", field))
    return [*lock, {"op": "add", "path": field, "value": value}]


def _min_replicas(hpa: Mapping[str, Any]) -> int:
    return int(hpa.get("spec", {}).get("minReplicas", 1))


async def scale(
    *,
    kube: k.Kube,
    namespace: str,
    name: str,
    by: int,
    max_replicas: int,
    dry_run: bool,
    kind: str = "Deployment",
) -> ActionResult:
    """Scale ``namespace/name`` out by ``by``, up to ``max_replicas`` (see the module docstring).
    ``kind``: ``Deployment`` or ``StatefulSet`` (both have a ``scale`` subresource).

    ``change`` records ``target`` (``Deployment/<name>`` or ``HorizontalPodAutoscaler/<name>``),
    ``fromReplicas`` and ``toReplicas``: pass it to ``revert_scale`` after recovery.
    """
    where = f"{kind} {namespace}/{name}"
    dpath = k.apps(namespace, PLURALS[kind], name)
    for attempt in (1, 2):
        try:
            await kube.get(dpath)  # NotFound here names the workload, not an HPA
            hpas = await kube.get(k.group(HPA_API, namespace, "horizontalpodautoscalers"))
            hpa = targeting_hpa(hpas.get("items") or (), name=name, kind=kind)
            if hpa is not None:
                hname = hpa["metadata"]["name"]
                target, obj = f"{HPA_KIND}/{hname}", hpa
                path = k.group(HPA_API, namespace, "horizontalpodautoscalers", hname)
                subresource, field = None, "/spec/minReplicas"
                plan = plan_scale(
                    current=_min_replicas(hpa),
                    by=by,
                    max_replicas=max_replicas,
                    hpa_max=int(hpa["spec"]["maxReplicas"]),
                )
            else:
                obj = await kube.get(f"{dpath}/scale")
                target, path = f"{kind}/{name}", dpath
                subresource, field = "scale", "/spec/replicas"
                current = int(obj.get("spec", {}).get("replicas", 0))
                plan = plan_scale(current=current, by=by, max_replicas=max_replicas)
        except k.KubeError as e:
            return failed(ACTION, e, doing=f"reading the scale of {where}", change={})
        change: dict[str, Any] = {
            "target": target,
            "fromReplicas": plan.from_replicas,
            "toReplicas": plan.to_replicas,
            "patch": None,
        }
        if hpa is not None:
            where = f"{where} (through {target})"
        if plan.to_replicas is None:
            change["toReplicas"] = plan.from_replicas
            return ActionResult(
                action=ACTION,
                result=Outcome.REFUSED,
                reason=plan.reason,
                message=f"{where}: {plan.message}",
                change=change,
            )
        patch = _set(obj, field, plan.to_replicas)
        change["patch"] = patch
        sent = await guarded_patch(
            kube,
            action=ACTION,
            where=where,
            doing=f"scaling {where}",
            path=path,
            patch=patch,
            change=change,
            dry_run=dry_run,
            last_attempt=attempt == 2,
            subresource=subresource,
        )
        if sent is False:
            continue
        if isinstance(sent, ActionResult):
            return sent
        return ActionResult(
            action=ACTION,
            result=Outcome.DRY_RUN if dry_run else Outcome.SUCCEEDED,
            reason=plan.reason,
            message=f"{where}: {'dry run, nothing changed: would set ' if dry_run else ''}"
            f"{plan.message}",
            change=change,
        )
    raise AssertionError("unreachable: the loop returns on its second attempt")


async def revert_scale(
    *,
    kube: k.Kube,
    namespace: str,
    name: str,
    change: Mapping[str, Any],
    dry_run: bool,
) -> ActionResult:
    """Undo a ``scale`` result's ``change``, if nobody changed the value since.

    Idempotent: when the value is already ``fromReplicas`` it returns ``Succeeded``
    with no patch. When it is neither ``toReplicas`` nor ``fromReplicas``, someone
    changed it: ``Refused`` (``ChangedSinceAction``), and nothing is written.
    """
    target = str(change.get("target", ""))
    kind, _, tname = target.partition("/")
    before, after = change.get("fromReplicas"), change.get("toReplicas")
    if kind not in (*SCALABLE, HPA_KIND) or not isinstance(before, int) or after is None:
        raise ValueError(
            f"change: not a scale result's change ({dict(change)!r}); pass ActionResult.change "
            "of a Succeeded scale"
        )
    if kind in SCALABLE:
        path = k.apps(namespace, PLURALS[kind], tname)
        subresource, field, getter = "scale", "/spec/replicas", "replicas"
    else:
        path = k.group(HPA_API, namespace, "horizontalpodautoscalers", tname)
        subresource, field, getter = None, "/spec/minReplicas", "minReplicas"
    where = f"{target} in {namespace} (for {name})"
    for attempt in (1, 2):
        try:
            obj = await kube.get(f"{path}/scale" if subresource else path)
        except k.KubeError as e:
            return failed(REVERT, e, doing=f"reading {where}", change={})
        default = 1 if kind == HPA_KIND else 0
        now = int(obj.get("spec", {}).get(getter, default))
        record: dict[str, Any] = {
            "target": target,
            "fromReplicas": now,
            "toReplicas": before,
            "patch": None,
        }
        if now == before:
            return ActionResult(
                action=REVERT,
                result=Outcome.SUCCEEDED,
                reason=Reason.ALREADY_REVERTED,
                message=f"{where}: {getter} is already {before}; nothing to revert",
                change=record,
            )
        if now != after:
            record["toReplicas"] = now
            return ActionResult(
                action=REVERT,
                result=Outcome.REFUSED,
                reason=Reason.CHANGED_SINCE,
                message=(
                    f"{where}: {getter} is {now}, not the {after} selfheal set: someone changed "
                    f"it since, so it stays. Set it back to {before} by hand if that was meant."
                ),
                change=record,
            )
        patch = _set(obj, field, before)
        record["patch"] = patch
        sent = await guarded_patch(
            kube,
            action=REVERT,
            where=where,
            doing=f"reverting {where}",
            path=path,
            patch=patch,
            change=record,
            dry_run=dry_run,
            last_attempt=attempt == 2,
            subresource=subresource,
        )
        if sent is False:
            continue
        if isinstance(sent, ActionResult):
            return sent
        return ActionResult(
            action=REVERT,
            result=Outcome.DRY_RUN if dry_run else Outcome.SUCCEEDED,
            reason=Reason.SCALE_REVERTED,
            message=f"{where}: {'dry run, nothing changed: would set ' if dry_run else ''}"
            f"{getter} from {now} back to {before}",
            change=record,
        )
    raise AssertionError("unreachable: the loop returns on its second attempt")
