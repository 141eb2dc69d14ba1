"""The on-call on the ticket: ``escalate.jira.assignee`` set on create and
``escalate.jira.watchers`` added through ``POST /issue/{key}/watchers``, with the real
``jira`` client against the test server, on Jira Server (user names) and Jira Cloud
(account ids)."""

from __future__ import annotations

import dataclasses
import json
import random

from selfheal.actions import ticket
from selfheal.actions.ticket import PendingTicket, TicketState
from selfheal.clients.jira import Jira
from selfheal.policy.model import JiraEscalation
from tests.support.jira_server import JiraServer, _account_id

T0 = 1_800_000_000.0
FP = ticket.fingerprint(namespace="shop", policy="checkout", workload="api", trigger="crashloop")
ONCALL = JiraEscalation(
    project="OPS", issue_type="Bug", assignee="oncall-alice", watchers=("oncall-bob", "selfheal")
)
EVIDENCE = {"logs.txt": b"line 1\n"}


async def _escalate(
    jira: Jira, escalation: JiraEscalation, *, pending: PendingTicket | None = None
) -> ticket.TicketOutcome:
    return await ticket.escalate(
        jira=jira,
        escalation=escalation,
        fingerprint=FP,
        summary="shop/api: crash loop not healed",
        description="h2. Remediation failed",
        attachments=EVIDENCE,
        pending=pending,
        now=T0,
        rng=random.Random(7),
    )


def _issue(server: JiraServer) -> dict[str, object]:
    [issue] = server.issues()
    return issue


async def test_the_new_ticket_is_assigned_and_watched_on_server(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    out = await _escalate(jira_client, ONCALL)
    assert out.state is TicketState.FILED
    assert out.last_error is None
    issue = _issue(jira_server)
    assert issue["fields"]["assignee"] == "oncall-alice"  # type: ignore[index]
    # The reporter watches by Jira's autowatch; the policy's watchers are added once.
    assert jira_server.watchers_of(str(out.key)) == ["selfheal", "oncall-bob"]
    watch_posts = [
        r for r in jira_server.requests_received() if r.method == "POST" and "watchers" in r.path
    ]
    assert [json.loads(r.body) for r in watch_posts] == ["oncall-bob", "selfheal"]


async def test_on_cloud_the_policy_gives_account_ids(
    jira_cloud: JiraServer, jira_cloud_client: Jira
) -> None:
    alice, bob = _account_id("oncall-alice"), _account_id("oncall-bob")
    escalation = dataclasses.replace(ONCALL, assignee=alice, watchers=(bob,))
    out = await _escalate(jira_cloud_client, escalation)
    assert out.state is TicketState.FILED, out.last_error
    assert _issue(jira_cloud)["fields"]["assignee"] == "oncall-alice"  # type: ignore[index]
    assert "oncall-bob" in jira_cloud.watchers_of(str(out.key))
    create = next(
        r
        for r in jira_cloud.requests_received()
        if r.method == "POST" and r.path.endswith("/issue")
    )
    assert json.loads(create.body)["fields"]["assignee"] == {"accountId": alice}


async def test_an_unknown_watcher_leaves_the_ticket_filed_and_says_who(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    escalation = dataclasses.replace(ONCALL, watchers=("nobody", "oncall-bob"))
    out = await _escalate(jira_client, escalation)
    assert out.state is TicketState.FILED
    assert out.last_error is not None
    assert "watcher nobody" in out.last_error
    assert "oncall-bob" in jira_server.watchers_of(str(out.key))
    assert _issue(jira_server)["attachments"]  # the evidence went on regardless


async def test_an_unknown_assignee_is_refused_naming_the_policy_field(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    out = await _escalate(jira_client, dataclasses.replace(ONCALL, assignee="nobody"))
    assert out.state is TicketState.FAILED
    assert out.last_error is not None
    assert "assignee" in out.last_error
    assert "nobody" in out.last_error
    assert jira_server.issues() == []


async def test_a_retry_adds_only_the_watchers_not_added_yet(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    jira_server.fail_next(1, method="POST", path=r"/rest/api/2/issue/[^/]+/attachments$")
    first = await _escalate(jira_client, ONCALL)
    assert first.state is TicketState.PENDING
    assert first.pending is not None
    stored = PendingTicket.from_status(json.loads(json.dumps(first.to_status())))
    assert stored is not None
    assert stored.watched == ("oncall-bob", "selfheal")
    second = await _escalate(jira_client, ONCALL, pending=stored)
    assert second.state is TicketState.FILED
    watch_posts = [
        r for r in jira_server.requests_received() if r.method == "POST" and "watchers" in r.path
    ]
    assert len(watch_posts) == 2  # not repeated on the retry
