"""Roll a Deployment back to its last healthy revision, as ``kubectl rollout undo`` does.

The mechanics are kubectl's (``k8s.io/kubectl/pkg/polymorphichelpers/rollback.go``):
the revisions are the ReplicaSets the Deployment controls, numbered by their
``deployment.kubernetes.io/revision`` annotation; rolling back writes the target
ReplicaSet's pod template (without its ``pod-template-hash`` label) and its
annotations (except the bookkeeping ones kubectl keeps from the Deployment) into
the Deployment with one JSON patch. The controller then reuses that ReplicaSet and
renumbers it as the newest revision (v1 becomes revision 3 after v2).

What differs is the choice of target. Revision numbers change on every rollback,
so they cannot name a bad version across incidents; the ``pod-template-hash`` of a
ReplicaSet does not change (the controller reuses the ReplicaSet whenever the same
template comes back). Every Remediation records the hash it was opened for, and the
caller passes all of them as ``known_bad``. Then:

* ``LastHealthy``: the newest revision older than the running one whose hash is not
  known bad. Two incidents in a row can therefore never flip-flop back to a bad
  version: v1 ok, v2 bad -> v1; v1 fails too -> refused, v2 stays excluded.
* ``Previous``: kubectl's choice (the revision just before the running one), but a
  known-bad previous revision is refused rather than used.
* If the running revision is not known bad, there is nothing to roll back from:
  a repeated call after a successful rollback is a no-op, and so is a call after a
  person rolled forward a fix.

Nothing is written to a workload except the rollback patch itself.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
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
from selfheal.policy.model import RollbackTo

ACTION = "rollback"

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"
CHANGE_CAUSE = "kubernetes.io/change-cause"

# kubectl's annotationsToSkip: these stay as the Deployment has them; every other
# annotation of the Deployment is replaced by the target ReplicaSet's.
ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)

# What a rollback decision depends on: the object itself (a deleted and re-created
# Deployment restarts at generation 1), its spec (template, paused), the annotations it
# replaces and the labels that say whether GitOps manages it. Pinned, they let a decision
# made on a cached copy patch only what a fresh read would have decided on.
LOCK_PATHS = (
    "/metadata/uid",
    "/metadata/generation",
    "/metadata/annotations",
    "/metadata/labels",
)

# Markers GitOps controllers put on what they manage. ``app.kubernetes.io/instance``
# alone is not one: Helm sets it too; Argo CD's label tracking uses it, but its
# default (annotation) tracking writes ``argocd.argoproj.io/tracking-id``.
ARGO_ANNOTATIONS = ("argocd.argoproj.io/tracking-id",)
ARGO_LABELS = ("argocd.argoproj.io/instance",)
FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/name")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Revision:
    """One ReplicaSet of a Deployment, as ``kubectl rollout history`` lists it."""

    number: int
    template_hash: str
    """The ReplicaSet's ``pod-template-hash`` label: stable across renumbering."""
    replicaset: str
    template: Mapping[str, Any]
    """The ReplicaSet's pod template, hash label included (as stored)."""
    annotations: Mapping[str, str]
    history: tuple[int, ...] = ()
    """Numbers this revision had before (``deployment.kubernetes.io/revision-history``)."""
    current: bool = False
    """Its template equals the Deployment's, ignoring the hash label: it is what runs."""

    def label(self) -> str:
        return f"revision {self.number} ({self.replicaset}, hash {self.template_hash})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Choice:
    """The pure decision: where to roll back to, or why not."""

    current: Revision | None
    target: Revision | None
    """``None``: send nothing (see ``reason``)."""
    reason: Reason
    message: str


def _meta(obj: Mapping[str, Any], key: str) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get(key) or {})


def selector_string(selector: Mapping[str, Any]) -> str:
    """A ``labelSelector`` query value from a LabelSelector object."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for req in selector.get("matchExpressions") or ():
        key, op, values = req["key"], req["operator"], ",".join(sorted(req.get("values") or ()))
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(parts)


def _without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(dict(template))
    meta = t.setdefault("metadata", {})
    labels = dict(meta.get("labels") or {})
    labels.pop(HASH_LABEL, None)
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    return t


def equal_ignore_hash(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """kubectl's equalIgnoreHash: templates equal but for the ``pod-template-hash`` label."""
    return _without_hash(a) == _without_hash(b)


