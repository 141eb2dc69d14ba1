"""The remediation machine, transition by transition, on a fake clock."""

from __future__ import annotations

import dataclasses

import pytest

from selfheal.detect.signal import Health, WorkloadRef
from selfheal.policy.model import Mode, RestartStep, RollbackStep, ScaleStep, StormBrake
from selfheal.remediation import machine
from selfheal.remediation.guardrails import Availability, RecordSummary
from selfheal.remediation.machine import Act, Escalate, EventType, Resolve
from selfheal.remediation.state import (
    Phase,
    RemediationState,
    StepResult,
    VerifyOutcome,
    format_time,
)
from tests.support.fixtures.remediation import (
    NS,
    POLICY,
    T0,
    Incident,
    acts,
    make_context,
    make_policy,
    of_type,
    reasons,
    signal,
)

U, H, X = Health.UNHEALTHY, Health.HEALTHY, Health.UNKNOWN
OK, FAIL, REFUSED = StepResult.SUCCEEDED, StepResult.FAILED, StepResult.REFUSED


def incident(**policy_kwargs: object) -> Incident:
    return Incident(policy=make_policy(**policy_kwargs), context=make_context())  # type: ignore[arg-type]


def acting(**policy_kwargs: object) -> Incident:
    """An incident opened at T0 whose step 1 (rollback) is in flight."""
    inc = incident(**policy_kwargs)
    inc.signal(U, T0)
    assert inc.phase() is Phase.ACTING
    return inc


def verifying(**policy_kwargs: object) -> Incident:
    """Step 1 (rollback) succeeded at T0+10; verification runs until T0+10+600."""
    inc = acting(**policy_kwargs)
    inc.done(0, OK, T0 + 10, change={"fromRevision": "7", "toRevision": "6"})
    assert inc.phase() is Phase.VERIFYING
    return inc


def escalated(**policy_kwargs: object) -> Incident:
    """Both steps succeeded but never healed; escalated at T0+1230."""
    inc = verifying(**policy_kwargs)
    inc.tick(T0 + 610)  # rollback's deadline: the scale starts
    inc.done(1, OK, T0 + 630)
    effects = inc.tick(T0 + 1230)
    assert inc.phase() is Phase.ESCALATED, reasons(effects)
    return inc


# --- Detect -> Act ---------------------------------------------------------------------


def test_unhealthy_signal_opens_a_record_and_acts_on_the_first_step() -> None:
    inc = incident()
    effects = inc.signal(U, T0)
    assert acts(effects) == [Act(index=0, step=RollbackStep(), dry_run=False)]
    assert reasons(effects) == ["Detected", "StepStarted"]
    state = inc.current
    assert state.phase is Phase.ACTING
    assert state.detected_at == T0
    assert state.cause == "CrashLoopBackOff"
    assert state.evidence == {"restarts": 4}
    assert [(s.index, s.action, s.result) for s in state.steps] == [(0, "rollback", None)]
    assert state.step_deadline == T0 + 600  # verify_timeout defaults to 2 x verify_for


@pytest.mark.parametrize("health", [H, X])
def test_healthy_or_unknown_signal_opens_nothing(health: Health) -> None:
    inc = incident()
    assert inc.signal(health, T0) == []
    assert inc.state is None


def test_act_succeeded_starts_verification() -> None:
    inc = acting()
    effects = inc.done(0, OK, T0 + 10, message="rolled back", change={"toRevision": "6"})
    state = inc.current
    assert state.phase is Phase.VERIFYING
    assert state.verification is not None
    assert state.verification.outcome is VerifyOutcome.PENDING
    assert state.verification.since == T0 + 10
    assert state.step_deadline == T0 + 610
    assert state.steps[0].result is OK
    assert state.steps[0].change == {"toRevision": "6"}
    assert reasons(effects) == ["StepSucceeded"]
    assert acts(effects) == []


# --- Verify ----------------------------------------------------------------------------


def test_healthy_for_the_whole_window_resolves() -> None:
    inc = verifying()
    inc.signal(H, T0 + 20)
    assert inc.tick(T0 + 319) == []  # 299s healthy: not yet
    assert inc.phase() is Phase.VERIFYING
    effects = inc.tick(T0 + 320)
    state = inc.current
    assert state.phase is Phase.RESOLVED
    assert state.closed_at == T0 + 320
    assert state.verification is not None
    assert state.verification.outcome is VerifyOutcome.PASSED
    assert reasons(effects) == ["Resolved"]
    assert "step 1 (rollback) healed checkout" in state.verification.message
    assert of_type(effects, Resolve) == []  # no ticket exists: nothing to tell


