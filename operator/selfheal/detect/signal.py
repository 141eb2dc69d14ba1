"""What detectors emit and the remediation machine consumes."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"
    """No data, backend down, query error: never a reason to act."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkloadRef:
    namespace: str
    name: str
    uid: str = ""
    kind: str = "Deployment"

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Signal:
    policy: str
    """Name of the HealingPolicy (same namespace as the workload)."""
    workload: WorkloadRef
    trigger: str
    """Name of the policy's trigger that produced this signal."""
    health: Health
    at: float
    """Unix time (seconds) of the observation."""
    cause: str = ""
    """CamelCase cause, e.g. ``OOMKilled``, ``Error``, ``ImagePullBackOff``,
    ``ThresholdExceeded``, ``AnomalyDetected``, ``NoData``, ``BackendUnavailable``."""
    detail: str = ""
    """One human sentence."""
    evidence: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """Samples, the band or threshold, restart counts: JSON-serialisable."""
