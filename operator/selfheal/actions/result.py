"""The one result type every remediation action returns.

An action never raises for an expected outcome: a refusal (unsafe to act), an API
failure and a dry run are all values, so the remediation machine records them in
the Remediation object as they are. ``change`` holds only JSON values, so it can
be stored in the Remediation's status verbatim.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import types
from collections.abc import Mapping, Sequence
from typing import Any

from selfheal.clients import kube as k


class Outcome(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    """The change was made, or was already in place (an idempotent repeat)."""
    FAILED = "Failed"
    """The API refused or did not answer; ``retryable`` says whether trying later may help."""
    REFUSED = "Refused"
    """Acting would be unsafe or pointless; ``message`` says why and what the SRE can do."""
    DRY_RUN = "DryRun"
    """The exact change was validated by the API server (``dryRun=All``) and not persisted."""


class Reason(enum.StrEnum):
    """CamelCase reasons, as in Kubernetes conditions; stable: alerts and tickets key on them."""

    # rollback
    ROLLED_BACK = "RolledBack"
    """The Deployment's pod template was set to the target revision's."""
    CURRENT_NOT_KNOWN_BAD = "CurrentRevisionNotKnownBad"
    """The running revision is not known bad: already rolled back, or a fix was rolled out."""
    NO_HEALTHY_REVISION = "NoHealthyRevision"
    """Every earlier revision the Deployment still keeps is known bad."""
    PREVIOUS_KNOWN_BAD = "PreviousRevisionKnownBad"
    """``to: Previous`` and the previous revision is known bad."""
    NO_ROLLOUT_HISTORY = "NoRolloutHistory"
    """The Deployment has no earlier revision (first rollout, or revisionHistoryLimit: 0)."""
    ROLLOUT_NOT_OBSERVED = "RolloutNotObserved"
    """No ReplicaSet has the Deployment's template yet: the controller has not caught up."""
    GITOPS_MANAGED = "GitOpsManaged"
    """Argo CD or Flux owns the Deployment and would revert the change; escalate instead."""
    # scale
    SCALED = "Scaled"
    HPA_MIN_RAISED = "HPAMinReplicasRaised"
    AT_MAX = "AtMaxReplicas"
    """The replicas (or the HPA's minReplicas) already reach the policy's max."""
    HPA_AT_MAX = "HPAAtMaxReplicas"
    """The HPA's minReplicas already equals its maxReplicas."""
    SCALE_REVERTED = "ScaleReverted"
    ALREADY_REVERTED = "AlreadyReverted"
    CHANGED_SINCE = "ChangedSinceAction"
    """Someone changed the replicas after the action: reverting would undo their change."""
    # restart
    RESTARTED = "Restarted"
    ALREADY_RESTARTED = "AlreadyRestarted"
    ON_DELETE = "OnDeleteStrategy"
    """A StatefulSet or DaemonSet with ``updateStrategy: OnDelete``: a restart would
    change the template and replace no pod."""
    # shared
    PAUSED = "DeploymentPaused"
    """``spec.paused``: a person is holding the rollout; acting would fight them."""
    CONFLICT = "Conflict"
    """The object kept changing between read and write (optimistic lock failed twice)."""
    NOT_FOUND = "NotFound"
    FORBIDDEN = "Forbidden"
    INVALID = "Invalid"
    API_ERROR = "APIError"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionResult:
    action: str
    """``rollback``, ``scale``, ``revert-scale`` or ``restart``."""
    result: Outcome
    message: str
    """One or two sentences for a human: what happened, or why not and what to do."""
    reason: Reason
    change: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """``fromRevision``/``toRevision``, ``fromTemplateHash``/``toTemplateHash`` (rollback),
    ``target``/``fromReplicas``/``toReplicas`` (scale), and ``patch``: the exact JSON patch
    sent (or, for a dry run, that would be sent); ``None`` when nothing was sent."""
    retryable: bool = False
    """Trying the same step again later may succeed: API unavailable (429, 5xx), a lost
    optimistic lock, or a controller that has not caught up (``RolloutNotObserved``)."""

    def __post_init__(self) -> None:
        # A deep, read-only copy: the caller's dicts may be mutated later, the record may not.
        object.__setattr__(self, "change", types.MappingProxyType(copy.deepcopy(dict(self.change))))

    @property
    def ok(self) -> bool:
        """The step may go on to verification (or, in DryRun mode, be recorded as done)."""
        return self.result in (Outcome.SUCCEEDED, Outcome.DRY_RUN)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the Remediation's status."""
        return {
            "action": self.action,
            "result": str(self.result),
            "reason": str(self.reason),
            "message": self.message,
            "change": copy.deepcopy(dict(self.change)),
            "retryable": self.retryable,
        }