def test_unhealthy_during_verification_restarts_the_window() -> None:
    inc = verifying()
    inc.signal(H, T0 + 20)
    inc.signal(U, T0 + 200)
    inc.signal(H, T0 + 250)
    inc.tick(T0 + 320)  # would have passed without the unhealthy signal
    assert inc.phase() is Phase.VERIFYING
    inc.tick(T0 + 550)
    assert inc.phase() is Phase.RESOLVED


def test_unhealthy_during_verification_leads_to_the_next_step_at_the_deadline() -> None:
    inc = verifying()
    inc.signal(H, T0 + 20)
    assert inc.signal(U, T0 + 200) == []  # detectors lag a rollout: no step yet
    assert acts(inc.tick(T0 + 609)) == []
    effects = inc.tick(T0 + 610)
    assert acts(effects) == [Act(index=1, step=ScaleStep(by=2, max=12), dry_run=False)]
    assert reasons(effects) == ["VerifyTimedOut", "StepStarted"]
    state = inc.current
    assert state.phase is Phase.ACTING
    assert state.current_step == 1
    assert state.verification is not None
    assert state.verification.outcome is VerifyOutcome.TIMED_OUT
    assert "was not healthy for 5m within 10m" in state.verification.message


def test_unknown_pauses_the_window_without_failing_it() -> None:
    inc = verifying()
    inc.signal(H, T0 + 20)  # 180s healthy ...
    inc.signal(X, T0 + 200)  # ... then 100s unknown (not counted) ...
    inc.signal(H, T0 + 300)  # ... then healthy again
    inc.tick(T0 + 419)  # 180 + 119 = 299s
    assert inc.phase() is Phase.VERIFYING
    inc.tick(T0 + 420)
    assert inc.phase() is Phase.RESOLVED


def test_verify_timeout_with_health_unknown_waits_for_an_unhealthy_signal() -> None:
    inc = verifying()
    inc.signal(X, T0 + 20)
    effects = inc.tick(T0 + 610)
    assert acts(effects) == []
    assert inc.phase() is Phase.DETECTED
    assert inc.current.current_step == 1
    assert acts(inc.tick(T0 + 700)) == []
    assert acts(inc.signal(U, T0 + 720)) == [
        Act(index=1, step=ScaleStep(by=2, max=12), dry_run=False)
    ]


def test_waiting_for_a_step_escalates_at_the_deadline() -> None:
    inc = verifying()
    inc.signal(X, T0 + 20)
    inc.tick(T0 + 610)  # step 2 waits for an unhealthy signal until T0+1210
    assert inc.tick(T0 + 1209) == []
    effects = inc.tick(T0 + 1210)
    assert inc.phase() is Phase.ESCALATED
    assert len(of_type(effects, Escalate)) == 1
    assert inc.current.escalation_reason == (
        "could not start step 2 (scale) within 10m: no unhealthy signal arrived "
        "(last health: unknown)"
    )


def test_a_slow_heal_found_between_steps_resolves() -> None:
    inc = verifying(verify_timeout=400.0)
    inc.signal(H, T0 + 300)  # healthy from T0+300, deadline at T0+410
    inc.tick(T0 + 410)
    assert inc.phase() is Phase.DETECTED  # timed out, waiting: last health is healthy
    inc.tick(T0 + 600)
    assert inc.phase() is Phase.RESOLVED  # the rollback did heal, slowly


# --- Next step, exhaustion, escalation ------------------------------------------------


def test_refused_step_moves_to_the_next_step_at_once() -> None:
    inc = acting()
    effects = inc.done(0, REFUSED, T0 + 5, message="no healthy revision")
    assert acts(effects) == [Act(index=1, step=ScaleStep(by=2, max=12), dry_run=False)]
    assert reasons(effects) == ["StepRefused", "StepStarted"]
    assert inc.current.steps[0].result is REFUSED


