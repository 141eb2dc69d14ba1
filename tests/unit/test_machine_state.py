"""RemediationState <-> status: what is stored is what is decided from after a restart."""

from __future__ import annotations

import json

import pytest

from selfheal.detect.signal import Health
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
from tests.support.fixtures.remediation import T0

FULL = RemediationState(
    phase=Phase.ESCALATED,
    detected_at=T0,
    cause="OOMKilled",
    detail="container app was OOMKilled 3 times in 10m",
    evidence={"restarts": 3, "limits": {"memory": "256Mi"}, "samples": [1.5, 2.0]},
    current_step=1,
    steps=(
        StepRecord(
            index=0,
            action="rollback",
            started_at=T0 + 1,
            finished_at=T0 + 2.25,
            result=StepResult.SUCCEEDED,
            message="rolled back to revision 6",
            change={"fromRevision": "7", "toRevision": "6", "patch": {"spec": {"x": 1}}},
        ),
        StepRecord(index=1, action="scale", started_at=T0 + 700),
    ),
    verification=Verification(
        outcome=VerifyOutcome.TIMED_OUT, since=T0 + 2.25, until=T0 + 602.25, message="not healthy"
    ),
    escalation_reason="every remediation step was tried",
    escalated_at=T0 + 1300,
    storm_summary=True,
    related=("api", "checkout"),
    ticket={"key": "OPS-7", "state": "Filed"},
    ticket_requested_at=T0 + 1300,
    healthy_since=T0 + 1400.5,
    healthy_accrued=42.0,
    last_health=Health.HEALTHY,
    last_signal_at=T0 + 1401,
    waiting_for="",
    step_deadline=None,
    closed_at=None,
)


def test_every_field_round_trips_through_json() -> None:
    status = json.loads(json.dumps(FULL.to_status()))
    assert RemediationState.from_status(status) == FULL


def test_status_is_camel_case_with_rfc3339_times() -> None:
    status = FULL.to_status()
    assert status["phase"] == "Escalated"
    assert status["detectedAt"] == "2027-01-15T08:00:00Z"
    assert status["steps"][0]["finishedAt"] == "2027-01-15T08:00:02.250000Z"
    assert status["steps"][1]["result"] is None
    assert status["startedAt"] == "2027-01-15T08:00:01Z"
    assert status["escalation"]["ticketRequestedAt"] == "2027-01-15T08:21:40Z"
    assert status["currentStep"] == 1
    assert status["lastHealth"] == "healthy"


def test_unset_fields_are_written_as_null_so_a_merge_patch_clears_them() -> None:
    status = RemediationState(phase=Phase.DETECTED, detected_at=T0).to_status()
    for key in ("healthySince", "stepDeadline", "closedAt", "verification", "lastHealth"):
        assert key in status
        assert status[key] is None


def test_a_minimal_status_reads_with_defaults() -> None:
    state = RemediationState.from_status({"phase": "Acting", "detectedAt": "2027-01-15T08:00:00Z"})
    assert state == RemediationState(phase=Phase.ACTING, detected_at=T0)


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"phase": "Sleeping", "detectedAt": "2027-01-15T08:00:00Z"}, "status.phase"),
        ({"phase": "Acting"}, "status.detectedAt"),
        ({"phase": "Acting", "detectedAt": "yesterday"}, "status.detectedAt"),
        (
            {"phase": "Acting", "detectedAt": "2027-01-15T08:00:00Z", "steps": [{"index": 0}]},
            r"status.steps\[0\].startedAt",
        ),
    ],
)
def test_an_unreadable_status_names_the_field(status: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RemediationState.from_status(status)


def test_times_accept_any_offset() -> None:
    assert parse_time("2027-01-15T09:00:00+01:00", field="t") == T0
    assert parse_time(format_time(T0 + 0.5), field="t") == T0 + 0.5
    assert format_time(None) is None