def failed(action: str, err: k.KubeError, *, doing: str, change: Mapping[str, Any]) -> ActionResult:
    """An API error as a ``Failed`` result that names the call and, for 403, the missing grant."""
    reason = {
        k.NotFound: Reason.NOT_FOUND,
        k.Conflict: Reason.CONFLICT,
        k.Forbidden: Reason.FORBIDDEN,
        k.Invalid: Reason.INVALID,
    }.get(type(err), Reason.API_ERROR)
    hint = ""
    if isinstance(err, k.Forbidden):
        hint = " Grant the operator's ServiceAccount this verb on this resource (see its RBAC)."
    elif err.temporary:
        hint = " The API server was unavailable; the step can be retried."
    return ActionResult(
        action=action,
        result=Outcome.FAILED,
        reason=reason,
        message=f"{doing} failed: {err.status} {err.reason}: {err.message}.{hint}",
        change=change,
        retryable=err.temporary or isinstance(err, k.Conflict),
    )


_MISSING = object()  # pointer(): no default given, raise
_ABSENT = object()  # a member that is not there


def pointer(obj: Any, path: str, default: Any = _MISSING) -> Any:
    """The value at a JSON pointer (RFC 6901) in ``obj``; ``default`` (or KeyError) if absent."""
    node = obj
    for raw in path.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif default is not _MISSING:
            return default
        else:
            raise KeyError(path)
    return node


def guard(obj: Mapping[str, Any], paths: Sequence[str]) -> list[dict[str, Any]]:
    """JSON-patch ``test`` ops pinning the values a decision was made on.

    They make a write apply only while what the decision read still holds. This
    is the optimistic lock: narrower than ``resourceVersion``, which every status
    write of a controller bumps (a crash-looping rollout rewrites status every few
    seconds, so a resourceVersion lock would lose to it again and again). Paths
    absent from ``obj`` are left out: a ``test`` of a missing member always fails.
    """
    return [
        {"op": "test", "path": p, "value": pointer(obj, p)}
        for p in paths
        if pointer(obj, p, _ABSENT) is not _ABSENT
    ]


def guard_holds(obj: Mapping[str, Any], patch: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every ``test`` op of ``patch`` still holds on ``obj`` (a fresh read)."""
    return all(
        pointer(obj, op["path"], _ABSENT) == op["value"] for op in patch if op["op"] == "test"
    )


async def lost_race(
    kube: k.Kube, err: k.KubeError, *, path: str, patch: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a failed write lost an optimistic race rather than being wrong.

    A failed ``test`` op comes back as an anonymous 422, like a malformed patch; a
    fresh read tells them apart: if a pinned value changed, the object moved on.
    """
    if isinstance(err, k.Conflict):
        return True
    if not isinstance(err, k.Invalid):
        return False
    try:
        fresh = await kube.get(path)
    except k.KubeError:
        return True  # gone or unreadable: the re-decision reports it
    return not guard_holds(fresh, patch)


async def guarded_patch(
    kube: k.Kube,
    *,
    action: str,
    where: str,
    doing: str,
    path: str,
    patch: Sequence[Mapping[str, Any]],
    change: Mapping[str, Any],
    dry_run: bool,
    last_attempt: bool,
    subresource: str | None = None,
) -> ActionResult | bool:
    """Send a JSON patch whose ``test`` ops pin what the decision read.

    ``True``: accepted. ``False``: the object moved on; read again and re-decide. An
    ``ActionResult``: the failure to report (a lost race on the last attempt included).
    """
    try:
        await kube.patch(
            path, patch, content_type=k.JSON_PATCH, subresource=subresource, dry_run=dry_run
        )
    except k.KubeError as e:
        read = f"{path}/{subresource}" if subresource else path
        if await lost_race(kube, e, path=read, patch=patch):
            return conflict(action, where, change=change) if last_attempt else False
        return failed(action, e, doing=doing, change=change)
    return True


def conflict(action: str, where: str, *, change: Mapping[str, Any]) -> ActionResult:
    """The optimistic lock failed on the retry too."""
    return ActionResult(
        action=action,
        result=Outcome.FAILED,
        reason=Reason.CONFLICT,
        message=(
            f"{where} changed between read and write twice in a row: someone else is changing "
            "it right now. The step can be retried."
        ),
        change=change,
        retryable=True,
    )