def test_failed_step_moves_to_the_next_step() -> None:
    inc = acting()
    effects = inc.done(0, FAIL, T0 + 5, message="403 Forbidden")
    assert [a.index for a in acts(effects)] == [1]
    assert "StepFailed" in reasons(effects)


def test_refused_last_step_escalates_with_the_refusal_in_the_reason() -> None:
    inc = acting()
    inc.done(0, REFUSED, T0 + 5, message="managed by Argo CD")
    effects = inc.done(1, REFUSED, T0 + 6, message="already at max replicas (12)")
    assert inc.phase() is Phase.ESCALATED
    [escalate] = of_type(effects, Escalate)
    assert "managed by Argo CD" in escalate.reason
    assert "already at max replicas (12)" in escalate.reason
    assert escalate.reason == inc.current.escalation_reason


def test_no_outcome_by_the_deadline_fails_the_step() -> None:
    inc = acting()
    assert inc.tick(T0 + 599) == []
    effects = inc.tick(T0 + 600)
    assert inc.current.steps[0].result is FAIL
    assert "no outcome was reported within 10m" in inc.current.steps[0].message
    assert [a.index for a in acts(effects)] == [1]


def test_steps_exhausted_escalate_once_with_every_step_in_the_reason() -> None:
    inc = escalated()
    state = inc.current
    [_, _, (_, _, last)] = inc.log[-3:]
    [escalate] = of_type(last, Escalate)
    assert "step 1 (rollback) Succeeded" in escalate.reason
    assert "revision 7 -> 6" in escalate.reason
    assert "step 2 (scale) Succeeded" in escalate.reason
    assert state.escalated_at == T0 + 1230
    assert state.ticket_requested_at == T0 + 1230
    assert state.step_deadline is None
    # Still unhealthy: no more acting. The ticket stays due (one attempt at a time is
    # the driver's rule) until a result is recorded; then no second ticket.
    assert acts(inc.signal(U, T0 + 1300)) == []
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 1301)
    assert inc.signal(U, T0 + 1302) == []
    assert acts(inc.tick(T0 + 1400)) == []


def test_escalated_and_healthy_for_the_window_closes_and_resolves_the_ticket() -> None:
    inc = escalated()
    inc.ticket({"key": "OPS-1"}, T0 + 1240)
    inc.signal(H, T0 + 1300)
    assert inc.tick(T0 + 1599) == []
    effects = inc.tick(T0 + 1600)
    assert inc.phase() is Phase.CLOSED
    assert inc.current.ticket == {"key": "OPS-1"}
    [resolve] = of_type(effects, Resolve)
    assert resolve.recovered is True
    assert "checkout recovered after the escalation" in resolve.message


def test_escalated_record_closes_after_retention() -> None:
    inc = escalated()
    inc.ticket({"key": "OPS-1"}, T0 + 1240)
    retention = inc.context.escalated_retention
    assert inc.tick(T0 + 1230 + retention - 1) == []
    effects = inc.tick(T0 + 1230 + retention)
    assert inc.phase() is Phase.CLOSED
    assert of_type(effects, Resolve) == [
        Resolve(message=of_type(effects, Resolve)[0].message, recovered=False)
    ]


def _pending(retry_at: float, **extra: object) -> dict[str, object]:
    return {
        "state": "Pending",
        "retryAt": format_time(retry_at),
        "fingerprint": "abc",
        **extra,
    }


def test_escalate_is_due_until_the_ticket_is_reported() -> None:
    inc = escalated()
    # Requested and nothing recorded (a crash before the first attempt reported): due.
    assert len(of_type(inc.tick(T0 + 1231), Escalate)) == 1
    inc.ticket(_pending(T0 + 1300), T0 + 1232)
    assert of_type(inc.tick(T0 + 1299), Escalate) == []
    assert len(of_type(inc.tick(T0 + 1300), Escalate)) == 1
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 1310)
    assert of_type(inc.tick(T0 + 3000), Escalate) == []


def test_a_pending_ticket_is_due_after_a_restart_at_its_retry_time() -> None:
    inc = escalated()
    inc.ticket(_pending(T0 + 1500, createSent=True), T0 + 1240)
    inc.restart()
    assert of_type(inc.tick(T0 + 1499), Escalate) == []
    [esc] = of_type(inc.tick(T0 + 1500), Escalate)
    assert esc.reason == inc.current.escalation_reason
    assert wake(inc, T0 + 1400) == T0 + 1500


