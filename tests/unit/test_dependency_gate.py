"""Skipping or holding a step whose workload is the victim of a failing dependency.

The decision is pure (``dependency_gate.gate`` and the machine); the facts are given
here as the driver would gather them, on a fake clock.
"""

from __future__ import annotations

import dataclasses

import pytest

from selfheal.detect.signal import Health
from selfheal.evidence.dependencies import (
    Dependency,
    DependencyReport,
    open_incidents,
    selects,
)
from selfheal.policy.model import (
    DependencyRule,
    HealingPolicy,
    OnDependencyUnhealthy,
    PolicyError,
    RestartStep,
    ScaleStep,
    Step,
)
from selfheal.policy.parse import parse
from selfheal.remediation import dependency_gate as dg
from selfheal.remediation.dependency_gate import DependencyFacts, Verdict, facts_from, gate
from selfheal.remediation.machine import Emit, Escalate
from selfheal.remediation.state import Phase, RemediationState, StepResult
from tests.support.fixtures.remediation import (
    T0,
    Incident,
    acts,
    make_context,
    make_policy,
    of_type,
    reasons,
)

ESCALATE, WAIT, IGNORE = (
    OnDependencyUnhealthy.ESCALATE,
    OnDependencyUnhealthy.WAIT,
    OnDependencyUnhealthy.IGNORE,
)
DOWN = "payments.shop: 0 of 3 endpoints ready"


def with_rule(
    on: OnDependencyUnhealthy,
    *,
    steps: tuple[Step, ...] = (RestartStep(),),
    wait_for: float | None = None,
    per_step: tuple[DependencyRule | None, ...] = (),
) -> HealingPolicy:
    policy = make_policy(steps=steps)
    remediation = dataclasses.replace(
        policy.remediation,
        dependencies=DependencyRule(on_unhealthy=on, wait_for=wait_for),
        step_dependencies=per_step,
    )
    return dataclasses.replace(policy, remediation=remediation)


def incident(policy: HealingPolicy, facts: DependencyFacts | None) -> Incident:
    return Incident(policy=policy, context=make_context(dependencies=facts))


def see(inc: Incident, facts: DependencyFacts | None) -> None:
    """The driver gathered new facts: the next event carries them."""
    inc.context = dataclasses.replace(inc.context, dependencies=facts)


def down(at: float = T0) -> DependencyFacts:
    return DependencyFacts(at=at, failing=(DOWN,))


def fine(at: float = T0) -> DependencyFacts:
    return DependencyFacts(at=at)


# --- the pure gate -------------------------------------------------------------------------


def test_ignore_runs_whatever_the_facts_say() -> None:
    assert gate(DependencyRule(), down(), now=T0, since=T0 - 60).verdict is Verdict.RUN
    assert gate(DependencyRule(), None, now=T0, since=T0 - 60).verdict is Verdict.RUN


@pytest.mark.parametrize("on", [ESCALATE, WAIT])
def test_no_facts_or_old_facts_are_checked_first_never_taken_as_healthy(
    on: OnDependencyUnhealthy,
) -> None:
    rule = DependencyRule(on_unhealthy=on)
    assert gate(rule, None, now=T0, since=T0 - 60).verdict is Verdict.CHECK
    assert gate(rule, fine(T0 - dg.MAX_AGE - 1), now=T0, since=T0 - 60).verdict is Verdict.CHECK
    assert gate(rule, fine(T0 - dg.MAX_AGE), now=T0, since=T0 - 60).verdict is Verdict.RUN
    # Gathered before the incident opened (or its last action): the world may have moved.
    assert gate(rule, fine(T0 - 5), now=T0, since=T0 - 4).verdict is Verdict.CHECK


def test_facts_older_than_the_incident_are_gathered_again_before_the_first_step() -> None:
    inc = incident(with_rule(ESCALATE), fine(T0 - 3))  # from before payments went down
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert acts(effects) == []
    assert inc.current.waiting_for == dg.CHECKING
    see(inc, down(T0 + 1))
    effects = inc.tick(T0 + 2)
    assert acts(effects) == []
    assert inc.current.steps[0].reason == dg.DEPENDENCY_UNHEALTHY