def _owned_by(rs: Mapping[str, Any], uid: str) -> bool:
    refs = rs.get("metadata", {}).get("ownerReferences") or ()
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def revisions(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]]
) -> list[Revision]:
    """The Deployment's revisions, oldest first.

    Only ReplicaSets whose controller ownerReference is this Deployment (by uid)
    count; one without a numeric revision annotation is skipped, as kubectl does.
    """
    uid = deployment.get("metadata", {}).get("uid", "")
    current_template = deployment.get("spec", {}).get("template") or {}
    out: list[Revision] = []
    for rs in replicasets:
        if not _owned_by(rs, uid):
            continue
        annotations = _meta(rs, "annotations")
        try:
            number = int(annotations.get(REVISION, ""))
        except ValueError:
            continue
        template = rs.get("spec", {}).get("template") or {}
        history: tuple[int, ...] = ()
        raw_history = annotations.get(REVISION_HISTORY, "")
        if raw_history:
            history = tuple(int(h) for h in raw_history.split(",") if h.strip().isdigit())
        out.append(
            Revision(
                number=number,
                template_hash=_meta(rs, "labels").get(HASH_LABEL, ""),
                replicaset=rs.get("metadata", {}).get("name", ""),
                template=template,
                annotations=annotations,
                history=history,
                current=equal_ignore_hash(template, current_template),
            )
        )
    out.sort(key=lambda r: r.number)
    return out


def choose_target(
    *,
    revisions: Sequence[Revision],
    to: RollbackTo,
    known_bad: frozenset[str],
    kind: str = "Deployment",
) -> Choice:
    """Where to roll back to; pure. ``known_bad`` holds pod-template-hashes (or, for a
    StatefulSet or DaemonSet, ControllerRevision hashes)."""
    history = "ReplicaSet" if kind == "Deployment" else "ControllerRevision"
    current = next((r for r in reversed(revisions) if r.current), None)
    if current is None:
        return Choice(
            current=None,
            target=None,
            reason=Reason.ROLLOUT_NOT_OBSERVED,
            message=(
                f"no {history} has the {kind}'s current pod template yet, so its revision "
                f"is unknown; the {kind.lower()} controller has not caught up. The step can be "
                "retried in a moment."
            ),
        )
    if current.template_hash not in known_bad:
        return Choice(
            current=current,
            target=None,
            reason=Reason.CURRENT_NOT_KNOWN_BAD,
            message=(
                f"the running {current.label()} is not known bad: nothing to roll back "
                "(already rolled back, or a newer version was rolled out since the incident)."
            ),
        )
    # Older than the running one; a same-template ReplicaSet would change nothing.
    older = [
        r
        for r in reversed(revisions)
        if r.number < current.number and not equal_ignore_hash(r.template, current.template)
    ]
    if not older:
        return Choice(
            current=current,
            target=None,
            reason=Reason.NO_ROLLOUT_HISTORY,
            message=(
                f"the {kind} keeps no revision older than the running {current.label()} "
                "(first rollout, or spec.revisionHistoryLimit pruned them). Roll forward a fix."
            ),
        )
    if to is RollbackTo.PREVIOUS:
        previous = older[0]
        if previous.template_hash in known_bad:
            return Choice(
                current=current,
                target=None,
                reason=Reason.PREVIOUS_KNOWN_BAD,
                message=(
                    f"the previous {previous.label()} is known bad from an earlier incident. "
                    "Use rollback to: LastHealthy, or roll forward a fix."
                ),
            )
        target = previous
    else:
        healthy = [r for r in older if r.template_hash not in known_bad]
        if not healthy:
            listed = ", ".join(r.label() for r in older)
            return Choice(
                current=current,
                target=None,
                reason=Reason.NO_HEALTHY_REVISION,
                message=(
                    f"every earlier revision is known bad ({listed}). Roll forward a fix, or "
                    "roll back by hand with kubectl rollout undo --to-revision=N."
                ),
            )
        target = healthy[0]
    return Choice(
        current=current,
        target=target,
        reason=Reason.ROLLED_BACK,
        message=f"from the running {current.label()} to {target.label()}",
    )