def test_a_record_closed_before_its_ticket_was_filed_still_files_it_then_tells_it() -> None:
    inc = escalated()
    inc.ticket(_pending(T0 + 5000), T0 + 1240)
    inc.signal(H, T0 + 1300)
    inc.tick(T0 + 1600)
    assert inc.phase() is Phase.CLOSED
    assert wake(inc, T0 + 1700) == T0 + 5000  # final, and still has work
    assert len(of_type(inc.tick(T0 + 5000), Escalate)) == 1
    [resolve] = of_type(inc.ticket({"state": "Filed", "key": "OPS-9"}, T0 + 5001), Resolve)
    assert resolve.recovered is True
    assert inc.current.resolution["state"] == "Pending"
    # Until the resolution is recorded done, every pass re-derives it.
    assert len(of_type(inc.tick(T0 + 5002), Resolve)) == 1


def test_a_failed_ticket_is_loud() -> None:
    inc = escalated()
    effects = inc.ticket({"state": "Failed", "lastError": "gave up after 40 attempts"}, T0 + 1240)
    [emit] = [e for e in effects if isinstance(e, machine.Emit)]
    assert emit.reason == "TicketFailed"
    assert emit.type is EventType.WARNING
    assert "gave up after 40 attempts" in emit.message
    assert of_type(inc.tick(T0 + 9000), Escalate) == []


def test_ending_a_record_cancels_an_unsent_ticket_and_tells_a_filed_one() -> None:
    inc = escalated()
    state, effects = machine.end(
        inc.current, reason=machine.EndReason.WORKLOAD_DELETED, now=T0 + 1240
    )
    assert state.phase is Phase.CLOSED
    assert state.closed_reason == "WorkloadDeleted"
    assert state.ticket["state"] == "Cancelled"
    assert state.ticket_requested_at is None
    assert of_type(effects, Escalate) == []
    assert of_type(effects, Resolve) == []
    assert machine.work_wakeup(state, now=T0 + 1241) is None

    filed = escalated()
    filed.ticket({"state": "Filed", "key": "OPS-2"}, T0 + 1240)
    state, effects = machine.end(
        filed.current, reason=machine.EndReason.POLICY_DELETED, now=T0 + 1250
    )
    [resolve] = of_type(effects, Resolve)
    assert resolve.recovered is False
    assert "HealingPolicy was deleted" in resolve.message
    assert state.resolution["state"] == "Pending"

    sent = escalated()
    sent.ticket(_pending(T0 + 1300, createSent=True), T0 + 1240)
    state, effects = machine.end(
        sent.current, reason=machine.EndReason.WORKLOAD_DELETED, now=T0 + 1250
    )
    # A create may have happened: it is still adopted (and then told).
    assert state.ticket["state"] == "Pending"
    assert machine.work_wakeup(state, now=T0 + 1250) == T0 + 1300


def test_ticket_reported_after_the_record_closed_is_resolved() -> None:
    inc = escalated()
    inc.signal(H, T0 + 1300)
    effects = inc.tick(T0 + 1600)
    assert inc.phase() is Phase.CLOSED
    assert of_type(effects, Resolve) == []  # no ticket yet
    effects = inc.ticket({"key": "OPS-9"}, T0 + 1700)
    assert [r.recovered for r in of_type(effects, Resolve)] == [True]


def test_without_jira_escalation_is_an_event_only() -> None:
    inc = acting(jira=False)
    inc.done(0, REFUSED, T0 + 1)
    effects = inc.done(1, REFUSED, T0 + 2)
    assert inc.phase() is Phase.ESCALATED
    assert of_type(effects, Escalate) == []
    assert "Escalated" in reasons(effects)
    assert inc.current.ticket_requested_at is None


def test_policy_without_steps_escalates_on_detection() -> None:
    inc = incident(steps=())
    effects = inc.signal(U, T0)
    assert inc.phase() is Phase.ESCALATED
    assert acts(effects) == []
    [escalate] = of_type(effects, Escalate)
    assert (
        escalate.reason == "HealingPolicy checkout has no remediation steps; checkout needs a human"
    )


# --- Unknown never acts -----------------------------------------------------------------


