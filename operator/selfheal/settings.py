"""Operator settings, read once at start-up (never at import time).

Every field documents its unit, its default and what ``None`` means. Values come
from command-line flags first, then ``SELFHEAL_*`` environment variables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch. Empty means cluster-wide."""

    prometheus_url: str | None = None
    """Base URL of Prometheus. ``None`` disables metric triggers (they report Unknown)."""

    prometheus_timeout: float = 10.0
    """Seconds before one Prometheus query is abandoned (and the trigger is Unknown)."""

    jira_url: str | None = None
    """Base URL of Jira. ``None`` disables escalation tickets (escalations become Events)."""

    jira_secret: str | None = None
    """``namespace/name`` of the Secret holding Jira credentials: keys ``username`` and
    ``token`` (basic auth), or ``token`` alone (bearer). ``None``: anonymous."""

    jira_timeout: float = 15.0
    """Seconds before one Jira request is abandoned (and retried with backoff)."""

    retention: float = 7 * 24 * 3600.0
    """Seconds a Closed Remediation is kept before it is pruned."""

    metrics_port: int = 8080
    """TCP port of ``/metrics`` and the health endpoints; 0 disables them."""

    log_level: str = "INFO"
    """Python logging level name."""

    log_format: str = "text"
    """``text`` or ``json``."""

    peering: str | None = None
    """kopf peering name for leader election between replicas; ``None`` runs standalone."""

    namespace: str = "selfheal-system"
    """Namespace the operator runs in (for its own Events and Secrets)."""

    ticket_horizon: float = 24 * 3600.0
    """Seconds after the first attempt when ticket work not done (filing a ticket,
    telling it the incident ended) is given up: state Failed, a Warning Event, and
    ``selfheal_gave_up_total``."""


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``SELFHEAL_*`` variables; unknown values keep defaults."""
    env = os.environ if env is None else env
    kw: dict[str, object] = {}
    if v := env.get("SELFHEAL_NAMESPACES"):
        kw["namespaces"] = _split(v)
    for key, field, conv in (
        ("PROMETHEUS_URL", "prometheus_url", str),
        ("PROMETHEUS_TIMEOUT", "prometheus_timeout", float),
        ("JIRA_URL", "jira_url", str),
        ("JIRA_SECRET", "jira_secret", str),
        ("JIRA_TIMEOUT", "jira_timeout", float),
        ("RETENTION_SECONDS", "retention", float),
        ("METRICS_PORT", "metrics_port", int),
        ("LOG_LEVEL", "log_level", str),
        ("LOG_FORMAT", "log_format", str),
        ("PEERING", "peering", str),
        ("NAMESPACE", "namespace", str),
        ("TICKET_HORIZON_SECONDS", "ticket_horizon", float),
    ):
        if (raw := env.get(f"SELFHEAL_{key}")) is not None and raw != "":
            try:
                kw[field] = conv(raw)
            except ValueError as e:
                raise ValueError(f"SELFHEAL_{key}={raw!r}: {e}") from None
    return Settings(**kw)  # type: ignore[arg-type]
