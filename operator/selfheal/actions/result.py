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
from collections.abc import Mapping
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
    """A ``Failed`` result that may succeed later (API unavailable, 429, 5xx, conflicts)."""

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


def lost_race(err: k.KubeError) -> bool:
    """The optimistic lock failed: the object changed after it was read.

    Every action's JSON patch sets ``/metadata/resourceVersion`` to the value it read,
    so the API server itself rejects a write to a changed object with 409 Conflict.
    (A JSON-patch ``test`` op would also guard, but its failure is an anonymous 422
    that cannot be told apart from a malformed patch.)
    """
    return isinstance(err, k.Conflict)


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
