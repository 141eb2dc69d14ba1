"""The one view of a namespace's Remediation records that every decision reads."""

from __future__ import annotations

from typing import Any

from selfheal.remediation import naming
from selfheal.remediation.records import Record, Records
from selfheal.remediation.state import Phase, RemediationState
from tests.support.fixtures.remediation import CHECKOUT, POLICY, T0, TRIGGER, body_of

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
