"""Roll a StatefulSet or DaemonSet back to its last healthy ControllerRevision.

The mechanics are ``kubectl rollout undo``'s for these kinds
(``k8s.io/kubectl/pkg/polymorphichelpers/rollback.go``): the revisions are the
ControllerRevisions the object controls, numbered by their ``revision`` field, and
each one's ``data`` is the patch ``{"spec": {"template": ..., "$patch": "replace"}}``
that restores it. selfheal writes that template into ``spec.template`` with one JSON
patch behind ``test`` ops on the object's uid and generation. The controller then
reuses the ControllerRevision (same name, same hash) and renumbers it as the newest.

The target is chosen as for Deployments (``rollback.choose_target``), by revision
hash: the suffix of the ControllerRevision's name, which is what the pods'
``controller-revision-hash`` label carries and which survives renumbering, so two
incidents never flip-flop between bad revisions.

A restored template alone does not always replace the bad pods, so after the patch
(once the controller has observed it) selfheal deletes pods itself, one at a time,
waiting for each replacement to be Running and Ready at the restored revision:

* **StatefulSet, RollingUpdate** (partitioned or not): the controller rolls Ready pods
  itself, but with ``podManagementPolicy: OrderedReady`` it waits forever for a pod
  that never turns Ready (Kubernetes' "forced rollback" caveat). selfheal deletes the
  unready pods of other revisions at ordinals at or above ``partition``. Pods below the
  partition are never touched and the partition is never changed: holding them is the
  person's rollout decision, and they run the StatefulSet's current revision anyway.
* **DaemonSet, RollingUpdate**: nothing; the controller deletes unavailable pods of
  old revisions first, outside its ``maxUnavailable`` budget.
* **OnDelete** (both kinds): the controller changes no pod, so selfheal deletes every
  pod of another revision (ordinals at or above the partition for a StatefulSet):
  unready ones first, a Ready one only while the workload keeps
  ``guardrails.minAvailable`` without it.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from selfheal.actions import rollback as rb
from selfheal.actions.result import (
    ActionResult,
    Outcome,
    Reason,
    failed,
    guard,
    guarded_patch,
)
from selfheal.clients import kube as k
from selfheal.policy import ownership
from selfheal.policy.model import RollbackTo

ACTION = "rollback"
LOCK_PATHS = ("/metadata/uid", "/metadata/generation")

OBSERVE_WAIT = 30.0
"""Seconds to wait for the controller to observe a patched template before deleting pods."""
REPLACE_WAIT = 90.0
"""Seconds to wait for one deleted pod's replacement to be Ready before giving up the rest."""
POLL = 1.0


def _kind_where(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}"


def data_template(revision: Mapping[str, Any]) -> dict[str, Any]:
    """The pod template a ControllerRevision restores (its ``data.spec.template``)."""
    data = revision.get("data") or {}
    template = copy.deepcopy(dict((data.get("spec") or {}).get("template") or {}))
    template.pop("$patch", None)
    return template


def controlled_revisions(
    obj: Mapping[str, Any], revisions: Iterable[Mapping[str, Any]]
) -> list[rb.Revision]:
    """The object's ControllerRevisions as ``rollback.Revision``, oldest first; only those
    whose controller ownerReference is the object (by uid)."""
    meta = obj.get("metadata") or {}
    uid, name = meta.get("uid", ""), str(meta.get("name", ""))
    current = (obj.get("spec") or {}).get("template") or {}
    out: list[rb.Revision] = []
    for cr in revisions:
        refs = (cr.get("metadata") or {}).get("ownerReferences") or ()
        if not any(r.get("uid") == uid and r.get("controller") for r in refs):
            continue
        cr_name = str((cr.get("metadata") or {}).get("name", ""))
        template = data_template(cr)
        out.append(
            rb.Revision(
                number=int(cr.get("revision") or 0),
                template_hash=ownership.revision_hash(name, cr_name),
                replicaset=cr_name,
                template=template,
                annotations={},
                current=template == current,
            )
        )
    out.sort(key=lambda r: r.number)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Strategy:
    kind: str
    type: str
    """``RollingUpdate`` or ``OnDelete``."""
    partition: int = 0
    """StatefulSet ``rollingUpdate.partition``: ordinals below it keep their revision."""

    def describe(self) -> str:
        if self.type == "RollingUpdate" and self.partition:
            return f"RollingUpdate with partition {self.partition}"
        return self.type


