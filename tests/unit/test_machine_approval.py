"""Approval before acting (``mode: Approve``, ``approval: required`` on a step), as pure
transitions of the machine on a fake clock: the incident waits in AwaitingApproval with
the proposed action and its exact patch, the annotation's decision acts or escalates,
and an approval left too long escalates."""

from __future__ import annotations

import dataclasses

from selfheal.detect.signal import Health
from selfheal.policy.model import HealingPolicy, Mode
from selfheal.remediation import machine
from selfheal.remediation.machine import Act, Escalate
from selfheal.remediation.state import Phase, StepResult
from tests.support.fixtures.remediation import (
    T0,
    Incident,
    acts,
    make_context,
    make_policy,
    of_type,
    reasons,
)

U, H = Health.UNHEALTHY, Health.HEALTHY
PATCH = '{"spec":{"template":{"metadata":{"annotations":{"x":"y"}}}}}'


def approving(policy: HealingPolicy, *, restarts: bool = False) -> Incident:
    return Incident(policy=policy, context=make_context(), restart_each_time=restarts)


def approve_mode(**kw: object) -> HealingPolicy:
    policy = make_policy(mode=Mode.APPROVE, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(
        policy, remediation=dataclasses.replace(policy.remediation, approval_timeout=900.0)
    )


def awaiting(policy: HealingPolicy, *, restarts: bool = False) -> Incident:
    inc = approving(policy, restarts=restarts)
    effects = inc.signal(U, T0)
    assert inc.phase() is Phase.AWAITING_APPROVAL, reasons(effects)
    # Only the dry run that computes the exact patch: nothing is applied yet.
    assert [(a.index, a.dry_run) for a in acts(effects)] == [(0, True)]
    assert "ApprovalRequested" in reasons(effects)
    inc.done(0, StepResult.DRY_RUN, T0 + 1, message="would roll back", change={"patch": PATCH})
    assert inc.phase() is Phase.AWAITING_APPROVAL
    return inc


def test_approve_mode_waits_showing_the_action_its_patch_and_the_commands() -> None:
    inc = awaiting(approve_mode())
    approval = inc.current.approval
    assert approval["state"] == "Pending"
    assert approval["step"] == 0
    assert approval["action"] == "rollback"
    assert approval["change"] == {"patch": PATCH}
    assert approval["approve"] == (
        f"kubectl -n {inc.context.workload.namespace} annotate remediation "
        f"{inc.context.name} selfheal.io/approve=true --overwrite"
    )
    assert "selfheal.io/reject=true" in str(approval["reject"])
    assert inc.current.steps == ()  # no step taken: the record shows what is proposed
    assert acts(inc.tick(T0 + 600)) == []  # time alone approves nothing
    assert inc.phase() is Phase.AWAITING_APPROVAL


def test_an_approval_acts_once() -> None:
    inc = awaiting(approve_mode())
    effects = inc.send(machine.Approval(approved=True, by="alice"), T0 + 60)
    assert acts(effects) == [Act(index=0, step=inc.policy.remediation.steps[0], dry_run=False)]
    assert inc.phase() is Phase.ACTING
    assert inc.current.approval["state"] == "Approved"
    assert inc.current.approval["by"] == "alice"
    # The same decision seen again (the annotation stays on the object): nothing more.
    assert acts(inc.send(machine.Approval(approved=True, by="alice"), T0 + 62)) == []


def test_a_rejection_escalates_without_acting() -> None:
    inc = awaiting(approve_mode())
    effects = inc.send(machine.Approval(approved=False, by="bob"), T0 + 60)
    assert acts(effects) == []
    assert inc.phase() is Phase.ESCALATED
    assert "rejected" in inc.current.escalation_reason
    assert of_type(effects, Escalate)


def test_an_approval_that_expires_escalates() -> None:
    inc = awaiting(approve_mode(), restarts=True)  # and survives restarts on the way
    assert acts(inc.tick(T0 + 899)) == []
    assert inc.phase() is Phase.AWAITING_APPROVAL
    effects = inc.tick(T0 + 901)
    assert inc.phase() is Phase.ESCALATED
    assert "expired" in inc.current.escalation_reason
    assert inc.current.approval["state"] == "Expired"
    assert of_type(effects, Escalate)
    assert acts(effects) == []


def test_a_step_marked_approval_required_waits_and_the_others_act() -> None:
    policy = make_policy()
    policy = dataclasses.replace(
        policy, remediation=dataclasses.replace(policy.remediation, approval_steps=(1,))
    )
    inc = approving(policy)
    first = inc.signal(U, T0)
    assert [(a.index, a.dry_run) for a in acts(first)] == [(0, False)]  # step 1 acts at once
    inc.done(0, StepResult.FAILED, T0 + 5, message="no healthy revision")
    assert inc.phase() is Phase.AWAITING_APPROVAL
    assert inc.current.approval["step"] == 1
    assert inc.current.approval["action"] == "scale"


def test_a_workload_that_recovers_while_waiting_closes_without_acting() -> None:
    inc = awaiting(approve_mode())
    inc.signal(H, T0 + 10)
    effects = inc.signal(H, T0 + 10 + inc.policy.remediation.verify_for)
    assert acts(effects) == []
    assert inc.phase() is Phase.CLOSED


def test_an_annotation_left_from_the_first_approval_does_not_decide_the_next_step() -> None:
    inc = awaiting(approve_mode())
    inc.send(machine.Approval(approved=True), T0 + 60)
    inc.done(0, StepResult.FAILED, T0 + 70, message="no healthy revision")
    assert inc.phase() is Phase.AWAITING_APPROVAL
    assert inc.current.approval["step"] == 1
    assert str(inc.current.approval["approve"]).endswith("selfheal.io/approve=step-2 --overwrite")
    assert acts(inc.send(machine.Approval(approved=True, value="true"), T0 + 72)) == []
    assert inc.phase() is Phase.AWAITING_APPROVAL  # still waiting: the old "true" is stale
    effects = inc.send(machine.Approval(approved=True, value="step-2"), T0 + 80)
    assert [(a.index, a.dry_run) for a in acts(effects)] == [(1, False)]


def test_the_approval_message_goes_once_the_patch_is_known_and_carries_the_commands() -> None:
    from selfheal.actions import notify

    inc = approving(approve_mode(notify=True))
    first = inc.signal(U, T0)
    assert not of_type(first, machine.Notify)  # the dry run has not told the patch yet
    effects = inc.done(0, StepResult.DRY_RUN, T0 + 1, message="would roll back to 6")
    assert [n.kind for n in of_type(effects, machine.Notify)] == ["Approval"]
    incident = notify.Incident(
        namespace="shop",
        workload="checkout",
        policy="p",
        remediation=inc.context.name,
        trigger="crashloop",
        approval=inc.current.approval,
    )
    body = notify.message(notify.Kind.APPROVAL, incident).body
    assert "would roll back to 6" in body
    assert f"annotate remediation {inc.context.name} selfheal.io/approve=true" in body
    assert "selfheal.io/reject=true" in body
