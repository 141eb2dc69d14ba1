"""Guardrails: each refusal, its message, and decisions computed from records alone."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.detect.signal import WorkloadRef
from selfheal.policy.model import Mode, RestartStep, RollbackStep, ScaleStep, Step
from selfheal.remediation import guardrails
from selfheal.remediation.guardrails import (
    Availability,
    Decision,
    Guardrail,
    RecordSummary,
    Refusal,
    human_duration,
)
from selfheal.remediation.state import Phase, RemediationState, StepRecord, StepResult
from tests.support.fixtures.remediation import CHECKOUT, NS, POLICY, T0, body_of, make_policy

HOUR = 3600.0
ROLLBACK = RollbackStep()


def record(
    workload: str = "cart",
    *,
    phase: Phase = Phase.RESOLVED,
    acted: float | None = T0 - HOUR,
    policy: str = POLICY,
    namespace: str = NS,
    name: str | None = None,
    storm_summary: bool = False,
) -> RecordSummary:
    return RecordSummary(
        namespace=namespace,
        name=name or f"{workload}-crashloop-{int(acted or 0)}-1",
        policy=policy,
        workload=workload,
        trigger="crashloop",
        phase=phase,
        detected_at=(acted or T0) - 30,
        started_at=acted,
        last_acted_at=acted,
        closed_at=None if not phase.final else (acted or T0) + 60,
        storm_summary=storm_summary,
    )


def check(
    *records: RecordSummary,
    step: Step | None = ROLLBACK,
    first: bool = True,
    unhealthy: dict[str, float] | None = None,
    availability: Availability | None = None,
    now: float = T0,
    workload: WorkloadRef = CHECKOUT,
    **policy: Any,
) -> Decision:
    return guardrails.check(
        policy=make_policy(**policy),
        workload=workload,
        step=step,
        first=first,
        records=records,
        unhealthy=unhealthy or {},
        availability=availability,
        now=now,
        exclude="mine",
    )


def test_no_records_allow() -> None:
    decision = check()
    assert decision.allowed
    assert decision.guardrail is None


# --- Cooldown --------------------------------------------------------------------------


def test_cooldown_refuses_with_when_and_how_long() -> None:
    decision = check(record("checkout", acted=T0 - 240))
    assert decision.guardrail is Guardrail.COOLDOWN
    assert decision.refusal is Refusal.ESCALATE
    assert decision.message == (
        "cooldown: checkout was remediated 4m ago; next allowed in 26m (guardrails.cooldown=30m)"
    )


def test_cooldown_ends_after_the_cooldown() -> None:
    assert check(record("checkout", acted=T0 - 1800)).allowed
    assert not check(record("checkout", acted=T0 - 1799)).allowed


def test_cooldown_ignores_other_workloads_and_records_that_never_acted() -> None:
    assert check(record("cart", acted=T0 - 10)).allowed
    assert check(record("checkout", acted=None, phase=Phase.ESCALATED)).allowed


def test_a_workload_being_remediated_by_another_record_waits() -> None:
    decision = check(record("checkout", phase=Phase.VERIFYING, acted=T0 - 3 * HOUR, name="x-1"))
    assert decision.guardrail is Guardrail.COOLDOWN
    assert decision.refusal is Refusal.WAIT
    assert decision.message == "cooldown: checkout is being remediated by x-1; waiting"


def test_the_callers_own_record_is_not_counted() -> None:
    assert check(record("checkout", phase=Phase.ACTING, acted=T0 - 5, name="mine")).allowed


# --- RateLimit ------------------------------------------------------------------------


def test_rate_limit_counts_this_policys_starts_within_the_window() -> None:
    starts = (T0 - 50 * 60, T0 - 20 * 60, T0 - 10 * 60)
    records = [record(f"w{i}", acted=t) for i, t in enumerate(starts)]
    decision = check(*records)
    assert decision.guardrail is Guardrail.RATE_LIMIT
    assert decision.refusal is Refusal.ESCALATE
    assert decision.message == (
        "rate limit: policy checkout started 3 remediations in the last 1h; next allowed in "
        "10m (guardrails.maxRemediations=3, guardrails.window=1h)"
    )


def test_rate_limit_ignores_old_starts_and_other_policies() -> None:
    records = [
        record("w1", acted=T0 - HOUR - 1),
        record("w2", acted=T0 - 60, policy="other"),
        record("w3", acted=T0 - 60),
        record("w4", acted=T0 - 60),
    ]
    assert check(*records).allowed


# --- Concurrency -----------------------------------------------------------------------


def test_max_concurrent_counts_active_records_of_the_policy() -> None:
    decision = check(record("cart", phase=Phase.VERIFYING, acted=T0 - 3 * HOUR))
    assert decision.guardrail is Guardrail.MAX_CONCURRENT
    assert decision.refusal is Refusal.WAIT
    assert decision.message == (
        "max concurrent: 1 remediation(s) of policy checkout are active "
        "(guardrails.maxConcurrent=1); waiting"
    )
    assert check(record("cart", phase=Phase.VERIFYING), max_concurrent=2).allowed


def test_a_record_between_two_steps_holds_its_slot_but_one_not_started_does_not() -> None:
    between = record("cart", phase=Phase.DETECTED, acted=T0 - 3 * HOUR)
    waiting = record("cart", phase=Phase.DETECTED, acted=None)
    assert check(between).guardrail is Guardrail.MAX_CONCURRENT
    assert check(waiting).allowed


def test_max_concurrent_per_namespace_counts_every_policy() -> None:
    others = [
        record(f"w{i}", phase=Phase.ACTING, acted=T0 - 3 * HOUR, policy=f"p{i}") for i in range(3)
    ]
    decision = check(*others)
    assert decision.guardrail is Guardrail.MAX_CONCURRENT_NAMESPACE
    assert decision.refusal is Refusal.WAIT
    assert decision.message == (
        "max concurrent in namespace: 3 remediation(s) are active in shop "
        "(guardrails.maxConcurrentPerNamespace=3); waiting"
    )


def test_records_of_other_namespaces_are_ignored() -> None:
    elsewhere = [
        record(f"w{i}", phase=Phase.ACTING, acted=T0 - 1, namespace="other") for i in range(5)
    ]
    assert check(*elsewhere, record("checkout", acted=T0 - 1, namespace="other")).allowed


def test_incident_level_guardrails_do_not_apply_after_the_first_step() -> None:
    busy = record("checkout", acted=T0 - 60)  # within cooldown
    slot = record("cart", phase=Phase.VERIFYING)
    assert check(busy, slot, first=False).allowed


# --- MinAvailable ---------------------------------------------------------------------


@pytest.mark.parametrize("step", [RollbackStep(), RestartStep()], ids=["rollback", "restart"])
def test_min_available_refuses_disruptive_steps(step: Step) -> None:
    decision = check(
        step=step, min_available=0.75, availability=Availability(available=2, desired=4)
    )
    assert decision.guardrail is Guardrail.MIN_AVAILABLE
    assert decision.refusal is Refusal.SKIP_STEP
    action = "rollback" if isinstance(step, RollbackStep) else "restart"
    assert decision.message == (
        f"min available: checkout has 2/4 replicas available (50%); a {action} needs 75% "
        "(guardrails.minAvailable=75%)"
    )


def test_min_available_never_applies_to_scale() -> None:
    avail = Availability(available=0, desired=4)
    assert check(step=ScaleStep(), min_available=1.0, availability=avail).allowed


def test_min_available_passes_when_enough_replicas_are_available() -> None:
    avail = Availability(available=3, desired=4)
    assert check(min_available=0.75, availability=avail).allowed
    assert check(min_available=0.75, availability=Availability(available=0, desired=0)).allowed


def test_min_available_refuses_when_availability_is_unknown() -> None:
    decision = check(min_available=0.5, availability=None)
    assert decision.guardrail is Guardrail.MIN_AVAILABLE
    assert "availability of checkout is unknown" in decision.message
    assert check(min_available=0.0, availability=None).allowed  # not configured: no check


# --- Paused and StormBrake --------------------------------------------------------------


def test_paused_policy_refuses_everything() -> None:
    decision = check(mode=Mode.PAUSED)
    assert decision.guardrail is Guardrail.PAUSED
    assert decision.refusal is Refusal.WAIT
    assert decision.message == "paused: HealingPolicy checkout has mode Paused; nothing is acted on"


def _storm(workload: str, *records: RecordSummary, now: float = T0) -> Decision:
    unhealthy = {n: T0 - 60 for n in ("search", "api", "checkout", "payments", "cart")}
    return check(
        *records, workload=WorkloadRef(namespace=NS, name=workload), unhealthy=unhealthy, now=now
    )


def test_the_first_record_refused_by_the_storm_brake_carries_the_summary() -> None:
    first = _storm("payments")
    assert first.guardrail is Guardrail.STORM_BRAKE
    assert first.refusal is Refusal.ESCALATE
    assert first.related == ("api", "cart", "checkout", "payments", "search")
    assert first.storm_summary
    assert first.message == (
        "storm brake: 5 workloads in shop turned unhealthy within 5m (api, cart, checkout, "
        "payments, search; guardrails.storm.maxUnhealthy=5); acting is stopped there, this "
        "record carries the summary"
    )
    carrier = record("payments", phase=Phase.ESCALATED, acted=None, name="p-1", storm_summary=True)
    later = _storm("api", carrier)
    assert later.guardrail is Guardrail.STORM_BRAKE
    assert not later.storm_summary
    assert later.message.endswith("summarised by p-1 (payments)")


def test_a_storm_gets_a_new_carrier_once_the_old_one_ended() -> None:
    closed = record("search", phase=Phase.CLOSED, acted=None, storm_summary=True)
    assert _storm("api", closed).storm_summary
    elsewhere = record("search", namespace="other", phase=Phase.ESCALATED, storm_summary=True)
    assert _storm("api", elsewhere).storm_summary


def test_records_that_acted_before_the_storm_do_not_carry_it() -> None:
    acting = record("api", phase=Phase.VERIFYING, acted=T0 - 30)
    assert _storm("cart", acting).storm_summary


def test_storm_brake_counts_only_recent_distinct_workloads() -> None:
    unhealthy = {"a": T0 - 10, "b": T0 - 20, "c": T0 - 30, "old": T0 - 301}
    assert check(unhealthy=unhealthy).allowed  # a, b, c and checkout: 4 < 5
    unhealthy["d"] = T0 - 1
    assert check(unhealthy=unhealthy).guardrail is Guardrail.STORM_BRAKE


def test_storm_brake_applies_to_later_steps_too() -> None:
    unhealthy = {n: T0 for n in "abcd"}
    assert check(first=False, unhealthy=unhealthy).guardrail is Guardrail.STORM_BRAKE


# --- Records from objects, surviving a restart -----------------------------------------


def _state(phase: Phase, *, acted: float | None) -> RemediationState:
    steps: tuple[StepRecord, ...] = ()
    if acted is not None:
        steps = (
            StepRecord(
                index=0,
                action="rollback",
                started_at=acted,
                finished_at=acted + 5,
                result=StepResult.SUCCEEDED,
            ),
        )
    return RemediationState(phase=phase, detected_at=(acted or T0) - 30, steps=steps)


def test_record_summary_from_a_remediation_object() -> None:
    body = body_of(_state(Phase.VERIFYING, acted=T0 - 100))
    summary = RecordSummary.from_body(body)
    assert summary.namespace == NS
    assert summary.policy == POLICY
    assert summary.workload == "checkout"
    assert summary.trigger == "crashloop"
    assert summary.phase is Phase.VERIFYING
    assert summary.started_at == T0 - 100
    assert summary.last_acted_at == T0 - 95
    assert summary.active


def test_refused_and_dry_run_steps_never_count_as_acting() -> None:
    steps = tuple(
        StepRecord(index=i, action="rollback", started_at=T0 - 60, finished_at=T0 - 60, result=r)
        for i, r in enumerate((StepResult.REFUSED, StepResult.DRY_RUN))
    )
    state = RemediationState(phase=Phase.CLOSED, detected_at=T0 - 70, steps=steps)
    summary = RecordSummary.from_body(body_of(state))
    assert summary.started_at is None
    assert check(summary).allowed


@pytest.mark.parametrize(
    ("path", "field"),
    [(("metadata", "name"), "metadata.name"), (("spec", "policy"), "spec.policy")],
)
def test_record_summary_names_the_missing_field(path: tuple[str, str], field: str) -> None:
    body = body_of(_state(Phase.ACTING, acted=T0))
    del body[path[0]][path[1]]
    with pytest.raises(ValueError, match=field):
        RecordSummary.from_body(body)


def test_cooldown_and_rate_limit_survive_a_restart() -> None:
    """Decisions from records rebuilt from stored objects equal those from live states."""
    states = {
        "checkout": _state(Phase.RESOLVED, acted=T0 - 600),
        "cart": _state(Phase.ESCALATED, acted=T0 - 1200),
        "api": _state(Phase.CLOSED, acted=T0 - 1800),
    }
    live = [
        RecordSummary.from_state(
            s, namespace=NS, name=f"{w}-r-1", policy=POLICY, workload=w, trigger="crashloop"
        )
        for w, s in states.items()
    ]
    stored = [
        RecordSummary.from_body(
            body_of(s, workload=WorkloadRef(namespace=NS, name=w), name=f"{w}-r-1")
        )
        for w, s in states.items()
    ]
    for now in (T0, T0 + 700, T0 + 1300, T0 + 3000):
        for w in ("checkout", "search"):
            ref = WorkloadRef(namespace=NS, name=w)
            assert check(*stored, now=now, workload=ref) == check(*live, now=now, workload=ref)
    assert check(*stored).guardrail is Guardrail.COOLDOWN
    rate = check(*stored, workload=WorkloadRef(namespace=NS, name="search"))
    assert rate.guardrail is Guardrail.RATE_LIMIT


# --- Durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.2, "1s"),
        (45, "45s"),
        (240, "4m"),
        (1560, "26m"),
        (5400, "1h30m"),
        (3600, "1h"),
        (90061, "1d1h"),
        (-5, "0s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_summary_from_an_object_equals_the_summary_of_its_state() -> None:
    """from_body reads only what guardrails need; it must agree with the full state."""
    in_flight = StepRecord(index=2, action="restart", started_at=T0 + 50)
    steps = (
        StepRecord(
            index=0, action="rollback", started_at=T0, finished_at=T0, result=StepResult.REFUSED
        ),
        StepRecord(
            index=1,
            action="scale",
            started_at=T0 + 10,
            finished_at=T0 + 12.5,
            result=StepResult.FAILED,
        ),
        in_flight,
    )
    for phase in Phase:
        for n in range(len(steps) + 1):
            st = RemediationState(
                phase=phase,
                detected_at=T0 - 5,
                steps=steps[:n],
                closed_at=T0 + 99 if phase.final else None,
                storm_summary=n == 2,
            )
            name = "checkout-crashloop-1"
            expected = RecordSummary.from_state(
                st, namespace=NS, name=name, policy=POLICY, workload="checkout", trigger="crashloop"
            )
            assert RecordSummary.from_body(body_of(st, name=name)) == expected