def test_after_an_action_the_next_step_needs_facts_gathered_since() -> None:
    policy = with_rule(ESCALATE, steps=(ScaleStep(by=1, max=5), RestartStep()))
    policy = dataclasses.replace(
        policy,
        remediation=dataclasses.replace(
            policy.remediation, step_dependencies=(DependencyRule(on_unhealthy=IGNORE), None)
        ),
    )
    inc = incident(policy, fine(T0))
    inc.signal(Health.UNHEALTHY, T0)
    inc.done(0, StepResult.SUCCEEDED, T0 + 1)
    effects = inc.tick(T0 + 601)  # the scale did not heal it: the restart is due
    assert acts(effects) == []
    assert inc.current.waiting_for == dg.CHECKING
    assert dg.fresh_since(inc.current, now=T0 + 601) == T0 + 1


def test_a_failing_dependency_skips_under_escalate_and_holds_under_wait() -> None:
    skip = gate(DependencyRule(on_unhealthy=ESCALATE), down(), now=T0, since=T0 - 60)
    assert (skip.verdict, skip.message) == (Verdict.SKIP, f"dependency unhealthy: {DOWN}")
    hold = gate(DependencyRule(on_unhealthy=WAIT), down(), now=T0, since=T0 - 60)
    assert (hold.verdict, hold.message) == (Verdict.WAIT, f"{dg.WAITING}{DOWN}")


def test_unreadable_health_holds_under_wait_and_runs_with_a_note_under_escalate() -> None:
    facts = DependencyFacts(at=T0, unknown=("endpointslices of payments.shop: 403 Forbidden",))
    hold = gate(DependencyRule(on_unhealthy=WAIT), facts, now=T0, since=T0 - 60)
    assert hold.verdict is Verdict.WAIT
    assert "403 Forbidden" in hold.message
    run = gate(DependencyRule(on_unhealthy=ESCALATE), facts, now=T0, since=T0 - 60)
    assert run.verdict is Verdict.RUN
    assert run.message == (
        "dependency health unknown (endpointslices of payments.shop: 403 Forbidden)"
    )


def test_facts_name_dependencies_without_ready_endpoints_or_with_an_open_incident() -> None:
    report = DependencyReport(
        dependencies=[
            Dependency(namespace="shop", service="payments", seen_as="payments", ready=0, total=3),
            Dependency(namespace="shop", service="db", seen_as="db", ready=2, total=2),
            Dependency(
                namespace="shop",
                service="cart",
                seen_as="cart:80",
                ready=1,
                total=2,
                incidents=("cart-crashloop-ab12cd-1",),
            ),
        ],
        unavailable={"endpointslices of ledger.bank": "403 Forbidden"},
    )
    facts = facts_from(report, at=T0)
    assert facts.failing == (
        DOWN,
        "cart.shop: 1 of 2 endpoints ready; open incident cart-crashloop-ab12cd-1",
    )
    assert facts.unknown == ("endpointslices of ledger.bank: 403 Forbidden",)


def test_a_service_selects_by_all_its_labels_and_incidents_follow_the_workload() -> None:
    labels = {"app": "payments", "tier": "api"}
    assert selects({"app": "payments"}, labels)
    assert not selects({"app": "payments", "tier": "db"}, labels)
    assert not selects({}, labels)  # a selectorless Service backs no workload's pods

    def rec(name: str, workload: str, phase: str) -> dict[str, object]:
        return {
            "metadata": {"name": name},
            "spec": {"workload": {"name": workload}},
            "status": {"phase": phase},
        }

    records = [
        rec("payments-crashloop-1", "payments", "Escalated"),
        rec("payments-crashloop-0", "payments", "Closed"),
        rec("checkout-crashloop-1", "checkout", "Acting"),
    ]
    templates = {"payments": labels, "checkout": {"app": "checkout"}}
    found = open_incidents({"app": "payments"}, records=records, templates=templates)
    assert found == ("payments-crashloop-1",)


# --- through the machine -------------------------------------------------------------------


def test_escalate_skips_the_restart_names_the_dependency_and_escalates() -> None:
    inc = incident(with_rule(ESCALATE), down())
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert acts(effects) == []
    state = inc.current
    assert state.phase is Phase.ESCALATED
    [step] = state.steps
    assert (step.action, step.result, step.reason) == (
        "restart",
        StepResult.REFUSED,
        dg.DEPENDENCY_UNHEALTHY,
    )
    assert step.message == f"skipped: dependency unhealthy: {DOWN}"
    assert reasons(effects) == ["Detected", "DependencyUnhealthy", "Escalated"]
    assert DOWN in state.escalation_reason
    assert state.escalation_reason.startswith("a dependency of checkout is unhealthy")
    assert len(of_type(effects, Escalate)) == 1  # the ticket is filed


