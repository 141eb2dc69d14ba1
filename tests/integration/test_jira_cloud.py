"""selfheal's Jira client against Jira Cloud's semantics (the test server's Cloud mode):
API v3 with Atlassian Document Format, ``search/jql`` paging, eventually consistent
search. The real ``jira`` package sends every request."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import requests

from selfheal.clients.jira import Jira, JiraCredentials
from tests.support.fixtures.jira import JIRA_PASSWORD, JIRA_USER
from tests.support.jira_server import JiraServer, adf_text, adf_valid

AUTH = (JIRA_USER, JIRA_PASSWORD)
DESCRIPTION = """h2. Deployment shop/api was not healed
Crash loop \\| exit 137

h3. Facts
||Workload|Deployment shop/api|
||Exit code|137 (OOMKilled)|

h3. Stack trace
python: *ValueError* bad input
{code:python}
Traceback (most recent call last):
  File "app.py", line 3, in <module>
ValueError: bad input
{code}

h3. Not collected
* metrics: Prometheus unavailable
* events: forbidden"""


def _fields(**over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "project": {"key": "OPS"},
        "issuetype": {"name": "Incident"},
        "summary": "[selfheal] shop/api: CrashLoopBackOff",
        "labels": ["selfheal-abc123", "selfheal"],
    }
    f.update(over)
    return f


def _nodes(doc: Any, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == kind:
                found.append(node)
            stack.extend(node.get("content") or [])
    return found


async def test_create_search_comment_attach_transition_on_cloud(
    jira_cloud: JiraServer, jira_cloud_client: Jira
) -> None:
    jira = jira_cloud_client
    ref = await jira.create(fields=_fields(description=DESCRIPTION))
    assert jira.cloud is True
    assert ref.labels == ("selfheal-abc123", "selfheal")

    found = await jira.search_open(project="OPS", label="selfheal-abc123")
    assert [(r.key, r.url, r.labels) for r in found] == [(ref.key, ref.url, ref.labels)]

    await jira.comment(key=ref.key, body="h3. Recurred\n*again* selfheal-occurrence-1a2b")
    await jira.attach(key=ref.key, filename="logs.txt", data=b"line 1\nline 2\n")
    assert await jira.transition(key=ref.key, name="Done") is True
    details = await jira.issue(key=ref.key)
    assert details.status_category == "done"
    assert details.attachments == ("logs.txt",)
    assert details.comments == ("Recurred\nagain selfheal-occurrence-1a2b",)
    # Closed: no longer open, still found by its label.
    assert await jira.search_open(project="OPS", label="selfheal-abc123") == []
    adopted = await jira.find_by_label(project="OPS", label="selfheal-abc123")
    assert [r.key for r in adopted] == [ref.key]

    stored = jira_cloud.dump()["issues"][ref.key]
    doc = stored["fields"]["description"]
    assert adf_valid(doc)
    [code] = _nodes(doc, "codeBlock")
    assert code["attrs"] == {"language": "python"}
    assert adf_text(code).endswith("ValueError: bad input")
    assert len(_nodes(doc, "table")) == 1
    assert len(_nodes(doc, "listItem")) == 2
    text = adf_text(doc)
    for piece in ("Crash loop | exit 137", "Exit code | 137 (OOMKilled)", "events: forbidden"):
        assert piece in text
    assert adf_valid(stored["comments"][0])
    assert stored["attachments"] == {"logs.txt": b"line 1\nline 2\n"}

    # After serverInfo told it Cloud, everything went to v3; the old search never.
    paths = [r.path for r in jira_cloud.requests_received()]
    assert paths[0] == "/rest/api/2/serverInfo"
    assert all(p.startswith("/rest/api/3/") for p in paths[1:]), paths
    assert not any(p.endswith("/search") for p in paths)
    assert "/rest/api/3/search/jql" in paths


async def test_search_hides_a_new_issue_for_the_lag_then_shows_it(
    jira_cloud: JiraServer, jira_cloud_client: Jira
) -> None:
    jira = jira_cloud_client
    jira_cloud.set_search_lag(1.5)
    created_at = time.monotonic()
    ref = await jira.create(fields=_fields())
    # Not in search yet, by either query; GET by key is current.
    assert await jira.search_open(project="OPS", label="selfheal-abc123") == []
    assert await jira.find_by_label(project="OPS", label="selfheal-abc123") == []
    assert (await jira.issue(key=ref.key)).labels == ("selfheal-abc123", "selfheal")

    found: list[str] = []
    for _ in range(50):  # bounded: 50 x 0.1 s, well past the lag
        found = [r.key for r in await jira.find_by_label(project="OPS", label="selfheal-abc123")]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found == [ref.key]
    assert time.monotonic() - created_at >= 1.4
    assert [r.key for r in await jira.search_open(project="OPS", label="selfheal-abc123")] == [
        ref.key
    ]


async def test_a_relabelled_issue_keeps_its_old_labels_in_search_for_the_lag(
    jira_cloud: JiraServer, jira_cloud_client: Jira
) -> None:
    key = jira_cloud.add_issue(project="OPS", summary="filed by a person", labels=["old"])
    jira_cloud.set_search_lag(1.0)
    r = await asyncio.to_thread(
        requests.put,
        f"{jira_cloud.url}/rest/api/3/issue/{key}",
        json={"update": {"labels": [{"add": "selfheal-new"}, {"remove": "old"}]}},
        auth=AUTH,
        timeout=5,
    )
    assert r.status_code == 204
    assert await jira_cloud_client.find_by_label(project="OPS", label="selfheal-new") == []
    # Matched on the stale index (the fields returned are read fresh).
    [stale] = await jira_cloud_client.find_by_label(project="OPS", label="old")
    assert stale.key == key
    await asyncio.sleep(1.1)
    [fresh] = await jira_cloud_client.find_by_label(project="OPS", label="selfheal-new")
    assert (fresh.key, fresh.labels) == (key, ("selfheal-new",))
    assert await jira_cloud_client.find_by_label(project="OPS", label="old") == []


async def test_find_by_label_pages_with_next_page_token(
    jira_cloud: JiraServer, jira_cloud_client: Jira
) -> None:
    keys = [
        jira_cloud.add_issue(
            project="OPS", summary=f"n{n}", labels=["selfheal-many"], status=status
        )
        for n, status in enumerate(["Open", "Done", "In Progress"] * 40)
    ]
    found = await jira_cloud_client.find_by_label(project="OPS", label="selfheal-many")
    assert [r.key for r in found] == keys  # oldest first, every status
    searches = [r for r in jira_cloud.requests_received() if r.path.endswith("/search/jql")]
    assert len(searches) == 3  # 50 + 50 + 20
    assert "nextPageToken" not in searches[0].query
    assert all("nextPageToken=" in s.query for s in searches[1:])
    open_ = await jira_cloud_client.search_open(project="OPS", label="selfheal-many")
    assert len(open_) == 80


async def test_server_mode_is_detected_and_keeps_wiki_strings(
    jira_server: JiraServer, jira_credentials: JiraCredentials
) -> None:
    jira = Jira(url=jira_server.url, credentials=jira_credentials, timeout=2.0)
    try:
        ref = await jira.create(fields=_fields(description=DESCRIPTION))
        await jira.comment(key=ref.key, body="*again*")
        assert jira.cloud is False
        assert [r.labels for r in await jira.find_by_label(project="OPS", label="selfheal")] == [
            ("selfheal-abc123", "selfheal")
        ]
    finally:
        await jira.close()
    stored = jira_server.dump()["issues"][ref.key]
    assert stored["fields"]["description"] == DESCRIPTION
    assert stored["comments"] == ["*again*"]
    assert all(r.path.startswith("/rest/api/2/") for r in jira_server.requests_received())