def _detected_waiting() -> Incident:
    inc = verifying()
    inc.signal(X, T0 + 20)
    inc.tick(T0 + 610)
    assert inc.phase() is Phase.DETECTED
    return inc


@pytest.mark.parametrize(
    "setup", [acting, verifying, _detected_waiting, escalated], ids=lambda f: f.__name__
)
def test_unknown_signals_never_act_in_any_phase(setup: object) -> None:
    inc = setup()  # type: ignore[operator]
    start = inc.current.last_signal_at or T0
    for i in range(1, 40):
        now = start + 60 * i
        assert acts(inc.signal(X, now)) == []
        assert acts(inc.tick(now + 30)) == []
    assert inc.current.last_health is Health.UNKNOWN


def test_unknown_is_recorded_and_reported_once() -> None:
    inc = verifying()
    first = inc.signal(X, T0 + 20)
    again = inc.signal(X, T0 + 40)
    assert reasons(first) == ["HealthUnknown"]
    assert first[0].type is EventType.WARNING  # type: ignore[union-attr]
    assert again == []
    assert inc.current.last_signal_at == T0 + 40


# --- DryRun and Paused -----------------------------------------------------------------


def test_dry_run_records_the_intended_change_and_closes_when_healthy() -> None:
    inc = incident(mode=Mode.DRY_RUN)
    effects = inc.signal(U, T0)
    assert acts(effects) == [Act(index=0, step=RollbackStep(), dry_run=True)]
    change = {"fromRevision": "7", "toRevision": "6", "patch": {"spec": {"template": {}}}}
    effects = inc.done(0, StepResult.DRY_RUN, T0 + 1, message="would roll back", change=change)
    state = inc.current
    assert state.phase is Phase.VERIFYING
    assert state.steps[0].result is StepResult.DRY_RUN
    assert state.steps[0].change == change
    assert reasons(effects) == ["DryRun"]
    assert "revision 7 -> 6" in effects[0].message  # type: ignore[union-attr]
    assert inc.signal(U, T0 + 30) == []  # one record per incident, however many signals
    inc.signal(H, T0 + 60)
    effects = inc.tick(T0 + 360)
    assert inc.phase() is Phase.CLOSED  # nothing healed it: not Resolved
    assert reasons(effects) == ["Closed"]
    assert "nothing was changed (dry run)" in effects[0].message  # type: ignore[union-attr]
    assert inc.signal(U, T0 + 400) == []  # final: a new incident gets a new record


def test_dry_run_walks_every_step_then_escalates_like_enforce() -> None:
    inc = incident(mode=Mode.DRY_RUN)
    inc.signal(U, T0)
    inc.done(0, StepResult.DRY_RUN, T0 + 1)
    effects = inc.tick(T0 + 601)
    assert acts(effects) == [Act(index=1, step=ScaleStep(by=2, max=12), dry_run=True)]
    inc.done(1, StepResult.DRY_RUN, T0 + 602, change={"fromReplicas": 3, "toReplicas": 5})
    effects = inc.tick(T0 + 1202)
    assert inc.phase() is Phase.ESCALATED
    [escalate] = of_type(effects, Escalate)
    assert "step 2 (scale) DryRun [replicas 3 -> 5]" in escalate.reason


def test_dry_run_steps_do_not_count_for_cooldowns() -> None:
    inc = incident(mode=Mode.DRY_RUN)
    inc.signal(U, T0)
    inc.done(0, StepResult.DRY_RUN, T0 + 1)
    assert inc.current.started_at is None
    assert inc.current.last_acted_at is None


def test_dry_run_falls_through_a_refused_step() -> None:
    inc = incident(mode=Mode.DRY_RUN)
    inc.signal(U, T0)
    effects = inc.done(0, REFUSED, T0 + 1, message="no healthy revision")
    assert acts(effects) == [Act(index=1, step=ScaleStep(by=2, max=12), dry_run=True)]


def test_paused_policy_opens_nothing() -> None:
    inc = incident(mode=Mode.PAUSED)
    assert inc.signal(U, T0) == []
    assert inc.state is None


def test_paused_policy_leaves_open_records_as_they_are() -> None:
    inc = verifying()
    inc.policy = make_policy(mode=Mode.PAUSED)
    before = inc.current
    for now in (T0 + 100, T0 + 700, T0 + 5000):
        assert inc.signal(U, now) == []
        assert inc.tick(now + 1) == []
        assert inc.state is before


