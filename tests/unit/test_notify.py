"""Notifications to the on-duty expert, the pure parts: what a message says, when the
machine says one is due, and that a restart (status through JSON) sends none twice."""

from __future__ import annotations

import dataclasses

import pytest

from selfheal.actions import notify, ticket
from selfheal.clients.notify import parse_urls, target_id
from selfheal.detect.signal import Health
from selfheal.policy.model import (
    HealingPolicy,
    NotifyEscalation,
    PolicyError,
    RollbackStep,
    SecretKeyRef,
)
from selfheal.policy.parse import parse
from selfheal.remediation import machine
from selfheal.remediation.machine import Escalate, Notify
from selfheal.remediation.state import Phase, StepResult, format_time
from tests.support.crds import valid_policy
from tests.support.fixtures.remediation import (
    T0,
    Incident,
    make_context,
    make_policy,
    of_type,
)

U, H = Health.UNHEALTHY, Health.HEALTHY
OK = StepResult.SUCCEEDED


def _escalated(*, jira: bool = True) -> Incident:
    """Step 1 (rollback) succeeded but did not heal; escalated at T0+610 (one step)."""
    inc = Incident(
        policy=make_policy(jira=jira, notify=True, steps=(RollbackStep(),)),
        context=make_context(),
    )
    inc.signal(U, T0)
    inc.done(0, OK, T0 + 10, change={"fromRevision": "7", "toRevision": "6"})
    inc.signal(U, T0 + 20)
    inc.tick(T0 + 610)
    assert inc.phase() is Phase.ESCALATED
    return inc


def _record(inc: Incident, kind: str, state: str, **extra: object) -> None:
    """What the driver stores after an attempt; then a restart (status through JSON)."""
    others = [n for n in inc.current.notifications if n.get("kind") != kind]
    entry = {"kind": kind, "state": state, "attempts": 1, **extra}
    inc.state = dataclasses.replace(inc.current, notifications=(*others, entry))
    inc.restart()


def _kinds(effects: list[machine.Effect]) -> list[str]:
    return [e.kind for e in of_type(effects, Notify)]


# --- due work -----------------------------------------------------------------------------


def test_escalation_waits_for_the_ticket_then_carries_it_once_across_restarts() -> None:
    inc = _escalated()
    assert inc.current.notifications == ({"kind": "Escalation", "state": "Pending", "attempts": 0},)
    # The ticket's first attempt is not reported yet: the message waits for its link.
    assert _kinds(inc.tick(T0 + 611)) == []
    effects = inc.ticket({"state": "Filed", "key": "OPS-1", "url": "http://j/OPS-1"}, T0 + 612)
    assert _kinds(effects) == ["Escalation"]
    assert of_type(effects, Escalate) == []
    # Crashed before recording: still due after a restart.
    inc.restart()
    assert _kinds(inc.tick(T0 + 613)) == ["Escalation"]
    _record(inc, "Escalation", "Sent", sentAt=format_time(T0 + 614))
    assert _kinds(inc.tick(T0 + 615)) == []
    assert machine.work_wakeup(inc.current, now=T0 + 615) is None


def test_escalation_goes_at_once_without_jira() -> None:
    inc = Incident(policy=make_policy(jira=False, notify=True, steps=()), context=make_context())
    effects = inc.signal(U, T0)
    assert inc.phase() is Phase.ESCALATED
    assert _kinds(effects) == ["Escalation"]


def test_no_notify_in_the_policy_means_no_notification_work() -> None:
    inc = Incident(policy=make_policy(jira=False, steps=()), context=make_context())
    effects = inc.signal(U, T0)
    assert inc.phase() is Phase.ESCALATED
    assert _kinds(effects) == []
    assert inc.current.notifications == ()


def test_a_ticket_still_retrying_does_not_hold_the_escalation_back() -> None:
    inc = _escalated()
    pending = {
        "state": "Pending",
        "fingerprint": "abc",
        "attempts": 1,
        "lastError": "Jira answered 503",
        "retryAt": format_time(T0 + 700),
    }
    assert _kinds(inc.ticket(pending, T0 + 612)) == ["Escalation"]


def test_a_pending_notification_is_due_at_its_retry_time_after_a_restart() -> None:
    inc = _escalated()
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 612)
    _record(inc, "Escalation", "Pending", retryAt=format_time(T0 + 700), lastError="503")
    assert _kinds(inc.tick(T0 + 699)) == []
    assert machine.work_wakeup(inc.current, now=T0 + 650) == T0 + 700
    assert _kinds(inc.tick(T0 + 700)) == ["Escalation"]
    _record(inc, "Escalation", "Failed", lastError="gave up")
    assert _kinds(inc.tick(T0 + 10_000)) == []


