"""The remediation machine: one pure function, ``step()``.

``step(state, event=..., policy=..., context=..., now=...) -> (state, effects)``
decides what happens to one incident of (policy, workload, trigger). It does no I/O
and reads no clock: the driver passes ``now`` and executes the returned effects.

Phases (``selfheal.remediation.state.Phase``)::

    Signal(unhealthy), no record
        -> Detected --guardrails allow, last signal unhealthy--> Acting   [Act]
    Acting --ActionDone(Succeeded)--> Verifying
    Acting --ActionDone(Failed | Refused), or no outcome by the deadline--> next step
    Acting --ActionDone(DryRun)--> Verifying (the intended change is recorded)
    Verifying --healthy for verify_for--> Resolved (Closed in DryRun)     [Resolve if ticket]
    Verifying --deadline (verify_timeout, default 2 x verify_for)--> next step
    next step: Detected(k+1), acting at once when the last signal is unhealthy,
               otherwise waiting for one until the deadline
    Detected --steps exhausted, guardrail says escalate, or deadline--> Escalated
                                                                       [Escalate]
    Detected --healthy for verify_for--> Resolved (a step had succeeded) or Closed
    Escalated --healthy for verify_for--> Closed                        [Resolve if ticket]
    Escalated --escalated longer than context.escalated_retention--> Closed

Rules the driver can rely on:

- **Act at most once per step index.** An ``Act(index=k)`` is only emitted together
  with a state whose ``steps[k]`` is in flight; no later event emits ``Act(k)`` again.
  The driver MUST persist the returned state before executing an ``Act`` (and drop
  the ``Act`` when the write conflicts): persisting is what makes this hold across
  restarts. When the outcome is never reported, the step fails at its deadline.
- **Unknown never acts.** Acting needs the last applied signal to be ``unhealthy``.
  ``unknown`` pauses the verify window (it neither counts as healthy nor fails it);
  ``unhealthy`` during verification restarts the window (the step still has until
  its deadline, because detectors lag behind a rollout).
- **Every event is also a Tick.** After applying an event the machine takes every
  transition that is already due (a deadline passed, a window completed), except
  that it never goes past a freshly emitted ``Act``. ``wakeup()`` says when the
  next Tick can change anything, so the driver can sleep until then.
- **Idempotent.** An ``ActionDone`` for another index, a duplicate one, or one in a
  phase other than Acting is ignored; a ``Signal`` older than the last one applied is
  ignored; a repeated signal changes nothing but the last-seen time.
- **Resolved and Closed are final.** ``step()`` never reopens them (only a late
  ``TicketDone`` is recorded). For a workload with no open record pass ``state=None``:
  an unhealthy signal then returns a new state, which the driver creates as a new
  Remediation (``naming.remediation_name`` with the next ordinal); creating it is the
  lock. ``Resolved`` ends a verified heal; ``Closed`` every other ending. ``closed_at``
  is set on entering either (no linger: cooldowns are computed from the step times).
- **Paused** (policy mode): no record is opened, and ``Signal``/``Tick`` leave open
  records exactly as they are (deadlines resume when the policy is resumed);
  ``ActionDone``/``TicketDone`` are still recorded because they already happened,
  and no ``Act`` is emitted while paused (guardrail ``Paused``).
- **DryRun** (policy mode): ``Act`` effects carry ``dry_run=True``; the driver reports
  ``ActionDone(result=DryRun, change=<the intended patch>)``. The machine then runs
  exactly as in Enforce (guardrails, verify window, deadlines, the next step dry-run,
  escalation), except that a verified recovery ends in ``Closed``, not ``Resolved``:
  no step changed anything. So the record answers "what would Enforce have done,
  step by step", and it stays open while the workload is sick (closing at once would
  open a new record on every unhealthy signal). DryRun steps never count for
  cooldowns or rate limits. An escalation in DryRun is a real one (a ticket when the
  policy configures Jira): a ticket changes no workload, and nobody else is acting.
- **Tickets are due work read from the status.** ``Escalate`` is emitted on
  entering Escalated when the policy has ``remediation.jira`` (not for records a
  storm brake summarises elsewhere), and on any later event while the ticket is
  due: requested and nothing recorded yet, or ``ticket.state`` Pending and its
  ``retryAt`` passed, in every phase (a record that closed before its ticket was
  filed still files it). ``Resolve`` is emitted while ``status.resolution`` is
  Pending and due: set when a record whose ticket names an issue ends, or when the
  issue's key arrives after the record ended (a late filing). ``due_work()`` derives
  both from a state alone; the driver runs one attempt at a time per record and
  reports ``TicketDone`` (and stores ``status.resolution``), so a restart resumes
  exactly what is due.
- **Notifications are due work too.** On escalating, a policy with
  ``remediation.notify`` gets a Pending ``Escalation`` entry in ``notifications``
  (not for records a storm brake summarises elsewhere). ``Notify(kind)`` is emitted
  while an entry is due: ``Escalation`` once the ticket is out of its first attempt
  (filed, failed, cancelled, or pending after a failed attempt) or at once when no
  ticket is wanted; ``GiveUp`` when the ticket gave up at its horizon; ``Recovery``
  when the record ended with a passed verification after its ``Escalation`` was Sent.
  A missing entry of a due kind, or a Pending one whose ``retryAt`` passed, is due;
  Sent and Failed are done. ``due_work()`` derives them from the state alone, also
  after a ``TicketDone`` (the filed ticket's key is what the message waits for).
- **Dependencies** (``remediation.dependencies``, ``dependency_gate``): before a step
  allowed by the guardrails, ``Context.dependencies`` decides: ``Escalate`` records the
  step Refused (``reason: DependencyUnhealthy``) and tries the next; ``Wait`` holds it
  (``waitingFor``) until the dependency is healthy, at most ``waitFor`` (else the
  step's deadline), then skips it and escalates. Missing or stale facts hold the step
  (never read as healthy); the driver gathers them and the next pass decides.
- **Persisting.** When nothing changed the input state object itself is returned
  (``new is old``); otherwise write ``new.to_status()``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.policy.model import HealingPolicy, Mode, Step, step_action
from selfheal.remediation import dependency_gate as dg
from selfheal.remediation import guardrails
from selfheal.remediation.guardrails import (
    Availability,
    Decision,
    Guardrail,
    RecordSummary,
    Refusal,
    human_duration,
)
from selfheal.remediation.state import (
    Phase,
    RemediationState,
    StepRecord,
    StepResult,
    Verification,
    VerifyOutcome,
    format_time,
    parse_time,
)

APPROVAL_PENDING, APPROVAL_APPROVED = "Pending", "Approved"
APPROVAL_REJECTED, APPROVAL_EXPIRED = "Rejected", "Expired"
"""``status.approval.state`` values."""

ESCALATED_RETENTION = 86400.0
"""Default seconds an Escalated record stays open while the workload is not healthy."""
RECHECK = 30.0
"""Seconds between two guardrail checks while a step waits for permission."""


# --- Events: what the machine is told ------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionDone:
    """The driver's report of an ``Act(index)``: what the action did."""

    index: int
    result: StepResult
    message: str = ""
    """Why (Failed, Refused) or what (Succeeded, DryRun), one human sentence."""
    change: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """``fromRevision``, ``toRevision``, ``fromReplicas``, ``toReplicas``, ``patch``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TicketDone:
    """The ticket code filed or updated the ticket; ``ticket`` is stored as is."""

    ticket: Mapping[str, object]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tick:
    """Time passed: deadlines, verify windows, retention and ticket retries."""


class EndReason(enum.StrEnum):
    """Why a record ends from outside the machine (``status.closedReason``)."""

    WORKLOAD_DELETED = "WorkloadDeleted"
    """The workload the incident is about no longer exists."""
    POLICY_DELETED = "PolicyDeleted"
    """The HealingPolicy that opened the incident no longer exists."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Approval:
    """A person's decision on the step awaiting approval (the Remediation's
    ``selfheal.io/approve`` or ``selfheal.io/reject`` annotation)."""

    approved: bool
    value: str = "true"
    """The annotation's value: ``true`` decides the record's first approval; a later one
    is named ``step-N`` (so an old annotation never decides a new step)."""
    by: str = ""
    """Who decided, as far as known."""