def test_paused_policy_records_an_outcome_but_starts_no_step() -> None:
    inc = acting()
    inc.policy = make_policy(mode=Mode.PAUSED)
    effects = inc.done(0, REFUSED, T0 + 5, message="no healthy revision")
    assert acts(effects) == []
    assert inc.phase() is Phase.DETECTED
    assert inc.current.waiting_for.startswith("paused:")
    assert "GuardrailRefused" in reasons(effects)
    inc.policy = make_policy()  # resumed
    assert [a.index for a in acts(inc.tick(T0 + 60))] == [1]


# --- Guardrails inside the machine -----------------------------------------------------


def _other_record(
    *,
    workload: str = "cart",
    phase: Phase = Phase.VERIFYING,
    acted: float | None = T0 - 60,
    **kwargs: object,
) -> RecordSummary:
    return RecordSummary(
        namespace=NS,
        name=f"{workload}-crashloop-000000000000-1",
        policy=POLICY,
        workload=workload,
        trigger="crashloop",
        phase=phase,
        detected_at=(acted or T0) - 10,
        started_at=acted,
        last_acted_at=acted,
        **kwargs,  # type: ignore[arg-type]
    )


def test_cooldown_escalates_with_its_message() -> None:
    previous = _other_record(workload="checkout", phase=Phase.RESOLVED, acted=T0 - 240)
    inc = Incident(policy=make_policy(), context=make_context(records=(previous,)))
    effects = inc.signal(U, T0)
    assert acts(effects) == []
    assert inc.phase() is Phase.ESCALATED
    assert inc.current.escalation_reason == (
        "cooldown: checkout was remediated 4m ago; next allowed in 26m (guardrails.cooldown=30m)"
    )
    assert [e.reason for e in of_type(effects, Escalate)] == [inc.current.escalation_reason]


def test_max_concurrent_waits_then_acts_when_the_slot_frees() -> None:
    busy = _other_record(phase=Phase.VERIFYING)
    inc = Incident(policy=make_policy(), context=make_context(records=(busy,)))
    effects = inc.signal(U, T0)
    assert acts(effects) == []
    assert inc.phase() is Phase.DETECTED
    assert inc.current.waiting_for.startswith("max concurrent: 1 remediation(s) of policy")
    assert reasons(effects) == ["Detected", "GuardrailRefused"]
    assert reasons(inc.signal(U, T0 + 30)) == []  # same refusal: not reported again
    inc.context = make_context(records=(dataclasses.replace(busy, phase=Phase.RESOLVED),))
    assert [a.index for a in acts(inc.tick(T0 + 60))] == [0]


def test_waiting_on_a_guardrail_escalates_at_the_deadline() -> None:
    busy = _other_record(phase=Phase.ACTING)
    inc = Incident(policy=make_policy(), context=make_context(records=(busy,)))
    inc.signal(U, T0)
    inc.signal(U, T0 + 300)
    effects = inc.tick(T0 + 600)
    assert inc.phase() is Phase.ESCALATED
    assert inc.current.escalation_reason.startswith(
        "could not start step 1 (rollback) within 10m: max concurrent:"
    )
    assert len(of_type(effects, Escalate)) == 1


def test_recovering_while_waiting_closes_without_acting() -> None:
    busy = _other_record(phase=Phase.ACTING)
    inc = Incident(policy=make_policy(), context=make_context(records=(busy,)))
    inc.signal(U, T0)
    inc.signal(H, T0 + 60)
    effects = inc.tick(T0 + 360)
    assert inc.phase() is Phase.CLOSED
    assert reasons(effects) == ["Closed"]
    assert inc.current.verification is not None
    assert "checkout recovered before any step changed it" in inc.current.verification.message
    assert inc.current.steps == ()


def test_min_available_skips_a_disruptive_step_but_not_scale() -> None:
    inc = Incident(
        policy=make_policy(min_available=0.5, steps=(RestartStep(), ScaleStep(by=1, max=5))),
        context=make_context(availability=Availability(available=1, desired=4)),
    )
    effects = inc.signal(U, T0)
    assert acts(effects) == [Act(index=1, step=ScaleStep(by=1, max=5), dry_run=False)]
    refused = inc.current.steps[0]
    assert refused.result is REFUSED
    assert refused.message == (
        "min available: checkout has 1/4 replicas available (25%); "
        "a restart needs 50% (guardrails.minAvailable=50%)"
    )