def test_a_ticket_given_up_at_its_horizon_sends_one_give_up() -> None:
    inc = _escalated()
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 612)
    _record(inc, "Escalation", "Sent")
    gave_up = {"state": "Failed", "lastError": "gave up after 40 attempts", "gaveUp": True}
    assert _kinds(inc.ticket(gave_up, T0 + 700)) == ["GiveUp"]
    inc.restart()
    assert _kinds(inc.tick(T0 + 701)) == ["GiveUp"]
    _record(inc, "GiveUp", "Sent")
    assert _kinds(inc.tick(T0 + 702)) == []


def test_recovery_of_a_notified_escalation_sends_one_recovery() -> None:
    inc = _escalated()
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 612)
    _record(inc, "Escalation", "Sent")
    inc.signal(H, T0 + 700)
    effects = inc.tick(T0 + 1000)
    assert inc.phase() is Phase.CLOSED
    assert _kinds(effects) == ["Recovery"]
    status = inc.current.to_status()
    assert machine.notification_work_pending(status)
    inc.restart()
    assert _kinds(inc.tick(T0 + 1001)) == ["Recovery"]
    _record(inc, "Recovery", "Sent")
    assert _kinds(inc.tick(T0 + 1002)) == []
    assert not machine.notification_work_pending(inc.current.to_status())


def test_no_recovery_message_when_the_escalation_was_never_sent() -> None:
    inc = _escalated()
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 612)
    _record(inc, "Escalation", "Failed", lastError="target 1 (json): refused")
    inc.signal(H, T0 + 700)
    assert _kinds(inc.tick(T0 + 1000)) == []
    assert inc.phase() is Phase.CLOSED


def test_the_status_round_trip_keeps_the_entries() -> None:
    inc = _escalated()
    _record(inc, "Escalation", "Sent", sentAt=format_time(T0 + 1), delivered=["ab12"])
    assert inc.current.to_status()["notifications"] == [
        {
            "kind": "Escalation",
            "state": "Sent",
            "attempts": 1,
            "sentAt": format_time(T0 + 1),
            "delivered": ["ab12"],
        }
    ]


# --- message content ----------------------------------------------------------------------

INCIDENT = notify.Incident(
    namespace="shop",
    workload="checkout",
    policy="checkout",
    remediation="checkout-crashloop-abc-1",
    trigger="crashloop",
    cause="CrashLoopBackOff",
    detail="container app restarted 4 times in 10m",
    reason="every remediation step was tried and checkout is still not healthy",
    tried=("step 1 (rollback) Succeeded [revision 7 -> 6]",),
    ticket_key="OPS-7",
    ticket_url="https://jira.example.com/browse/OPS-7",
    ticket_state="Filed",
    evidence="shop/checkout pod checkout-1; exit 1 (Error) after 4 restarts; python "
    "RuntimeError: payments down",
)


def test_the_escalation_message_carries_the_link_the_cause_and_what_was_tried() -> None:
    msg = notify.message(notify.Kind.ESCALATION, INCIDENT)
    assert msg.title == "[selfheal] escalated: shop/checkout (CrashLoopBackOff)"
    assert "Ticket: OPS-7 https://jira.example.com/browse/OPS-7" in msg.body
    assert "Cause: CrashLoopBackOff: container app restarted 4 times in 10m" in msg.body
    assert "Why it was escalated: every remediation step was tried" in msg.body
    assert "- step 1 (rollback) Succeeded [revision 7 -> 6]" in msg.body
    assert "Evidence: shop/checkout pod checkout-1" in msg.body
    assert "get remediation checkout-crashloop-abc-1" in msg.body


def test_the_escalation_message_says_why_there_is_no_link() -> None:
    none = dataclasses.replace(INCIDENT, ticket_key="", ticket_url="", ticket_state="")
    assert (
        "Ticket: none (the policy files no Jira ticket)"
        in notify.message(notify.Kind.ESCALATION, none).body
    )
    failed = dataclasses.replace(none, ticket_state="Failed", ticket_error="403 Forbidden")
    assert (
        "Ticket: not filed (403 Forbidden)" in notify.message(notify.Kind.ESCALATION, failed).body
    )