def rollback_patch(
    *, deployment: Mapping[str, Any], target: Revision, change_cause: str
) -> list[dict[str, Any]]:
    """The JSON patch kubectl sends, behind ``test`` ops on what the decision read.

    The tests pin the Deployment's uid, its generation (which moves with every spec
    change, not with status) and the annotations the patch replaces, so a change
    made in between makes the API server refuse the whole patch. ``change_cause``
    (when not empty) replaces the carried-over ``kubernetes.io/change-cause``, so
    ``kubectl rollout history`` says who and why.
    """
    meta = deployment.get("metadata", {})
    template = _without_hash(target.template)
    current_annotations = dict(meta.get("annotations") or {})
    annotations = {k: v for k, v in current_annotations.items() if k in ANNOTATIONS_TO_SKIP}
    annotations.update(
        {k: v for k, v in target.annotations.items() if k not in ANNOTATIONS_TO_SKIP}
    )
    if change_cause:
        annotations[CHANGE_CAUSE] = change_cause
    return [
        *guard(deployment, LOCK_PATHS),
        {"op": "replace", "path": "/spec/template", "value": template},
        {
            "op": "replace" if "annotations" in meta else "add",
            "path": "/metadata/annotations",
            "value": annotations,
        },
    ]


def gitops_manager(obj: Mapping[str, Any]) -> str | None:
    """Which GitOps tool manages the object, and the marker that says so; ``None``: none."""
    labels, annotations = _meta(obj, "labels"), _meta(obj, "annotations")
    for key in ARGO_ANNOTATIONS:
        if key in annotations:
            return f"Argo CD (annotation {key}={annotations[key]})"
    for key in ARGO_LABELS:
        if key in labels:
            return f"Argo CD (label {key}={labels[key]})"
    for key in FLUX_LABELS:
        if key in labels:
            return f"Flux (label {key}={labels[key]})"
    return None


def change_of(choice: Choice, patch: object = None) -> dict[str, Any]:
    """A rollback step's ``change``: from and to revision (number and hash), the patch."""
    cur, tgt = choice.current, choice.target
    return {
        "fromRevision": cur.number if cur else None,
        "fromTemplateHash": cur.template_hash if cur else None,
        "toRevision": tgt.number if tgt else (cur.number if cur else None),
        "toTemplateHash": tgt.template_hash if tgt else (cur.template_hash if cur else None),
        "patch": patch,
    }