def test_storm_brake_escalates_one_summary_and_silences_the_others() -> None:
    """As the driver runs it: each decision sees the records written before it."""
    order = ["search", "api", "payments", "cart", "checkout"]  # detection order
    unhealthy: dict[str, float] = {}
    records: list[RecordSummary] = []
    results: dict[str, list[machine.Effect]] = {}
    states: dict[str, RemediationState] = {}
    for i, n in enumerate(order):
        unhealthy[n] = T0 + i
        w = WorkloadRef(namespace=NS, name=n)
        context = make_context(workload=w, unhealthy=dict(unhealthy), records=tuple(records))
        inc = Incident(
            policy=make_policy(
                max_concurrent=5, max_concurrent_per_namespace=5, max_remediations=9
            ),
            context=context,
        )
        results[n] = inc.send(signal(U, T0 + i, workload=w), T0 + i)
        states[n] = inc.current
        records.append(
            RecordSummary.from_state(
                inc.current,
                namespace=NS,
                name=context.name,
                policy=POLICY,
                workload=n,
                trigger="crashloop",
            )
        )
    # Below the brake (5 unhealthy), the first four acted; the fifth meets the storm.
    assert [n for n in order if acts(results[n])] == ["search", "api", "payments", "cart"]
    assert states["checkout"].phase is Phase.ESCALATED
    assert states["checkout"].storm_summary
    [summary] = of_type(results["checkout"], Escalate)
    assert summary.related == ("api", "cart", "checkout", "payments", "search")


def test_storm_brake_summary_is_carried_by_the_first_refused_only() -> None:
    names = ["web", "api", "cart", "db"]
    unhealthy = {n: T0 for n in names}
    records: list[RecordSummary] = []
    ticketed: list[str] = []
    silenced: list[str] = []
    for n in names:
        w = WorkloadRef(namespace=NS, name=n)
        context = make_context(workload=w, unhealthy=unhealthy, records=tuple(records))
        inc = Incident(policy=make_policy(storm=StormBrake(max_unhealthy=2)), context=context)
        effects = inc.send(signal(U, T0, workload=w), T0)
        assert acts(effects) == []
        assert inc.phase() is Phase.ESCALATED
        (ticketed if of_type(effects, Escalate) else silenced).append(n)
        records.append(
            RecordSummary.from_state(
                inc.current,
                namespace=NS,
                name=context.name,
                policy=POLICY,
                workload=n,
                trigger="crashloop",
            )
        )
    assert ticketed == ["web"]  # the first refused, whatever its name
    assert silenced == ["api", "cart", "db"]
    assert [r.storm_summary for r in records] == [True, False, False, False]


# --- Idempotence -----------------------------------------------------------------------


def test_stale_or_duplicate_action_done_is_ignored() -> None:
    inc = acting()
    before = inc.current
    assert inc.done(1, OK, T0 + 5) == []  # not the step in flight
    assert inc.state is before
    inc.done(0, REFUSED, T0 + 6)  # step 2 now in flight
    after = inc.current
    assert inc.done(0, OK, T0 + 7) == []  # duplicate report of step 1
    assert inc.state is after


def test_duplicate_unhealthy_signals_act_once() -> None:
    inc = incident()
    first = inc.signal(U, T0)
    again = [inc.signal(U, T0 + i) for i in (0, 1, 2)]
    assert len(acts(first)) == 1
    assert all(acts(e) == [] for e in again)


def test_a_signal_older_than_the_last_one_is_ignored() -> None:
    inc = verifying()
    inc.signal(H, T0 + 100)
    before = inc.current
    inc.send(signal(U, T0 + 50), T0 + 120)  # delivered late
    assert inc.state is before


def test_a_signal_for_another_workload_is_a_routing_error() -> None:
    inc = incident()
    other = WorkloadRef(namespace=NS, name="cart")
    with pytest.raises(ValueError, match="route by fingerprint"):
        inc.send(signal(U, T0, workload=other), T0)


