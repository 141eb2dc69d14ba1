"""Property-style: random event sequences never make the machine act twice or act blind.

Seeded and bounded (``RUNS`` sequences of ``EVENTS`` events): every failure names its
seed, so it replays exactly with ``play(seed)``.
"""

from __future__ import annotations

import json
import random

import pytest

from selfheal.detect.signal import Health
from selfheal.policy.model import HealingPolicy, Mode, RestartStep, RollbackStep, ScaleStep, Step
from selfheal.remediation import machine
from selfheal.remediation.guardrails import Availability, RecordSummary
from selfheal.remediation.machine import Act, ActionDone, Event, Tick, TicketDone
from selfheal.remediation.state import Phase, RemediationState, StepResult
from tests.support.fixtures.remediation import NS, POLICY, T0, make_context, make_policy, signal

RUNS = 400
EVENTS = 60
ALL_STEPS: tuple[Step, ...] = (RollbackStep(), ScaleStep(by=1, max=5), RestartStep())


def random_policy(rng: random.Random) -> HealingPolicy:
    return make_policy(
        mode=rng.choice([Mode.ENFORCE, Mode.ENFORCE, Mode.DRY_RUN, Mode.PAUSED]),
        steps=tuple(rng.sample(ALL_STEPS, rng.randint(0, 3))),
        verify_for=rng.choice([0.0, 60.0, 300.0]),
        verify_timeout=rng.choice([None, 30.0, 400.0]),
        jira=rng.random() < 0.7,
        min_available=rng.choice([0.0, 0.5]),
        cooldown=rng.choice([0.0, 1800.0]),
    )


def random_context(rng: random.Random, now: float) -> machine.Context:
    records = tuple(
        RecordSummary(
            namespace=NS,
            name=f"other-{i}",
            policy=POLICY,
            workload=rng.choice(["checkout", "cart"]),
            trigger="crashloop",
            phase=rng.choice(list(Phase)),
            detected_at=now - 100,
            started_at=rng.choice([None, now - 90]),
            last_acted_at=rng.choice([None, now - 80]),
        )
        for i in range(rng.randint(0, 2))
    )
    unhealthy = {f"w{i}": now - 10 for i in range(rng.choice([0, 0, 0, 5]))}
    availability = rng.choice([None, Availability(available=1, desired=4)])
    return make_context(records=records, unhealthy=unhealthy, availability=availability)


def random_event(rng: random.Random, now: float, acted: list[int]) -> Event:
    roll = rng.random()
    if roll < 0.45:
        at = now - rng.choice([0, 0, 0, 500])  # sometimes delivered late
        return signal(rng.choice([Health.UNHEALTHY, Health.HEALTHY, Health.UNKNOWN]), at)
    if roll < 0.7:
        index = acted[-1] if acted and rng.random() < 0.7 else rng.randint(0, 3)
        return ActionDone(index=index, result=rng.choice(list(StepResult)), message="m")
    if roll < 0.75:
        return TicketDone(ticket=rng.choice([{}, {"key": "OPS-1"}]))
    return Tick()


def check_shape(state: RemediationState) -> None:
    """Steps are recorded in index order, and current_step agrees with the phase."""
    assert [s.index for s in state.steps] == list(range(len(state.steps)))
    in_flight = [s.index for s in state.steps if s.in_flight]
    if state.phase is Phase.DETECTED:
        assert len(state.steps) == state.current_step
    if state.phase in (Phase.ACTING, Phase.VERIFYING):
        assert len(state.steps) == state.current_step + 1
    assert in_flight == ([state.current_step] if state.phase is Phase.ACTING else [])


def play(seed: int) -> list[int]:
    rng = random.Random(seed)
    now = T0
    policy = random_policy(rng)
    context = random_context(rng, now)
    state: RemediationState | None = None
    acted: list[int] = []
    for _ in range(EVENTS):
        now += rng.choice([0.0, 1.0, 30.0, 200.0, 700.0])
        events = [random_event(rng, now, acted)]
        if rng.random() < 0.1:  # the facts changed: the driver re-evaluates with a Tick
            policy = random_policy(rng) if rng.random() < 0.5 else policy
            context = random_context(rng, now)
            events.insert(0, Tick())
        if state is not None and rng.random() < 0.2:  # the operator restarted
            state = RemediationState.from_status(json.loads(json.dumps(state.to_status())))
        for event in events:
            state = apply(rng, state, event, policy, context, now, acted)
    return acted


def apply(
    rng: random.Random,
    old: RemediationState | None,
    event: Event,
    policy: HealingPolicy,
    context: machine.Context,
    now: float,
    acted: list[int],
) -> RemediationState | None:
    """One ``step`` call, and every property that must hold after it."""
    state, effects = machine.step(old, event=event, policy=policy, context=context, now=now)
    new_acts = [e for e in effects if isinstance(e, Act)]
    assert len(new_acts) <= 1
    if state is not None and state == old:
        assert state is old  # unchanged means the same object: nothing to persist
    if old is not None:
        assert state is not None  # a record never disappears
        if old.phase.final:
            assert state.phase is old.phase
    if state is None:
        assert not effects
        return None
    check_shape(state)
    assert RemediationState.from_status(json.loads(json.dumps(state.to_status()))) == state
    for act in new_acts:
        assert act.index not in acted, f"step {act.index} acted twice"
        assert policy.mode is not Mode.PAUSED
        assert act.dry_run == (policy.mode is Mode.DRY_RUN)
        assert state.last_health is Health.UNHEALTHY  # never on unknown or healthy
        assert state.phase is Phase.ACTING
        assert state.steps[-1].index == act.index
        assert state.steps[-1].in_flight
        acted.append(act.index)
    check_quiet_until_wakeup(rng, state, policy, context, now)
    return state


def check_quiet_until_wakeup(
    rng: random.Random,
    state: RemediationState,
    policy: HealingPolicy,
    context: machine.Context,
    now: float,
) -> None:
    """A Tick before ``wakeup()`` changes nothing: the driver may sleep until then."""
    due = machine.wakeup(state, policy=policy, context=context, now=now)
    assert due is None or due >= now
    horizon = 30 * 86400.0 if due is None else due - now
    for _ in range(3):
        at = now + rng.random() * horizon
        if at >= (due if due is not None else float("inf")):
            continue
        after, effects = machine.step(state, event=Tick(), policy=policy, context=context, now=at)
        assert after is state, f"a Tick at {at - now:.1f}s changed the record before wakeup"
        assert effects == []


@pytest.mark.parametrize("chunk", range(4))
def test_no_sequence_of_events_acts_twice_on_a_step_or_acts_blind(chunk: int) -> None:
    acted_somewhere = 0
    for seed in range(chunk * RUNS // 4, (chunk + 1) * RUNS // 4):
        try:
            acted = play(seed)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}: {e}") from e
        acted_somewhere += bool(acted)
    # The generator must exercise acting, or the properties above prove nothing.
    assert acted_somewhere > RUNS // 16
