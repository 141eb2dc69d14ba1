"""Restart a Deployment's pods as ``kubectl rollout restart`` does.

kubectl sets the pod-template annotation ``kubectl.kubernetes.io/restartedAt`` to
the current time (RFC 3339); the changed template makes the controller roll out a
new ReplicaSet with the usual surge and availability limits. ``requested_at`` is
passed in (the time the step started, kept in the Remediation) rather than read
from a clock, so a repeated call for the same step sees its own restart already in
place and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from selfheal.actions import revisions
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

ACTION = "restart"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_RESTARTED_AT_PATH = "/spec/template/metadata/annotations/" + RESTARTED_AT.replace("/", "~1")


def rfc3339(moment: dt.datetime) -> str:
    """``2026-11-28T08:09:51Z``: whole seconds in UTC, as Go's time.RFC3339 prints it."""
    if moment.tzinfo is None:
        raise ValueError("requested_at: needs a timezone; pass an aware datetime (UTC)")
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def restarted_since(template: Mapping[str, Any], moment: dt.datetime) -> str | None:
    """The template's restartedAt if it is at or after ``moment`` (to the second), else ``None``."""
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
    if not value:
        return None
    try:
        at = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None  # not ours to interpret; a new restart overwrites it
    if at.tzinfo is None:
        return None
    return str(value) if at >= moment.replace(microsecond=0) else None


def restart_patch(*, deployment: Mapping[str, Any], at: str) -> list[dict[str, Any]]:
    """The JSON patch: the annotation, behind ``test`` ops on the uid and generation read."""
    meta = deployment.get("spec", {}).get("template", {}).get("metadata")
    lock = guard(deployment, ("/metadata/uid", "/metadata/generation"))
    if meta is None:
        op = {"op": "add", "path": "/spec/template/metadata", "value": {"annotations": {}}}
        return [*lock, op, {"op": "add", "path": _RESTARTED_AT_PATH, "value": at}]
    if meta.get("annotations") is None:
        value = {RESTARTED_AT: at}
        return [*lock, {"op": "add", "path": "/spec/template/metadata/annotations", "value": value}]
    return [*lock, {"op": "add", "path": _RESTARTED_AT_PATH, "value": at}]


async def restart(
    *,
    kube: k.Kube,
    namespace: str,
    name: str,
    requested_at: dt.datetime,
    dry_run: bool,
    kind: str = "Deployment",
    min_available: float = 0.0,
) -> ActionResult:
    """Restart ``namespace/name``'s pods with a rolling update; refuses a paused Deployment
    and an ``OnDelete`` StatefulSet or DaemonSet (a new template replaces no pod there)."""
    where = f"{kind} {namespace}/{name}"
    path = k.apps(namespace, PLURALS[kind], name)
    at = rfc3339(requested_at)
    for attempt in (1, 2):
        try:
            deployment = await kube.get(path)
        except k.KubeError as e:
            return failed(ACTION, e, doing=f"reading {where}", change={})
        spec = deployment.get("spec", {})
        revision = (
            deployment.get("metadata", {})
            .get("annotations", {})
            .get("deployment.kubernetes.io/revision")
        )
        change: dict[str, Any] = {"restartedAt": at, "fromRevision": revision, "patch": None}
        done = restarted_since(spec.get("template") or {}, requested_at)
        if done is not None:
            change["restartedAt"] = done
            return ActionResult(
                action=ACTION,
                result=Outcome.SUCCEEDED,
                reason=Reason.ALREADY_RESTARTED,
                message=f"{where} was already restarted at {done}, not before {at}; nothing to do",
                change=change,
            )
        strategy = (spec.get("updateStrategy") or {}).get("type")
        if kind != "Deployment" and strategy == "OnDelete":
            return ActionResult(
                action=ACTION,
                result=Outcome.REFUSED,
                reason=Reason.ON_DELETE,
                message=(
                    f"{where} uses updateStrategy OnDelete: a restart would replace no pod. "
                    "Delete its pods by hand, or use a rollback step (which deletes them)."
                ),
                change=change,
            )
        if spec.get("paused"):
            return ActionResult(
                action=ACTION,
                result=Outcome.REFUSED,
                reason=Reason.PAUSED,
                message=(
                    f"{where} is paused (spec.paused): a restart would not roll out. Resume it "
                    f"with kubectl rollout resume deployment/{name} to let selfheal restart it."
                ),
                change=change,
            )
        patch = restart_patch(deployment=deployment, at=at)
        change["patch"] = patch
        sent = await guarded_patch(
            kube,
            action=ACTION,
            where=where,
            doing=f"restarting {where}",
            path=path,
            patch=patch,
            change=change,
            dry_run=dry_run,
            last_attempt=attempt == 2,
        )
        if sent is False:
            continue
        if isinstance(sent, ActionResult):
            return sent
        message = (
            f"{where}: dry run, nothing changed: would set {RESTARTED_AT}={at}"
            if dry_run
            else f"{where}: restarted ({RESTARTED_AT}={at}); its pods are replaced gradually"
        )
        if kind == STATEFULSET and not dry_run:
            # An OrderedReady StatefulSet waits forever on an unready pod: replace those.
            replaced = await revisions.replace_for_step(
                kube=kube,
                action=ACTION,
                kind=kind,
                namespace=namespace,
                name=name,
                target_hash="",
                generation=int(deployment.get("metadata", {}).get("generation") or 0) + 1,
                min_available=min_available,
                change=change,
            )
            if isinstance(replaced, ActionResult):
                return replaced
            message += replaced
        return ActionResult(
            action=ACTION,
            result=Outcome.DRY_RUN if dry_run else Outcome.SUCCEEDED,
            reason=Reason.RESTARTED,
            message=message,
            change=change,
        )
    raise AssertionError("unreachable: the loop returns on its second attempt")
