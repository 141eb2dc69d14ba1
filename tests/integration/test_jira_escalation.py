"""Escalation to Jira end to end: the real ``jira`` client against the test server.

Each retry loop is driven like the operator drives it: call ``escalate``, store
``outcome.to_status()`` (through JSON, as the API server would), call again at
``retry_at`` with ``PendingTicket.from_status``. The clock is explicit; the only real
sleeps are the 1-second ``Retry-After`` of the throttling test.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
from collections.abc import Mapping
from typing import Any

import pytest

from selfheal.actions import ticket
from selfheal.actions.ticket import PendingTicket, ResolveState, TicketOutcome, TicketState
from selfheal.clients.jira import Jira, JiraCredentials, credentials_from_secret
from selfheal.policy.model import JiraEscalation
from tests.support.fixtures.jira import JIRA_PASSWORD, JIRA_TOKEN, JIRA_USER
from tests.support.jira_server import JiraServer

T0 = 1_800_000_000.0
FP = ticket.fingerprint(namespace="shop", policy="checkout", workload="api", trigger="crashloop")
ESCALATION = JiraEscalation(
    project="OPS",
    issue_type="Incident",
    priority="High",
    labels=("sre",),
    components=("checkout",),
    custom_fields={"customfield_10010": "payments-team"},
    resolve_transition="Done",
)
DESCRIPTION = "h2. Remediation failed\n*Workload:* shop/api\n{code}\nTraceback: ValueError\n{code}"
EVIDENCE = {"logs.txt": b"line 1\nline 2\n", "stack.txt": b"Traceback (most recent call last)"}
CREATE = r"/rest/api/2/issue"


class Clock:
    def __init__(self) -> None:
        self.now = T0


async def drive(
    jira: Jira,
    clock: Clock,
    *,
    escalation: JiraEscalation = ESCALATION,
    summary: str = "shop/api: crash loop not healed by rollback",
    attachments: Mapping[str, bytes] = EVIDENCE,
    pending: PendingTicket | None = None,
    max_attempts: int = 8,
    real_sleep: bool = False,
) -> list[TicketOutcome]:
    """Attempts until the outcome is final (bounded); returns every outcome."""
    outcomes: list[TicketOutcome] = []
    for _ in range(max_attempts):
        out = await ticket.escalate(
            jira=jira,
            escalation=escalation,
            fingerprint=FP,
            summary=summary,
            description=DESCRIPTION,
            attachments=attachments,
            pending=pending,
            now=clock.now,
            rng=random.Random(7),
        )
        outcomes.append(out)
        if out.state is not TicketState.PENDING:
            return outcomes
        assert out.retry_at is not None
        if real_sleep:
            await asyncio.sleep(out.retry_at - clock.now)
        clock.now = out.retry_at
        pending = PendingTicket.from_status(json.loads(json.dumps(out.to_status())))
    raise AssertionError(f"not final after {max_attempts} attempts: {outcomes[-1]}")


def _only_ticket(server: JiraServer) -> dict[str, Any]:
    issues = server.issues()
    assert [i["key"] for i in issues] == ["OPS-1"], f"expected exactly one ticket: {issues}"
    return issues[0]


def _creates(server: JiraServer) -> int:
    return sum(1 for r in server.requests_received() if r.method == "POST" and r.path == CREATE)


async def test_a_failed_remediation_files_one_ticket_with_description_and_evidence(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    [out] = await drive(jira_client, Clock())
    assert out.state is TicketState.FILED
    assert out.key == "OPS-1"
    assert out.url == f"{jira_server.url}/browse/OPS-1"
    issue = _only_ticket(jira_server)
    fields = issue["fields"]
    assert fields["description"] == DESCRIPTION
    assert fields["summary"] == "shop/api: crash loop not healed by rollback"
    fp_label, sre, marker = fields["labels"]
    assert (fp_label, sre) == (f"selfheal-{FP}", "sre")
    assert marker.startswith("selfheal-attempt-")  # this create's own marker
    assert fields["priority"] == {"id": "2", "name": "High"}
    assert fields["issuetype"]["name"] == "Incident"
    assert [c["name"] for c in fields["components"]] == ["checkout"]
    assert fields["customfield_10010"] == "payments-team"
    assert issue["attachments"] == EVIDENCE
    assert issue["comments"] == []


async def test_a_recurrence_comments_on_the_open_ticket(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    clock = Clock()
    await drive(jira_client, clock)
    clock.now += 3600
    [again] = await drive(
        jira_client, clock, summary="shop/api: crash loop again", attachments={"logs.txt": b"new"}
    )
    assert again.state is TicketState.COMMENTED
    assert again.key == "OPS-1"
    issue = _only_ticket(jira_server)
    [comment] = issue["comments"]
    assert "recurred" in comment
    assert "shop/api: crash loop again" in comment
    assert "Traceback: ValueError" in comment
    assert issue["attachments"] == EVIDENCE  # the original evidence, untouched


async def test_a_closed_ticket_is_not_reused(jira_server: JiraServer, jira_client: Jira) -> None:
    clock = Clock()
    [first] = await drive(jira_client, clock)
    assert first.key is not None
    await jira_client.transition(key=first.key, name="Done")
    [second] = await drive(jira_client, clock)
    assert second.state is TicketState.FILED
    assert second.key == "OPS-2"


async def test_a_429_burst_is_waited_out_as_jira_asks(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    clock = Clock()
    jira_server.throttle_next(2, retry_after=1)
    outcomes = await drive(jira_client, clock, real_sleep=True)
    assert [o.state for o in outcomes] == [TicketState.PENDING] * 2 + [TicketState.FILED]
    assert [o.retry_at for o in outcomes[:2]] == [T0 + 1.0, T0 + 2.0]  # Retry-After: 1, exactly
    assert "HTTP 429" in (outcomes[0].last_error or "")
    assert outcomes[-1].attempts == 3
    _only_ticket(jira_server)


async def test_a_503_burst_on_create_ends_with_one_ticket(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    clock = Clock()
    jira_server.fail_next(3, status=503, method="POST", path=CREATE)
    outcomes = await drive(jira_client, clock)
    assert [o.state for o in outcomes] == [TicketState.PENDING] * 3 + [TicketState.FILED]
    assert "HTTP 503" in (outcomes[0].last_error or "")
    # No Retry-After: exponential backoff from 5 s, jittered by at most 20 %.
    starts = [T0] + [o.retry_at for o in outcomes[:-1]]
    waits = [b - a for a, b in itertools.pairwise(starts) if a is not None and b is not None]
    assert len(waits) == 3
    for n, wait in enumerate(waits):
        assert 0.8 * 5 * 2**n <= wait <= 1.2 * 5 * 2**n
    _only_ticket(jira_server)
    assert _creates(jira_server) == 4  # three refused, one applied


async def test_an_outage_ends_with_one_ticket(jira_server: JiraServer, jira_client: Jira) -> None:
    clock = Clock()
    jira_server.down()
    out = await ticket.escalate(
        jira=jira_client,
        escalation=ESCALATION,
        fingerprint=FP,
        summary="s",
        description=DESCRIPTION,
        attachments=EVIDENCE,
        pending=None,
        now=clock.now,
    )
    assert out.state is TicketState.PENDING
    assert "cannot connect" in (out.last_error or "")
    assert out.retry_at is not None
    assert 5.0 <= out.retry_at - clock.now <= 6.0
    pending = PendingTicket.from_status(json.loads(json.dumps(out.to_status())))
    clock.now = out.retry_at
    again = await ticket.escalate(
        jira=jira_client,
        escalation=ESCALATION,
        fingerprint=FP,
        summary="s",
        description=DESCRIPTION,
        attachments=EVIDENCE,
        pending=pending,
        now=clock.now,
    )
    assert again.state is TicketState.PENDING  # still down
    assert again.attempts == 2
    jira_server.up()
    outcomes = await drive(jira_client, clock, pending=PendingTicket.from_status(again.to_status()))
    assert outcomes[-1].state is TicketState.FILED
    assert outcomes[-1].attempts == 3
    assert _only_ticket(jira_server)["attachments"] == EVIDENCE


async def test_a_create_whose_answer_was_lost_is_not_repeated(
    jira_server: JiraServer, jira_credentials: JiraCredentials
) -> None:
    jira = Jira(url=jira_server.url, credentials=jira_credentials, timeout=0.5)
    try:
        jira_server.delay_next(2.0, method="POST", path=CREATE)
        outcomes = await drive(jira, Clock())
    finally:
        await jira.close()
    assert [o.state for o in outcomes] == [TicketState.PENDING, TicketState.FILED]
    assert "timed out" in (outcomes[0].last_error or "")
    assert outcomes[0].pending is not None
    assert outcomes[0].pending.create_sent
    issue = _only_ticket(jira_server)
    assert issue["attachments"] == EVIDENCE  # adopted as ours: evidence attached...
    assert issue["comments"] == []  # ...not treated as a recurrence
    assert _creates(jira_server) == 1


async def test_the_overall_deadline_bounds_a_call(
    jira_server: JiraServer, jira_credentials: JiraCredentials
) -> None:
    # The per-request timeout is long; the deadline of the whole call is what fires.
    jira = Jira(url=jira_server.url, credentials=jira_credentials, timeout=5.0, deadline=0.5)
    try:
        jira_server.delay_next(1.5, method="POST", path=CREATE)
        outcomes = await drive(jira, Clock())
    finally:
        await jira.close()
    assert "no answer within 0.5s" in (outcomes[0].last_error or "")
    assert outcomes[-1].state is TicketState.FILED
    assert _creates(jira_server) == 1
    _only_ticket(jira_server)


async def test_restart_with_a_ticket_pending_files_it_once(
    jira_server: JiraServer, jira_credentials: JiraCredentials
) -> None:
    clock = Clock()
    before = Jira(url=jira_server.url, credentials=jira_credentials, timeout=0.5)
    jira_server.delay_next(2.0, method="POST", path=CREATE)
    out = await ticket.escalate(
        jira=before,
        escalation=ESCALATION,
        fingerprint=FP,
        summary="s",
        description=DESCRIPTION,
        attachments=EVIDENCE,
        pending=None,
        now=clock.now,
    )
    await before.close()
    assert out.state is TicketState.PENDING
    stored = json.dumps({"status": {"ticket": out.to_status()}})  # what the API server keeps

    # A new process: a new client, the state read back from the Remediation.
    after = Jira(url=jira_server.url, credentials=jira_credentials, timeout=2.0)
    try:
        pending = PendingTicket.from_status(json.loads(stored)["status"]["ticket"])
        assert pending is not None
        assert pending.create_sent
        assert out.retry_at is not None
        clock.now = out.retry_at
        outcomes = await drive(after, clock, pending=pending)
    finally:
        await after.close()
    assert outcomes[-1].state is TicketState.FILED
    assert outcomes[-1].attempts == 2
    assert _only_ticket(jira_server)["attachments"] == EVIDENCE
    assert _creates(jira_server) == 1


async def test_an_upload_whose_answer_was_lost_is_not_repeated(
    jira_server: JiraServer, jira_credentials: JiraCredentials
) -> None:
    jira = Jira(url=jira_server.url, credentials=jira_credentials, timeout=0.5)
    try:
        jira_server.delay_next(2.0, method="POST", path=r".*/attachments")
        outcomes = await drive(jira, Clock())
    finally:
        await jira.close()
    assert [o.state for o in outcomes] == [TicketState.PENDING, TicketState.FILED]
    issue = _only_ticket(jira_server)
    assert [name for name, _ in issue["attachment_list"]] == ["logs.txt", "stack.txt"]


async def test_a_recurrence_comment_whose_answer_was_lost_is_not_repeated(
    jira_server: JiraServer, jira_credentials: JiraCredentials
) -> None:
    key = jira_server.add_issue(project="OPS", summary="filed by hand", labels=[f"selfheal-{FP}"])
    jira = Jira(url=jira_server.url, credentials=jira_credentials, timeout=0.5)
    try:
        jira_server.delay_next(2.0, method="POST", path=r".*/comment")
        outcomes = await drive(jira, Clock())
    finally:
        await jira.close()
    assert [o.state for o in outcomes] == [TicketState.PENDING, TicketState.COMMENTED]
    assert outcomes[-1].key == key
    issue = _only_ticket(jira_server)
    assert len(issue["comments"]) == 1


async def test_wrong_credentials_fail_clearly_without_leaking_them(
    jira_server: JiraServer,
) -> None:
    jira = Jira(
        url=jira_server.url,
        credentials=JiraCredentials(username=JIRA_USER, token="wrong-password-4711"),
        timeout=2.0,
    )
    try:
        [out] = await drive(jira, Clock())
    finally:
        await jira.close()
    assert out.state is TicketState.FAILED
    assert "HTTP 401" in (out.last_error or "")
    assert "check the username and token in the Secret" in (out.last_error or "")
    assert "wrong-password-4711" not in json.dumps(out.to_status())
    assert jira_server.issues() == []


async def test_a_bad_priority_names_the_policy_field(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    bad = JiraEscalation(project="OPS", priority="Urgentest")
    [out] = await drive(jira_client, Clock(), escalation=bad)
    assert out.state is TicketState.FAILED
    assert out.last_error == (
        "Jira refused the create (HTTP 400): spec.remediation.escalate.jira.priority: "
        "The priority selected is invalid."
    )
    assert jira_server.issues() == []


async def test_bearer_token_from_a_secret_files_as_its_user(jira_server: JiraServer) -> None:
    secret = {"data": {"token": base64.b64encode(JIRA_TOKEN.encode()).decode()}}
    jira = Jira(url=jira_server.url, credentials=credentials_from_secret(secret, name="ops/jira"))
    try:
        [out] = await drive(jira, Clock())
    finally:
        await jira.close()
    assert out.state is TicketState.FILED
    create = next(r for r in jira_server.requests_received() if r.path == CREATE)
    headers = {k.lower(): v for k, v in create.headers.items()}
    assert headers["authorization"] == f"Bearer {JIRA_TOKEN}"
    assert JIRA_PASSWORD not in jira_server.all_bytes_received().decode(errors="replace")


async def test_resolve_comments_and_transitions_once(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    [filed] = await drive(jira_client, Clock())
    assert filed.key is not None
    done = await ticket.resolve(
        jira=jira_client,
        key=filed.key,
        comment="Recovered after rollback; verified for 5m.",
        transition="Done",
        now=T0,
    )
    assert done.state is ResolveState.RESOLVED
    assert done.transitioned
    # A retry (say, the status write was lost) neither comments twice nor fails.
    again = await ticket.resolve(
        jira=jira_client,
        key=filed.key,
        comment="Recovered after rollback; verified for 5m.",
        transition="Done",
        now=T0,
        attempts=1,
    )
    assert again.state is ResolveState.RESOLVED
    assert not again.transitioned
    issue = _only_ticket(jira_server)
    assert issue["status"] == "Done"
    assert len(issue["comments"]) == 1
    assert [t["name"] for t in issue["transitions"]] == ["Done"]


async def test_resolve_with_an_unknown_transition_names_the_choices(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    [filed] = await drive(jira_client, Clock())
    assert filed.key is not None
    out = await ticket.resolve(
        jira=jira_client, key=filed.key, comment="ok", transition="Close Issue", now=T0
    )
    assert out.state is ResolveState.FAILED
    assert "'Start Progress', 'Done'" in (out.last_error or "")
    assert "resolveTransition" in (out.last_error or "")


async def test_resolve_waits_out_an_outage(jira_server: JiraServer, jira_client: Jira) -> None:
    [filed] = await drive(jira_client, Clock())
    assert filed.key is not None
    jira_server.fail_next(1, status=502)
    out = await ticket.resolve(
        jira=jira_client, key=filed.key, comment="ok", transition=None, now=T0
    )
    assert out.state is ResolveState.PENDING
    assert out.retry_at is not None
    assert out.retry_at > T0


@pytest.mark.parametrize(
    ("project", "message"),
    [("OPS", None), ("NOPE", "project 'NOPE' does not exist")],
)
async def test_check_reports_a_missing_project(
    jira_server: JiraServer, jira_client: Jira, project: str, message: str | None
) -> None:
    from selfheal.clients.jira import JiraRejected

    if message is None:
        await jira_client.check(project=project)
    else:
        with pytest.raises(JiraRejected, match=message) as e:
            await jira_client.check(project=project)
        assert e.value.status == 404


async def test_check_reports_an_unreachable_server(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    from selfheal.clients.jira import JiraUnavailable

    jira_server.down()
    with pytest.raises(JiraUnavailable, match="cannot connect"):
        await jira_client.check(project="OPS")


async def test_an_attachment_jira_refuses_leaves_the_ticket_filed(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    jira_server.max_attachment_size = 1024
    big = {"logs.txt": b"small", "heap.bin": b"\0" * 4096}
    [out] = await drive(jira_client, Clock(), attachments=big)
    assert out.state is TicketState.FILED
    assert "heap.bin" in (out.last_error or "")
    assert "too large" in (out.last_error or "")
    assert _only_ticket(jira_server)["attachments"] == {"logs.txt": b"small"}


async def test_an_empty_fingerprint_files_nothing(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    jira_server.add_issue(project="OPS", summary="someone else's", labels=["selfheal-"])
    out = await ticket.escalate(
        jira=jira_client,
        escalation=ESCALATION,
        fingerprint="",
        summary="s",
        description=DESCRIPTION,
        attachments=EVIDENCE,
        pending=None,
        now=T0,
    )
    assert out.state is TicketState.FAILED
    assert "fingerprint" in (out.last_error or "")
    assert len(jira_server.issues()) == 1
    assert jira_server.issues()[0]["comments"] == []
