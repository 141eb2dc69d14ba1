"""The Jira-compatible test server answers as Jira Server/Data Center does.

Plain ``requests`` here (not selfheal's wrapper), so the wire format itself is checked:
status codes, Jira's error bodies, headers.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any, ClassVar

import pytest
import requests

from tests.support.fixtures.jira import JIRA_PASSWORD, JIRA_TOKEN, JIRA_USER
from tests.support.jira_server import JiraServer, parse_jql

API = "/rest/api/2"
AUTH = (JIRA_USER, JIRA_PASSWORD)
NOT_AUTHENTICATED = {
    "errorMessages": [
        "You are not authenticated. Authentication required to perform this operation."
    ],
    "errors": {},
}


def _fields(**over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "project": {"key": "OPS"},
        "issuetype": {"name": "Bug"},
        "summary": "api is crash-looping",
    }
    f.update(over)
    return {"fields": {k: v for k, v in f.items() if v is not None}}


def _create(s: JiraServer, **over: Any) -> requests.Response:
    return requests.post(f"{s.url}{API}/issue", json=_fields(**over), auth=AUTH, timeout=5)


class TestAuth:
    def test_server_info_is_public_and_names_a_server_deployment(
        self, jira_server: JiraServer
    ) -> None:
        r = requests.get(f"{jira_server.url}{API}/serverInfo", timeout=5)
        assert r.status_code == 200
        assert r.json()["deploymentType"] == "Server"
        assert r.json()["versionNumbers"][0] >= 8

    def test_basic_and_bearer_identify_the_user(self, jira_server: JiraServer) -> None:
        basic = requests.get(f"{jira_server.url}{API}/myself", auth=AUTH, timeout=5)
        bearer = requests.get(
            f"{jira_server.url}{API}/myself",
            headers={"Authorization": f"Bearer {JIRA_TOKEN}"},
            timeout=5,
        )
        assert basic.json()["name"] == bearer.json()["name"] == JIRA_USER

    @pytest.mark.parametrize(
        "headers",
        [
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic c2VsZmhlYWw6bm9wZQ=="},  # selfheal:nope
            {"Authorization": "Basic !!!"},
            {},
        ],
    )
    def test_wrong_or_missing_credentials_get_401_with_jiras_body(
        self, jira_server: JiraServer, headers: dict[str, str]
    ) -> None:
        r = requests.get(f"{jira_server.url}{API}/myself", headers=headers, timeout=5)
        assert r.status_code == 401
        assert r.json() == NOT_AUTHENTICATED

    def test_wrong_credentials_fail_even_on_public_resources(self, jira_server: JiraServer) -> None:
        r = requests.get(f"{jira_server.url}{API}/serverInfo", auth=("x", "y"), timeout=5)
        assert r.status_code == 401
        assert r.headers["X-Seraph-LoginReason"] == "AUTHENTICATED_FAILED"


class TestCreate:
    def test_create_answers_201_with_key_and_self(self, jira_server: JiraServer) -> None:
        r = _create(jira_server, priority={"name": "High"}, labels=["selfheal-x"])
        assert r.status_code == 201
        body = r.json()
        assert body["key"] == "OPS-1"
        assert body["self"] == f"{jira_server.url}{API}/issue/{body['id']}"
        got = requests.get(body["self"], auth=AUTH, timeout=5).json()
        assert got["fields"]["priority"]["name"] == "High"
        assert got["fields"]["status"]["statusCategory"]["key"] == "new"
        assert got["fields"]["reporter"]["name"] == JIRA_USER

    @pytest.mark.parametrize(
        ("over", "field", "message"),
        [
            ({"project": {"key": "NOPE"}}, "project", "valid project is required"),
            ({"issuetype": {"name": "Epic"}}, "issuetype", "valid issue type is required"),
            ({"summary": None}, "summary", "You must specify a summary of the issue."),
            ({"summary": "a\nb"}, "summary", "contains newline characters"),
            ({"summary": "x" * 256}, "summary", "less than 255 characters"),
            ({"priority": {"name": "Urgentest"}}, "priority", "The priority selected is invalid."),
            ({"labels": ["has space"]}, "labels", "contains spaces"),
            ({"components": [{"name": "nope"}]}, "components", "Component name 'nope'"),
            ({"customfield_99999": "x"}, "customfield_99999", "cannot be set"),
            ({"status": {"name": "Done"}}, "status", "cannot be set"),
            ({"description": "d" * 40000}, "description", "exceeds the allowed limit"),
        ],
    )
    def test_invalid_fields_get_400_naming_the_field(
        self, jira_server: JiraServer, over: dict[str, Any], field: str, message: str
    ) -> None:
        r = _create(jira_server, **over)
        assert r.status_code == 400
        body = r.json()
        assert body["errorMessages"] == []
        assert message in body["errors"][field]
        assert jira_server.issues() == []

    def test_several_bad_fields_are_reported_together(self, jira_server: JiraServer) -> None:
        r = _create(jira_server, priority={"name": "x"}, labels=["a b"])
        assert set(r.json()["errors"]) == {"priority", "labels"}

    def test_unknown_issue_gets_404_with_jiras_body(self, jira_server: JiraServer) -> None:
        r = requests.get(f"{jira_server.url}{API}/issue/OPS-404", auth=AUTH, timeout=5)
        assert r.status_code == 404
        assert r.json() == {"errorMessages": ["Issue Does Not Exist"], "errors": {}}

    def test_edit_adds_labels(self, jira_server: JiraServer) -> None:
        key = _create(jira_server).json()["key"]
        r = requests.put(
            f"{jira_server.url}{API}/issue/{key}",
            json={"update": {"labels": [{"add": "extra"}]}, "fields": {"summary": "renamed"}},
            auth=AUTH,
            timeout=5,
        )
        assert r.status_code == 204
        issue = jira_server.dump()["issues"][key]
        assert issue["fields"]["labels"] == ["extra"]
        assert issue["fields"]["summary"] == "renamed"


class TestSearch:
    def _search(self, s: JiraServer, jql: str) -> requests.Response:
        return requests.get(f"{s.url}{API}/search", params={"jql": jql}, auth=AUTH, timeout=5)

    def test_selfheals_query_finds_open_tickets_by_label(self, jira_server: JiraServer) -> None:
        mine = jira_server.add_issue(project="OPS", summary="a", labels=["selfheal-abc", "sre"])
        jira_server.add_issue(project="OPS", summary="b", labels=["selfheal-abcd"])
        jira_server.add_issue(project="OPS", summary="c", labels=["selfheal-abc"], status="Done")
        progressing = jira_server.add_issue(
            project="OPS", summary="d", labels=["selfheal-abc"], status="In Progress"
        )
        r = self._search(
            jira_server,
            'project = OPS AND labels = "selfheal-abc" AND statusCategory != Done '
            "ORDER BY created ASC",
        )
        assert r.status_code == 200
        body = r.json()
        assert [i["key"] for i in body["issues"]] == [mine, progressing]
        assert body["total"] == 2

    def test_in_lists_and_resolution(self, jira_server: JiraServer) -> None:
        a = jira_server.add_issue(project="OPS", summary="a", labels=["x"])
        b = jira_server.add_issue(project="OPS", summary="b", labels=["y"], status="Done")
        r = self._search(jira_server, "labels in (x, y) AND resolution = Unresolved")
        assert [i["key"] for i in r.json()["issues"]] == [a]
        r = self._search(jira_server, 'project = "OPS" AND status = Done')
        assert [i["key"] for i in r.json()["issues"]] == [b]

    def test_post_search_asks_for_fields(self, jira_server: JiraServer) -> None:
        jira_server.add_issue(project="OPS", summary="a", labels=["x"])
        r = requests.post(
            f"{jira_server.url}{API}/search",
            json={"jql": "labels = x", "fields": ["summary"], "maxResults": 10},
            auth=AUTH,
            timeout=5,
        )
        assert r.status_code == 200
        assert r.json()["issues"][0]["fields"] == {"summary": "a"}

    @pytest.mark.parametrize(
        ("jql", "message"),
        [
            ("project = OPS OR labels = x", "'OR'"),
            ("labels = x AND", "end of the query"),
            ('labels ~ "x"', "reserved JQL character"),
            ("labels in (x, y", "end of the query"),
            ("text = foo", "Field 'text' does not exist"),
            ("project = NOPE", "The value 'NOPE' does not exist for the field 'project'."),
            ("labels = x ORDER BY summary", "Not able to sort"),
        ],
    )
    def test_other_jql_gets_400_with_jiras_body(
        self, jira_server: JiraServer, jql: str, message: str
    ) -> None:
        r = self._search(jira_server, jql)
        assert r.status_code == 400
        body = r.json()
        assert body["errors"] == {}
        assert any(message in m for m in body["errorMessages"]), body

    def test_quoted_values_may_contain_reserved_characters(self) -> None:
        q = parse_jql(r'labels = "a \"b\" (c)" AND project = OPS')
        assert q.clauses[0].values == ('a "b" (c)',)


class TestCommentsAttachmentsTransitions:
    def test_comment_round_trip(self, jira_server: JiraServer) -> None:
        key = _create(jira_server).json()["key"]
        r = requests.post(
            f"{jira_server.url}{API}/issue/{key}/comment",
            json={"body": "h3. hi"},
            auth=AUTH,
            timeout=5,
        )
        assert r.status_code == 201
        assert r.json()["author"]["name"] == JIRA_USER
        got = requests.get(f"{jira_server.url}{API}/issue/{key}/comment", auth=AUTH, timeout=5)
        assert [c["body"] for c in got.json()["comments"]] == ["h3. hi"]

    def test_an_empty_comment_is_400(self, jira_server: JiraServer) -> None:
        key = _create(jira_server).json()["key"]
        r = requests.post(
            f"{jira_server.url}{API}/issue/{key}/comment", json={"body": " "}, auth=AUTH, timeout=5
        )
        assert r.status_code == 400
        assert "comment" in r.json()["errors"]

    def test_attachment_needs_the_xsrf_header(self, jira_server: JiraServer) -> None:
        key = _create(jira_server).json()["key"]
        url = f"{jira_server.url}{API}/issue/{key}/attachments"
        files = {"file": ("logs.txt", b"boom", "text/plain")}
        r = requests.post(url, files=files, auth=AUTH, timeout=5)
        assert r.status_code == 403
        assert r.text == "XSRF check failed"
        assert jira_server.dump()["issues"][key]["attachments"] == {}

    def test_attachment_bytes_come_back_identical(self, jira_server: JiraServer) -> None:
        key = _create(jira_server).json()["key"]
        data = bytes(range(256)) * 40  # binary, with NULs and CRLFs
        r = requests.post(
            f"{jira_server.url}{API}/issue/{key}/attachments",
            files={"file": ("core.bin", data, "application/octet-stream")},
            headers={"X-Atlassian-Token": "no-check"},
            auth=AUTH,
            timeout=5,
        )
        assert r.status_code == 200
        meta = r.json()[0]
        assert (meta["filename"], meta["size"]) == ("core.bin", len(data))
        content = requests.get(meta["content"], auth=AUTH, timeout=5)
        assert content.content == data

    def test_transitions_follow_the_workflow(self, jira_server: JiraServer) -> None:
        key = _create(jira_server).json()["key"]
        url = f"{jira_server.url}{API}/issue/{key}/transitions"
        names = {
            t["name"]: t["id"]
            for t in requests.get(url, auth=AUTH, timeout=5).json()["transitions"]
        }
        assert set(names) == {"Start Progress", "Done"}
        r = requests.post(url, json={"transition": {"id": names["Done"]}}, auth=AUTH, timeout=5)
        assert r.status_code == 204
        issue = requests.get(f"{jira_server.url}{API}/issue/{key}", auth=AUTH, timeout=5).json()
        assert issue["fields"]["status"]["statusCategory"]["name"] == "Done"
        assert issue["fields"]["resolution"]["name"] == "Done"
        again = requests.post(url, json={"transition": {"id": names["Done"]}}, auth=AUTH, timeout=5)
        assert again.status_code == 400
        assert "is not valid for this issue" in again.json()["errorMessages"][0]


class TestFaults:
    def test_throttle_answers_429_with_an_integer_retry_after(
        self, jira_server: JiraServer
    ) -> None:
        jira_server.throttle_next(1, retry_after=3)
        r = _create(jira_server)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "3"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert jira_server.issues() == []  # refused, not applied
        assert _create(jira_server).status_code == 201

    def test_failures_are_not_applied_and_can_target_one_route(
        self, jira_server: JiraServer
    ) -> None:
        jira_server.fail_next(2, status=503, method="POST", path=r"/rest/api/2/issue")
        ok = requests.get(f"{jira_server.url}{API}/myself", auth=AUTH, timeout=5)
        assert ok.status_code == 200
        assert [_create(jira_server).status_code for _ in range(3)] == [503, 503, 201]
        assert len(jira_server.issues()) == 1

    def test_a_delayed_answer_was_applied_although_the_client_gave_up(
        self, jira_server: JiraServer
    ) -> None:
        jira_server.delay_next(1.0, method="POST")
        with pytest.raises(requests.ReadTimeout):
            requests.post(f"{jira_server.url}{API}/issue", json=_fields(), auth=AUTH, timeout=0.3)
        assert [i["key"] for i in jira_server.issues()] == ["OPS-1"]

    def test_down_refuses_connections_and_up_keeps_the_state(self, jira_server: JiraServer) -> None:
        _create(jira_server)
        session = requests.Session()  # a kept-alive connection must fail too
        assert session.get(f"{jira_server.url}{API}/myself", auth=AUTH, timeout=5).ok
        jira_server.down()
        with pytest.raises(requests.ConnectionError):
            session.get(f"{jira_server.url}{API}/myself", auth=AUTH, timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{jira_server.url}{API}/myself", auth=AUTH, timeout=5)
        jira_server.up()
        r = requests.get(f"{jira_server.url}{API}/issue/OPS-1", auth=AUTH, timeout=5)
        assert r.status_code == 200

    def test_the_request_log_keeps_every_body(self, jira_server: JiraServer) -> None:
        _create(jira_server, description="needle-1234")
        log = jira_server.requests_received()
        assert any(b"needle-1234" in r.body for r in log)
        assert b"needle-1234" in jira_server.all_bytes_received()
        assert log[-1].status == 201


def test_the_demo_entry_point_serves_on_the_printed_url() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.jira_server",
            "--port",
            "0",
            "--user",
            "demo",
            "--component",
            "checkout",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "JIRA_SERVER_PASSWORD": "demo-pw"},
        cwd=pathlib.Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        r = requests.post(
            f"{url}{API}/issue",
            json=_fields(components=[{"name": "checkout"}]),
            auth=("demo", "demo-pw"),
            timeout=5,
        )
        assert r.status_code == 201
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class TestCloud:
    """Cloud mode answers as Jira Cloud does: v3 with ADF, search/jql, the old search gone."""

    V3 = "/rest/api/3"
    DOC: ClassVar[dict[str, Any]] = {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "boom"}]}],
    }

    def _create(self, s: JiraServer, **over: Any) -> requests.Response:
        return requests.post(f"{s.url}{self.V3}/issue", json=_fields(**over), auth=AUTH, timeout=5)

    def test_server_info_names_a_cloud_deployment(self, jira_cloud: JiraServer) -> None:
        for api in ("2", "3"):
            r = requests.get(f"{jira_cloud.url}/rest/api/{api}/serverInfo", timeout=5)
            assert r.json()["deploymentType"] == "Cloud"
        me = requests.get(f"{jira_cloud.url}{self.V3}/myself", auth=AUTH, timeout=5).json()
        assert me["accountId"]
        assert "name" not in me

    def test_server_mode_has_no_v3_and_no_search_jql(self, jira_server: JiraServer) -> None:
        r = requests.get(f"{jira_server.url}{self.V3}/serverInfo", auth=AUTH, timeout=5)
        assert r.status_code == 404
        r = requests.get(
            f"{jira_server.url}{API}/search/jql",
            params={"jql": "project = OPS"},
            auth=AUTH,
            timeout=5,
        )
        assert r.status_code == 404

    def test_the_old_search_is_gone_with_clouds_body(self, jira_cloud: JiraServer) -> None:
        for api in ("2", "3"):
            for method in ("GET", "POST"):
                r = requests.request(
                    method,
                    f"{jira_cloud.url}/rest/api/{api}/search",
                    params={"jql": "project = OPS"},
                    auth=AUTH,
                    timeout=5,
                )
                assert r.status_code == 410
                assert r.json() == {
                    "errorMessages": [
                        "The requested API has been removed. Please migrate to the "
                        "/rest/api/3/search/jql API. A full migration guideline is available "
                        "at https://developer.atlassian.com/changelog/#CHANGE-2046"
                    ],
                    "errors": {},
                }

    def test_v3_wants_an_atlassian_document_not_a_wiki_string(self, jira_cloud: JiraServer) -> None:
        r = self._create(jira_cloud, description="h3. Facts\n*bold*")
        assert r.status_code == 400
        assert r.json() == {
            "errorMessages": [],
            "errors": {
                "description": "Operation value must be an Atlassian Document (see the "
                "Atlassian Document Format)"
            },
        }
        bad = {"type": "doc", "version": 1, "content": [{"type": "text", "text": ""}]}
        assert self._create(jira_cloud, description=bad).status_code == 400
        ok = self._create(jira_cloud, description=self.DOC)
        assert ok.status_code == 201
        key = ok.json()["key"]
        v3 = requests.get(f"{jira_cloud.url}{self.V3}/issue/{key}", auth=AUTH, timeout=5)
        assert v3.json()["fields"]["description"] == self.DOC
        v2 = requests.get(f"{jira_cloud.url}{API}/issue/{key}", auth=AUTH, timeout=5)
        assert v2.json()["fields"]["description"] == "boom"

        url = f"{jira_cloud.url}{self.V3}/issue/{key}/comment"
        r = requests.post(url, json={"body": "a wiki string"}, auth=AUTH, timeout=5)
        assert r.status_code == 400
        assert r.json() == {
            "errorMessages": [],
            "errors": {"comment": "Comment body is not valid!"},
        }
        assert requests.post(url, json={"body": self.DOC}, auth=AUTH, timeout=5).status_code == 201
        # v2 on Cloud still takes a string.
        url2 = f"{jira_cloud.url}{API}/issue/{key}/comment"
        assert requests.post(url2, json={"body": "v2"}, auth=AUTH, timeout=5).status_code == 201
        comments = requests.get(url, auth=AUTH, timeout=5).json()["comments"]
        assert [c["body"]["type"] for c in comments] == ["doc", "doc"]

    def test_search_jql_pages_with_a_token_and_no_total(self, jira_cloud: JiraServer) -> None:
        keys = [
            jira_cloud.add_issue(project="OPS", summary=f"n{n}", labels=["x"]) for n in range(5)
        ]
        url = f"{jira_cloud.url}{self.V3}/search/jql"
        jql = "project = OPS AND labels = x ORDER BY created ASC"
        seen: list[str] = []
        token: str | None = None
        pages: list[dict[str, Any]] = []
        for _ in range(5):
            params: dict[str, Any] = {"jql": jql, "maxResults": 2, "fields": "labels"}
            if token:
                params["nextPageToken"] = token
            page = requests.get(url, params=params, auth=AUTH, timeout=5).json()
            pages.append(page)
            seen += [i["key"] for i in page["issues"]]
            token = page.get("nextPageToken")
            if not token:
                break
        assert seen == keys
        assert [p["isLast"] for p in pages] == [False, False, True]
        assert "nextPageToken" not in pages[-1]
        assert "total" not in pages[0]
        # Without fields: ids only. Unbounded JQL and a foreign token are refused.
        ids = requests.post(url, json={"jql": jql}, auth=AUTH, timeout=5).json()
        assert all(set(i) == {"id"} for i in ids["issues"])
        r = requests.post(url, json={"jql": ""}, auth=AUTH, timeout=5)
        assert r.status_code == 400
        assert r.json()["errorMessages"] == [
            "Unbounded JQL queries are not allowed here. Please add a search restriction to "
            "your query."
        ]
        other = {"jql": "project = OPS", "nextPageToken": pages[0]["nextPageToken"]}
        assert requests.post(url, json=other, auth=AUTH, timeout=5).status_code == 400

    def test_search_lags_unless_the_issue_is_reconciled(self, jira_cloud: JiraServer) -> None:
        jira_cloud.set_search_lag(30.0)
        created = self._create(jira_cloud, labels=["lagging"]).json()
        url = f"{jira_cloud.url}{self.V3}/search/jql"
        body: dict[str, Any] = {"jql": "project = OPS AND labels = lagging", "fields": ["labels"]}
        assert requests.post(url, json=body, auth=AUTH, timeout=5).json()["issues"] == []
        body["reconcileIssues"] = [int(created["id"])]
        hits = requests.post(url, json=body, auth=AUTH, timeout=5).json()["issues"]
        assert [h["key"] for h in hits] == [created["key"]]
        got = requests.get(
            f"{jira_cloud.url}{self.V3}/issue/{created['key']}", auth=AUTH, timeout=5
        )
        assert got.status_code == 200