Event = Signal | ActionDone | TicketDone | Tick | Approval

APPROVE_ANNOTATION = "selfheal.io/approve"
REJECT_ANNOTATION = "selfheal.io/reject"


# --- Effects: what the driver does ----------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Act:
    """Run policy step ``index`` on the workload, then report ``ActionDone(index)``."""

    index: int
    step: Step
    dry_run: bool
    """Server-side dry-run: compute and report the change (result DryRun), apply nothing."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Escalate:
    """File (or find and update) the incident's ticket, then report ``TicketDone``."""

    reason: str
    related: tuple[str, ...] = ()
    """Storm summary only: every unhealthy workload of the namespace it covers."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Notify:
    """Send the incident's notification of ``kind`` (``Escalation``, ``GiveUp``,
    ``Recovery``) and record the outcome in ``status.notifications``."""

    kind: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resolve:
    """Tell the existing ticket the incident ended."""

    message: str
    recovered: bool
    """True: the workload was verified healthy (apply ``jira.resolve_transition``);
    False: the record was closed without recovery (comment only)."""


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(enum.StrEnum):
    """Reasons of the Kubernetes Events the driver emits (``Emit``)."""

    DETECTED = "Detected"
    """An incident was opened."""
    STEP_STARTED = "StepStarted"
    """A step's action was requested."""
    STEP_SUCCEEDED = "StepSucceeded"
    """A step changed the workload; verification starts."""
    STEP_FAILED = "StepFailed"
    """A step's action errored or reported nothing by its deadline."""
    STEP_REFUSED = "StepRefused"
    """A step was not run (the action or the MinAvailable guardrail refused)."""
    DRY_RUN = "DryRun"
    """DryRun mode: a step's intended change was recorded (nothing was changed)."""
    GUARDRAIL_REFUSED = "GuardrailRefused"
    """A guardrail holds the incident back (it waits)."""
    VERIFY_TIMED_OUT = "VerifyTimedOut"
    """A step did not heal the workload within its deadline."""
    RESOLVED = "Resolved"
    """A step healed the workload (verified)."""
    ESCALATED = "Escalated"
    """Humans are needed: steps exhausted or a guardrail forbade acting."""
    CLOSED = "Closed"
    """The incident ended without a verified heal by a step."""
    HEALTH_UNKNOWN = "HealthUnknown"
    """The trigger cannot tell the workload's health (no data, backend down)."""
    TICKET_FILED = "TicketFiled"
    """The incident's ticket was filed (or an open one commented)."""
    TICKET_FAILED = "TicketFailed"
    """The ticket could not be filed: Jira refused it, or the horizon passed."""
    APPROVAL_REQUESTED = "ApprovalRequested"
    """A step waits for a person's approval (the Event carries the kubectl command)."""
    APPROVED = "Approved"
    """A person approved the awaited step; it runs."""
    DEPENDENCY_UNHEALTHY = "DependencyUnhealthy"
    """A step was skipped, or waits, because a dependency of the workload is failing."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Emit:
    """Emit a Kubernetes Event (about the Remediation and its workload)."""

    reason: EventReason
    message: str
    type: EventType
    guardrail: str = ""
    """The guardrail that refused (``Guardrail`` value), for the refusal metric."""


Effect = Act | Escalate | Resolve | Notify | Emit


@dataclasses.dataclass(frozen=True, kw_only=True)
class Context:
    """Facts the driver gathers for one decision (read just before calling ``step``)."""

    workload: WorkloadRef
    trigger: str
    name: str
    """This record's name (``naming.remediation_name``); it is not counted by guardrails."""
    records: Sequence[RecordSummary] = ()
    """Remediation records of the namespace, open and final (``RecordSummary.from_body``)."""
    unhealthy: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Workload name -> unix time it turned unhealthy, for the namespace (storm brake)."""
    availability: Availability | None = None
    """The workload's replicas; ``None``: unknown (refuses disruptive steps when
    ``guardrails.minAvailable`` > 0)."""
    escalated_retention: float = ESCALATED_RETENTION
    dependencies: dg.DependencyFacts | None = None
    """The workload's failing dependencies, for steps whose policy looks at them
    (``remediation.dependencies``); ``None``: not gathered (yet)."""


# --- The machine -----------------------------------------------------------------------


def step(
    state: RemediationState | None,
    *,
    event: Event,
    policy: HealingPolicy,
    context: Context,
    now: float,
) -> tuple[RemediationState | None, list[Effect]]:
    """Apply one event to one incident; see the module docstring for the rules.

    Raises ``ValueError`` when a ``Signal`` is about another policy, workload or trigger
    than ``policy``/``context`` (a routing bug in the driver).
    """
    run = _Run(policy=policy, context=context, now=now)
    new = run.apply(state, event)
    return (state if new == state else new), run.effects


@dataclasses.dataclass(kw_only=True)
class _Run:
    """One call of ``step``: the inputs, and the effects collected on the way."""

    policy: HealingPolicy
    context: Context
    now: float
    effects: list[Effect] = dataclasses.field(default_factory=list)

    # Derived settings.

    @property
    def timeout(self) -> float:
        r = self.policy.remediation
        timeout = 2 * r.verify_for if r.verify_timeout is None else r.verify_timeout
        return max(timeout, r.verify_for)  # a deadline before the window could pass is moot

    @property
    def paused(self) -> bool:
        return self.policy.mode is Mode.PAUSED

    def emit(
        self, reason: EventReason, message: str, *, warning: bool = False, guardrail: str = ""
    ) -> None:
        kind = EventType.WARNING if warning else EventType.NORMAL
        self.effects.append(Emit(reason=reason, message=message, type=kind, guardrail=guardrail))

    # Dispatch.

    def apply(self, state: RemediationState | None, event: Event) -> RemediationState | None:
        new = self._apply(state, event)
        # One transition can make the next one due at once (a healthy window that grew
        # while a step was in flight is seen on escalating): settle before returning.
        for _ in range(len(self.policy.remediation.steps) + 4):
            if new is None or new.phase.final or self.paused or new.phase is Phase.ACTING:
                break  # an Act waits for its outcome: it is never settled in the same call
            settled = self._advance(new)
            if settled == new:
                break
            new = settled
        if new is not None:
            # Ticket work is read from the stored status on every pass, in every phase,
            # so a restart (or a lost task) resumes exactly the work that is due. A
            # TicketDone comes from the ticket work itself: only notifications follow.
            work = due_work(new, now=self.now, effects=self.effects)
            if isinstance(event, TicketDone):
                work = [e for e in work if isinstance(e, Notify)]
            self.effects.extend(work)
        return new

    def _apply(self, state: RemediationState | None, event: Event) -> RemediationState | None:
        if isinstance(event, Signal):
            self._check_routing(event)
            if state is None:
                return self._open(event)
            if state.phase.final or self.paused:
                return state
            if state.last_signal_at is not None and event.at < state.last_signal_at:
                return state  # out of order: a newer observation was applied already
            return self._advance(self._observe(state, event))
        if state is None:
            return None
        if state.phase is Phase.AWAITING_APPROVAL:
            if isinstance(event, ActionDone):
                return self._proposed(state, event)
            if isinstance(event, Approval):
                return self._decided(state, event)
        if isinstance(event, Approval):
            return state  # nothing awaits a decision (or it was already taken)
        if isinstance(event, ActionDone):
            return self._action_done(state, event)
        if isinstance(event, TicketDone):
            return self._ticket_done(state, event)
        if state.phase.final or self.paused:
            return state
        return self._advance(state)

    def _check_routing(self, signal: Signal) -> None:
        want = self.context.workload
        if (signal.policy, signal.trigger) != (self.policy.name, self.context.trigger) or (
            signal.workload.namespace,
            signal.workload.name,
        ) != (want.namespace, want.name):
            raise ValueError(
                f"signal: for policy {signal.policy!r}, trigger {signal.trigger!r}, "
                f"workload {signal.workload}; this record is policy {self.policy.name!r}, "
                f"trigger {self.context.trigger!r}, workload {want}: route by fingerprint"
            )

    # Opening and observing.

    def _open(self, signal: Signal) -> RemediationState | None:
        if signal.health is not Health.UNHEALTHY or self.paused:
            return None
        state = RemediationState(
            phase=Phase.DETECTED,
            detected_at=self.now,
            cause=signal.cause,
            detail=signal.detail,
            evidence=dict(signal.evidence),
            last_health=Health.UNHEALTHY,
            last_signal_at=signal.at,
            step_deadline=self.now + self.timeout,
        )
        what = f"{signal.cause}: {signal.detail}" if signal.cause else signal.detail
        self.emit(
            EventReason.DETECTED,
            f"trigger {signal.trigger} found {signal.workload.name} unhealthy ({what})",
            warning=True,
        )
        return self._try_start(state)

    def _observe(self, state: RemediationState, signal: Signal) -> RemediationState:
        """Record the signal and move the verify window."""
        since, accrued = state.healthy_since, state.healthy_accrued
        if signal.health is Health.HEALTHY:
            since = self.now if since is None else since
        elif signal.health is Health.UNKNOWN:
            accrued, since = state.healthy_for(self.now), None  # pause: bank the streak
            if state.last_health is not Health.UNKNOWN:
                self.emit(
                    EventReason.HEALTH_UNKNOWN,
                    f"trigger {signal.trigger} cannot tell the health of "
                    f"{signal.workload.name} ({signal.cause or 'unknown'}: {signal.detail}); "
                    "nothing is acted on until it can",
                    # Pods starting during a rollout are expected; a blind backend is not.
                    warning=signal.cause not in ("NotReady", "NoPods"),
                )
        else:
            accrued, since = 0.0, None
        return dataclasses.replace(
            state,
            last_health=signal.health,
            last_signal_at=signal.at,
            healthy_since=since,
            healthy_accrued=accrued,
        )

    def _window_passed(self, state: RemediationState) -> bool:
        seen_healthy = state.healthy_since is not None or state.healthy_accrued > 0
        return seen_healthy and state.healthy_for(self.now) >= self.policy.remediation.verify_for

    # Time and phases.

    def _advance(self, state: RemediationState) -> RemediationState:
        deadline_passed = state.step_deadline is not None and self.now >= state.step_deadline
        if state.phase is Phase.DETECTED:
            if self._window_passed(state):
                return self._recovered(state)
            exhausted = state.current_step >= len(self.policy.remediation.steps)
            if exhausted or state.last_health is Health.UNHEALTHY:
                state = self._try_start(state)
            if state.phase is Phase.DETECTED and deadline_passed:
                if state.waiting_for.startswith(dg.WAITING):
                    return self._gave_up_on_dependency(state)
                return self._escalate(state, reason=self._gave_up_waiting(state))
            return state
        if state.phase is Phase.ACTING:
            if not deadline_passed:
                return state
            message = f"no outcome was reported within {human_duration(self.timeout)}"
            state = self._finish_step(state, result=StepResult.FAILED, message=message)
            self.emit(EventReason.STEP_FAILED, self._step_line(state.steps[-1]), warning=True)
            return self._next_step(state)
        if state.phase is Phase.VERIFYING:
            if self._window_passed(state):
                return self._recovered(state)
            if deadline_passed:
                return self._verify_timed_out(state)
            return state
        if state.phase is Phase.AWAITING_APPROVAL:
            if self._window_passed(state):
                return self._recovered(state)
            expires = parse_time(state.approval.get("expiresAt"), field="status.approval.expiresAt")
            if expires is not None and self.now >= expires:
                approval = {**state.approval, "state": APPROVAL_EXPIRED}
                state = dataclasses.replace(state, approval=approval)
                return self._escalate(
                    state,
                    reason=f"the approval of {self._proposal(state)} expired after "
                    f"{human_duration(self.policy.remediation.approval_timeout)}",
                )
            return state
        if state.phase is Phase.ESCALATED:
            if self._window_passed(state):
                return self._recovered(state)
            assert state.escalated_at is not None  # set on entering Escalated
            if self.now >= state.escalated_at + self.context.escalated_retention:
                message = (
                    f"closed after {human_duration(self.context.escalated_retention)} "
                    f"escalated; {self.context.workload.name} was not verified healthy"
                )
                return self._close(state, phase=Phase.CLOSED, message=message, recovered=False)
        return state

    def _try_start(self, state: RemediationState) -> RemediationState:
        """Start step ``current_step``, skipping steps guardrails refuse; or wait, or escalate."""
        steps = self.policy.remediation.steps
        while True:
            index = state.current_step
            if index >= len(steps):
                storm = self._check(state, step=None)
                if storm.guardrail is Guardrail.STORM_BRAKE:
                    return self._escalate_for(state, storm)
                return self._escalate(state, reason=self._exhausted(state))
            step_ = steps[index]
            decision = self._check(state, step=step_)
            if decision.allowed:
                rule = self.policy.remediation.dependency_rule(index)
                since = dg.fresh_since(state, now=self.now)
                gate = dg.gate(rule, self.context.dependencies, now=self.now, since=since)
                if gate.verdict is dg.Verdict.SKIP:
                    state = self._skip_for_dependency(state, index=index, step_=step_, why=gate)
                    continue
                if gate.verdict is not dg.Verdict.RUN:
                    return self._hold_for_dependency(state, index=index, step_=step_, gate=gate)
                # A step that cannot help is not put before a person for approval.
                if self._needs_approval(state, index):
                    return self._await_approval(state, index=index, step_=step_)
                return self._act(state, index=index, step_=step_, note=gate.message)
            if decision.refusal is Refusal.SKIP_STEP:
                state = self._refuse(state, index=index, step_=step_, message=decision.message)
                continue
            if decision.refusal is Refusal.WAIT:
                if decision.message != state.waiting_for:
                    self.emit(
                        EventReason.GUARDRAIL_REFUSED,
                        decision.message,
                        warning=True,
                        guardrail=str(decision.guardrail or ""),
                    )
                return dataclasses.replace(state, waiting_for=decision.message)
            return self._escalate_for(state, decision)

    # Approval.

    def _needs_approval(self, state: RemediationState, index: int) -> bool:
        if self.policy.mode is Mode.DRY_RUN:
            return False  # nothing is applied: nothing to approve
        wanted = self.policy.mode is Mode.APPROVE or index in self.policy.remediation.approval_steps
        granted = state.approval.get("step") == index and state.approval.get("state") == (
            APPROVAL_APPROVED
        )
        return wanted and not granted

    def _proposal(self, state: RemediationState) -> str:
        return (
            f"step {int(str(state.approval.get('step', 0))) + 1} ({state.approval.get('action')})"
        )

    def _await_approval(
        self, state: RemediationState, *, index: int, step_: Step
    ) -> RemediationState:
        ns, name = self.context.workload.namespace, self.context.name
        command = f"kubectl -n {ns} annotate remediation {name}"
        timeout = self.policy.remediation.approval_timeout
        approved = list(_approved_steps(state))
        token = approval_token(index, approved)
        approval: dict[str, object] = {
            "step": index,
            "action": step_action(step_),
            "state": APPROVAL_PENDING,
            "requestedAt": format_time(self.now),
            "expiresAt": format_time(self.now + timeout),
            "approve": f"{command} {APPROVE_ANNOTATION}={token} --overwrite",
            "reject": f"{command} {REJECT_ANNOTATION}={token} --overwrite",
            "approvedSteps": approved,
        }
        # The exact patch is what a server-side dry run of the action sends.
        self.effects.append(Act(index=index, step=step_, dry_run=True))
        self.emit(
            EventReason.APPROVAL_REQUESTED,
            f"step {index + 1} ({approval['action']}) on {self.context.workload.name} waits "
            f"for approval until {approval['expiresAt']}: {approval['approve']}",
            warning=True,
        )
        # One approval message per incident (as for each kind): the first request.
        wants_notify = self.policy.remediation.notify is not None
        return dataclasses.replace(
            state,
            notifications=_with_notification(state, NOTIFY_APPROVAL, wanted=wants_notify),
            phase=Phase.AWAITING_APPROVAL,
            current_step=index,
            approval=approval,
            step_deadline=None,
            waiting_for=f"approval of step {index + 1} ({approval['action']})",
        )

    def _proposed(self, state: RemediationState, done: ActionDone) -> RemediationState:
        """The dry run of the awaited step: its exact change, shown for the decision."""
        if done.index != state.approval.get("step") or "change" in state.approval:
            return state
        approval = {**state.approval, "change": dict(done.change), "message": done.message}
        return dataclasses.replace(state, approval=approval)

    def _decided(self, state: RemediationState, decision: Approval) -> RemediationState:
        index = int(str(state.approval.get("step", 0)))
        if decision.value != approval_token(index, _approved_steps(state)):
            return state  # an annotation left from an earlier step decides nothing now
        if not decision.approved:
            approval = {**state.approval, "state": APPROVAL_REJECTED, "by": decision.by}
            state = dataclasses.replace(state, approval=approval)
            who = f" by {decision.by}" if decision.by else ""
            return self._escalate(state, reason=f"{self._proposal(state)} was rejected{who}")
        approval = {
            **state.approval,
            "state": APPROVAL_APPROVED,
            "by": decision.by,
            "approvedSteps": [*_approved_steps(state), index],
        }
        state = dataclasses.replace(state, approval=approval, phase=Phase.DETECTED)
        self.emit(EventReason.APPROVED, f"{self._proposal(state)} approved; it runs")
        return self._try_start(state)

    def _check(self, state: RemediationState, *, step: Step | None) -> Decision:
        return guardrails.check(
            policy=self.policy,
            workload=self.context.workload,
            step=step,
            first=state.started_at is None,
            records=self.context.records,
            unhealthy=self.context.unhealthy,
            availability=self.context.availability,
            now=self.now,
            exclude=self.context.name,
        )

    def _refuse(
        self,
        state: RemediationState,
        *,
        index: int,
        step_: Step,
        message: str,
        reason: str = "",
        event: EventReason = EventReason.STEP_REFUSED,
    ) -> RemediationState:
        """Record step ``index`` Refused without running it, and move past it."""
        record = StepRecord(
            index=index,
            action=step_action(step_),
            started_at=self.now,
            finished_at=self.now,
            result=StepResult.REFUSED,
            reason=reason,
            message=message,
        )
        self.emit(event, self._step_line(record), warning=True)
        return dataclasses.replace(
            state, steps=(*state.steps, record), current_step=index + 1, waiting_for=""
        )

    def _skip_for_dependency(
        self, state: RemediationState, *, index: int, step_: Step, why: dg.Gate
    ) -> RemediationState:
        return self._refuse(
            state,
            index=index,
            step_=step_,
            message=f"skipped: {why.message}",
            reason=dg.DEPENDENCY_UNHEALTHY,
            event=EventReason.DEPENDENCY_UNHEALTHY,
        )

    def _hold_for_dependency(
        self, state: RemediationState, *, index: int, step_: Step, gate: dg.Gate
    ) -> RemediationState:
        """Keep step ``index`` waiting: for the facts (Check), or for the dependency."""
        waiting = state.waiting_for.startswith(dg.WAITING)
        if gate.verdict is dg.Verdict.CHECK:
            # Facts gone stale mid-wait keep the wait (and its deadline) as it was.
            return state if waiting else dataclasses.replace(state, waiting_for=gate.message)
        deadline = state.step_deadline
        wait_for = self.policy.remediation.dependency_rule(index).wait_for
        if not waiting and wait_for is not None:
            deadline = self.now + wait_for  # the wait starts now; set once per step
        if gate.message != state.waiting_for:
            bound = human_duration((deadline or self.now) - self.now)
            self.emit(
                EventReason.DEPENDENCY_UNHEALTHY,
                f"step {index + 1} ({step_action(step_)}) on {self.context.workload.name} "
                f"waits, at most {bound}: {gate.message.removeprefix(dg.WAITING)}",
                warning=True,
            )
        return dataclasses.replace(state, waiting_for=gate.message, step_deadline=deadline)

    def _act(
        self, state: RemediationState, *, index: int, step_: Step, note: str = ""
    ) -> RemediationState:
        dry_run = self.policy.mode is Mode.DRY_RUN
        record = StepRecord(index=index, action=step_action(step_), started_at=self.now)
        self.effects.append(Act(index=index, step=step_, dry_run=dry_run))
        self.emit(
            EventReason.STEP_STARTED,
            f"step {index + 1} ({record.action}{', dry run' if dry_run else ''}) on "
            f"{self.context.workload.name}" + (f"; {note}" if note else ""),
        )
        return dataclasses.replace(
            state,
            phase=Phase.ACTING,
            steps=(*state.steps, record),
            current_step=index,
            step_deadline=self.now + self.timeout,
            waiting_for="",
        )

    def _action_done(self, state: RemediationState, done: ActionDone) -> RemediationState:
        in_flight = state.steps[-1] if state.steps else None
        if (
            state.phase is not Phase.ACTING
            or in_flight is None
            or not in_flight.in_flight
            or done.index != in_flight.index
        ):
            return state  # stale or duplicate: that step's outcome is already known
        state = self._finish_step(
            state, result=done.result, message=done.message, change=done.change
        )
        line = self._step_line(state.steps[-1])
        if done.result in (StepResult.SUCCEEDED, StepResult.DRY_RUN):
            dry_run = done.result is StepResult.DRY_RUN
            self.emit(EventReason.DRY_RUN if dry_run else EventReason.STEP_SUCCEEDED, line)
            # DryRun verifies too: the record stays open while the workload is sick (one
            # record per incident, not one per signal) and shows what Enforce would do next.
            healthy = state.last_health is Health.HEALTHY
            return dataclasses.replace(
                state,
                phase=Phase.VERIFYING,
                verification=Verification(outcome=VerifyOutcome.PENDING, since=self.now),
                step_deadline=self.now + self.timeout,
                healthy_since=self.now if healthy else None,
                healthy_accrued=0.0,
            )
        failed = done.result is StepResult.FAILED
        reason = EventReason.STEP_FAILED if failed else EventReason.STEP_REFUSED
        self.emit(reason, line, warning=True)
        return self._next_step(state)

    def _finish_step(
        self,
        state: RemediationState,
        *,
        result: StepResult,
        message: str,
        change: Mapping[str, object] | None = None,
    ) -> RemediationState:
        record = dataclasses.replace(
            state.steps[-1],
            finished_at=self.now,
            result=result,
            message=message,
            change=dict(change or {}),
        )
        return dataclasses.replace(state, steps=(*state.steps[:-1], record))

    def _verify_timed_out(self, state: RemediationState) -> RemediationState:
        verify_for = human_duration(self.policy.remediation.verify_for)
        message = (
            f"step {state.current_step + 1} ({state.steps[-1].action}): "
            f"{self.context.workload.name} was not healthy for {verify_for} "
            f"within {human_duration(self.timeout)}"
        )
        since = state.verification.since if state.verification is not None else self.now
        verification = Verification(
            outcome=VerifyOutcome.TIMED_OUT, since=since, until=self.now, message=message
        )
        self.emit(EventReason.VERIFY_TIMED_OUT, message, warning=True)
        return self._next_step(dataclasses.replace(state, verification=verification))

    def _next_step(self, state: RemediationState) -> RemediationState:
        state = dataclasses.replace(
            state,
            phase=Phase.DETECTED,
            current_step=state.current_step + 1,
            step_deadline=self.now + self.timeout,
            waiting_for="",
        )
        exhausted = state.current_step >= len(self.policy.remediation.steps)
        if exhausted or state.last_health is Health.UNHEALTHY:
            return self._try_start(state)
        return state  # wait for an unhealthy signal (unknown never acts)

    # Endings.

    def _recovered(self, state: RemediationState) -> RemediationState:
        healed = any(s.result is StepResult.SUCCEEDED for s in state.steps)
        healthy_for = state.healthy_for(self.now)
        name = self.context.workload.name
        window = human_duration(self.policy.remediation.verify_for)
        if state.phase is Phase.ESCALATED:
            phase, message = Phase.CLOSED, f"{name} recovered after the escalation"
        elif healed:
            last = next(s for s in reversed(state.steps) if s.result is StepResult.SUCCEEDED)
            phase = Phase.RESOLVED
            message = f"step {last.index + 1} ({last.action}) healed {name}"
        elif any(s.result is StepResult.DRY_RUN for s in state.steps):
            phase, message = Phase.CLOSED, f"{name} recovered; nothing was changed (dry run)"
        elif any(s.changed_workload for s in state.steps):
            phase, message = Phase.CLOSED, f"{name} recovered; no step is known to have healed it"
        else:
            phase, message = Phase.CLOSED, f"{name} recovered before any step changed it"
        message = f"{message}: healthy for {window}"
        since = self.now - healthy_for
        if state.verification is not None and state.verification.outcome is VerifyOutcome.PENDING:
            since = state.verification.since
        verification = Verification(
            outcome=VerifyOutcome.PASSED, since=since, until=self.now, message=message
        )
        state = dataclasses.replace(state, verification=verification)
        return self._close(state, phase=phase, message=message, recovered=True)

    def _close(
        self, state: RemediationState, *, phase: Phase, message: str, recovered: bool
    ) -> RemediationState:
        reason = EventReason.RESOLVED if phase is Phase.RESOLVED else EventReason.CLOSED
        self.emit(reason, message)
        return dataclasses.replace(
            state,
            phase=phase,
            closed_at=self.now,
            step_deadline=None,
            waiting_for="",
            resolution=(
                pending_resolution(message=message, recovered=recovered)
                if has_issue(state.ticket)
                else state.resolution
            ),
        )

    def _escalate_for(self, state: RemediationState, decision: Decision) -> RemediationState:
        summarised_elsewhere = (
            decision.guardrail is Guardrail.STORM_BRAKE and not decision.storm_summary
        )
        return self._escalate(
            state,
            reason=decision.message,
            guardrail=str(decision.guardrail or ""),
            ticket=not summarised_elsewhere,
            storm_summary=decision.storm_summary,
            related=decision.related if decision.storm_summary else (),
        )

    def _escalate(
        self,
        state: RemediationState,
        *,
        reason: str,
        guardrail: str = "",
        ticket: bool = True,
        storm_summary: bool = False,
        related: tuple[str, ...] = (),
    ) -> RemediationState:
        wants_ticket = ticket and self.policy.remediation.jira is not None
        wants_notify = ticket and self.policy.remediation.notify is not None
        self.emit(EventReason.ESCALATED, reason, warning=True, guardrail=guardrail)
        if wants_ticket:
            self.effects.append(Escalate(reason=reason, related=related))
        return dataclasses.replace(
            state,
            notifications=_with_notification(state, NOTIFY_ESCALATION, wanted=wants_notify),
            phase=Phase.ESCALATED,
            escalation_reason=reason,
            escalated_at=self.now,
            storm_summary=storm_summary,
            related=related,
            ticket_requested_at=self.now if wants_ticket else None,
            step_deadline=None,
            waiting_for="",
        )

    def _ticket_done(self, state: RemediationState, done: TicketDone) -> RemediationState:
        new = dataclasses.replace(state, ticket=dict(done.ticket))
        before, after = state.ticket.get("state"), done.ticket.get("state")
        if after != before and after in (TICKET_FILED, TICKET_COMMENTED):
            self.emit(EventReason.TICKET_FILED, f"ticket {done.ticket.get('key')} {after}")
        elif after != before and after == TICKET_FAILED:
            why = done.ticket.get("lastError") or "Jira refused it"
            self.emit(EventReason.TICKET_FAILED, f"no ticket: {why}", warning=True)
        if state.phase.final and not has_issue(state.ticket) and has_issue(done.ticket):
            # The incident ended before its issue existed: tell the issue now.
            recovered = (
                state.verification is not None
                and state.verification.outcome is VerifyOutcome.PASSED
            )
            message = state.verification.message if state.verification else "record closed"
            if state.closed_reason:
                message = END_MESSAGES.get(state.closed_reason, message)
            new = dataclasses.replace(
                new, resolution=pending_resolution(message=message, recovered=recovered)
            )
            self.effects.append(Resolve(message=message, recovered=recovered))
        return new

    # Messages.

    def _step_line(self, record: StepRecord) -> str:
        return step_line(record)

    def _exhausted(self, state: RemediationState) -> str:
        name = self.context.workload.name
        if not self.policy.remediation.steps:
            return (
                f"HealingPolicy {self.policy.name} has no remediation steps; {name} needs a human"
            )
        tried = "; ".join(self._step_line(s) for s in state.steps)
        if state.verification is not None and state.verification.outcome is not (
            VerifyOutcome.PASSED
        ):
            tried += f"; {state.verification.message}"
        if any(s.reason == dg.DEPENDENCY_UNHEALTHY for s in state.steps):
            return f"a dependency of {name} is unhealthy; no step is left that may run: {tried}"
        return f"every remediation step was tried and {name} is still not healthy: {tried}"

    def _gave_up_on_dependency(self, state: RemediationState) -> RemediationState:
        """The wait for a dependency ran out: the step is skipped and humans are told."""
        steps = self.policy.remediation.steps
        index = state.current_step
        why = state.waiting_for.removeprefix(dg.WAITING)
        state = self._skip_for_dependency(
            state,
            index=index,
            step_=steps[index],
            why=dg.Gate(verdict=dg.Verdict.SKIP, message=f"dependency unhealthy: {why}"),
        )
        return self._escalate(
            state,
            reason=(
                f"step {index + 1} ({step_action(steps[index])}) waited for a dependency of "
                f"{self.context.workload.name} until its deadline and was skipped: {why}"
            ),
        )

    def _gave_up_waiting(self, state: RemediationState) -> str:
        steps = self.policy.remediation.steps
        action = step_action(steps[state.current_step]) if state.current_step < len(steps) else ""
        why = state.waiting_for or (
            f"no unhealthy signal arrived (last health: {state.last_health or 'none'})"
        )
        return (
            f"could not start step {state.current_step + 1} ({action}) within "
            f"{human_duration(self.timeout)}: {why}"
        )


# --- Due ticket work, read from the stored status ------------------------------------------

TICKET_PENDING = "Pending"
TICKET_FILED = "Filed"
TICKET_COMMENTED = "Commented"
TICKET_FAILED = "Failed"
TICKET_CANCELLED = "Cancelled"
"""``status.ticket.state`` values the machine reads (the ticket code writes them)."""

END_MESSAGES: dict[str, str] = {
    EndReason.WORKLOAD_DELETED: "closed by selfheal: the workload was deleted",
    EndReason.POLICY_DELETED: "closed by selfheal: its HealingPolicy was deleted",
}


def _approved_steps(state: RemediationState) -> tuple[int, ...]:
    raw = state.approval.get("approvedSteps")
    return tuple(int(i) for i in raw) if isinstance(raw, list | tuple) else ()


def approval_token(index: int, approved: Sequence[int]) -> str:
    """The annotation value that decides step ``index``: ``true`` for a record's first
    approval, ``step-N`` after one was approved."""
    return "true" if not approved else f"step-{index + 1}"


def pending_resolution(*, message: str, recovered: bool) -> dict[str, object]:
    """``status.resolution`` for an ended incident whose ticket must be told."""
    return {"state": TICKET_PENDING, "message": message, "recovered": recovered, "attempts": 0}


def _due_at(work: Mapping[str, object], now: float) -> float | None:
    """When pending ``work`` (ticket or resolution) is due; ``None``: not pending."""
    if work.get("state") != TICKET_PENDING:
        return None
    raw = work.get("retryAt")
    if raw is None:
        return now
    try:
        at = parse_time(raw, field="retryAt")
    except ValueError:
        return now  # unreadable: due now rather than never
    return now if at is None else at


def ticket_due_at(state: RemediationState, *, now: float) -> float | None:
    """When the next ticket attempt is due; ``None``: no ticket work is pending."""
    if state.ticket_requested_at is None:
        return None
    if not state.ticket:
        return now  # requested, nothing recorded yet: the first attempt (again, after a crash)
    return _due_at(state.ticket, now)


def resolution_due_at(state: RemediationState, *, now: float) -> float | None:
    """When the next attempt to tell the ticket the incident ended is due."""
    if not has_issue(state.ticket):
        return None
    return _due_at(state.resolution, now)


NOTIFY_ESCALATION = "Escalation"
NOTIFY_GIVE_UP = "GiveUp"
NOTIFY_RECOVERY = "Recovery"
NOTIFY_APPROVAL = "Approval"
"""``status.notifications[].kind`` values."""
NOTIFY_PENDING = "Pending"
NOTIFY_SENT = "Sent"


def pending_notification(kind: str) -> dict[str, object]:
    """A ``status.notifications`` entry for a message that is due now."""
    return {"kind": kind, "state": NOTIFY_PENDING, "attempts": 0}


def _with_notification(
    state: RemediationState, kind: str, *, wanted: bool
) -> tuple[Mapping[str, object], ...]:
    """The notifications with a pending ``kind`` added, when wanted and not there yet."""
    if not wanted or notification(state, kind) is not None:
        return state.notifications
    return (*state.notifications, pending_notification(kind))


def notification(state: RemediationState, kind: str) -> Mapping[str, object] | None:
    """The entry of ``kind``; ``None``: none yet."""
    return next((n for n in state.notifications if n.get("kind") == kind), None)


def _ticket_settled(state: RemediationState) -> bool:
    """The escalation message may go: no ticket is wanted, or the ticket is out of its
    first attempt (filed, failed, cancelled, or pending after a failed attempt)."""
    if state.ticket_requested_at is None:
        return True
    ticket = state.ticket
    if not ticket:
        return False
    return ticket.get("state") != TICKET_PENDING or bool(ticket.get("lastError"))


def notifications_due_at(state: RemediationState, *, now: float) -> dict[str, float]:
    """Kind -> when its notification is due, for every kind with work pending."""
    out: dict[str, float] = {}
    approval = notification(state, NOTIFY_APPROVAL)
    # Once the dry run told the exact change, so the message can show it.
    if (
        approval is not None
        and state.phase is Phase.AWAITING_APPROVAL
        and "change" in state.approval
        and (at := _due_at(approval, now)) is not None
    ):
        out[NOTIFY_APPROVAL] = at
    escalation = notification(state, NOTIFY_ESCALATION)
    if escalation is None:
        return out  # the policy notifies no one, or the record never escalated
    if _ticket_settled(state) and (at := _due_at(escalation, now)) is not None:
        out[NOTIFY_ESCALATION] = at
    wanted = {
        NOTIFY_GIVE_UP: bool(state.ticket.get("gaveUp")),
        NOTIFY_RECOVERY: (
            escalation.get("state") == NOTIFY_SENT
            and state.phase.final
            and state.verification is not None
            and state.verification.outcome is VerifyOutcome.PASSED
        ),
    }
    for kind, want in wanted.items():
        if not want:
            continue
        entry = notification(state, kind)
        at = now if entry is None else _due_at(entry, now)
        if at is not None:
            out[kind] = at
    return out


def notification_work_pending(status: Mapping[str, object]) -> bool:
    """A record's stored ``status`` may have notification work due (a cheap look at
    the raw status for passes that skip finished records; ``due_work`` decides)."""
    raw = status.get("notifications")
    entries = [n for n in raw if isinstance(n, Mapping)] if isinstance(raw, list) else []
    kinds = {n.get("kind"): n.get("state") for n in entries}
    if kinds.get(NOTIFY_APPROVAL) == NOTIFY_PENDING:
        return status.get("phase") == str(Phase.AWAITING_APPROVAL)
    if NOTIFY_ESCALATION not in kinds:
        return False
    if NOTIFY_PENDING in kinds.values():
        return True
    ticket = status.get("ticket")
    if isinstance(ticket, Mapping) and ticket.get("gaveUp") and NOTIFY_GIVE_UP not in kinds:
        return True
    verification = status.get("verification")
    passed = isinstance(verification, Mapping) and verification.get("outcome") == "Passed"
    return kinds[NOTIFY_ESCALATION] == NOTIFY_SENT and passed and NOTIFY_RECOVERY not in kinds


def due_work(
    state: RemediationState, *, now: float, effects: Sequence[Effect] = ()
) -> list[Effect]:
    """The ticket effects due at ``now``, derived from ``state`` alone (no policy
    needed, so a record whose policy is gone still finishes its work). ``effects``:
    already emitted in this call, not repeated."""
    out: list[Effect] = []
    at = ticket_due_at(state, now=now)
    if at is not None and at <= now and not any(isinstance(e, Escalate) for e in effects):
        out.append(Escalate(reason=state.escalation_reason, related=state.related))
    at = resolution_due_at(state, now=now)
    if at is not None and at <= now and not any(isinstance(e, Resolve) for e in effects):
        res = state.resolution
        out.append(
            Resolve(message=str(res.get("message") or ""), recovered=bool(res.get("recovered")))
        )
    emitted = {e.kind for e in effects if isinstance(e, Notify)}
    for kind, at in notifications_due_at(state, now=now).items():
        if at <= now and kind not in emitted:
            out.append(Notify(kind=kind))
    return out


def end(
    state: RemediationState, *, reason: EndReason, now: float
) -> tuple[RemediationState, list[Effect]]:
    """Close an open record from outside (its workload or policy is gone).

    Nothing new is filed: a ticket nobody sent is cancelled; one whose create was sent
    is still found (and adopted) and then told; a filed one gets a comment. A
    notification never attempted is dropped (nobody is told about a workload that is gone).
    """
    if state.phase.final:
        return state, []
    message = END_MESSAGES[reason]
    ticket = dict(state.ticket)
    requested = state.ticket_requested_at
    resolution: Mapping[str, object] = state.resolution
    if has_issue(ticket):
        resolution = pending_resolution(message=message, recovered=False)
    elif ticket.get("createSent"):
        pass  # the issue may exist: adopt it, then the late-filing rule tells it
    elif requested is not None:
        ticket = {"state": TICKET_CANCELLED, "lastError": message}
        requested = None
    # A notification nobody tried yet is dropped with the incident; one tried is finished.
    notifications = tuple(
        n
        for n in state.notifications
        if not (n.get("state") == NOTIFY_PENDING and not n.get("attempts"))
    )
    new = dataclasses.replace(
        state,
        notifications=notifications,
        phase=Phase.CLOSED,
        closed_at=now,
        closed_reason=str(reason),
        step_deadline=None,
        waiting_for="",
        ticket=ticket,
        ticket_requested_at=requested,
        resolution=resolution,
    )
    effects: list[Effect] = [
        Emit(reason=EventReason.CLOSED, message=message, type=EventType.NORMAL)
    ]
    effects.extend(due_work(new, now=now))
    return new, effects


def work_wakeup(state: RemediationState, *, now: float) -> float | None:
    """The earliest time pending ticket or notification work of ``state`` is due."""
    times = [
        t
        for t in (ticket_due_at(state, now=now), resolution_due_at(state, now=now))
        if t is not None
    ]
    times.extend(notifications_due_at(state, now=now).values())
    return max(now, min(times)) if times else None


def wakeup(
    state: RemediationState | None, *, policy: HealingPolicy, context: Context, now: float
) -> float | None:
    """The earliest time a ``Tick`` could change ``state``; ``None``: no Tick is needed.

    Deadlines, the end of the verify window (if health stays as it is), retention and
    ticket retries are exact; a step waiting for a guardrail is re-checked every
    ``RECHECK`` seconds (the records that hold it back change without a Tick). Ticking
    more often is harmless; ticking at these times is enough.
    """
    if state is None:
        return None
    work = work_wakeup(state, now=now)
    if state.phase.final or policy.mode is Mode.PAUSED:
        return work
    times: list[float] = [] if work is None else [work]
    if state.step_deadline is not None:
        times.append(state.step_deadline)
    if state.phase is not Phase.ACTING and state.healthy_since is not None:
        times.append(now + max(0.0, policy.remediation.verify_for - state.healthy_for(now)))
    if state.phase is Phase.DETECTED and state.waiting_for:
        times.append(now + RECHECK)
    if state.phase is Phase.ESCALATED:
        assert state.escalated_at is not None
        times.append(state.escalated_at + context.escalated_retention)
    return max(now, min(times)) if times else None


def step_line(record: StepRecord) -> str:
    """``step 1 (restart) Failed: why [revision 7 -> 6]``: one step's outcome."""
    line = f"step {record.index + 1} ({record.action}) {record.result}"
    if record.message:
        line += f": {record.message}"
    change = describe_change(record.change)
    return f"{line} [{change}]" if change else line


def has_issue(ticket: Mapping[str, object]) -> bool:
    """The ticket mapping names a filed issue (its ``key``, e.g. ``OPS-123``).

    The only part of the ticket code's mapping the machine reads: ``Resolve`` is for an
    issue that exists; a pending or failed filing has nothing to resolve yet.
    """
    return bool(ticket.get("key"))


def describe_change(change: Mapping[str, object]) -> str:
    """``revision 7 -> 6, replicas 3 -> 5`` from a change mapping; empty when none."""
    parts = []
    for what, before, after in (
        ("revision", "fromRevision", "toRevision"),
        ("replicas", "fromReplicas", "toReplicas"),
    ):
        if before in change or after in change:
            if after in change:
                parts.append(f"{what} {change.get(before, '?')} -> {change[after]}")
            else:
                parts.append(f"from {what} {change[before]}")
    return ", ".join(parts)
