"""Condition types and reasons of HealingPolicy (and Remediation) status, and the
pure helper that sets one condition the Kubernetes way.

Reasons are CamelCase (the CRD's pattern checks it). ``lastTransitionTime`` moves
only when a condition's status changes, so ``kubectl describe`` shows how long a
policy has been not Ready, not how long ago the operator last wrote the status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ACCEPTED",
    "BACKEND_UNAVAILABLE",
    "ESCALATION_READY",
    "FALSE",
    "INVALID_SPEC",
    "JIRA_NOT_CONFIGURED",
    "JIRA_REACHABLE",
    "JIRA_REJECTED",
    "JIRA_UNAVAILABLE",
    "NO_WORKLOADS",
    "PAUSED",
    "QUERY_FAILED",
    "READY",
    "TRUE",
    "UNKNOWN",
    "find_condition",
    "set_condition",
]

# --- condition statuses (metav1.ConditionStatus) -------------------------------------
TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"
_STATUSES = (TRUE, FALSE, UNKNOWN)

# --- condition types ------------------------------------------------------------------
READY = "Ready"
"""The policy is being served: its spec parsed and the backends its triggers need answer.
Printed in ``kubectl get hp``; the only type an SRE needs to look at first."""

ESCALATION_READY = "EscalationReady"
"""Tickets can be filed for this policy: Jira answers and its project exists. Only on
policies with ``spec.remediation.escalate.jira``; remediation works either way."""

# --- reasons for EscalationReady ------------------------------------------------------
JIRA_REACHABLE = "JiraReachable"
"""True: the operator's Jira credentials can browse the project."""
JIRA_NOT_CONFIGURED = "JiraNotConfigured"
"""False: the policy escalates to Jira but the operator was started without a Jira URL."""
JIRA_REJECTED = "JiraRejected"
"""False: Jira refused (wrong credentials, unknown project); the message says which."""
JIRA_UNAVAILABLE = "JiraUnavailable"
"""False: Jira did not answer; checked again later."""

# --- reasons for Ready ----------------------------------------------------------------
ACCEPTED = "Accepted"
"""Ready=True: the spec parsed and every trigger's backend answered its last query."""
PAUSED = "Paused"
"""Ready=True: ``spec.mode`` is Paused, so nothing is detected or done, by request."""
NO_WORKLOADS = "NoWorkloads"
"""Ready=True: the spec is fine but ``spec.target.selector`` matches no workload yet
(a typo in a label is the usual cause, so it is worth saying)."""
INVALID_SPEC = "InvalidSpec"
"""Ready=False: ``parse`` refused the spec; the message names the field and the fix.
The policy is not served until it is edited (the generation changes)."""
BACKEND_UNAVAILABLE = "BackendUnavailable"
"""Ready=False: Prometheus (or Jira, for escalation) did not answer; triggers report
``unknown`` and nothing is done on their account until it answers again."""
QUERY_FAILED = "QueryFailed"
"""Ready=False: Prometheus answered but refused a trigger's query (a PromQL error that
only the server can see); the message names the trigger."""


def find_condition(conditions: Sequence[Mapping[str, Any]], type: str) -> Mapping[str, Any] | None:
    """The condition of this type, or ``None``."""
    return next((c for c in conditions if c.get("type") == type), None)


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with the condition ``type`` set; the input is not changed.

    ``now`` is the RFC 3339 time (e.g. ``2026-01-02T03:04:05Z``) written to
    ``lastTransitionTime`` when the condition is new or its status changed; otherwise
    the previous ``lastTransitionTime`` is kept. Other conditions keep their order.
    """
    if status not in _STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(_STATUSES)}")
    if not reason or not reason[0].isalpha() or not reason.replace("_", "").isalnum():
        raise ValueError(f"reason {reason!r} must be CamelCase, e.g. InvalidSpec")
    result: list[dict[str, Any]] = []
    found = False
    for old in conditions:
        if old.get("type") != type:
            result.append(dict(old))
            continue
        found = True
        changed = old.get("status") != status or not old.get("lastTransitionTime")
        result.append(
            {
                "type": type,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": now if changed else old["lastTransitionTime"],
            }
        )
    if not found:
        result.append(
            {
                "type": type,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": now,
            }
        )
    return result
