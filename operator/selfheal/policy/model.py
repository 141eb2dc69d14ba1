"""The typed model of a HealingPolicy spec: the contract every layer above uses.

Parsing (``selfheal.policy.parse``) turns a raw spec dict into these frozen
dataclasses or raises ``PolicyError`` naming the field and the fix. Durations
are seconds (float). Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Mode(enum.StrEnum):
    ENFORCE = "Enforce"
    """Decide and act."""
    DRY_RUN = "DryRun"
    """Decide and record the exact change (server-side dry-run); change nothing."""
    PAUSED = "Paused"
    """Detect nothing, act on nothing; existing Remediations are left as they are."""
    APPROVE = "Approve"
    """Decide, then wait in AwaitingApproval for a person's annotation before each step."""


class Sensitivity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelSelectorRequirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    kind: str = "Deployment"
    """``Deployment``, ``StatefulSet`` or ``DaemonSet``."""
    match_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrashLoopTrigger:
    restarts: int = 3
    """Container restarts within ``within`` seconds that make the workload unhealthy."""
    within: float = 600.0
    """Window (seconds) over which restarts are counted."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnomalySpec:
    sensitivity: Sensitivity = Sensitivity.MEDIUM
    baseline: float = 7 * 86400.0
    """History (seconds) the baseline learns from."""
    seasonality: float | None = None
    """Seasonal period in seconds (e.g. a day); ``None``: the detector's default (a day,
    used only where it predicts better than the recent level)."""
    step: float = 60.0
    """Resolution (seconds) of the history range query."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrometheusTrigger:
    query: str
    workload_labels: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"namespace": "namespace", "name": "deployment"}
    )
    """Maps ``namespace`` and ``name`` to the result series' label names."""
    above: float | None = None
    below: float | None = None
    anomaly: AnomalySpec | None = None
    for_: float = 120.0
    """Seconds the condition must hold before the trigger fires."""
    interval: float = 30.0
    """Seconds between evaluations."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertTrigger:
    """Alertmanager's alerts, received by the operator's webhook receiver."""

    alertname: str
    """The alert's ``alertname`` label (the rule's name)."""
    matchers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Further labels the alert must carry with exactly these values."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trigger:
    name: str
    crash_loop: CrashLoopTrigger | None = None
    prometheus: PrometheusTrigger | None = None
    alert: AlertTrigger | None = None

    @property
    def kind(self) -> str:
        if self.alert is not None:
            return "alert"
        return "crashLoop" if self.crash_loop is not None else "prometheus"


class RollbackTo(enum.StrEnum):
    LAST_HEALTHY = "LastHealthy"
    PREVIOUS = "Previous"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RollbackStep:
    to: RollbackTo = RollbackTo.LAST_HEALTHY


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaleStep:
    by: int = 1
    """Replicas to add."""
    max: int = 10
    """Upper bound on replicas (or on an HPA's minReplicas)."""
    revert_after_recovery: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestartStep:
    pass


Step = RollbackStep | ScaleStep | RestartStep


def step_action(step: Step) -> str:
    """The action's name as it appears in the API: rollback, scale or restart."""
    if isinstance(step, RollbackStep):
        return "rollback"
    if isinstance(step, ScaleStep):
        return "scale"
    return "restart"


@dataclasses.dataclass(frozen=True, kw_only=True)
class JiraEscalation:
    project: str
    issue_type: str = "Bug"
    priority: str | None = None
    labels: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    custom_fields: Mapping[str, object] = dataclasses.field(default_factory=dict)
    resolve_transition: str | None = None
    """Transition applied to the ticket when a later verification passes; ``None``: comment only."""
    assignee: str | None = None
    """Who the new ticket is assigned to (the on-call): a user name on Jira Server and
    Data Center, an account id on Jira Cloud; ``None``: the project's default."""
    watchers: tuple[str, ...] = ()
    """Added as watchers of the new ticket (user names on Server, account ids on Cloud)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecretKeyRef:
    """A key of a Secret in the policy's namespace."""

    name: str
    key: str = "urls"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotifyEscalation:
    """Tell the on-duty expert: apprise URLs, one a line, read from a Secret at send time
    (a URL carries tokens and passwords, so it is never written in a policy)."""

    secret_ref: SecretKeyRef


class OnDependencyUnhealthy(enum.StrEnum):
    """What a step does when a dependency of the workload (another workload's Service
    named in its logs, stack or env) has no ready endpoint or an open incident."""

    IGNORE = "Ignore"
    """Run the step as if nothing was checked (the default: today's behaviour)."""
    ESCALATE = "Escalate"
    """Skip the step (``Refused``, reason ``DependencyUnhealthy``); with no step left
    that may run, escalate. A dependency whose health cannot be read does not skip."""
    WAIT = "Wait"
    """Hold the step while the dependency is unhealthy or its health cannot be read,
    re-checked on every pass, at most ``wait_for``; then skip it and escalate."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DependencyRule:
    """``remediation.dependencies`` (or a step's own ``dependencies``)."""

    on_unhealthy: OnDependencyUnhealthy = OnDependencyUnhealthy.IGNORE
    wait_for: float | None = None
    """Seconds a step waits (``Wait``) before the incident escalates; ``None``: until the
    step's deadline (``verify.timeout``, default twice ``verify.for``)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Remediation:
    steps: tuple[Step, ...] = ()
    verify_for: float = 300.0
    """Seconds the workload must stay healthy after a step for it to count as healed."""
    verify_timeout: float | None = None
    """Seconds after a step before giving up on it; ``None``: ``2 * verify_for``."""
    jira: JiraEscalation | None = None
    notify: NotifyEscalation | None = None
    """Notify the on-duty expert on escalation, on give-up and on recovery; ``None``: no one."""
    verify_alert_resolved: bool = False
    """A heal is verified only while no Alertmanager alert about the workload fires (its
    ``namespace`` and ``deployment`` labels), whatever the trigger says."""
    approval_steps: tuple[int, ...] = ()
    """Indexes of steps marked ``approval: required`` (every step in mode Approve)."""
    approval_timeout: float = 3600.0
    """Seconds an approval request waits before the incident is escalated instead."""
    dependencies: DependencyRule = dataclasses.field(default_factory=DependencyRule)
    """What a step does when a dependency is unhealthy (``remediation.dependencies``)."""
    step_dependencies: tuple[DependencyRule | None, ...] = ()
    """Per step (same index as ``steps``): the step's own rule, its unset fields taken
    from ``dependencies``; ``None`` or missing: ``dependencies``."""

    def dependency_rule(self, index: int) -> DependencyRule:
        """The rule that applies to step ``index``."""
        own = self.step_dependencies[index] if index < len(self.step_dependencies) else None
        return self.dependencies if own is None else own


@dataclasses.dataclass(frozen=True, kw_only=True)
class StormBrake:
    max_unhealthy: int = 5
    """Unhealthy workloads in one namespace within ``within`` that stop all acting there."""
    within: float = 300.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Guardrails:
    cooldown: float = 1800.0
    """Seconds after a remediation of a workload before it may be remediated again."""
    max_remediations: int = 3
    """Remediations started by this policy within ``window``."""
    window: float = 3600.0
    max_concurrent: int = 1
    """Remediations of this policy acting or verifying at once."""
    max_concurrent_per_namespace: int = 3
    min_available: float = 0.0
    """Share of desired replicas (0..1) that must be available before a disruptive step."""
    storm: StormBrake = dataclasses.field(default_factory=StormBrake)
    allow_gitops: bool = False
    """Act on Deployments managed by Argo CD or Flux (by default: escalate instead)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealingPolicy:
    namespace: str
    name: str
    generation: int
    mode: Mode = Mode.ENFORCE
    target: Target = dataclasses.field(default_factory=Target)
    triggers: tuple[Trigger, ...] = ()
    remediation: Remediation = dataclasses.field(default_factory=Remediation)
    guardrails: Guardrails = dataclasses.field(default_factory=Guardrails)
    redact_patterns: tuple[str, ...] = ()
    """Extra regular expressions whose matches are redacted from evidence."""

    def trigger(self, name: str) -> Trigger | None:
        return next((t for t in self.triggers if t.name == name), None)


class PolicyError(ValueError):
    """A policy that cannot be served: names the field and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