def test_give_up_and_recovery_messages() -> None:
    gave_up = dataclasses.replace(
        INCIDENT, ticket_key="", ticket_state="Failed", ticket_error="gave up after 40 attempts"
    )
    msg = notify.message(notify.Kind.GIVE_UP, gave_up)
    assert msg.title.startswith("[selfheal] no ticket could be filed: shop/checkout")
    assert "Last error: gave up after 40 attempts" in msg.body
    rec = dataclasses.replace(INCIDENT, ending="checkout recovered after the escalation")
    msg = notify.message(notify.Kind.RECOVERY, rec)
    assert msg.title == "[selfheal] recovered: shop/checkout (CrashLoopBackOff)"
    assert "recovered after it was escalated: checkout recovered" in msg.body
    assert "OPS-7" in msg.body


def test_a_long_body_is_cut() -> None:
    long = dataclasses.replace(INCIDENT, tried=tuple(f"step {i} " + "x" * 200 for i in range(40)))
    body = notify.message(notify.Kind.ESCALATION, long).body
    assert len(body) <= notify.BODY_LIMIT
    assert body.endswith("(truncated)")


def test_urls_one_a_line_and_their_ids_hide_them() -> None:
    text = "# on-call\njson://127.0.0.1:9/hook\n\n  mailto://u:p@example.com  \n"
    assert parse_urls(text) == ["json://127.0.0.1:9/hook", "mailto://u:p@example.com"]
    tid = target_id("mailto://u:p@example.com")
    assert len(tid) == 16
    assert "p@" not in tid


def test_an_incident_ended_from_outside_drops_a_notification_never_attempted() -> None:
    inc = _escalated()
    new, effects = machine.end(inc.current, reason=machine.EndReason.WORKLOAD_DELETED, now=T0 + 611)
    assert new.notifications == ()
    assert _kinds(effects) == []
    inc = _escalated()
    inc.ticket({"state": "Filed", "key": "OPS-1"}, T0 + 612)
    _record(inc, "Escalation", "Sent")
    new, _ = machine.end(inc.current, reason=machine.EndReason.WORKLOAD_DELETED, now=T0 + 613)
    assert [n["state"] for n in new.notifications] == ["Sent"]


# --- the policy -------------------------------------------------------------------------


def _parsed(escalate: dict[str, object]) -> HealingPolicy:
    body = valid_policy()
    body["metadata"]["namespace"] = "shop"
    body["spec"]["remediation"]["escalate"] = escalate
    return parse(body)


def test_notify_and_the_on_call_parse_from_the_policy() -> None:
    policy = _parsed(
        {
            "jira": {"project": "OPS", "assignee": "oncall-alice", "watchers": ["oncall-bob"]},
            "notify": {"secretRef": {"name": "oncall"}},
        }
    )
    jira = policy.remediation.jira
    assert jira is not None
    assert (jira.assignee, jira.watchers) == ("oncall-alice", ("oncall-bob",))
    assert policy.remediation.notify == NotifyEscalation(
        secret_ref=SecretKeyRef(name="oncall", key="urls")
    )
    fields = ticket.issue_fields(escalation=jira, fingerprint="abc", summary="s", description="d")
    assert fields["assignee"] == {"name": "oncall-alice"}


def test_notify_alone_is_an_escalation() -> None:
    policy = _parsed({"notify": {"secretRef": {"name": "oncall", "key": "hooks"}}})
    assert policy.remediation.jira is None
    assert policy.remediation.notify is not None
    assert policy.remediation.notify.secret_ref.key == "hooks"


@pytest.mark.parametrize(
    ("escalate", "field", "says"),
    [
        ({"notify": "json://h/x"}, "spec.remediation.escalate.notify", "not a string"),
        (
            {"notify": {"secretRef": {"name": "oncall"}, "urls": ["json://h/x"]}},
            "spec.remediation.escalate.notify.urls",
            "go in a Secret",
        ),
        (
            {"notify": {"secretRef": {"name": "oncall", "key": "a b"}}},
            "spec.remediation.escalate.notify.secretRef.key",
            "not a Secret key",
        ),
        (
            {"jira": {"project": "OPS", "watchers": ["bob", "bob"]}},
            "spec.remediation.escalate.jira.watchers[1]",
            "listed twice",
        ),
        (
            {"jira": {"project": "OPS", "assignee": " bob"}},
            "spec.remediation.escalate.jira.assignee",
            "not a Jira user",
        ),
    ],
)
def test_mistakes_name_the_field(escalate: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(PolicyError) as err:
        _parsed(escalate)
    assert err.value.field == field
    assert says in err.value.message
