"""What the handlers know about an incident's surroundings, read from the watch caches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    replicasets: Callable[[], Sequence[Mapping[str, Any]]] | None = None
    """The workload's ReplicaSets from the handlers' cache (what a rollback reads of
    them), so a rollback does not list them; ``None``: list them."""
    workload: Callable[[], Mapping[str, Any] | None] | None = None
    """The workload as the handlers' cache holds it (the parts a rollback reads), so a
    rollback that patches needs no GET first; ``None`` (or a call giving ``None``): read it."""


__all__ = ["Facts"]
