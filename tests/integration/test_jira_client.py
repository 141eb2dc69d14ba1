"""selfheal's Jira client: the event loop keeps running, errors fall into the taxonomy."""

from __future__ import annotations

import asyncio

import pytest

from selfheal.clients.jira import Jira, JiraCredentials, JiraRejected, JiraUnavailable
from tests.support.fixtures.jira import JIRA_USER
from tests.support.jira_server import JiraServer


async def test_a_slow_jira_does_not_stall_the_event_loop(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        jira_server.delay_next(1.0, path=r".*/search")
        found = await jira_client.search_open(project="OPS", label="selfheal-x")
    finally:
        task.cancel()
    assert found == []
    # A blocked loop would not have ticked at all during the second-long search.
    assert ticks >= 10


async def test_search_finds_only_open_tickets_with_the_label(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    old = jira_server.add_issue(project="OPS", summary="a", labels=["selfheal-x"])
    jira_server.add_issue(project="OPS", summary="b", labels=["selfheal-x"], status="Done")
    jira_server.add_issue(project="OPS", summary="c", labels=["selfheal-y"])
    newer = jira_server.add_issue(project="OPS", summary="d", labels=["selfheal-x"])
    refs = await jira_client.search_open(project="OPS", label="selfheal-x")
    assert [r.key for r in refs] == [old, newer]
    assert refs[0].url == f"{jira_server.url}/browse/{old}"


async def test_wrong_credentials_are_rejected_not_retried(jira_server: JiraServer) -> None:
    jira = Jira(
        url=jira_server.url,
        credentials=JiraCredentials(username=JIRA_USER, token="nope"),
        timeout=2.0,
    )
    try:
        with pytest.raises(JiraRejected) as e:
            await jira.check(project="OPS")
    finally:
        await jira.close()
    assert e.value.status == 401
    assert "check the username and token" in str(e.value)
    assert "nope" not in str(e.value)


async def test_429_carries_retry_after_and_5xx_is_temporary(
    jira_server: JiraServer, jira_client: Jira
) -> None:
    jira_server.throttle_next(1, retry_after=7, path=r".*/search")
    with pytest.raises(JiraUnavailable) as throttled:
        await jira_client.search_open(project="OPS", label="x")
    assert (throttled.value.status, throttled.value.retry_after) == (429, 7.0)
    jira_server.fail_next(1, status=502, path=r".*/search")
    with pytest.raises(JiraUnavailable) as bad_gateway:
        await jira_client.search_open(project="OPS", label="x")
    assert (bad_gateway.value.status, bad_gateway.value.retry_after) == (502, None)
    # One request each: the jira package's own retry loop (which sleeps) is off.
    searches = [r for r in jira_server.requests_received() if r.path.endswith("/search")]
    assert [r.status for r in searches] == [429, 502]


async def test_a_400_carries_jiras_field_errors(jira_client: Jira) -> None:
    with pytest.raises(JiraRejected) as e:
        await jira_client.create(
            fields={
                "project": {"key": "OPS"},
                "issuetype": {"name": "Bug"},
                "summary": "s",
                "components": [{"name": "nope"}],
            }
        )
    assert e.value.status == 400
    assert e.value.field_errors == {"components": "Component name 'nope' is not valid"}


async def test_comment_attach_and_read_back(jira_server: JiraServer, jira_client: Jira) -> None:
    ref = await jira_client.create(
        fields={"project": {"key": "OPS"}, "issuetype": {"name": "Task"}, "summary": "s"}
    )
    await jira_client.comment(key=ref.key, body="first")
    await jira_client.attach(key=ref.key, filename="ünïcode name.txt", data=b"\x00\x01bytes")
    details = await jira_client.issue(key=ref.key)
    assert details.comments == ("first",)
    assert details.attachments == ("ünïcode name.txt",)
    assert details.status_category == "new"
    assert jira_server.dump()["issues"][ref.key]["attachments"] == {
        "ünïcode name.txt": b"\x00\x01bytes"
    }
    with pytest.raises(JiraRejected, match="empty"):
        await jira_client.attach(key=ref.key, filename="empty.txt", data=b"")


async def test_an_unknown_issue_is_rejected_with_404(jira_client: Jira) -> None:
    with pytest.raises(JiraRejected) as e:
        await jira_client.comment(key="OPS-999", body="x")
    assert e.value.status == 404
    assert "Issue Does Not Exist" in str(e.value)
