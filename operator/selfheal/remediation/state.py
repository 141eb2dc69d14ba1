"""The state of one incident, exactly as a ``Remediation`` object's status stores it.

``RemediationState`` is what the pure machine (``selfheal.remediation.machine``)
reads and returns. ``to_status()`` gives the JSON-able camelCase dict the driver
writes into ``status``; ``from_status()`` rebuilds the same state after a restart,
so every decision (the next step, a deadline, a cooldown) resumes where it stopped.

Times are float unix seconds in memory and RFC3339 UTC strings in the status
(microsecond precision: a round trip is exact to the microsecond). Every key of
``to_status()`` is always present, ``null`` when unset, so writing it as a JSON
merge patch also clears values that were set before.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from selfheal.detect.signal import Health, WorkloadRef


class Phase(enum.StrEnum):
    DETECTED = "Detected"
    """The workload needs a step: waiting for an unhealthy signal or a guardrail's permission."""
    ACTING = "Acting"
    """A step's action was requested; waiting for its outcome (``ActionDone``)."""
    VERIFYING = "Verifying"
    """The step changed the workload; waiting for it to stay healthy for the verify window."""
    AWAITING_APPROVAL = "AwaitingApproval"
    """A step is proposed (``status.approval``: the action and its exact patch) and waits
    for a person's ``selfheal.io/approve`` or ``selfheal.io/reject`` annotation."""
    RESOLVED = "Resolved"
    """Final: a step healed the workload (verified)."""
    ESCALATED = "Escalated"
    """Steps exhausted or a guardrail forbade acting; humans were told (ticket, Event)."""
    CLOSED = "Closed"
    """Final: ended without a heal by a step (recovered after escalation, before any step
    changed the workload, or in DryRun; or escalated past retention)."""

    @property
    def final(self) -> bool:
        """A final record never changes phase again; a new incident gets a new record."""
        return self in (Phase.RESOLVED, Phase.CLOSED)