def test_restarting_before_every_event_changes_no_decision() -> None:
    def play(restart: bool) -> list[tuple[float, list[machine.Effect]]]:
        inc = Incident(policy=make_policy(), context=make_context(), restart_each_time=restart)
        inc.signal(U, T0)
        inc.done(0, OK, T0 + 10, change={"fromRevision": "7", "toRevision": "6"})
        inc.signal(H, T0 + 20)
        inc.signal(X, T0 + 100)
        inc.signal(U, T0 + 200)
        inc.tick(T0 + 610)
        inc.done(1, FAIL, T0 + 620, message="409 Conflict")
        inc.tick(T0 + 700)
        inc.ticket({"key": "OPS-3"}, T0 + 710)
        inc.signal(H, T0 + 800)
        inc.tick(T0 + 1100)
        return [(now, effects) for now, _, effects in inc.log]

    assert play(restart=True) == play(restart=False)


def test_record_identity_is_kept_when_nothing_changes() -> None:
    inc = escalated()
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 1230)
    before = inc.current
    assert inc.tick(T0 + 1231) == []
    assert inc.state is before


# --- When to tick ------------------------------------------------------------------------


def wake(inc: Incident, now: float) -> float | None:
    return machine.wakeup(inc.state, policy=inc.policy, context=inc.context, now=now)


def test_wakeup_is_the_deadline_while_acting() -> None:
    inc = acting()
    assert wake(inc, T0 + 5) == T0 + 600


def test_wakeup_is_the_end_of_the_window_while_healthy() -> None:
    inc = verifying()
    inc.signal(H, T0 + 20)
    assert wake(inc, T0 + 100) == T0 + 320
    inc.signal(U, T0 + 150)
    assert wake(inc, T0 + 160) == T0 + 610  # not healthy: only the deadline


def test_wakeup_rechecks_a_waiting_guardrail() -> None:
    busy = RecordSummary(
        namespace=NS,
        name="cart-1",
        policy=POLICY,
        workload="cart",
        trigger="crashloop",
        phase=Phase.ACTING,
        detected_at=T0 - 5,
        started_at=T0 - 5,
    )
    inc = Incident(policy=make_policy(), context=make_context(records=(busy,)))
    inc.signal(U, T0)
    assert wake(inc, T0 + 1) == T0 + 1 + machine.RECHECK


def test_wakeup_retries_the_ticket_and_ends_retention() -> None:
    inc = escalated()
    assert wake(inc, T0 + 1231) == T0 + 1231  # the ticket is due: nothing recorded yet
    inc.ticket({"key": "OPS-1"}, T0 + 1240)
    assert wake(inc, T0 + 1241) == T0 + 1230 + inc.context.escalated_retention


def test_no_wakeup_for_final_records_or_paused_policies() -> None:
    inc = verifying()
    inc.signal(H, T0 + 20)
    inc.tick(T0 + 320)
    assert wake(inc, T0 + 400) is None
    paused = acting()
    paused.policy = make_policy(mode=Mode.PAUSED)
    assert wake(paused, T0 + 1) is None


def test_a_window_completed_while_acting_is_seen_when_the_step_gives_up() -> None:
    inc = acting()
    inc.signal(H, T0 + 10)  # healthy on its own; the action never reports
    effects = inc.tick(T0 + 600)
    assert inc.phase() is Phase.CLOSED  # not a second step on a healthy workload
    assert acts(effects) == []
    assert inc.current.steps[0].result is FAIL
    assert reasons(effects) == ["StepFailed", "Closed"]
    assert "no step is known to have healed it" in effects[-1].message  # type: ignore[union-attr]


def test_an_issue_filed_after_the_record_closed_is_resolved_even_after_a_pending_report() -> None:
    inc = escalated()
    inc.ticket({"state": "Pending", "attempts": 1}, T0 + 1240)  # Jira was down
    inc.signal(H, T0 + 1300)
    effects = inc.tick(T0 + 1600)
    assert inc.phase() is Phase.CLOSED
    assert of_type(effects, Resolve) == []  # no issue to tell yet
    effects = inc.ticket({"state": "Filed", "key": "OPS-4"}, T0 + 1700)
    assert [r.recovered for r in of_type(effects, Resolve)] == [True]
    assert inc.ticket({"state": "Filed", "key": "OPS-4"}, T0 + 1800) == []  # told once
