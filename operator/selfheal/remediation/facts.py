"""What the handlers know about an incident's surroundings, read from the watch caches."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from selfheal.remediation.guardrails import Availability
from selfheal.remediation.records import Records


@dataclasses.dataclass(frozen=True, kw_only=True)
class Facts:
    records: Records = dataclasses.field(default_factory=Records)
    """The Remediation records of the namespace."""
    unhealthy: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Workload name -> unix time it turned unhealthy (namespace-wide, storm brake)."""
    availability: Availability | None = None
    template_hash: str = ""
    """``pod-template-hash`` of the workload's newest ReplicaSet at detection time."""
    pod: str | None = None
    """The pod and container whose evidence goes into a ticket, when known."""
    container: str | None = None


__all__ = ["Facts"]
