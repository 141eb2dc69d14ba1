"""Deterministic names and labels for Remediation objects.

An incident of (policy, workload, trigger) is one Remediation named
``<workload>-<trigger>-<fingerprint>-<ordinal>``. The driver creates it with the
next ordinal when no open record exists: creating it is the lock, so two operator
replicas (or a restart racing a watch) cannot both start the same incident; the
loser gets ``409 Conflict`` and re-reads. The fingerprint label lists every record
of one (namespace, policy, workload, trigger), open or final.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# One identity for records and tickets (re-exported).
from selfheal.actions.ticket import fingerprint as fingerprint

LABEL_FINGERPRINT = "selfheal.dev/fingerprint"
"""Value: ``fingerprint(...)``. Selects all records of one (policy, workload, trigger)."""
LABEL_POLICY = "selfheal.dev/policy"
"""Value: the HealingPolicy name (sanitised to a label value; for humans and selectors)."""
LABEL_WORKLOAD = "selfheal.dev/workload"
"""Value: the workload name (sanitised; may be truncated, so match by fingerprint)."""
LABEL_TRIGGER = "selfheal.dev/trigger"
"""Value: the trigger name (sanitised)."""

MAX_NAME = 63
"""DNS-1123 label length: the name also fits where a label value is needed."""
"""Hex digits (48 bits): collisions within one namespace are not a practical concern."""

_NOT_NAME = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


def remediation_name(
    *, namespace: str, policy: str, workload: str, trigger: str, ordinal: int
) -> str:
    """``<workload>-<trigger>-<fingerprint>-<ordinal>``, a DNS-1123 label (≤ 63 chars).

    The readable prefix is lowercased, dots and other characters become ``-``, and it
    is truncated to fit; uniqueness comes from the fingerprint and the ordinal.
    """
    if ordinal < 1:
        raise ValueError(f"ordinal: must be ≥ 1, got {ordinal}; use next_ordinal()")
    fp = fingerprint(namespace=namespace, policy=policy, workload=workload, trigger=trigger)
    suffix = f"-{fp}-{ordinal}"
    prefix = _NOT_NAME.sub("-", f"{workload}-{trigger}".lower())
    prefix = re.sub(r"-{2,}", "-", prefix)[: MAX_NAME - len(suffix)].strip("-")
    return f"{prefix or 'r'}{suffix}"


def next_ordinal(*, existing: Iterable[str], fingerprint: str) -> int:
    """1 + the highest ordinal among ``existing`` names of this fingerprint (1 if none).

    Names that are not ``...-<fingerprint>-<n>`` are ignored, so passing every
    Remediation name of the namespace is as correct as passing the label-selected ones.
    """
    pattern = re.compile(rf"-{re.escape(fingerprint)}-([0-9]+)$")
    ordinals = [int(m.group(1)) for name in existing if (m := pattern.search(name))]
    return max(ordinals, default=0) + 1


def label_value(value: str) -> str:
    """``value`` made a valid label value: allowed characters, ≤ 63, alphanumeric ends."""
    cleaned = _NOT_LABEL.sub("-", value)[:MAX_NAME]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def labels(*, namespace: str, policy: str, workload: str, trigger: str) -> dict[str, str]:
    """The labels every Remediation carries."""
    return {
        LABEL_FINGERPRINT: fingerprint(
            namespace=namespace, policy=policy, workload=workload, trigger=trigger
        ),
        LABEL_POLICY: label_value(policy),
        LABEL_WORKLOAD: label_value(workload),
        LABEL_TRIGGER: label_value(trigger),
    }
