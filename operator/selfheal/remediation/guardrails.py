"""Guardrails: may this workload be acted on now? Pure; computed from records.

Everything that limits acting (cooldowns, rate limits, concurrency) is computed from
the ``Remediation`` records the driver lists, never from memory, so a restart or a
failover makes the same decisions. ``check()`` answers with a ``Decision``: allowed,
or refused by a named ``Guardrail`` with a human message and what the machine does
about it (``Refusal``: wait, escalate, or skip the step).

Checks, in order (the first refusal wins):

1. ``Paused``: the policy's mode is Paused (wait).
2. ``StormBrake``: ``storm.max_unhealthy`` or more workloads of the namespace turned
   unhealthy within ``storm.within`` (escalate; the first record refused carries the
   single summary, see ``storm_carrier``).
3. Only before an incident's first action (``first=True``):
   ``Cooldown`` (another record is acting on this workload: wait; the workload was
   changed less than ``cooldown`` ago: escalate), ``RateLimit`` (escalate),
   ``MaxConcurrent`` and ``MaxConcurrentNamespace`` (wait).
4. ``MinAvailable``: before a disruptive step (rollback, restart; not scale), when
   fewer than ``min_available`` of the desired replicas are available (skip the step).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from selfheal.detect.signal import WorkloadRef
from selfheal.policy import ownership
from selfheal.policy.model import HealingPolicy, Mode, ScaleStep, Step, step_action
from selfheal.remediation.state import (
    Phase,
    RemediationState,
    first_change,
    last_change,
    parse_time,
    phase_from_status,
    steps_from_status,
)


class Guardrail(enum.StrEnum):
    COOLDOWN = "Cooldown"
    """The workload was remediated less than ``guardrails.cooldown`` ago (or is being now)."""
    RATE_LIMIT = "RateLimit"
    """The policy started ``guardrails.maxRemediations`` within ``guardrails.window``."""
    MAX_CONCURRENT = "MaxConcurrent"
    """``guardrails.maxConcurrent`` remediations of this policy are acting or verifying."""
    MAX_CONCURRENT_NAMESPACE = "MaxConcurrentNamespace"
    """``guardrails.maxConcurrentPerNamespace`` remediations of the namespace are active."""
    MIN_AVAILABLE = "MinAvailable"
    """Too few replicas are available for a disruptive step."""
    STORM_BRAKE = "StormBrake"
    """Too many workloads of the namespace turned unhealthy at once."""
    PAUSED = "Paused"
    """The policy is Paused."""


class Refusal(enum.StrEnum):
    """What the machine does with a refusal."""

    WAIT = "Wait"
    """Transient: keep the incident, retry on the next signal or tick, until its deadline."""
    ESCALATE = "Escalate"
    """Acting is not going to be allowed for this incident: escalate now."""
    SKIP_STEP = "SkipStep"
    """This step may not run (it would disrupt too much): record it Refused, try the next."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    guardrail: Guardrail | None = None
    """``None``: allowed."""
    refusal: Refusal | None = None
    message: str = ""
    storm_summary: bool = False
    """StormBrake only: this workload's record carries the namespace's single summary."""
    related: tuple[str, ...] = ()
    """StormBrake only: the unhealthy workloads of the namespace, sorted."""

    @property
    def allowed(self) -> bool:
        return self.guardrail is None


