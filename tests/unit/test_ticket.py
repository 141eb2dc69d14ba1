"""The pure parts of Jira escalation: fingerprints, fields, backoff, the stored state."""

from __future__ import annotations

import json
import random

import pytest

from selfheal.actions import ticket
from selfheal.actions.ticket import PendingTicket, TicketMode, TicketOutcome, TicketState
from selfheal.policy.model import JiraEscalation

T0 = 1_800_000_000.0  # a fixed wall clock (2027-01-15)


class TestFingerprint:
    def test_same_incident_gives_the_same_label_across_calls(self) -> None:
        a = ticket.fingerprint(namespace="shop", policy="checkout", workload="api", trigger="crash")
        b = ticket.fingerprint(namespace="shop", policy="checkout", workload="api", trigger="crash")
        assert a == b
        assert ticket.fingerprint_label(a) == f"selfheal-{a}"
        assert len(a) == 12
        assert all(c in "0123456789abcdef" for c in a)

    @pytest.mark.parametrize(
        "other",
        [
            {"namespace": "shop2", "policy": "checkout", "workload": "api", "trigger": "crash"},
            {"namespace": "shop", "policy": "other", "workload": "api", "trigger": "crash"},
            {"namespace": "shop", "policy": "checkout", "workload": "web", "trigger": "crash"},
            {"namespace": "shop", "policy": "checkout", "workload": "api", "trigger": "errors"},
        ],
    )
    def test_each_part_of_the_identity_changes_it(self, other: dict[str, str]) -> None:
        base = ticket.fingerprint(
            namespace="shop", policy="checkout", workload="api", trigger="crash"
        )
        assert ticket.fingerprint(**other) != base

    def test_parts_cannot_be_shifted_into_one_another(self) -> None:
        a = ticket.fingerprint(namespace="a-b", policy="c", workload="d", trigger="e")
        b = ticket.fingerprint(namespace="a", policy="b-c", workload="d", trigger="e")
        assert a != b


class TestIssueFields:
    def test_the_policy_maps_onto_jira_fields(self) -> None:
        esc = JiraEscalation(
            project="OPS",
            issue_type="Incident",
            priority="High",
            labels=("sre", "checkout"),
            components=("checkout",),
            custom_fields={"customfield_10010": "payments-team"},
        )
        f = ticket.issue_fields(
            escalation=esc, fingerprint="abc123abc123", summary="api crashed", description="*x*"
        )
        assert f == {
            "project": {"key": "OPS"},
            "issuetype": {"name": "Incident"},
            "summary": "api crashed",
            "description": "*x*",
            "labels": ["selfheal-abc123abc123", "sre", "checkout"],
            "priority": {"name": "High"},
            "components": [{"name": "checkout"}],
            "customfield_10010": "payments-team",
        }

    def test_optional_fields_are_left_to_jiras_defaults(self) -> None:
        f = ticket.issue_fields(
            escalation=JiraEscalation(project="OPS"),
            fingerprint="f" * 12,
            summary="s",
            description="d",
        )
        assert "priority" not in f
        assert "components" not in f
        assert f["issuetype"] == {"name": "Bug"}

    def test_summary_is_one_line_within_jiras_limit(self) -> None:
        f = ticket.issue_fields(
            escalation=JiraEscalation(project="OPS"),
            fingerprint="f" * 12,
            summary="line one\nline two\t" + "x" * 400,
            description="d",
        )
        assert "\n" not in f["summary"]
        assert f["summary"].startswith("line one line two x")
        assert len(f["summary"]) == 255

    def test_a_huge_description_is_cut_with_a_note(self) -> None:
        f = ticket.issue_fields(
            escalation=JiraEscalation(project="OPS"),
            fingerprint="f" * 12,
            summary="s",
            description="y" * 100_000,
        )
        assert len(f["description"]) == ticket.TEXT_LIMIT
        assert f["description"].endswith("see the attachments)_")

    def test_the_fingerprint_label_is_not_repeated(self) -> None:
        f = ticket.issue_fields(
            escalation=JiraEscalation(project="OPS", labels=("selfheal-" + "a" * 12, "x")),
            fingerprint="a" * 12,
            summary="s",
            description="d",
        )
        assert f["labels"] == ["selfheal-" + "a" * 12, "x"]


