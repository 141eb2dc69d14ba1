"""Operator settings, read once at start-up (never at import time).

Every field documents its unit, its default and what ``None`` means. Values come
from command-line flags first, then ``SELFHEAL_*`` environment variables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from selfheal.sharding import Shard


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

    namespace: str = "selfheal-system"
    """Namespace the operator runs in (for its own Events, Secrets and Lease). From
    ``SELFHEAL_NAMESPACE``, else ``POD_NAMESPACE`` (the downward API)."""

    leader_election: bool = True
    """Campaign for a Lease and act only while holding it, so replicas never act side by
    side. False: this process always leads (one replica, tests, a laptop)."""

    leader_election_name: str = "selfheal"
    """Name of the ``coordination.k8s.io/v1`` Lease; one per installation."""

    leader_election_namespace: str | None = None
    """Namespace of the Lease. ``None``: ``namespace``, the operator's own."""

    lease_duration: float = 15.0
    """Seconds a standby waits without seeing the Lease renewed before it takes over."""

    renew_deadline: float = 10.0
    """Seconds a leader keeps failing to renew before it stops leading (< lease_duration)."""

    retry_period: float = 2.0
    """Seconds between renewals and between a standby's attempts (jittered up to x2.2)."""

    shard: int = 0
    """This process's shard, 0 .. ``total_shards`` - 1: it serves the namespaces whose
    FNV-1a hash modulo ``total_shards`` is this (``selfheal.sharding``)."""

    total_shards: int = 1
    """Shards the namespaces are split across (kube-state-metrics' ``--total-shards``);
    each shard elects its own leader on its own Lease. 1 (the default): no sharding, one
    Lease named ``leader_election_name``."""

    pod_name: str | None = None
    """This pod's name (``POD_NAME``, the downward API), the stem of the election
    identity ``<pod>_<random>``. ``None``: the host name."""

    ticket_horizon: float = 24 * 3600.0
    """Seconds after the first attempt when ticket work not done (filing a ticket,
    telling it the incident ended) is given up: state Failed, a Warning Event, and
    ``selfheal_gave_up_total``."""

    alert_webhook_port: int = 0
    """TCP port of the Alertmanager webhook receiver (``POST /alerts``); 0 (the default)
    disables it, and alert triggers stay unknown."""

    alert_webhook_token_file: str | None = None
    """File holding the bearer token Alertmanager must send (a mounted Secret's key; re-read
    when it changes). Required when ``alert_webhook_port`` is set; ``None``: no receiver."""

    alert_webhook_cert_file: str | None = None
    """PEM certificate (chain) of the receiver; with ``alert_webhook_key_file`` it serves
    HTTPS. ``None`` (the default): plain HTTP."""

    alert_webhook_key_file: str | None = None
    """PEM private key of ``alert_webhook_cert_file``; ``None``: plain HTTP."""

    alertmanager_url: str | None = None
    """Base URL of Alertmanager's API, for silences while selfheal heals. ``None`` (the
    default): no silences."""

    alertmanager_token_file: str | None = None
    """File holding a bearer token for Alertmanager's API (read once at start-up);
    ``None``: no Authorization header."""

    alertmanager_timeout: float = 10.0
    """Seconds before one Alertmanager request is abandoned (and retried later)."""

    failpoint: str = ""
    """Tests only: ``after-action`` makes the process stop right after a step's action
    returned and before its outcome is stored, so a test can kill it exactly there.
    Empty (the default): no failpoint."""

    test_clock_file: str = ""
    """Tests only: a file holding seconds added to the remediation driver's clock, so a
    test can let ten minutes of backoff pass in seconds. Empty (the default): the wall
    clock."""

    @property
    def sharding(self) -> Shard:
        """``shard`` of ``total_shards``; raises ValueError when they do not fit."""
        return Shard(index=self.shard, total=self.total_shards)


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


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
        ("NAMESPACE", "namespace", str),
        ("LEADER_ELECTION", "leader_election", _bool),
        ("LEADER_ELECTION_NAME", "leader_election_name", str),
        ("LEADER_ELECTION_NAMESPACE", "leader_election_namespace", str),
        ("LEASE_DURATION", "lease_duration", float),
        ("RENEW_DEADLINE", "renew_deadline", float),
        ("RETRY_PERIOD", "retry_period", float),
        ("SHARD", "shard", int),
        ("TOTAL_SHARDS", "total_shards", int),
        ("TICKET_HORIZON_SECONDS", "ticket_horizon", float),
        ("FAILPOINT", "failpoint", str),
        ("TEST_CLOCK_FILE", "test_clock_file", str),
        ("ALERTMANAGER_URL", "alertmanager_url", str),
        ("ALERTMANAGER_TOKEN_FILE", "alertmanager_token_file", str),
        ("ALERTMANAGER_TIMEOUT", "alertmanager_timeout", float),
        ("ALERT_WEBHOOK_PORT", "alert_webhook_port", int),
        ("ALERT_WEBHOOK_TOKEN_FILE", "alert_webhook_token_file", str),
        ("ALERT_WEBHOOK_CERT_FILE", "alert_webhook_cert_file", str),
        ("ALERT_WEBHOOK_KEY_FILE", "alert_webhook_key_file", str),
    ):
        if (raw := env.get(f"SELFHEAL_{key}")) is not None and raw != "":
            try:
                kw[field] = conv(raw)
            except ValueError as e:
                raise ValueError(f"SELFHEAL_{key}={raw!r}: {e}") from None
    # The downward API's names (the chart sets them), when no SELFHEAL_* one is given.
    if "namespace" not in kw and (v := env.get("POD_NAMESPACE")):
        kw["namespace"] = v
    if v := env.get("POD_NAME"):
        kw["pod_name"] = v
    return Settings(**kw)  # type: ignore[arg-type]