ALLOWED = Decision()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Availability:
    """The workload's replicas, as the driver read them just before deciding."""

    available: int
    desired: int

    @classmethod
    def of(cls, kind: str, *, spec: Mapping[str, Any], status: Mapping[str, Any]) -> Availability:
        """From the workload's own status, per kind (``ownership.availability``)."""
        available, desired = ownership.availability(kind, spec=spec, status=status)
        return cls(available=available, desired=desired)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordSummary:
    """The little of a Remediation object that guardrails need."""

    namespace: str
    name: str
    policy: str
    workload: str
    trigger: str
    phase: Phase
    detected_at: float
    started_at: float | None = None
    """When its first step that changed the workload started; ``None``: never acted."""
    last_acted_at: float | None = None
    """When it last changed the workload; ``None``: never acted."""
    closed_at: float | None = None
    storm_summary: bool = False

    @property
    def active(self) -> bool:
        """Holds a concurrency slot: acting, verifying, or between two steps."""
        if self.phase in (Phase.ACTING, Phase.VERIFYING):
            return True
        return self.phase is Phase.DETECTED and self.started_at is not None

    @classmethod
    def from_state(
        cls,
        state: RemediationState,
        *,
        namespace: str,
        name: str,
        policy: str,
        workload: str,
        trigger: str,
    ) -> RecordSummary:
        return cls(
            namespace=namespace,
            name=name,
            policy=policy,
            workload=workload,
            trigger=trigger,
            phase=state.phase,
            detected_at=state.detected_at,
            started_at=state.started_at,
            last_acted_at=state.last_acted_at,
            closed_at=state.closed_at,
            storm_summary=state.storm_summary,
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RecordSummary:
        """From a Remediation object as the API returns it (spec from ``remediation_spec``).

        Raises ``ValueError`` naming the field when the object is not a selfheal record.
        """
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        workload = spec.get("workload") or {}
        for field, value in (
            ("metadata.name", meta.get("name")),
            ("metadata.namespace", meta.get("namespace")),
            ("spec.policy", spec.get("policy")),
            ("spec.workload.name", workload.get("name")),
            ("spec.trigger.name", trigger_name(spec)),
        ):
            if not value:
                raise ValueError(f"{field}: missing; the object was not written by selfheal")
        # Only what guardrails read: the driver summarises every record of a namespace
        # for every decision, and a full ``from_status`` is several times slower.
        status = body.get("status") or {}
        phase = phase_from_status(status)
        detected_at = parse_time(status.get("detectedAt"), field="status.detectedAt")
        if detected_at is None:
            raise ValueError("status.detectedAt: missing; the object was not written by selfheal")
        steps = steps_from_status(status)
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            policy=spec["policy"],
            workload=workload["name"],
            trigger=trigger_name(spec),
            phase=phase,
            detected_at=detected_at,
            started_at=first_change(steps),
            last_acted_at=last_change(steps),
            closed_at=parse_time(status.get("closedAt"), field="status.closedAt"),
            storm_summary=bool((status.get("escalation") or {}).get("stormSummary")),
        )


def trigger_name(spec: Mapping[str, Any]) -> str:
    """``spec.trigger.name`` of a Remediation (a plain string in early records)."""
    trig = spec.get("trigger")
    return str(trig.get("name") or "") if isinstance(trig, Mapping) else str(trig or "")


def is_disruptive(step: Step) -> bool:
    """Rollback and restart replace pods; scaling up does not take any away."""
    return not isinstance(step, ScaleStep)


def check(
    *,
    policy: HealingPolicy,
    workload: WorkloadRef,
    step: Step | None,
    first: bool,
    records: Iterable[RecordSummary],
    unhealthy: Mapping[str, float],
    availability: Availability | None,
    now: float,
    exclude: str = "",
) -> Decision:
    """May ``step`` (``None``: no step in particular) be acted on ``workload`` now?

    ``first``: the incident has not changed the workload yet (the incident-level
    checks apply). ``records``: Remediation records of the namespace (other
    namespaces and the record named ``exclude``, the caller's own, are ignored).
    ``unhealthy``: workload name -> unix time it turned unhealthy, for every
    workload of the namespace the detectors currently see unhealthy.
    ``availability``: the workload's replicas; ``None``: unknown.
    """
    g = policy.guardrails
    others = [r for r in records if r.namespace == workload.namespace and r.name != exclude]
    if policy.mode is Mode.PAUSED:
        return Decision(
            guardrail=Guardrail.PAUSED,
            refusal=Refusal.WAIT,
            message=f"paused: HealingPolicy {policy.name} has mode Paused; nothing is acted on",
        )
    storm = _storm(policy=policy, workload=workload, others=others, unhealthy=unhealthy, now=now)
    if storm is not None:
        return storm
    if first:
        for decision in (
            _cooldown(policy=policy, workload=workload, others=others, now=now),
            _rate_limit(policy=policy, others=others, now=now),
        ):
            if decision is not None:
                return decision
        mine = sum(1 for r in others if r.policy == policy.name and r.active)
        if mine >= g.max_concurrent:
            return Decision(
                guardrail=Guardrail.MAX_CONCURRENT,
                refusal=Refusal.WAIT,
                message=(
                    f"max concurrent: {mine} remediation(s) of policy {policy.name} are "
                    f"active (guardrails.maxConcurrent={g.max_concurrent}); waiting"
                ),
            )
        everyone = sum(1 for r in others if r.active)
        if everyone >= g.max_concurrent_per_namespace:
            return Decision(
                guardrail=Guardrail.MAX_CONCURRENT_NAMESPACE,
                refusal=Refusal.WAIT,
                message=(
                    f"max concurrent in namespace: {everyone} remediation(s) are active in "
                    f"{workload.namespace} (guardrails.maxConcurrentPerNamespace="
                    f"{g.max_concurrent_per_namespace}); waiting"
                ),
            )
    if step is not None and is_disruptive(step) and g.min_available > 0:
        return _min_available(policy=policy, workload=workload, step=step, avail=availability)
    return ALLOWED