def test_without_the_option_the_step_runs_as_before() -> None:
    inc = incident(make_policy(steps=(RestartStep(),)), down())
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert [a.index for a in acts(effects)] == [0]
    assert inc.phase() is Phase.ACTING


def test_a_step_of_its_own_may_ignore_the_dependency() -> None:
    # Scaling out can help while a dependency is slow; restarting cannot.
    policy = with_rule(
        ESCALATE,
        steps=(RestartStep(), ScaleStep(by=1, max=5)),
        per_step=(None, DependencyRule(on_unhealthy=IGNORE)),
    )
    inc = incident(policy, down())
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert [(a.index, a.step) for a in acts(effects)] == [(1, ScaleStep(by=1, max=5))]
    assert inc.current.steps[0].reason == dg.DEPENDENCY_UNHEALTHY


def test_the_step_waits_for_the_facts_then_runs_when_the_dependency_is_fine() -> None:
    inc = incident(with_rule(ESCALATE), None)
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert acts(effects) == []
    assert inc.current.phase is Phase.DETECTED
    assert inc.current.waiting_for == dg.CHECKING
    assert reasons(effects) == ["Detected"]  # gathering is routine: no Event for it
    see(inc, fine(T0 + 1))
    effects = inc.tick(T0 + 2)
    assert [a.index for a in acts(effects)] == [0]
    assert inc.current.waiting_for == ""


def test_unknown_health_under_escalate_acts_and_the_event_says_what_was_not_read() -> None:
    facts = DependencyFacts(at=T0, unknown=("services: 403 Forbidden (cluster-wide: 403)",))
    inc = incident(with_rule(ESCALATE), facts)
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert [a.index for a in acts(effects)] == [0]
    started = [e.message for e in of_type(effects, Emit) if e.reason == "StepStarted"]
    assert started == [
        "step 1 (restart) on checkout; dependency health unknown "
        "(services: 403 Forbidden (cluster-wide: 403))"
    ]


def test_wait_holds_the_step_until_the_dependency_recovers_then_runs_it() -> None:
    inc = incident(with_rule(WAIT), down())
    inc.restart_each_time = True  # every decision from the stored status alone
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert acts(effects) == []
    assert inc.phase() is Phase.DETECTED
    assert inc.current.waiting_for == f"{dg.WAITING}{DOWN}"
    assert reasons(effects) == ["Detected", "DependencyUnhealthy"]
    assert "step 1 (restart) on checkout waits, at most 10m" in str(effects[-1])
    see(inc, down(T0 + 10))
    again = inc.tick(T0 + 12)
    assert acts(again) == []
    assert reasons(again) == []  # re-checked, said once
    see(inc, fine(T0 + 60))
    effects = inc.tick(T0 + 61)
    assert [a.index for a in acts(effects)] == [0]
    assert inc.phase() is Phase.ACTING
    assert inc.current.steps[0].result is None  # in flight: nothing recorded as skipped


def test_wait_with_unknown_health_does_not_act() -> None:
    facts = DependencyFacts(at=T0, unknown=("endpointslices of payments.shop: timeout",))
    inc = incident(with_rule(WAIT), facts)
    effects = inc.signal(Health.UNHEALTHY, T0)
    assert acts(effects) == []
    assert "health unknown" in inc.current.waiting_for


def test_wait_for_bounds_the_wait_then_the_step_is_skipped_and_the_incident_escalates() -> None:
    inc = incident(with_rule(WAIT, wait_for=120.0), down())
    inc.restart_each_time = True
    inc.signal(Health.UNHEALTHY, T0)
    assert inc.current.step_deadline == T0 + 120  # not the verify timeout (600)
    see(inc, down(T0 + 100))
    inc.tick(T0 + 110)
    assert inc.current.step_deadline == T0 + 120  # set once, when the wait began
    see(inc, down(T0 + 119))
    effects = inc.tick(T0 + 120)
    state = inc.current
    assert state.phase is Phase.ESCALATED
    assert acts(effects) == []
    [step] = state.steps
    assert (step.result, step.reason) == (StepResult.REFUSED, dg.DEPENDENCY_UNHEALTHY)
    assert DOWN in step.message
    assert state.escalation_reason == (
        "step 1 (restart) waited for a dependency of checkout until its deadline and was "
        f"skipped: {DOWN}"
    )