class StepResult(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    """The change was applied."""
    FAILED = "Failed"
    """The action errored (API error after retries, no outcome before the deadline)."""
    REFUSED = "Refused"
    """Not attempted: a guardrail (``MinAvailable``) or the action itself (no healthy
    revision, GitOps-managed, paused Deployment, already at max replicas) refused."""
    DRY_RUN = "DryRun"
    """Decided and recorded (``change`` holds the intended patch); nothing was changed."""


class VerifyOutcome(enum.StrEnum):
    PENDING = "Pending"
    PASSED = "Passed"
    TIMED_OUT = "TimedOut"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepRecord:
    """One attempted policy step. Appended when its ``Act`` is emitted (or it is refused)."""

    index: int
    """Index into ``policy.remediation.steps``."""
    action: str
    """``rollback``, ``scale`` or ``restart``."""
    started_at: float
    finished_at: float | None = None
    """``None`` while the action is in flight."""
    result: StepResult | None = None
    """``None`` while the action is in flight."""
    message: str = ""
    reason: str = ""
    """Why a Refused step was not run, when selfheal decided it (``DependencyUnhealthy``);
    empty otherwise."""
    change: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """What the action changed (or would change): keys ``fromRevision``, ``toRevision``,
    ``fromReplicas``, ``toReplicas``, ``patch``; all optional, JSON-able, set by the driver."""

    @property
    def in_flight(self) -> bool:
        return self.result is None

    @property
    def changed_workload(self) -> bool:
        """True when the action did (or may have) changed the workload."""
        return self.result in (None, StepResult.SUCCEEDED, StepResult.FAILED)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verification:
    """The verification of the last step that changed the workload."""

    outcome: VerifyOutcome
    since: float
    """When the step's action finished and the verify window could start."""
    until: float | None = None
    """When the verification concluded; ``None`` while pending."""
    message: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RemediationState:
    """One incident of (policy, workload, trigger). See the module docstring."""

    phase: Phase
    detected_at: float
    cause: str = ""
    """The triggering signal's CamelCase cause (``OOMKilled``, ``ThresholdExceeded``...)."""
    detail: str = ""
    evidence: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """The triggering signal's evidence (samples, band, restart counts), JSON-able."""
    current_step: int = 0
    """Index of the step in flight, being verified, or to start next."""
    steps: tuple[StepRecord, ...] = ()
    verification: Verification | None = None
    escalation_reason: str = ""
    escalated_at: float | None = None
    storm_summary: bool = False
    """This record carries the storm brake's single summary ticket for its namespace."""
    related: tuple[str, ...] = ()
    """Storm summary only: the namespace's unhealthy workloads it covers."""
    ticket: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """Opaque, owned by the ticket code (``TicketDone``); empty: no ticket yet."""
    ticket_requested_at: float | None = None
    """When ``Escalate`` was last emitted; ``None``: no ticket wanted."""
    healthy_since: float | None = None
    """Start of the current healthy streak; ``None`` when the last signal was not healthy."""
    healthy_accrued: float = 0.0
    """Healthy seconds banked before an ``unknown`` pause (unknown pauses the window)."""
    last_health: Health | None = None
    last_signal_at: float | None = None
    """``Signal.at`` of the last signal applied; older signals are ignored."""
    waiting_for: str = ""
    """Why a step is not started yet (a guardrail's message); empty when not waiting."""
    step_deadline: float | None = None
    """Detected: give up waiting; Acting: give up on the outcome; Verifying: give up
    on the step. ``None`` in Escalated and final phases."""
    closed_at: float | None = None
    closed_reason: str = ""
    """Why a record ended other than by its steps (``WorkloadDeleted``, ``PolicyDeleted``);
    empty for the machine's own endings."""
    resolution: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """Telling the ticket the incident ended, as due work: opaque, owned by the ticket
    code (``state`` Pending/Done/Failed, ``retryAt``, ``attempts``, ``message``,
    ``recovered``); empty: nothing to tell."""
    approval: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """The last approval asked for: ``step``, ``action``, ``state`` (Pending, Approved,
    Rejected, Expired), ``requestedAt``, ``expiresAt``, ``change`` (the exact patch, from a
    dry run), ``approve`` and ``reject`` (the kubectl commands), ``by``; empty: none."""
    notifications: tuple[Mapping[str, object], ...] = ()
    """Messages to the on-duty expert, one entry per kind (``Escalation``, ``GiveUp``,
    ``Recovery``): opaque but for ``kind`` and ``state`` (Pending/Sent/Failed), owned by
    the notification code. An ``Escalation`` entry is added on escalating when the policy
    has ``escalate.notify``; the other kinds are due when their condition holds and
    their entry is missing or Pending."""

    def healthy_for(self, now: float) -> float:
        """Healthy seconds counted toward the verify window at ``now``."""
        streak = 0.0 if self.healthy_since is None else max(0.0, now - self.healthy_since)
        return self.healthy_accrued + streak

    @property
    def started_at(self) -> float | None:
        """When the first step that changed (or may have changed) the workload started."""
        return first_change(self.steps)

    @property
    def last_acted_at(self) -> float | None:
        """When the workload was last changed (or may have been) by this record."""
        return last_change(self.steps)

    def to_status(self) -> dict[str, Any]:
        return {
            "phase": str(self.phase),
            "detectedAt": format_time(self.detected_at),
            "cause": self.cause,
            "detail": self.detail,
            "evidence": dict(self.evidence),
            "currentStep": self.current_step,
            "steps": [_step_to_status(s) for s in self.steps],
            "verification": (
                None
                if self.verification is None
                else {
                    "outcome": str(self.verification.outcome),
                    "since": format_time(self.verification.since),
                    "until": format_time(self.verification.until),
                    "message": self.verification.message,
                }
            ),
            "escalation": {
                "reason": self.escalation_reason,
                "at": format_time(self.escalated_at),
                "stormSummary": self.storm_summary,
                "related": list(self.related),
                "ticketRequestedAt": format_time(self.ticket_requested_at),
            },
            "ticket": dict(self.ticket),
            "healthySince": format_time(self.healthy_since),
            "healthyAccruedSeconds": self.healthy_accrued,
            "lastHealth": None if self.last_health is None else str(self.last_health),
            "lastSignalAt": format_time(self.last_signal_at),
            "waitingFor": self.waiting_for,
            "stepDeadline": format_time(self.step_deadline),
            "closedAt": format_time(self.closed_at),
            "closedReason": self.closed_reason,
            "resolution": dict(self.resolution),
            "notifications": [dict(n) for n in self.notifications],
            "approval": dict(self.approval),
            # Convenience for printer columns and selectors; derived, ignored on read.
            "startedAt": format_time(self.started_at),
        }

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> RemediationState:
        """Rebuild from ``to_status()`` output (missing keys read as unset).

        Raises ``ValueError`` naming the field when the status cannot be read.
        """
        phase = phase_from_status(status)
        detected_at = parse_time(status.get("detectedAt"), field="status.detectedAt")
        if detected_at is None:
            raise ValueError("status.detectedAt: missing; the object was not written by selfheal")
        verification = status.get("verification") or None
        escalation = status.get("escalation") or {}
        health = status.get("lastHealth")
        return cls(
            phase=phase,
            detected_at=detected_at,
            cause=status.get("cause") or "",
            detail=status.get("detail") or "",
            evidence=dict(status.get("evidence") or {}),
            current_step=int(status.get("currentStep") or 0),
            steps=steps_from_status(status),
            verification=(
                None
                if verification is None
                else Verification(
                    outcome=VerifyOutcome(verification["outcome"]),
                    since=_required_time(verification.get("since"), "status.verification.since"),
                    until=parse_time(verification.get("until"), field="status.verification.until"),
                    message=verification.get("message") or "",
                )
            ),
            escalation_reason=escalation.get("reason") or "",
            escalated_at=parse_time(escalation.get("at"), field="status.escalation.at"),
            storm_summary=bool(escalation.get("stormSummary")),
            related=tuple(escalation.get("related") or ()),
            ticket=dict(status.get("ticket") or {}),
            ticket_requested_at=parse_time(
                escalation.get("ticketRequestedAt"), field="status.escalation.ticketRequestedAt"
            ),
            healthy_since=parse_time(status.get("healthySince"), field="status.healthySince"),
            healthy_accrued=float(status.get("healthyAccruedSeconds") or 0.0),
            last_health=None if health is None else Health(health),
            last_signal_at=parse_time(status.get("lastSignalAt"), field="status.lastSignalAt"),
            waiting_for=status.get("waitingFor") or "",
            step_deadline=parse_time(status.get("stepDeadline"), field="status.stepDeadline"),
            closed_at=parse_time(status.get("closedAt"), field="status.closedAt"),
            closed_reason=status.get("closedReason") or "",
            resolution=dict(status.get("resolution") or {}),
            notifications=tuple(
                dict(n) for n in status.get("notifications") or () if isinstance(n, Mapping)
            ),
            approval=dict(status.get("approval") or {}),
        )


def _step_to_status(step: StepRecord) -> dict[str, Any]:
    return {
        "index": step.index,
        "action": step.action,
        "startedAt": format_time(step.started_at),
        "finishedAt": format_time(step.finished_at),
        "result": None if step.result is None else str(step.result),
        "message": step.message,
        "reason": step.reason,
        "change": dict(step.change),
    }


def first_change(steps: Iterable[StepRecord]) -> float | None:
    """Start of the first step that changed (or may have changed) the workload."""
    return next((s.started_at for s in steps if s.changed_workload), None)


def last_change(steps: Iterable[StepRecord]) -> float | None:
    """End (or start, while in flight) of the last step that changed the workload."""
    times = [s.finished_at or s.started_at for s in steps if s.changed_workload]
    return max(times, default=None)


def steps_from_status(status: Mapping[str, Any]) -> tuple[StepRecord, ...]:
    """``status.steps`` alone (cheaper than ``from_status`` when that is all one needs)."""
    return tuple(_step_from_status(s, i) for i, s in enumerate(status.get("steps") or ()))


def phase_from_status(status: Mapping[str, Any]) -> Phase:
    try:
        return Phase(status["phase"])
    except (KeyError, ValueError):
        raise ValueError(
            f"status.phase: expected one of {[str(p) for p in Phase]}, "
            f"got {status.get('phase')!r}; the object was not written by selfheal"
        ) from None


def _step_from_status(raw: Mapping[str, Any], position: int) -> StepRecord:
    field = f"status.steps[{position}]"
    result = raw.get("result")
    return StepRecord(
        index=int(raw["index"]),
        action=str(raw.get("action") or ""),
        started_at=_required_time(raw.get("startedAt"), f"{field}.startedAt"),
        finished_at=parse_time(raw.get("finishedAt"), field=f"{field}.finishedAt"),
        result=None if result is None else StepResult(result),
        message=raw.get("message") or "",
        reason=raw.get("reason") or "",
        change=dict(raw.get("change") or {}),
    )


def _required_time(value: object, field: str) -> float:
    parsed = parse_time(value, field=field)
    if parsed is None:
        raise ValueError(f"{field}: missing; expected an RFC3339 time")
    return parsed


def format_time(t: float | None) -> str | None:
    """RFC3339 UTC (``2026-11-28T08:09:50Z``, with microseconds when not whole)."""
    if t is None:
        return None
    dt = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    spec = "seconds" if dt.microsecond == 0 else "microseconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


def parse_time(value: object, *, field: str) -> float | None:
    """Parse an RFC3339 string (any offset) into unix seconds; ``None`` stays ``None``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected an RFC3339 string, got {value!r}")
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: {value!r} is not an RFC3339 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def remediation_spec(
    *, policy: str, workload: WorkloadRef, trigger: str, trigger_kind: str = ""
) -> dict[str, Any]:
    """The ``spec`` of a Remediation object: who it is about. Immutable after creation."""
    trig = {"name": trigger, "kind": trigger_kind} if trigger_kind else {"name": trigger}
    return {
        "policy": policy,
        "workload": {"kind": workload.kind, "name": workload.name, "uid": workload.uid},
        "trigger": trig,
    }
