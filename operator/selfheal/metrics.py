"""The operator's own Prometheus metrics (``prometheus_client``), served on /metrics.

Names follow Prometheus conventions: ``selfheal_`` prefix, base units, ``_total``
on counters. Label values are bounded (trigger names, actions, results).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SIGNALS = Counter(
    "selfheal_signals_total",
    "Signals evaluated, by trigger kind and outcome.",
    ["trigger", "health"],
)
REMEDIATIONS = Counter(
    "selfheal_remediations_total",
    "Remediation steps taken, by action and result.",
    ["action", "result"],
)
TIME_TO_RESOLVE = Histogram(
    "selfheal_time_to_resolution_seconds",
    "From detection to a verified recovery.",
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
GUARDRAIL_REFUSALS = Counter(
    "selfheal_guardrail_refusals_total",
    "Actions refused by a guardrail, by guardrail.",
    ["guardrail"],
)
BACKEND_REQUESTS = Counter(
    "selfheal_backend_requests_total",
    "Requests to backends, by backend, operation and status.",
    ["backend", "operation", "status"],
)
BACKEND_ERRORS = Counter(
    "selfheal_backend_errors_total",
    "Failed backend calls, by backend and error kind.",
    ["backend", "kind"],
)
BACKEND_LATENCY = Histogram(
    "selfheal_backend_request_duration_seconds",
    "Latency of backend calls.",
    ["backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
POLICIES = Gauge("selfheal_policies", "HealingPolicies, by readiness.", ["ready"])
TICKETS = Counter(
    "selfheal_tickets_total",
    "Jira ticket operations, by operation and result.",
    ["operation", "result"],
)
NOTIFICATIONS = Counter(
    "selfheal_notifications_total",
    "Notification attempts to the on-duty expert, by kind and result.",
    ["kind", "result"],
)
GAVE_UP = Counter(
    "selfheal_gave_up_total",
    "Work given up at its horizon (ticket: not filed; resolution: ticket not told; "
    "notification: the on-duty expert not told).",
    ["what"],
)
RECONCILE_ERRORS = Counter(
    "selfheal_reconcile_errors_total",
    "Failures of one incident's reconcile (retried with backoff; others go on).",
    ["kind"],
)
LEADER = Gauge(
    "selfheal_leader",
    "1 while this process may act (it holds the leader Lease, or leader election is off), "
    "0 while it stands by.",
    ["identity"],
)
SHARD = Gauge(
    "selfheal_shard",
    "1, labelled with this process's shard (--shard) and the shard count (--total-shards): "
    "it serves the namespaces whose hash modulo shards is shard.",
    ["shard", "shards"],
)
ALERT_WEBHOOK = Counter(
    "selfheal_alert_webhook_requests_total",
    "Alertmanager webhook requests, by HTTP status code answered.",
    ["code"],
)
