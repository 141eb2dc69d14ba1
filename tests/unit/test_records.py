"""The one view of a namespace's Remediation records that every decision reads."""

from __future__ import annotations

import json
from typing import Any

from selfheal.detect.signal import Health
from selfheal.policy.model import HealingPolicy
from selfheal.remediation import machine, naming
from selfheal.remediation.records import INITIAL_STATUS, Record, Records
from selfheal.remediation.state import Phase, RemediationState, StepResult
from tests.support.fixtures.remediation import (
    CHECKOUT,
    POLICY,
    T0,
    TRIGGER,
    Incident,
    acts,
    body_of,
    make_context,
    make_policy,
)

FP = naming.fingerprint(
    namespace=CHECKOUT.namespace, policy=POLICY, workload="checkout", trigger=TRIGGER
)
DAY = 86400.0


def _body(state: RemediationState | None, ordinal: int) -> dict[str, Any]:
    body = body_of(state or RemediationState(phase=Phase.DETECTED, detected_at=T0))
    body["metadata"]["name"] = f"checkout-{FP}-{ordinal}"
    body["metadata"]["labels"] = {naming.LABEL_FINGERPRINT: FP}
    if state is None:
        del body["status"]  # created, but the status write never happened (a crash)
    return body


def _records(*bodies: dict[str, Any]) -> Records:
    return Records(Record.from_body(b) for b in bodies)


def test_a_malformed_record_is_kept_aside_and_never_chosen_or_counted() -> None:
    bad = _body(RemediationState(phase=Phase.ACTING, detected_at=T0), 2)
    bad["status"]["detectedAt"] = "yesterday"
    records = _records(_body(RemediationState(phase=Phase.RESOLVED, detected_at=T0), 1), bad)
    rec = records.named(f"checkout-{FP}-2")
    assert rec is not None
    assert rec.state is None
    assert "detectedAt" in rec.problem
    assert records.current(FP) is None  # a new incident gets a new record
    assert not records.has_open(FP)
    assert [s.name for s in records.summaries()] == [f"checkout-{FP}-1"]
    assert records.next_name(
        namespace=CHECKOUT.namespace,
        policy=POLICY,
        workload="checkout",
        trigger=TRIGGER,
        fingerprint=FP,
    ).endswith(f"-{FP}-3")


def test_the_newest_unfinished_record_is_the_incident_even_before_its_status() -> None:
    records = _records(
        _body(RemediationState(phase=Phase.ESCALATED, detected_at=T0), 1),
        _body(None, 2),
    )
    current = records.current(FP)
    assert current is not None
    assert current.name.endswith("-2")
    assert current.state is None
    # Without a status it holds no guardrail slot and is not "open" for signals yet.
    assert records.has_open(FP)  # record 1 is open
    assert records.open_workloads(POLICY) == {"checkout"}
    assert records.active(POLICY) == 1


def test_pruning_keeps_records_whose_ticket_work_is_due() -> None:
    detected, closed = T0 - 3 * DAY, T0 - 2 * DAY
    done = RemediationState(phase=Phase.RESOLVED, detected_at=detected, closed_at=closed)
    pending = RemediationState(
        phase=Phase.RESOLVED,
        detected_at=detected,
        closed_at=closed,
        ticket={"state": "Filed", "key": "OPS-1"},
        resolution={"state": "Pending", "message": "healed", "recovered": True, "attempts": 0},
    )
    young = RemediationState(phase=Phase.CLOSED, detected_at=T0 - 60, closed_at=T0 - 30)
    records = _records(_body(done, 1), _body(pending, 2), _body(young, 3))
    assert [r.ordinal for r in records.prunable(now=T0, retention=DAY)] == [1]
    assert records.named(f"checkout-{FP}-2").work_pending()  # type: ignore[union-attr]


def test_a_fresher_copy_overrides_the_cached_one() -> None:
    cached = Record.from_body(_body(RemediationState(phase=Phase.ACTING, detected_at=T0), 1))
    assert cached.state is not None
    resolved = cached.saved(
        RemediationState(phase=Phase.RESOLVED, detected_at=T0, closed_at=T0 + 60), "99"
    )
    records = Records([cached]).overlaid([resolved])
    assert records.current(FP) is None
    assert records.active(POLICY) == 0
    assert records.last_outcome(POLICY) == "Resolved"


def _created(state: RemediationState) -> dict[str, Any]:
    """A record as the driver creates it: its decided status in the annotation, and no
    ``.status`` (the API server drops it on a create)."""
    body = _body(None, 1)
    body["metadata"]["annotations"] = {
        INITIAL_STATUS: json.dumps(state.to_status(), separators=(",", ":"))
    }
    return body


def _acting() -> tuple[HealingPolicy, RemediationState]:
    """The state the machine gives a new incident: its first step started."""
    policy = make_policy()
    incident = Incident(policy=policy, context=make_context())
    assert acts(incident.signal(Health.UNHEALTHY, T0))
    assert incident.phase() is Phase.ACTING
    return policy, incident.current


def test_a_record_with_only_its_initial_status_reads_as_that_status() -> None:
    _, acting = _acting()
    created = Record.from_body(_created(acting))
    stored = Record.from_body(_body(acting, 1))
    assert created.problem == ""
    assert created.state == stored.state == acting
    assert created.status == stored.status
    assert Records([created]).current(FP) == created
    assert created.summary() == stored.summary()  # holds its guardrail slot at once


def test_a_restart_finding_only_the_initial_status_never_runs_the_step_again() -> None:
    policy, acting = _acting()
    [step] = acting.steps
    assert step.in_flight
    # The process died after the action, before its outcome was written: the record
    # holds only what the create carried. Time passes; the step's deadline comes.
    restored = Record.from_body(_created(acting)).state
    assert restored is not None
    assert acting.step_deadline is not None
    later = acting.step_deadline + 1
    new, effects = machine.step(
        restored, event=machine.Tick(), policy=policy, context=make_context(), now=later
    )
    assert [a.index for a in acts(effects)] == [1]  # the next step; step 1 never re-run
    assert new is not None
    assert new.steps[0].result is StepResult.FAILED
    assert "no outcome" in new.steps[0].message
    # Exactly what the same state stored as .status leads to.
    assert (new, effects) == machine.step(
        RemediationState.from_status(_body(acting, 1)["status"]),
        event=machine.Tick(),
        policy=policy,
        context=make_context(),
        now=later,
    )


def test_the_written_status_supersedes_the_initial_one() -> None:
    _, acting = _acting()
    body = _created(acting)
    verifying = RemediationState(phase=Phase.VERIFYING, detected_at=T0)
    body["status"] = verifying.to_status()
    assert Record.from_body(body).state == verifying


def test_a_malformed_initial_status_is_kept_aside() -> None:
    body = _body(None, 1)
    body["metadata"]["annotations"] = {INITIAL_STATUS: "{not json"}
    rec = Record.from_body(body)
    assert rec.state is None
    assert INITIAL_STATUS in rec.problem
    assert Records([rec]).current(FP) is None
