"""The Remediation schema keeps everything the operator writes.

A field the CRD does not declare is pruned silently by the API server, and an operator
restarted after that would resume from a different state than it wrote. So: write the
machine's fullest state (and a pending ticket, and an action's change) through the
status subresource, read it back, and require that nothing was lost.
"""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.actions.ticket import PendingTicket, TicketMode, TicketOutcome, TicketState
from selfheal.detect.signal import Health, WorkloadRef
from selfheal.remediation.state import (
    Phase,
    RemediationState,
    StepRecord,
    StepResult,
    Verification,
    VerifyOutcome,
    remediation_spec,
)
from tests.support.cluster import Cluster
from tests.support.crds import GROUP_VERSION, table, table_rows

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0  # whole seconds: RFC 3339 round trips exactly
WEB = WorkloadRef(namespace="shop", name="web", uid="7f1c-42")


def path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/remediations"
    return f"{base}/{name}" if name else base


def without_nulls(value: Any) -> Any:
    """What a JSON merge patch leaves behind: null members are deletions."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def fullest_state(ticket: dict[str, Any]) -> RemediationState:
    return RemediationState(
        phase=Phase.VERIFYING,
        detected_at=T0,
        cause="OOMKilled",
        detail="web restarted 4 times in 10m (OOMKilled, exit 137)",
        evidence={
            "pod": "web-5d9c7-abcde",
            "container": "app",
            "restarts": 4,
            "exitCode": 137,
            "samples": [[T0 - 60, 0.31], [T0, 0.42]],
            "band": {"lower": 0.0, "upper": 0.2},
        },
        current_step=1,
        steps=(
            StepRecord(
                index=0,
                action="rollback",
                started_at=T0 + 1,
                finished_at=T0 + 2.5,
                result=StepResult.SUCCEEDED,
                message="rolled back from revision 3 to 2",
                change={
                    "fromRevision": "3",
                    "toRevision": "2",
                    "fromTemplateHash": "6b8f9d7c5",
                    "toTemplateHash": "5d9c7f8b4",
                    "patch": '[{"op": "test", "path": "/metadata/uid", "value": "7f1c-42"}]',
                },
            ),
            StepRecord(
                index=1,
                action="scale",
                started_at=T0 + 400,
                finished_at=T0 + 401,
                result=StepResult.DRY_RUN,
                message="would scale 3 -> 5",
                change={
                    "target": "Deployment/web",
                    "fromReplicas": 3,
                    "toReplicas": 5,
                    "patch": '[{"op": "add", "path": "/spec/replicas", "value": 5}]',
                },
            ),
            StepRecord(
                index=2,
                action="restart",
                started_at=T0 + 500,
                finished_at=T0 + 501,
                result=StepResult.REFUSED,
                message="Argo CD manages web",
                change={"restartedAt": "2027-01-15T08:00:00Z", "gitOps": "Argo CD (label x)"},
            ),
        ),
        verification=Verification(
            outcome=VerifyOutcome.PENDING, since=T0 + 401, message="healthy for 20s of 5m"
        ),
        escalation_reason="steps exhausted",
        escalated_at=T0 + 600,
        storm_summary=True,
        related=("web", "api"),
        ticket=ticket,
        ticket_requested_at=T0 + 600,
        healthy_since=T0 + 410,
        healthy_accrued=12.5,
        last_health=Health.HEALTHY,
        last_signal_at=T0 + 430,
        waiting_for="guardrails.maxConcurrent: 1 remediation is acting",
        step_deadline=T0 + 1300,
        closed_at=T0 + 2000,
    )


PENDING = {
    **PendingTicket(
        fingerprint="1a2b3c4d",
        key="OPS-7",
        url="http://127.0.0.1:8080/browse/OPS-7",
        mode=TicketMode.COMMENT,
        create_sent=True,
        attached=("evidence.txt", "pod.yaml"),
        comment_sent=True,
        attempts=3,
        first_attempt_at=T0 + 600,
        last_error="503 Service Unavailable",
        retry_at=T0 + 660,
    ).to_status(),
    "evidenceSummary": "OOMKilled at 512Mi; top frame: cache.py:88",
}
FILED = {
    **TicketOutcome(
        state=TicketState.FILED, key="OPS-8", url="http://127.0.0.1:8080/browse/OPS-8", attempts=1
    ).to_status(),
    "evidenceSummary": "OOMKilled at 512Mi",
}


@pytest.mark.parametrize("ticket", [PENDING, FILED], ids=["pending-ticket", "filed-ticket"])
def test_the_machines_fullest_state_survives_the_api_server(
    crds: list[str], cluster: Cluster, namespace: str, ticket: dict[str, Any]
) -> None:
    spec = remediation_spec(
        policy="shop", workload=WEB, trigger="crashloop", trigger_kind="crashLoop"
    )
    spec["fingerprint"] = "1a2b3c4d"
    spec["workload"]["templateHash"] = "6b8f9d7c5"
    body = {"apiVersion": GROUP_VERSION, "kind": "Remediation", "metadata": {"name": "web-1"}}
    created = cluster.api("POST", path(namespace), {**body, "spec": spec})
    assert created["spec"] == spec

    state = fullest_state(ticket)
    written = state.to_status()
    stored = cluster.api("PATCH", path(namespace, "web-1") + "/status", {"status": written})
    assert stored["status"] == without_nulls(written)  # nothing pruned
    # The ticket is opaque to the machine; its null members are deletions, as everywhere.
    assert RemediationState.from_status(stored["status"]) == fullest_state(without_nulls(ticket))
    assert PendingTicket.from_status(stored["status"]["ticket"]) == PendingTicket.from_status(
        ticket
    )

    (row,) = table_rows(table(cluster, path(namespace)))
    assert (row["Phase"], row["Workload"], row["Trigger"], row["Step"]) == (
        "Verifying",
        "web",
        "crashloop",
        1,
    )
    assert row["Ticket"] == ticket["key"]


def test_a_spec_written_without_the_trigger_kind_is_accepted(
    crds: list[str], cluster: Cluster, namespace: str
) -> None:
    spec = remediation_spec(policy="shop", workload=WEB, trigger="error-ratio")
    body = {"apiVersion": GROUP_VERSION, "kind": "Remediation", "metadata": {"name": "web-2"}}
    created = cluster.api("POST", path(namespace), {**body, "spec": spec})
    assert created["spec"]["trigger"] == {"name": "error-ratio"}