def storm_carrier(*, namespace: str, records: Iterable[RecordSummary]) -> RecordSummary | None:
    """The open record that carries a namespace's storm summary, if any.

    The first record the storm brake refuses becomes the carrier and keeps the role
    until it ends; every later refusal sees it here and files no ticket of its own.
    (Electing, say, the first unhealthy workload by name instead could elect one whose
    record never meets the brake: acted on before the storm, or under a paused policy,
    and the storm would have no summary at all.) Ties: the first by name.
    """
    carriers = [
        r for r in records if r.namespace == namespace and r.storm_summary and not r.phase.final
    ]
    return min(carriers, key=lambda r: r.name, default=None)


def _storm(
    *,
    policy: HealingPolicy,
    workload: WorkloadRef,
    others: list[RecordSummary],
    unhealthy: Mapping[str, float],
    now: float,
) -> Decision | None:
    brake = policy.guardrails.storm
    recent = {name for name, since in unhealthy.items() if since >= now - brake.within}
    recent.add(workload.name)
    if len(recent) < brake.max_unhealthy:
        return None
    carrier = storm_carrier(namespace=workload.namespace, records=others)
    related = tuple(sorted(recent))
    if carrier is None:
        where = "this record carries the summary"
    else:
        where = f"summarised by {carrier.name} ({carrier.workload})"
    return Decision(
        guardrail=Guardrail.STORM_BRAKE,
        refusal=Refusal.ESCALATE,
        storm_summary=carrier is None,
        related=related,
        message=(
            f"storm brake: {len(recent)} workloads in {workload.namespace} turned unhealthy "
            f"within {human_duration(brake.within)} ({', '.join(related)}; guardrails.storm."
            f"maxUnhealthy={brake.max_unhealthy}); acting is stopped there, {where}"
        ),
    )


def _cooldown(
    *, policy: HealingPolicy, workload: WorkloadRef, others: list[RecordSummary], now: float
) -> Decision | None:
    same = [r for r in others if r.workload == workload.name]
    busy = sorted(r.name for r in same if r.active)
    if busy:
        return Decision(
            guardrail=Guardrail.COOLDOWN,
            refusal=Refusal.WAIT,
            message=f"cooldown: {workload.name} is being remediated by {busy[0]}; waiting",
        )
    cooldown = policy.guardrails.cooldown
    last = max((r.last_acted_at for r in same if r.last_acted_at is not None), default=None)
    if last is None or now - last >= cooldown:
        return None
    return Decision(
        guardrail=Guardrail.COOLDOWN,
        refusal=Refusal.ESCALATE,
        message=(
            f"cooldown: {workload.name} was remediated {human_duration(now - last)} ago; "
            f"next allowed in {human_duration(last + cooldown - now)} "
            f"(guardrails.cooldown={human_duration(cooldown)})"
        ),
    )


def _rate_limit(
    *, policy: HealingPolicy, others: list[RecordSummary], now: float
) -> Decision | None:
    g = policy.guardrails
    starts = sorted(
        r.started_at
        for r in others
        if r.policy == policy.name and r.started_at is not None and r.started_at > now - g.window
    )
    if len(starts) < g.max_remediations:
        return None
    # The oldest start that must leave the window for one more to fit.
    free_at = starts[len(starts) - g.max_remediations] + g.window
    return Decision(
        guardrail=Guardrail.RATE_LIMIT,
        refusal=Refusal.ESCALATE,
        message=(
            f"rate limit: policy {policy.name} started {len(starts)} remediations in the last "
            f"{human_duration(g.window)}; next allowed in {human_duration(free_at - now)} "
            f"(guardrails.maxRemediations={g.max_remediations}, "
            f"guardrails.window={human_duration(g.window)})"
        ),
    )


def _min_available(
    *, policy: HealingPolicy, workload: WorkloadRef, step: Step, avail: Availability | None
) -> Decision:
    need = policy.guardrails.min_available
    action = step_action(step)
    if avail is None:
        return Decision(
            guardrail=Guardrail.MIN_AVAILABLE,
            refusal=Refusal.SKIP_STEP,
            message=(
                f"min available: the availability of {workload.name} is unknown; a {action} "
                f"needs {need:.0%} of desired replicas available (guardrails.minAvailable)"
            ),
        )
    if avail.desired <= 0 or avail.available / avail.desired >= need:
        return ALLOWED
    return Decision(
        guardrail=Guardrail.MIN_AVAILABLE,
        refusal=Refusal.SKIP_STEP,
        message=(
            f"min available: {workload.name} has {avail.available}/{avail.desired} replicas "
            f"available ({avail.available / avail.desired:.0%}); a {action} needs "
            f"{need:.0%} (guardrails.minAvailable={need:.0%})"
        ),
    )


def human_duration(seconds: float) -> str:
    """``26m``, ``1h30m``, ``45s``, ``2d3h``: rounded up to the second, two units at most."""
    total = max(0, int(-(-seconds // 1)))
    if total < 60:
        return f"{total}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts[:2])