async def rollback(
    *,
    kube: k.Kube,
    namespace: str,
    name: str,
    to: RollbackTo,
    known_bad: frozenset[str],
    allow_gitops: bool,
    dry_run: bool,
    change_cause: str,
    replicasets: Sequence[Mapping[str, Any]] | None = None,
    deployment: Mapping[str, Any] | None = None,
) -> ActionResult:
    """Roll ``namespace/name`` back (see the module's docstring for the choice).

    ``replicasets``: the Deployment's ReplicaSets from a watch cache, so they are not
    listed; when the cache shows no revision with the running template yet (it lags), or
    after a lost lock, they are listed. ``deployment``: the Deployment from a watch cache
    (what ``LOCK_PATHS`` pins, its selector and template), so a decision to patch sends
    only the patch: its ``test`` ops make a stale copy a refused patch, which is then
    re-read and re-decided; any other outcome (nothing to do, a refusal) is decided
    again on a fresh read before it is reported. Idempotent: once the running revision
    is not known bad, it returns ``Succeeded`` with no patch. A lost optimistic lock
    re-reads and re-decides once.
    """
    where = f"Deployment {namespace}/{name}"
    path = k.apps(namespace, "deployments", name)
    for attempt in (1, 2):
        # A second attempt reads afresh.
        cached = replicasets if attempt == 1 else None
        held = deployment if attempt == 1 and _usable(deployment) else None
        try:
            current, choice = await _decide(
                kube, namespace, path, to=to, known_bad=known_bad, replicasets=cached, cached=held
            )
            if held is not None and not _patches(current, choice, allow_gitops=allow_gitops):
                # Only a patch is guarded against a stale copy: anything else, fresh.
                current, choice = await _decide(
                    kube, namespace, path, to=to, known_bad=known_bad, replicasets=cached
                )
        except k.KubeError as e:
            return failed(ACTION, e, doing=f"reading {where} and its ReplicaSets", change={})
        if choice.reason is Reason.CURRENT_NOT_KNOWN_BAD:
            return _result(Outcome.SUCCEEDED, choice, f"{where}: {choice.message}")
        manager = gitops_manager(current)
        if manager and not allow_gitops:
            return ActionResult(
                action=ACTION,
                result=Outcome.REFUSED,
                reason=Reason.GITOPS_MANAGED,
                message=(
                    f"{where} is managed by {manager}, which would undo a rollback. Revert the "
                    "change in Git (or set guardrails.allowGitOps: true to let selfheal act)."
                ),
                change={**change_of(choice), "gitOps": manager},
            )
        if current.get("spec", {}).get("paused"):
            return _result(
                Outcome.REFUSED,
                choice,
                f"{where} is paused (spec.paused); someone is holding its rollout. Resume it "
                f"with kubectl rollout resume deployment/{name} to let selfheal roll back.",
                reason=Reason.PAUSED,
            )
        if choice.target is None:
            return _result(
                Outcome.REFUSED,
                choice,
                f"{where}: {choice.message}",
                # Only a controller that has not caught up yet goes away by itself.
                retryable=choice.reason is Reason.ROLLOUT_NOT_OBSERVED,
            )
        patch = rollback_patch(deployment=current, target=choice.target, change_cause=change_cause)
        sent = await guarded_patch(
            kube,
            action=ACTION,
            where=where,
            doing=f"patching {where}",
            path=path,
            patch=patch,
            change=change_of(choice, patch),
            dry_run=dry_run,
            last_attempt=attempt == 2,
        )
        if sent is False:
            continue
        if isinstance(sent, ActionResult):
            return sent
        if dry_run:
            message = f"dry run, nothing changed: would roll back {choice.message}"
            return _result(Outcome.DRY_RUN, choice, f"{where}: {message}", patch=patch)
        message = f"rolled back {choice.message}; the controller records it as the newest revision"
        return _result(Outcome.SUCCEEDED, choice, f"{where}: {message}", patch=patch)
    raise AssertionError("unreachable: the loop returns on its second attempt")


def _usable(cached: Mapping[str, Any] | None) -> bool:
    """A cached copy holds what the lock pins (a Deployment without labels cannot pin
    them: a GitOps label added since would go unseen)."""
    meta = (cached or {}).get("metadata") or {}
    return bool(meta.get("uid") and meta.get("generation") and meta.get("labels"))


def _patches(deployment: Mapping[str, Any], choice: Choice, *, allow_gitops: bool) -> bool:
    """The decision sends a patch (see ``rollback``'s refusals)."""
    if choice.target is None or deployment.get("spec", {}).get("paused"):
        return False
    return allow_gitops or gitops_manager(deployment) is None


async def _decide(
    kube: k.Kube,
    namespace: str,
    path: str,
    *,
    to: RollbackTo,
    known_bad: frozenset[str],
    replicasets: Sequence[Mapping[str, Any]] | None,
    cached: Mapping[str, Any] | None = None,
) -> tuple[Mapping[str, Any], Choice]:
    """The Deployment (``cached``, or read) and the choice made on it and its ReplicaSets
    (``replicasets``, or listed when they do not show the running revision yet)."""
    deployment = cached if cached is not None else await kube.get(path)
    choice = None
    if replicasets is not None:
        choice = choose_target(
            revisions=revisions(deployment, replicasets), to=to, known_bad=known_bad
        )
    if choice is None or choice.reason is Reason.ROLLOUT_NOT_OBSERVED:
        if cached is not None:
            deployment = await kube.get(path)  # the caches lag: read both afresh
        selector = selector_string(deployment.get("spec", {}).get("selector") or {})
        listing = await kube.get(k.apps(namespace, "replicasets"), labelSelector=selector)
        choice = choose_target(
            revisions=revisions(deployment, listing.get("items") or ()),
            to=to,
            known_bad=known_bad,
        )
    return deployment, choice


def _result(
    outcome: Outcome,
    choice: Choice,
    message: str,
    *,
    reason: Reason | None = None,
    patch: object = None,
    retryable: bool = False,
) -> ActionResult:
    return ActionResult(
        action=ACTION,
        result=outcome,
        reason=reason or choice.reason,
        message=message,
        change=change_of(choice, patch),
        retryable=retryable,
    )