class TestBackoff:
    def test_retry_after_is_honoured_exactly(self) -> None:
        rng = random.Random(1)
        assert ticket.backoff(attempt=1, retry_after=7.0, rng=rng) == 7.0
        assert ticket.backoff(attempt=9, retry_after=1.0, rng=rng) == 1.0

    def test_retry_after_is_bounded(self) -> None:
        rng = random.Random(1)
        assert ticket.backoff(attempt=1, retry_after=0.0, rng=rng) == ticket.RETRY_AFTER_MIN
        assert ticket.backoff(attempt=1, retry_after=1e6, rng=rng) == ticket.RETRY_AFTER_MAX

    def test_exponential_from_5s_to_10min_with_jitter(self) -> None:
        rng = random.Random(42)
        for attempt in range(1, 30):
            samples = [
                ticket.backoff(attempt=attempt, retry_after=None, rng=rng) for _ in range(50)
            ]
            base = min(5.0 * 2 ** (attempt - 1), 600.0)
            assert all(max(0.8 * base, 5.0) <= s <= min(1.2 * base, 600.0) for s in samples)
            if attempt <= 5:
                assert len(set(samples)) > 1  # jittered, so replicas do not retry in step
        first = [ticket.backoff(attempt=1, retry_after=None, rng=rng) for _ in range(20)]
        later = [ticket.backoff(attempt=4, retry_after=None, rng=rng) for _ in range(20)]
        assert max(first) < min(later)


class TestStoredState:
    def test_pending_survives_a_trip_through_the_api_server(self) -> None:
        p = PendingTicket(
            fingerprint="abc123abc123",
            key="OPS-7",
            url="http://jira/browse/OPS-7",
            mode=TicketMode.FILE,
            create_sent=True,
            attached=("logs.txt",),
            comment_sent=False,
            attempts=3,
            first_attempt_at=T0,
            last_error="Jira create: timed out",
            retry_at=T0 + 12.5,
        )
        stored = json.loads(json.dumps(p.to_status()))
        assert stored["state"] == "Pending"
        assert stored["retryAt"] == "2027-01-15T08:00:12.500Z"
        assert PendingTicket.from_status(stored) == p

    def test_outcome_status_of_a_pending_ticket_resumes(self) -> None:
        p = PendingTicket(fingerprint="f" * 12, attempts=1, first_attempt_at=T0, retry_at=T0 + 5)
        out = TicketOutcome(state=TicketState.PENDING, attempts=1, retry_at=T0 + 5, pending=p)
        assert PendingTicket.from_status(out.to_status()) == p

    def test_finished_tickets_resume_nothing(self) -> None:
        out = TicketOutcome(state=TicketState.FILED, key="OPS-1", url="u", attempts=2)
        status = out.to_status()
        assert status == {
            "state": "Filed",
            "key": "OPS-1",
            "url": "u",
            "attempts": 2,
            "lastError": None,
        }
        assert PendingTicket.from_status(status) is None
        assert PendingTicket.from_status(None) is None
        assert PendingTicket.from_status({}) is None

    def test_a_damaged_status_names_the_field(self) -> None:
        good = PendingTicket(fingerprint="f" * 12, first_attempt_at=T0).to_status()
        with pytest.raises(ValueError, match=r"status\.ticket\.mode"):
            PendingTicket.from_status({**good, "mode": "Sideways"})
        with pytest.raises(ValueError, match=r"status\.ticket\.retryAt"):
            PendingTicket.from_status({**good, "retryAt": "tomorrow"})
        with pytest.raises(ValueError, match=r"status\.ticket\.fingerprint"):
            PendingTicket.from_status({**good, "fingerprint": ""})

    def test_the_comment_marker_is_stable_per_occurrence(self) -> None:
        a = PendingTicket(fingerprint="f" * 12, first_attempt_at=T0)
        later = PendingTicket(fingerprint="f" * 12, first_attempt_at=T0, attempts=4)
        other = PendingTicket(fingerprint="f" * 12, first_attempt_at=T0 + 3600)
        assert a.marker == later.marker
        assert a.marker != other.marker