def strategy_of(kind: str, obj: Mapping[str, Any]) -> Strategy:
    strategy = (obj.get("spec") or {}).get("updateStrategy") or {}
    kind_type = str(strategy.get("type") or "RollingUpdate")
    partition = 0
    if kind == ownership.STATEFULSET and kind_type == "RollingUpdate":
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    return Strategy(kind=kind, type=kind_type, partition=partition)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodView:
    """What replacing a pod needs to know of it."""

    name: str
    uid: str
    revision_hash: str
    ready: bool
    deleting: bool
    node: str = ""
    ordinal: int = -1
    """A StatefulSet pod's ordinal (the name's suffix); -1 for a DaemonSet's."""


def pod_view(kind: str, owner: str, pod: Mapping[str, Any]) -> PodView:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    name = str(meta.get("name", ""))
    label = str((meta.get("labels") or {}).get(ownership.REVISION_LABEL, ""))
    suffix = name.rsplit("-", 1)[-1]
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return PodView(
        name=name,
        uid=str(meta.get("uid", "")),
        revision_hash=ownership.revision_hash(owner, label),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        node=str(spec.get("nodeName") or ""),
        ordinal=int(suffix) if kind == ownership.STATEFULSET and suffix.isdigit() else -1,
    )


def pods_to_replace(
    strategy: Strategy, pods: Sequence[PodView], *, target_hash: str
) -> list[PodView]:
    """The pods selfheal deletes itself after restoring ``target_hash``, in order (see the
    module docstring); pure."""
    if strategy.kind == ownership.DAEMONSET and strategy.type == "RollingUpdate":
        return []
    stale = [
        p
        for p in pods
        if not p.deleting
        and p.revision_hash != target_hash
        and (strategy.kind != ownership.STATEFULSET or p.ordinal >= strategy.partition)
    ]
    if strategy.type == "RollingUpdate":
        stale = [p for p in stale if not p.ready]
    # Unready first (replacing them costs no availability), then by ordinal, as an
    # OrderedReady StatefulSet recreates them.
    return sorted(stale, key=lambda p: (p.ready, p.ordinal, p.name))


def may_delete(pod: PodView, *, available: int, desired: int, min_available: float) -> bool:
    """A Ready pod goes only while the rest keep ``min_available`` of ``desired``."""
    if not pod.ready or desired <= 0:
        return True
    return (available - 1) / desired >= min_available


