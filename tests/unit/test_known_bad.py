"""Which releases count as bad for a rollback: evidence, not mere presence at an incident."""

from __future__ import annotations

from typing import Any

from selfheal.detect.signal import WorkloadRef
from selfheal.remediation.records import Record, Records

W = WorkloadRef(namespace="shop", name="checkout", uid="u1")


def _rec(
    hash_: str, kind: str, phase: str, *steps: tuple[str, str], name: str = "checkout"
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}-{hash_}-1", "namespace": "shop"},
        "spec": {
            "workload": {"name": name, "templateHash": hash_},
            "trigger": {"name": "t", "kind": kind},
        },
        "status": {"phase": phase, "steps": [{"action": a, "result": r} for a, r in steps]},
    }


def test_an_outage_escalation_does_not_poison_the_release_it_ran_on() -> None:
    records = [
        _rec("v2", "crashLoop", "Resolved", ("rollback", "Succeeded")),  # v2 crashed: bad
        _rec("v1", "prometheus", "Escalated", ("rollback", "Refused"), ("restart", "Succeeded")),
    ]
    assert Records(map(Record.from_body, records)).known_bad_hashes(W.name, own="v3") == {
        "v2",
        "v3",
    }


def test_evidence_that_makes_a_release_bad() -> None:
    records = [
        _rec("a", "prometheus", "Resolved", ("rollback", "Succeeded")),  # healed by leaving it
        _rec("b", "crashLoop", "Escalated"),  # crashed, never healed
        _rec("c", "crashLoop", "Resolved", ("restart", "Succeeded")),  # healed in place
        _rec("d", "crashLoop", "Closed"),
        _rec("e", "crashLoop", "Escalated", name="other"),  # another workload
    ]
    assert Records(map(Record.from_body, records)).known_bad_hashes(W.name, own="x") == {
        "a",
        "b",
        "d",
        "x",
    }
