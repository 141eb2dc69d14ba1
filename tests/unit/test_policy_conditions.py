"""set_condition: lastTransitionTime moves only when the status does."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.policy import conditions as c

T1 = "2026-01-02T03:04:05Z"
T2 = "2026-01-02T03:09:05Z"
T3 = "2026-01-02T04:00:00Z"


def ready(
    conds: list[dict[str, Any]], status: str, reason: str, now: str, gen: int = 1
) -> list[dict[str, Any]]:
    return c.set_condition(
        conds,
        type=c.READY,
        status=status,
        reason=reason,
        message=f"{reason}!",
        generation=gen,
        now=now,
    )


def test_a_new_condition_starts_its_clock_now() -> None:
    (cond,) = ready([], c.TRUE, c.ACCEPTED, T1)
    assert cond == {
        "type": "Ready",
        "status": "True",
        "reason": "Accepted",
        "message": "Accepted!",
        "observedGeneration": 1,
        "lastTransitionTime": T1,
    }


def test_same_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    first = ready([], c.FALSE, c.BACKEND_UNAVAILABLE, T1)
    (cond,) = ready(first, c.FALSE, c.QUERY_FAILED, T2, gen=2)
    assert cond["lastTransitionTime"] == T1
    assert (cond["reason"], cond["message"], cond["observedGeneration"]) == (
        "QueryFailed",
        "QueryFailed!",
        2,
    )


def test_a_status_change_moves_the_transition_time() -> None:
    conds = ready([], c.FALSE, c.INVALID_SPEC, T1)
    conds = ready(conds, c.TRUE, c.ACCEPTED, T2)
    assert conds[0]["lastTransitionTime"] == T2
    conds = ready(conds, c.TRUE, c.ACCEPTED, T3)
    assert conds[0]["lastTransitionTime"] == T2
    conds = ready(conds, c.UNKNOWN, c.BACKEND_UNAVAILABLE, T3)
    assert (conds[0]["status"], conds[0]["lastTransitionTime"]) == ("Unknown", T3)


def test_other_conditions_keep_their_order_and_the_input_is_not_changed() -> None:
    before = [
        {
            "type": "Degraded",
            "status": "False",
            "reason": "AsExpected",
            "message": "",
            "lastTransitionTime": T1,
        },
        {
            "type": "Ready",
            "status": "True",
            "reason": "Accepted",
            "message": "",
            "lastTransitionTime": T1,
        },
        {"type": "Zeta", "status": "True", "reason": "Z", "message": "", "lastTransitionTime": T1},
    ]
    snapshot = [dict(x) for x in before]
    after = ready(before, c.FALSE, c.INVALID_SPEC, T2)
    assert before == snapshot
    assert [x["type"] for x in after] == ["Degraded", "Ready", "Zeta"]
    assert after[0] == before[0]
    assert after[1]["lastTransitionTime"] == T2
    assert c.find_condition(after, "Ready") == after[1]
    assert c.find_condition(after, "Missing") is None


def test_a_condition_without_a_transition_time_gets_one() -> None:
    (cond,) = ready(
        [{"type": "Ready", "status": "True", "reason": "Accepted", "message": ""}],
        c.TRUE,
        c.ACCEPTED,
        T2,
    )
    assert cond["lastTransitionTime"] == T2


@pytest.mark.parametrize(
    ("status", "reason", "named"),
    [
        ("true", "Accepted", "status 'true'"),
        ("True", "not camel", "reason 'not camel'"),
        ("True", "", "reason ''"),
        ("True", "1Up", "reason '1Up'"),
    ],
)
def test_bad_status_or_reason_is_refused(status: str, reason: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ready([], status, reason, T1)


def test_reasons_are_camel_case_and_distinct() -> None:
    reasons = [
        c.ACCEPTED,
        c.PAUSED,
        c.NO_WORKLOADS,
        c.INVALID_SPEC,
        c.BACKEND_UNAVAILABLE,
        c.QUERY_FAILED,
    ]
    assert len(set(reasons)) == len(reasons)
    for reason in reasons:
        ready([], c.TRUE, reason, T1)  # accepted by the same check the CRD's pattern makes