def test_stale_facts_during_a_wait_keep_the_wait_and_its_deadline() -> None:
    inc = incident(with_rule(WAIT, wait_for=120.0), down())
    inc.signal(Health.UNHEALTHY, T0)
    before = inc.current
    effects = inc.tick(T0 + dg.MAX_AGE + 5)  # the facts are too old to decide on
    assert acts(effects) == []
    assert inc.current.waiting_for == before.waiting_for
    assert inc.current.step_deadline == T0 + 120


def test_the_skip_reason_survives_the_status_round_trip() -> None:
    inc = incident(with_rule(ESCALATE), down())
    inc.signal(Health.UNHEALTHY, T0)
    status = inc.current.to_status()
    assert status["steps"][0]["reason"] == "DependencyUnhealthy"
    assert RemediationState.from_status(status).steps == inc.current.steps


def test_wanted_only_when_some_step_looks_at_dependencies() -> None:
    assert not dg.wanted(make_policy())
    assert dg.wanted(with_rule(WAIT))
    only_second = with_rule(
        IGNORE,
        steps=(RestartStep(), RestartStep()),
        per_step=(None, DependencyRule(on_unhealthy=ESCALATE)),
    )
    assert dg.wanted(only_second)


# --- the policy ------------------------------------------------------------------------------


def body(remediation: dict[str, object]) -> dict[str, object]:
    return {
        "metadata": {"namespace": "shop", "name": "checkout", "generation": 1},
        "spec": {
            "target": {"kind": "Deployment", "selector": {"matchLabels": {"app": "checkout"}}},
            "triggers": [{"name": "crashloop", "crashLoop": {}}],
            "remediation": remediation,
        },
    }


def test_policy_option_and_per_step_override_inherit_field_by_field() -> None:
    policy = parse(
        body(
            {
                "dependencies": {"onUnhealthy": "Wait", "waitFor": "15m"},
                "steps": [
                    {"restart": {}},
                    {"scale": {"by": 1}, "dependencies": {"onUnhealthy": "Escalate"}},
                    {"rollback": {}, "dependencies": {"waitFor": "2m"}},
                ],
            }
        )
    )
    r = policy.remediation
    assert r.dependency_rule(0) == DependencyRule(on_unhealthy=WAIT, wait_for=900.0)
    assert r.dependency_rule(1) == DependencyRule(on_unhealthy=ESCALATE, wait_for=900.0)
    assert r.dependency_rule(2) == DependencyRule(on_unhealthy=WAIT, wait_for=120.0)


def test_policy_without_the_option_ignores_dependencies() -> None:
    policy = parse(body({"steps": [{"restart": {}}]}))
    assert policy.remediation.dependency_rule(0) == DependencyRule()
    assert not dg.wanted(policy)


@pytest.mark.parametrize(
    ("dependencies", "field", "says"),
    [
        (
            {"onUnhealthy": "Skip"},
            "spec.remediation.dependencies.onUnhealthy",
            "Ignore, Escalate, Wait",
        ),
        ({"waitFor": "soon"}, "spec.remediation.dependencies.waitFor", "soon"),
        ({"waitFor": "0s"}, "spec.remediation.dependencies.waitFor", "zero"),
        ({"onUnhealty": "Wait"}, "spec.remediation.dependencies.onUnhealty", "onUnhealthy"),
    ],
)
def test_bad_dependency_options_name_the_field_and_the_fix(
    dependencies: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(PolicyError) as err:
        parse(body({"dependencies": dependencies, "steps": [{"restart": {}}]}))
    assert err.value.field == field
    assert says in err.value.message


def test_a_bad_per_step_option_names_the_step() -> None:
    with pytest.raises(PolicyError) as err:
        parse(body({"steps": [{"restart": {}, "dependencies": {"onUnhealthy": "Later"}}]}))
    assert err.value.field == "spec.remediation.steps[0].dependencies.onUnhealthy"


def test_a_victim_that_recovers_with_its_dependency_closes_without_any_action() -> None:
    inc = incident(with_rule(WAIT), down())
    inc.signal(Health.UNHEALTHY, T0)
    see(inc, fine(T0 + 20))
    inc.signal(Health.HEALTHY, T0 + 20)  # payments is back, and so is checkout
    effects = inc.tick(T0 + 320)  # healthy for verify.for
    assert acts(effects) == []
    state = inc.current
    assert state.phase is Phase.CLOSED
    assert state.steps == ()
    assert state.verification is not None
    assert "recovered before any step changed it" in state.verification.message