def update_hash(obj: Mapping[str, Any]) -> str:
    """A StatefulSet's ``status.updateRevision`` as a hash ("" when not reported)."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    return ownership.revision_hash(name, str((obj.get("status") or {}).get("updateRevision") or ""))


def observed(kind: str, obj: Mapping[str, Any], *, generation: int, target_hash: str) -> bool:
    """The controller has acted on the patched template (``target_hash`` "": on any)."""
    status = obj.get("status") or {}
    if int(status.get("observedGeneration") or 0) < generation:
        return False
    if kind == ownership.STATEFULSET and target_hash:
        return update_hash(obj) == target_hash
    return True


def replaced(old: PodView, pods: Sequence[PodView], *, target_hash: str) -> bool:
    """A pod in ``old``'s place (same name, or same node for a DaemonSet) is Ready at
    ``target_hash``."""
    for p in pods:
        same_slot = p.name == old.name if old.ordinal >= 0 else (p.node == old.node)
        if same_slot and p.uid != old.uid and p.ready and p.revision_hash == target_hash:
            return True
    return False


# --- I/O -------------------------------------------------------------------------------------


async def _pods(kube: k.Kube, kind: str, obj: Mapping[str, Any]) -> list[PodView]:
    meta = obj.get("metadata") or {}
    ns, name, uid = str(meta.get("namespace", "")), str(meta.get("name", "")), meta.get("uid")
    selector = rb.selector_string((obj.get("spec") or {}).get("selector") or {})
    listing = await kube.get(k.core(ns, "pods"), labelSelector=selector)
    return [
        pod_view(kind, name, p)
        for p in listing.get("items") or ()
        if any(
            r.get("uid") == uid and r.get("controller")
            for r in (p.get("metadata") or {}).get("ownerReferences") or ()
        )
    ]


async def replace_pods(
    *,
    kube: k.Kube,
    kind: str,
    namespace: str,
    name: str,
    target_hash: str,
    generation: int,
    min_available: float,
    observe_wait: float = OBSERVE_WAIT,
    replace_wait: float = REPLACE_WAIT,
) -> tuple[list[str], str]:
    """Delete the pods :func:`pods_to_replace` names, one at a time; returns the deleted
    pods' names and a sentence on anything that stopped the work (or ""). ``target_hash``
    "": the revision the controller makes of the patched template (a restart's)."""
    path = k.apps(namespace, ownership.PLURALS[kind], name)
    deadline = time.monotonic() + observe_wait
    obj = await kube.get(path)
    while not observed(kind, obj, generation=generation, target_hash=target_hash):
        if time.monotonic() > deadline:
            return [], (
                f"the {kind.lower()} controller did not observe the restored template within "
                f"{observe_wait:.0f}s, so no pod was deleted"
            )
        await asyncio.sleep(POLL)
        obj = await kube.get(path)
    if not target_hash and kind == ownership.STATEFULSET:
        target_hash = update_hash(obj)
    if not target_hash:
        return [], ""
    strategy = strategy_of(kind, obj)
    deleted: list[str] = []
    gone: set[str] = set()
    pods = await _pods(kube, kind, obj)
    # Bounded: a pod (uid) is deleted at most once, and each round deletes one.
    for _ in range(len(pods) + 1):
        todo = [
            p for p in pods_to_replace(strategy, pods, target_hash=target_hash) if p.uid not in gone
        ]
        if not todo:
            return deleted, ""
        pod = todo[0]
        available, desired = ownership.availability(
            kind, spec=obj.get("spec") or {}, status=obj.get("status") or {}
        )
        if not may_delete(pod, available=available, desired=desired, min_available=min_available):
            return deleted, (
                f"pod {pod.name} is Ready and {available}/{desired} are available: deleting it "
                f"would break guardrails.minAvailable ({min_available:.0%}); it keeps its revision"
            )
        try:
            await kube.request(
                "DELETE",
                k.core(namespace, "pods", pod.name),
                body={"preconditions": {"uid": pod.uid}},
            )
        except k.NotFound:
            pass  # gone already (the controller, or a person)
        except k.Conflict:
            pass  # a new pod took the name: judged again on the next round
        deleted.append(pod.name)
        gone.add(pod.uid)
        wait_until = time.monotonic() + replace_wait
        while True:
            await asyncio.sleep(POLL)
            obj = await kube.get(path)
            pods = await _pods(kube, kind, obj)
            if replaced(pod, pods, target_hash=target_hash):
                break
            if time.monotonic() > wait_until:
                return deleted, (
                    f"the replacement of pod {pod.name} was not Ready within "
                    f"{replace_wait:.0f}s, so no further pod was deleted"
                )
    return deleted, ""


async def replace_for_step(
    *,
    kube: k.Kube,
    action: str,
    kind: str,
    namespace: str,
    name: str,
    target_hash: str,
    generation: int,
    min_available: float,
    change: dict[str, Any],
) -> ActionResult | str:
    """:func:`replace_pods` for a step that patched the template: records the deleted pods
    in ``change`` and returns what to add to the step's message, or the failed result."""
    try:
        deleted, stopped = await replace_pods(
            kube=kube,
            kind=kind,
            namespace=namespace,
            name=name,
            target_hash=target_hash,
            generation=generation,
            min_available=min_available,
        )
    except k.KubeError as e:
        where = _kind_where(kind, namespace, name)
        return failed(action, e, doing=f"replacing the pods of {where}", change=change)
    change["deletedPods"] = deleted
    said = f"; deleted pod(s) {', '.join(deleted)} one at a time" if deleted else ""
    return said + (f"; {stopped}" if stopped else "")


async def rollback_revision(
    *,
    kube: k.Kube,
    kind: str,
    namespace: str,
    name: str,
    to: RollbackTo,
    known_bad: frozenset[str],
    allow_gitops: bool,
    dry_run: bool,
    min_available: float,
) -> ActionResult:
    """Roll the StatefulSet or DaemonSet ``namespace/name`` back (see the module docstring).

    Idempotent: once the running revision is not known bad, no patch is sent; pods of
    other revisions that the strategy leaves to selfheal are still replaced.
    """
    where = _kind_where(kind, namespace, name)
    path = k.apps(namespace, ownership.PLURALS[kind], name)
    for attempt in (1, 2):
        try:
            obj = await kube.get(path)
            selector = rb.selector_string((obj.get("spec") or {}).get("selector") or {})
            listing = await kube.get(
                k.apps(namespace, "controllerrevisions"), labelSelector=selector
            )
        except k.KubeError as e:
            return failed(
                ACTION, e, doing=f"reading {where} and its ControllerRevisions", change={}
            )
        choice = rb.choose_target(
            revisions=controlled_revisions(obj, listing.get("items") or ()),
            to=to,
            known_bad=known_bad,
            kind=kind,
        )
        strategy = strategy_of(kind, obj)
        base = {**rb.change_of(choice), "strategy": strategy.describe()}
        manager = rb.gitops_manager(obj)
        if manager and not allow_gitops:
            return ActionResult(
                action=ACTION,
                result=Outcome.REFUSED,
                reason=Reason.GITOPS_MANAGED,
                message=(
                    f"{where} is managed by {manager}, which would undo a rollback. Revert the "
                    "change in Git (or set guardrails.allowGitOps: true to let selfheal act)."
                ),
                change={**base, "gitOps": manager},
            )
        if choice.reason is Reason.CURRENT_NOT_KNOWN_BAD and choice.current is not None:
            target_hash, patch = choice.current.template_hash, None
            message = choice.message
        elif choice.target is None:
            return ActionResult(
                action=ACTION,
                result=Outcome.REFUSED,
                reason=choice.reason,
                message=f"{where}: {choice.message}",
                change=base,
                retryable=choice.reason is Reason.ROLLOUT_NOT_OBSERVED,
            )
        else:
            target_hash = choice.target.template_hash
            patch = [
                *guard(obj, LOCK_PATHS),
                {"op": "replace", "path": "/spec/template", "value": dict(choice.target.template)},
            ]
            base["patch"] = patch
            sent = await guarded_patch(
                kube,
                action=ACTION,
                where=where,
                doing=f"patching {where}",
                path=path,
                patch=patch,
                change=base,
                dry_run=dry_run,
                last_attempt=attempt == 2,
            )
            if sent is False:
                continue
            if isinstance(sent, ActionResult):
                return sent
            if dry_run:
                return ActionResult(
                    action=ACTION,
                    result=Outcome.DRY_RUN,
                    reason=Reason.ROLLED_BACK,
                    message=f"{where}: dry run, nothing changed: would roll back {choice.message}",
                    change=base,
                )
            message = f"rolled back {choice.message} ({strategy.describe()})"
        if dry_run:
            return _done(choice, where, message, base, Outcome.DRY_RUN)
        generation = int(obj.get("metadata", {}).get("generation") or 0) + (1 if patch else 0)
        done = await replace_for_step(
            kube=kube,
            action=ACTION,
            kind=kind,
            namespace=namespace,
            name=name,
            target_hash=target_hash,
            generation=generation,
            min_available=min_available,
            change=base,
        )
        if isinstance(done, ActionResult):
            return done
        return _done(choice, where, message + done, base, Outcome.SUCCEEDED)
    raise AssertionError("unreachable: the loop returns on its second attempt")


def _done(
    choice: rb.Choice, where: str, message: str, change: Mapping[str, Any], outcome: Outcome
) -> ActionResult:
    return ActionResult(
        action=ACTION,
        result=outcome,
        reason=choice.reason,
        message=f"{where}: {message}",
        change=change,
    )
