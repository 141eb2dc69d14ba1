"""A Jira-REST-compatible server for tests and the demo (Jira Server/Data Center, API v2).

It answers what the ``jira`` Python client (3.10) sends, with Jira's status codes and
error bodies (``{"errorMessages": [...], "errors": {"field": "message"}}``):

    GET  /rest/api/2/serverInfo | field | myself | priority | issuetype | project[/{key}]
    POST /rest/api/2/issue                       create (validates project, issuetype,
                                                 summary, priority, labels, components,
                                                 custom fields)
    GET|PUT /rest/api/2/issue/{key}
    GET|POST /rest/api/2/search                  a small JQL subset, see ``parse_jql``
    GET|POST /rest/api/2/issue/{key}/comment
    POST /rest/api/2/issue/{key}/attachments     multipart; needs X-Atlassian-Token: no-check
    GET|POST /rest/api/2/issue/{key}/transitions
    GET|POST /rest/api/2/issue/{key}/watchers    POST a JSON string: a user name (Server)
                                                 or an account id (Cloud)
    GET  /rest/api/2/attachment/{id}, /secure/attachment/{id}/{filename}

Auth is HTTP basic (username + password/token) or bearer (a personal access token).
Faults can be queued for tests: ``fail_next``, ``throttle_next``, ``delay_next`` (the
request is applied, the answer comes late: a client timeout after a create that
happened), ``down``/``up``. ``dump()`` returns the whole state and a raw log of every
request received, so a test can search every byte sent for secrets.

**Cloud mode** (``deployment="Cloud"``) answers as Jira Cloud does today: ``serverInfo``
says ``deploymentType: Cloud``; REST API v3 (``/rest/api/3/...``) takes and returns
descriptions and comment bodies as Atlassian Document Format (a wiki string gets Cloud's
400); v2 stays for strings; search is ``GET|POST /rest/api/{2,3}/search/jql`` with
``nextPageToken`` paging (``isLast``; the token is absent on the last page) and refuses
unbounded JQL, while the old ``/rest/api/{2,3}/search`` answers 410 Gone with Cloud's
body. Search is **eventually consistent**: for ``search_lag`` seconds after an issue is
created or its labels change, search matches it as it was before (a new issue not at
all), unless its id is in ``reconcileIssues``; the fields of a hit and GET by key are
always current. Server mode keeps
``search_lag`` 0 unless set (``set_search_lag``).

Run ``python -m tests.support.jira_server --port 8089`` for the demo; it prints its URL.
Loopback only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import dataclasses
import datetime
import email.parser
import email.policy
import functools
import hashlib
import http.server
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

Json = dict[str, Any]

REST = "/rest/api/2"
HOST = "127.0.0.1"
_API_PATH = re.compile(r"/rest/api/(2|3|latest)(/.*)?")
SERVER, CLOUD = "Server", "Cloud"
SEARCH_REMOVED = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
    "A full migration guideline is available at "
    "https://developer.atlassian.com/changelog/#CHANGE-2046"
)
NOT_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
COMMENT_NOT_VALID = "Comment body is not valid!"
UNBOUNDED = (
    "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
)
# ADF node types this server accepts (the ones Jira's editor produces, less media).
_ADF_NODES = {
    "doc", "paragraph", "text", "hardBreak", "heading", "codeBlock", "bulletList",
    "orderedList", "listItem", "table", "tableRow", "tableHeader", "tableCell", "rule",
    "blockquote", "panel", "mention", "emoji", "inlineCard", "status", "date",
}  # fmt: skip


def adf_valid(doc: Any) -> bool:
    """A document Jira Cloud would store: ``doc`` version 1, known nodes, no empty text."""
    if not isinstance(doc, Mapping) or doc.get("type") != "doc" or doc.get("version") != 1:
        return False

    def ok(node: Any, depth: int) -> bool:
        if depth > 50 or not isinstance(node, Mapping) or node.get("type") not in _ADF_NODES:
            return False
        if node["type"] == "text":
            return isinstance(node.get("text"), str) and node["text"] != ""
        content = node.get("content", [])
        return isinstance(content, list) and all(ok(c, depth + 1) for c in content)

    return isinstance(doc.get("content"), list) and all(ok(c, 1) for c in doc["content"])


def adf_text(node: Any) -> str:
    """The plain text of an ADF node (what Cloud's v2 API shows for it): blocks one a
    line, table cells separated by `` | ``."""
    if isinstance(node, str) or node is None:
        return node or ""
    if not isinstance(node, Mapping):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    if node.get("type") == "hardBreak":
        return "\n"
    kids = [adf_text(c) for c in node.get("content") or []]
    if node.get("type") == "tableRow":
        return " | ".join(kids)
    if node.get("type") in ("paragraph", "heading", "codeBlock"):
        return "".join(kids)
    return "\n".join(kids)


def as_adf(value: Any) -> Any:
    """A stored body as v3 shows it: ADF as is, a string (sent through v2) as paragraphs."""
    if value is None or isinstance(value, Mapping):
        return value
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []}
            for line in str(value).split("\n")
        ],
    }


# Status categories as Jira ships them (ids and keys are fixed in every Jira).
_CATEGORIES: dict[str, Json] = {
    "new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
    "indeterminate": {
        "id": 4,
        "key": "indeterminate",
        "colorName": "yellow",
        "name": "In Progress",
    },
    "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"},
}
# The default workflow (a simplified "classic" Jira workflow): status -> category.
STATUSES: dict[str, tuple[str, str]] = {
    "Open": ("1", "new"),
    "In Progress": ("3", "indeterminate"),
    "Reopened": ("4", "new"),
    "Done": ("10001", "done"),
}
# (transition id, name, target status, from-statuses)
TRANSITIONS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("11", "Start Progress", "In Progress", ("Open", "Reopened")),
    ("21", "Stop Progress", "Open", ("In Progress",)),
    ("31", "Done", "Done", ("Open", "In Progress", "Reopened")),
    ("41", "Reopen", "Reopened", ("Done",)),
)
PRIORITIES: tuple[tuple[str, str], ...] = (
    ("1", "Highest"),
    ("2", "High"),
    ("3", "Medium"),
    ("4", "Low"),
    ("5", "Lowest"),
)
ISSUE_TYPES: tuple[tuple[str, str], ...] = (
    ("1", "Bug"),
    ("3", "Task"),
    ("10000", "Incident"),
)
SYSTEM_FIELDS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("description", "Description"),
    ("project", "Project"),
    ("issuetype", "Issue Type"),
    ("priority", "Priority"),
    ("labels", "Labels"),
    ("components", "Component/s"),
    ("status", "Status"),
    ("resolution", "Resolution"),
    ("created", "Created"),
    ("updated", "Updated"),
    ("reporter", "Reporter"),
    ("assignee", "Assignee"),
    ("comment", "Comment"),
    ("attachment", "Attachment"),
)
# jira.text.field.character.limit, Jira's default for descriptions and comments.
TEXT_LIMIT = 32767
_TOO_LONG = "The entered text is too long. It exceeds the allowed limit of 32,767 characters."
# Fields Jira rejects on create/edit with "cannot be set" (computed by Jira itself).
_READ_ONLY = {"status", "resolution", "created", "updated", "comment", "attachment", "reporter"}


def _account_id(user: str) -> str:
    # Cloud's account ids are opaque; a stable one per user name will do.
    return "5b10ac8d82e05b22cc7d" + user.encode().hex()[:20].ljust(20, "0")


def _user_json(user: str, *, cloud: bool) -> Json:
    if cloud:  # Cloud has account ids, no user names
        return {"accountId": _account_id(user), "displayName": user, "active": True}
    return {"name": user, "key": user, "displayName": user, "active": True}


def _err(messages: Sequence[str] = (), errors: Mapping[str, str] | None = None) -> Json:
    return {"errorMessages": list(messages), "errors": dict(errors or {})}


def _ref_name(ref: Any) -> str:
    return str(ref.get("name") if isinstance(ref, Mapping) else ref)


def _jira_time(t: float) -> str:
    # Jira's own format: 2026-11-28T08:00:00.000+0000
    d = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


class JiraHttpError(Exception):
    """Raised inside a handler: becomes an HTTP answer with Jira's error body."""

    def __init__(
        self,
        status: int,
        messages: Sequence[str] = (),
        errors: Mapping[str, str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        text: str | None = None,
    ) -> None:
        super().__init__(f"{status}: {messages} {errors}")
        self.status = status
        self.body = _err(messages, errors)
        self.headers = dict(headers or {})
        self.text = text


# --- JQL -------------------------------------------------------------------------------

_JQL_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>!=|=|\(|\)|,)
      | (?P<word>[A-Za-z0-9_.\-*]+)
    )""",
    re.VERBOSE,
)
JQL_FIELDS = {
    "project": "project",
    "labels": "labels",
    "statuscategory": "statusCategory",
    "status": "status",
    "resolution": "resolution",
    "key": "key",
    "issue": "key",
    "issuekey": "key",
    "issuetype": "issuetype",
    "type": "issuetype",
    "priority": "priority",
}
_JQL_KEYWORDS = {"and", "or", "not", "in", "is", "empty", "null", "order", "by", "asc", "desc"}


@dataclasses.dataclass(frozen=True)
class JqlClause:
    field: str  # canonical: project, labels, statusCategory, status, ...
    op: str  # "=", "!=", "in", "not in", "is", "is not"
    values: tuple[str, ...]  # empty for IS [NOT] EMPTY


@dataclasses.dataclass(frozen=True)
class JqlQuery:
    clauses: tuple[JqlClause, ...]
    order_by: tuple[tuple[str, bool], ...]  # (field, descending)


def _jql_error(message: str) -> JiraHttpError:
    return JiraHttpError(400, [f"Error in the JQL Query: {message}"])


def _tokens(jql: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(jql):
        if jql[pos:].strip() == "":
            break
        m = _JQL_TOKEN.match(jql, pos)
        if m is None or m.end() == pos:
            ch = jql[pos:].lstrip()[:1]
            raise _jql_error(
                f"The character '{ch}' is a reserved JQL character. You must enclose it in a "
                f"string or use the escape '\\u{ord(ch):04x}' instead. "
                f"(line 1, character {pos + 1})"
            )
        kind = m.lastgroup or ""
        text = m.group(kind)
        if kind == "str":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        out.append((kind, text, m.start(kind) + 1))
        pos = m.end()
    return out


def parse_jql(jql: str) -> JqlQuery:
    """Parse the subset of JQL selfheal sends; raise ``JiraHttpError`` 400 for the rest.

    Grammar: ``clause (AND clause)* [ORDER BY field [ASC|DESC] (, field [ASC|DESC])*]``
    where a clause is ``field (=|!=) value``, ``field [NOT] IN (value, ...)`` or
    ``field IS [NOT] EMPTY``. ``OR``, ``NOT`` before a clause, parentheses around
    clauses, functions and other operators are refused (a real Jira accepts them; this
    server does not need them and says so).
    """
    toks = _tokens(jql)
    i = 0

    def peek() -> tuple[str, str, int] | None:
        return toks[i] if i < len(toks) else None

    def take(what: str) -> tuple[str, str, int]:
        nonlocal i
        t = peek()
        if t is None:
            raise _jql_error(f"Expecting {what} but got the end of the query.")
        i += 1
        return t

    def word_is(t: tuple[str, str, int] | None, *words: str) -> bool:
        return t is not None and t[0] == "word" and t[1].lower() in words

    def value() -> str:
        kind, text, col = take("a value")
        if kind == "op" or (kind == "word" and text.lower() in _JQL_KEYWORDS):
            raise _jql_error(
                f"Expecting either a value, list or function but got '{text}'. You must "
                f"surround '{text}' in quotation marks to use it as a value. "
                f"(line 1, character {col})"
            )
        return text

    clauses: list[JqlClause] = []
    order: list[tuple[str, bool]] = []
    if not toks:
        return JqlQuery((), ())
    while True:
        kind, name, col = take("a field name")
        if word_is((kind, name, col), "or", "not") or kind != "word":
            raise _jql_error(
                f"'{name}' at character {col} is not supported by this test server: only "
                "clauses joined by AND are."
            )
        field = JQL_FIELDS.get(name.lower())
        if field is None:
            raise JiraHttpError(
                400,
                [f"Field '{name}' does not exist or you do not have permission to view it."],
            )
        t = take("an operator")
        if t[0] == "op" and t[1] in ("=", "!="):
            clauses.append(JqlClause(field, t[1], (value(),)))
        elif word_is(t, "in") or (word_is(t, "not") and word_is(peek(), "in")):
            op = "in"
            if word_is(t, "not"):
                take("'in'")
                op = "not in"
            if take("'('")[1] != "(":
                raise _jql_error(f"Expecting '(' after '{op.upper()}'.")
            vals = [value()]
            while (t2 := take("')'"))[1] == ",":
                vals.append(value())
            if t2[1] != ")":
                raise _jql_error(f"Expecting ')' but got '{t2[1]}'. (line 1, character {t2[2]})")
            clauses.append(JqlClause(field, op, tuple(vals)))
        elif word_is(t, "is"):
            op = "is"
            if word_is(peek(), "not"):
                take("'not'")
                op = "is not"
            if not word_is(take("EMPTY"), "empty", "null"):
                raise _jql_error("Expecting 'EMPTY' or 'NULL' after 'IS'.")
            clauses.append(JqlClause(field, op, ()))
        else:
            raise _jql_error(
                f"Expecting operator but got '{t[1]}'. The valid operators are '=', '!=', "
                f"'IN', 'NOT IN', 'IS' and 'IS NOT' on this server. (line 1, character {t[2]})"
            )
        nxt = peek()
        if nxt is None:
            break
        if word_is(nxt, "and"):
            take("AND")
            continue
        if word_is(nxt, "order"):
            take("ORDER")
            if not word_is(take("BY"), "by"):
                raise _jql_error("Expecting 'by' after 'order'.")
            while True:
                k2, fname, _c2 = take("a field name")
                if k2 != "word" or fname.lower() not in {"created", "updated", "key", "priority"}:
                    raise JiraHttpError(400, [f"Not able to sort using field '{fname}'."])
                desc = False
                if word_is(peek(), "asc", "desc"):
                    desc = take("ASC or DESC")[1].lower() == "desc"
                order.append((fname.lower(), desc))
                if peek() is None:
                    break
                if take("','")[1] != ",":
                    raise _jql_error("Expecting ',' between ORDER BY fields.")
            break
        if word_is(nxt, "or"):
            raise _jql_error(
                f"'OR' at character {nxt[2]} is not supported by this test server: only "
                "clauses joined by AND are."
            )
        raise _jql_error(
            f"Expecting either 'OR' or 'AND' but got '{nxt[1]}'. Only AND is supported by "
            f"this test server. (line 1, character {nxt[2]})"
        )
    return JqlQuery(tuple(clauses), tuple(order))


# --- state -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProjectSpec:
    key: str
    name: str = ""
    components: tuple[str, ...] = ()
    issue_types: tuple[str, ...] = tuple(n for _, n in ISSUE_TYPES)


@dataclasses.dataclass(kw_only=True)
class _Attachment:
    id: str
    filename: str
    data: bytes
    mime_type: str
    created: float
    author: str


@dataclasses.dataclass(kw_only=True)
class _Comment:
    id: str
    body: Any  # a string, or an ADF document (Cloud's v3)
    author: str
    created: float


@dataclasses.dataclass(kw_only=True)
class _Issue:
    id: str
    key: str
    project: str
    fields: Json  # settable fields as stored (summary, description, labels, ...)
    status: str
    created: float
    updated: float
    reporter: str
    comments: list[_Comment] = dataclasses.field(default_factory=list)
    attachments: list[_Attachment] = dataclasses.field(default_factory=list)
    transitions: list[Json] = dataclasses.field(default_factory=list)  # history
    watchers: list[str] = dataclasses.field(default_factory=list)
    """User names; Jira's default autowatch makes the reporter the first."""
    indexed_labels: list[str] | None = None
    """What search sees while ``index_due`` is ahead: the labels before the last change,
    ``None`` for an issue search does not know yet."""
    index_due: float = 0.0
    """Monotonic time from which search sees the issue as it is."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One request as received: everything the client sent."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    status: int  # what the server answered (0: connection dropped without an answer)


@dataclasses.dataclass(kw_only=True)
class _Fault:
    kind: str  # fail | throttle | delay | drip
    remaining: int
    method: str | None
    path: re.Pattern[str] | None
    status: int = 503
    retry_after: int | None = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or self.path.fullmatch(path) is not None


class JiraServer:
    """An in-memory Jira on 127.0.0.1. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        port: int = 0,
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        projects: Sequence[ProjectSpec] = (ProjectSpec(key="OPS", components=("checkout",)),),
        custom_fields: Mapping[str, str] | None = None,
        allow_anonymous: bool = False,
        max_attachment_size: int = 10 * 1024 * 1024,
        deployment: str = SERVER,
        search_lag: float = 0.0,
        people: Sequence[str] = ("oncall-alice", "oncall-bob"),
    ) -> None:
        """``users``: username -> password (basic auth); ``tokens``: bearer token ->
        username; ``custom_fields``: id (``customfield_NNNNN``) -> name; ``deployment``:
        ``"Server"`` (API v2, wiki strings) or ``"Cloud"`` (see the module docstring);
        ``search_lag``: seconds a created or relabelled issue stays stale in search;
        ``people``: users besides ``users`` who exist (assignable, may watch) but do not
        log in here."""
        if deployment not in (SERVER, CLOUD):
            raise ValueError(f"deployment: {deployment!r} is neither {SERVER!r} nor {CLOUD!r}")
        self.deployment = deployment
        self.search_lag = search_lag
        self.users = dict(users if users is not None else {"selfheal": "s3cret-jira-password"})
        self.tokens = dict(tokens if tokens is not None else {"pat-s3cret-token": "selfheal"})
        self.people = (*self.users, *(p for p in people if p not in self.users))
        self.projects = {p.key: p for p in projects}
        self._project_ids = {p.key: str(10000 + n) for n, p in enumerate(projects)}
        self.custom_fields = dict(
            custom_fields
            if custom_fields is not None
            else {"customfield_10010": "Team", "customfield_10011": "Runbook URL"}
        )
        self.allow_anonymous = allow_anonymous
        self.max_attachment_size = max_attachment_size
        """Bytes; larger uploads get 413 (Jira's default limit is 10 MB)."""
        self._port = port
        self._lock = threading.RLock()
        self._issues: dict[str, _Issue] = {}
        self._next_id = 10000
        self._next_num: collections.Counter[str] = collections.Counter()
        self._next_comment = 10000
        self._next_attachment = 10000
        self._log: list[RequestRecord] = []
        self._faults: list[_Fault] = []
        self._down = False
        self._stopping = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> JiraServer:
        self._stopping.clear()
        self._listen()
        return self

    def _listen(self) -> None:
        handler = type("Handler", (_Handler,), {"jira": self})
        httpd = http.server.ThreadingHTTPServer((HOST, self._port), handler)
        httpd.daemon_threads = True
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _close_listener(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed answers
        self._close_listener()

    def __enter__(self) -> JiraServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault injection --

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        retry_after: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` (not applied).
        ``path`` is a regular expression matched against the whole URL path."""
        self._add(
            _Fault(
                kind="fail",
                remaining=n,
                status=status,
                retry_after=retry_after,
                method=method,
                path=re.compile(path) if path else None,
            )
        )

    def throttle_next(
        self,
        n: int = 1,
        *,
        retry_after: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with 429 and ``Retry-After`` (seconds)."""
        self._add(
            _Fault(
                kind="throttle",
                remaining=n,
                status=429,
                retry_after=retry_after,
                method=method,
                path=re.compile(path) if path else None,
            )
        )

    def delay_next(
        self, seconds: float, *, n: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Apply the next ``n`` matching requests, then wait ``seconds`` before answering:
        a client with a shorter timeout gives up although the change happened."""
        self._add(
            _Fault(
                kind="delay",
                remaining=n,
                delay=seconds,
                method=method,
                path=re.compile(path) if path else None,
            )
        )

    def drip_next(
        self,
        interval: float,
        *,
        n: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Apply the next ``n`` matching requests, then answer one byte every ``interval``
        seconds: each read is quick, so only a client's deadline for the whole call
        ends the wait (a per-read timeout never fires)."""
        self._add(
            _Fault(
                kind="drip",
                remaining=n,
                delay=interval,
                method=method,
                path=re.compile(path) if path else None,
            )
        )

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.remaining > 0 and f.matches(method, path):
                    f.remaining -= 1
                    return f
            return None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def down(self) -> None:
        """Stop answering: new connections are refused, open ones are dropped."""
        with self._lock:
            self._down = True
        self._close_listener()

    def up(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            self._down = False
        if self._httpd is None:
            self._listen()

    @property
    def is_down(self) -> bool:
        return self._down

    @property
    def cloud(self) -> bool:
        return self.deployment == CLOUD

    def set_search_lag(self, seconds: float) -> None:
        """From now on, changes reach search ``seconds`` late (0: at once)."""
        with self._lock:
            self.search_lag = seconds

    def _reindex(self, issue: _Issue, *, new: bool) -> None:
        # Called under the lock, before the change: search keeps the old view a while.
        if self.search_lag <= 0:
            return
        now = time.monotonic()
        if issue.index_due <= now:  # not already stale: keep what search saw so far
            issue.indexed_labels = None if new else list(issue.fields.get("labels") or [])
        issue.index_due = now + self.search_lag

    def _search_labels(self, issue: _Issue, reconcile: set[str]) -> list[str] | None:
        """The labels search sees for ``issue`` (``None``: it does not see the issue)."""
        if issue.index_due > time.monotonic() and issue.id not in reconcile:
            return issue.indexed_labels
        return list(issue.fields.get("labels") or [])

    # -- inspection --

    def dump(self) -> Json:
        """Every issue with fields, comments, attachments (bytes) and transitions, and the
        raw log of requests (``requests``: a list of ``RequestRecord``)."""
        with self._lock:
            return {
                "issues": {k: self._dump_issue(i) for k, i in self._issues.items()},
                "requests": list(self._log),
            }

    def _dump_issue(self, i: _Issue) -> Json:
        return {
            "id": i.id,
            "key": i.key,
            "project": i.project,
            "fields": json.loads(json.dumps(i.fields)),
            "status": i.status,
            "comments": [c.body for c in i.comments],
            "attachments": {a.filename: a.data for a in i.attachments},
            "attachment_list": [(a.filename, a.data) for a in i.attachments],
            "transitions": list(i.transitions),
            "watchers": list(i.watchers),
        }

    def issues(self) -> list[Json]:
        with self._lock:
            return [self._dump_issue(i) for i in self._issues.values()]

    def requests_received(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def all_bytes_received(self) -> bytes:
        """Every request line, header and body received, concatenated."""
        with self._lock:
            parts: list[bytes] = []
            for r in self._log:
                parts.append(f"{r.method} {r.path}?{r.query}\n".encode())
                parts.extend(f"{k}: {v}\n".encode() for k, v in r.headers.items())
                parts.append(r.body)
            return b"".join(parts)

    def add_issue(
        self, *, project: str, summary: str, labels: Sequence[str] = (), status: str = "Open"
    ) -> str:
        """Seed an issue as if a person had filed it; returns its key."""
        with self._lock:
            issue = self._new_issue(
                project,
                {
                    "summary": summary,
                    "labels": list(labels),
                    "issuetype": {"id": "1", "name": "Bug"},
                    "description": None,
                    "priority": None,
                    "components": [],
                },
                "admin",
            )
            issue.status = status
            return issue.key

    # -- the model --

    def _new_issue(self, project: str, fields: Json, user: str) -> _Issue:
        self._next_id += 1
        self._next_num[project] += 1
        now = time.time()
        issue = _Issue(
            id=str(self._next_id),
            key=f"{project}-{self._next_num[project]}",
            project=project,
            fields=fields,
            status="Open",
            created=now,
            updated=now,
            reporter=user,
            watchers=[user],
        )
        self._reindex(issue, new=True)
        self._issues[issue.key] = issue
        return issue

    def person(self, ref: Any) -> str | None:
        """The user a REST user reference names: ``{"name": ...}`` on Server,
        ``{"accountId": ...}`` on Cloud (a bare string for the watchers resource)."""
        if isinstance(ref, Mapping):
            ref = ref.get("accountId") if self.cloud else ref.get("name")
        if not isinstance(ref, str):
            return None
        if self.cloud:
            return next((u for u in self.people if _account_id(u) == ref), None)
        return ref if ref in self.people else None

    def watchers_of(self, key: str) -> list[str]:
        """User names watching the issue (the reporter, by autowatch, and those added)."""
        with self._lock:
            return list(self.find_issue(key).watchers)

    def find_issue(self, key_or_id: str) -> _Issue:
        with self._lock:
            issue = self._issues.get(key_or_id.upper()) or next(
                (i for i in self._issues.values() if i.id == key_or_id), None
            )
        if issue is None:
            raise JiraHttpError(404, ["Issue Does Not Exist"])
        return issue

    def project_json(self, base: str, key: str) -> Json:
        p = self.projects[key]
        pid = self._project_ids[key]
        return {
            "self": f"{base}{REST}/project/{pid}",
            "id": pid,
            "key": key,
            "name": p.name or key,
            "projectTypeKey": "software",
            "components": [
                {"self": f"{base}{REST}/component/{pid}{n}", "id": f"{pid}{n}", "name": c}
                for n, c in enumerate(p.components)
            ],
            "issueTypes": [
                {"self": f"{base}{REST}/issuetype/{i}", "id": i, "name": n, "subtask": False}
                for i, n in ISSUE_TYPES
                if n in p.issue_types
            ],
        }

    def project_by(self, ref: Mapping[str, Any] | None) -> str | None:
        if not isinstance(ref, Mapping):
            return None
        if isinstance(ref.get("key"), str) and ref["key"] in self.projects:
            return str(ref["key"])
        pid = str(ref.get("id", ""))
        return next((k for k, v in self._project_ids.items() if v == pid), None)

    def _body(self, value: Any, api: str) -> Any:
        """A description or comment body as API ``api`` shows it."""
        if not self.cloud:
            return value
        return as_adf(value) if api == "3" else (adf_text(value) if value is not None else None)

    def issue_json(
        self, base: str, issue: _Issue, fields: set[str] | None = None, *, api: str = "2"
    ) -> Json:
        status_id, cat = STATUSES[issue.status]
        f = issue.fields
        everything: Json = {
            "summary": f.get("summary"),
            "description": self._body(f.get("description"), api),
            "project": {
                "self": f"{base}{REST}/project/{self._project_ids[issue.project]}",
                "id": self._project_ids[issue.project],
                "key": issue.project,
                "name": self.projects[issue.project].name or issue.project,
            },
            "issuetype": {**f["issuetype"], "subtask": False},
            "priority": f.get("priority"),
            "labels": list(f.get("labels") or []),
            "components": list(f.get("components") or []),
            "status": {
                "self": f"{base}{REST}/status/{status_id}",
                "id": status_id,
                "name": issue.status,
                "statusCategory": _CATEGORIES[cat],
            },
            "resolution": {"id": "10000", "name": "Done"} if cat == "done" else None,
            "created": _jira_time(issue.created),
            "updated": _jira_time(issue.updated),
            "reporter": {
                "name": issue.reporter,
                "key": issue.reporter,
                "displayName": issue.reporter,
            },
            "comment": {
                "comments": [self.comment_json(base, issue, c, api=api) for c in issue.comments],
                "maxResults": len(issue.comments),
                "total": len(issue.comments),
                "startAt": 0,
            },
            "attachment": [self.attachment_json(base, a) for a in issue.attachments],
            "assignee": (
                _user_json(f["assignee"], cloud=self.cloud) if f.get("assignee") else None
            ),
            "watches": {
                "self": f"{base}{REST}/issue/{issue.key}/watchers",
                "watchCount": len(issue.watchers),
                "isWatching": False,
            },
        }
        for cf in self.custom_fields:
            everything[cf] = f.get(cf)
        if fields is not None and not ({"*all", "*navigable"} & fields):
            everything = {k: v for k, v in everything.items() if k in fields}
        return {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog",
            "id": issue.id,
            "self": f"{base}{REST}/issue/{issue.id}",
            "key": issue.key,
            "fields": everything,
        }

    def comment_json(self, base: str, issue: _Issue, c: _Comment, *, api: str = "2") -> Json:
        author = {"name": c.author, "key": c.author, "displayName": c.author, "active": True}
        if self.cloud:  # Cloud has account ids, no user names
            author = {"accountId": _account_id(c.author), "displayName": c.author, "active": True}
        return {
            "self": f"{base}{REST}/issue/{issue.id}/comment/{c.id}",
            "id": c.id,
            "author": author,
            "body": self._body(c.body, api),
            "updateAuthor": author,
            "created": _jira_time(c.created),
            "updated": _jira_time(c.created),
        }

    def attachment_json(self, base: str, a: _Attachment) -> Json:
        return {
            "self": f"{base}{REST}/attachment/{a.id}",
            "id": a.id,
            "filename": a.filename,
            "author": {"name": a.author, "key": a.author, "displayName": a.author},
            "created": _jira_time(a.created),
            "size": len(a.data),
            "mimeType": a.mime_type,
            "content": f"{base}/secure/attachment/{a.id}/{urllib.parse.quote(a.filename)}",
        }

    def validate_fields(
        self, fields: Any, *, creating: bool, project: str | None, adf: bool = False
    ) -> Json:
        """Check create/edit fields as Jira does; return them normalised. ``adf``: the
        description must be an Atlassian Document (Cloud's API v3), not a string."""
        if not isinstance(fields, Mapping):
            raise JiraHttpError(400, ["Can not deserialize instance of fields."])
        errors: dict[str, str] = {}
        out: Json = {}
        for name, value in fields.items():
            if name == "project":
                continue
            if (
                name in _READ_ONLY
                or (name.startswith("customfield_") and name not in self.custom_fields)
                or (name not in dict(SYSTEM_FIELDS) and not name.startswith("customfield_"))
            ):
                errors[name] = (
                    f"Field '{name}' cannot be set. It is not on the appropriate screen, "
                    "or unknown."
                )
                continue
            if name == "summary":
                if not isinstance(value, str) or not value.strip():
                    errors["summary"] = "You must specify a summary of the issue."
                elif "\n" in value or "\r" in value:
                    errors["summary"] = (
                        "The summary is invalid because it contains newline characters."
                    )
                elif len(value) > 255:
                    errors["summary"] = "Summary must be less than 255 characters."
                else:
                    out["summary"] = value
            elif name == "description" and adf:
                if value is not None and not adf_valid(value):
                    errors["description"] = NOT_ADF
                elif value is not None and len(adf_text(value)) > TEXT_LIMIT:
                    errors["description"] = _TOO_LONG
                else:
                    out["description"] = value
            elif name == "description":
                if value is not None and not isinstance(value, str):
                    errors["description"] = "Operation value must be a string"
                elif value is not None and len(value) > TEXT_LIMIT:
                    errors["description"] = _TOO_LONG
                else:
                    out["description"] = value
            elif name == "issuetype":
                ref = value if isinstance(value, Mapping) else {}
                allowed = self.projects[project].issue_types if project else ()
                match = next(
                    (
                        {"id": i, "name": n}
                        for i, n in ISSUE_TYPES
                        if n in allowed and (ref.get("id") == i or ref.get("name") == n)
                    ),
                    None,
                )
                if match is None:
                    errors["issuetype"] = "valid issue type is required"
                else:
                    out["issuetype"] = match
            elif name == "priority":
                ref = value if isinstance(value, Mapping) else {}
                pm = next(
                    (
                        {"id": i, "name": n}
                        for i, n in PRIORITIES
                        if ref.get("id") == i or ref.get("name") == n
                    ),
                    None,
                )
                if value is None:
                    out["priority"] = None
                elif pm is None:
                    errors["priority"] = "The priority selected is invalid."
                else:
                    out["priority"] = pm
            elif name == "labels":
                if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                    errors["labels"] = "data was not an array"
                elif bad := [x for x in value if not x or " " in x]:
                    errors["labels"] = f"The label '{bad[0]}' contains spaces which is invalid."
                elif bad := [x for x in value if len(x) > 255]:
                    errors["labels"] = "The label must not exceed 255 characters."
                else:
                    out["labels"] = list(dict.fromkeys(value))
            elif name == "components":
                known = self.projects[project].components if project else ()
                comps: list[Json] = []
                if not isinstance(value, list):
                    errors["components"] = "data was not an array"
                    continue
                for c in value:
                    cname = c.get("name") if isinstance(c, Mapping) else None
                    if cname not in known:
                        errors["components"] = f"Component name '{cname}' is not valid"
                        break
                    comps.append(
                        {
                            "id": f"{self._project_ids[project or '']}{known.index(cname)}",
                            "name": cname,
                        }
                    )
                else:
                    out["components"] = comps
            elif name == "assignee":
                who = self.person(value)
                if value is None:
                    out["assignee"] = None
                elif who is None:
                    errors["assignee"] = (
                        "Specify a valid value for assignee"
                        if self.cloud
                        else f"User '{_ref_name(value)}' does not exist."
                    )
                else:
                    out["assignee"] = who
            else:  # a known custom field: Jira checks its type; this server keeps any JSON
                out[name] = value
        if creating:
            if "summary" not in fields and "summary" not in errors:
                errors["summary"] = "You must specify a summary of the issue."
            if "issuetype" not in fields:
                errors["issuetype"] = "issue type is required"
        if errors:
            raise JiraHttpError(400, [], errors)
        return out


_JSON = "application/json;charset=UTF-8"
# status, JSON body, headers, raw body (instead of JSON), content type
_Answer = tuple[int, Any, Mapping[str, str], bytes | None, str]


class _Handler(http.server.BaseHTTPRequestHandler):
    jira: JiraServer
    _api = "2"  # the REST API version the current request asked for
    protocol_version = "HTTP/1.1"  # keep-alive, as Jira behind Tomcat does
    server_version = "Apache-Coyote/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing --

    def _base(self) -> str:
        return self.jira.url

    def _send(
        self,
        status: int,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
        ctype: str = "application/json;charset=UTF-8",
        drip: float = 0.0,
    ) -> None:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        if data or raw is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-AREQUESTID", f"{int(time.time()) % 100000}x1")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if drip <= 0:
            self.wfile.write(data)
            return
        self.wfile.flush()
        for i in range(len(data)):
            if self.jira._stopping.wait(drip):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def _drop(self) -> None:
        # A server that is down: close without answering.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path.rstrip("/") or "/"
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        srv = self.jira

        def record(status: int) -> None:
            # Logged before answering: a client that has its answer finds it in the log.
            with srv._lock:
                srv._log.append(
                    RequestRecord(
                        method=method,
                        path=path,
                        query=parsed.query,
                        headers=dict(self.headers.items()),
                        body=body,
                        status=status,
                    )
                )

        if srv.is_down:
            record(0)
            self._drop()
            return
        fault = srv._take_fault(method, path)
        if fault is not None and fault.kind in ("fail", "throttle"):
            record(fault.status)
            self._fault_answer(fault)
            return
        try:
            user = self._authenticate()
            status, answer, headers, raw, ctype = self._route(
                method, path, parsed.query, body, user
            )
        except JiraHttpError as e:
            status, answer, headers = e.status, e.body, e.headers
            raw = e.text.encode() if e.text is not None else None
            ctype = "text/plain;charset=UTF-8" if e.text is not None else _JSON
        record(status)
        # A delay fault: applied already, the answer comes late (or never, if stopped).
        if fault is not None and fault.kind == "delay" and srv._stopping.wait(fault.delay):
            self._drop()
            return
        try:
            drip = fault.delay if fault is not None and fault.kind == "drip" else 0.0
            self._send(status, answer, headers=headers, raw=raw, ctype=ctype, drip=drip)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _fault_answer(self, fault: _Fault) -> None:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.status == 429:
            # Jira Data Center's rate limiting headers.
            headers.update(
                {
                    "X-RateLimit-Limit": "20",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-FillRate": "10",
                    "X-RateLimit-Interval-Seconds": "1",
                }
            )
            self._send(429, _err(["Rate limit exceeded."]), headers=headers)
        elif fault.status >= 500:
            self._send(
                fault.status, _err([f"Service unavailable (HTTP {fault.status})."]), headers=headers
            )
        else:
            self._send(
                fault.status, _err([f"Injected failure (HTTP {fault.status})."]), headers=headers
            )

    def _authenticate(self) -> str | None:
        auth = self.headers.get("Authorization")
        srv = self.jira
        failed = JiraHttpError(
            401,
            ["You are not authenticated. Authentication required to perform this operation."],
            headers={
                "X-Seraph-LoginReason": "AUTHENTICATED_FAILED",
                "WWW-Authenticate": 'BASIC realm="protected-area"',
            },
        )
        if auth is None:
            return None
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(cred, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise failed from None
            if srv.users.get(user) is None or srv.users[user] != password:
                raise failed
            return user
        if scheme.lower() == "bearer":
            if cred not in srv.tokens:
                raise failed
            return srv.tokens[cred]
        raise failed

    def _need_user(self, user: str | None) -> str:
        if user is None and not self.jira.allow_anonymous:
            raise JiraHttpError(
                401,
                ["You are not authenticated. Authentication required to perform this operation."],
                headers={"WWW-Authenticate": 'BASIC realm="protected-area"'},
            )
        return user or "anonymous"

    def _json_body(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError:
            raise JiraHttpError(
                400, ["Unexpected character: was expecting a valid JSON value"]
            ) from None

    # -- routes --

    def _route(self, method: str, path: str, query: str, body: bytes, user: str | None) -> _Answer:
        srv = self.jira
        base = self._base()
        q = urllib.parse.parse_qs(query)
        js = "application/json;charset=UTF-8"

        def ok(status: int, answer: Any) -> _Answer:
            return status, answer, {}, None, js

        # /rest/api/2 and /rest/api/latest everywhere, /rest/api/3 on Cloud only: route
        # them all as v2, and remember which one was asked for (bodies differ).
        asked = path
        api = "2"
        if (mv := _API_PATH.fullmatch(path)) and (mv.group(1) != "3" or srv.cloud):
            api = "3" if mv.group(1) == "3" else "2"
            path = REST + (mv.group(2) or "")
        self._api = api
        if path == f"{REST}/serverInfo" and method == "GET" and srv.cloud:
            return ok(
                200,
                {
                    "baseUrl": base,
                    "displayUrl": base,
                    "version": "1001.0.0-SNAPSHOT",
                    "versionNumbers": [1001, 0, 0],
                    "deploymentType": "Cloud",
                    "buildNumber": 100291,
                    "buildDate": "2026-06-06T00:00:00.000+0000",
                    "serverTime": _jira_time(time.time()),
                    "scmInfo": "selfheal-test",
                    "serverTitle": "Jira",
                    "defaultLocale": {"locale": "en_US"},
                },
            )
        if path == f"{REST}/serverInfo" and method == "GET":
            return ok(
                200,
                {
                    "baseUrl": base,
                    "version": "9.12.15",
                    "versionNumbers": [9, 12, 15],
                    "deploymentType": "Server",
                    "buildNumber": 9120015,
                    "buildDate": "2024-10-01T00:00:00.000+0000",
                    "serverTime": _jira_time(time.time()),
                    "scmInfo": "selfheal-test",
                    "serverTitle": "selfheal test Jira",
                },
            )
        who = self._need_user(user)
        m: re.Match[str] | None
        if path == f"{REST}/myself" and method == "GET" and srv.cloud:
            return ok(
                200,
                {
                    "self": f"{base}/rest/api/{api}/user?accountId={_account_id(who)}",
                    "accountId": _account_id(who),
                    "accountType": "atlassian",
                    "displayName": who,
                    "active": True,
                    "emailAddress": f"{who}@example.invalid",
                    "timeZone": "UTC",
                },
            )
        if path == f"{REST}/myself" and method == "GET":
            return ok(
                200,
                {
                    "self": f"{base}{REST}/user?username={who}",
                    "key": who,
                    "name": who,
                    "displayName": who,
                    "active": True,
                    "emailAddress": f"{who}@example.invalid",
                    "timeZone": "UTC",
                },
            )
        if path == f"{REST}/field" and method == "GET":
            fields = [
                {
                    "id": i,
                    "name": n,
                    "custom": False,
                    "orderable": True,
                    "navigable": True,
                    "searchable": True,
                    "clauseNames": [i],
                    "schema": {"type": "string", "system": i},
                }
                for i, n in SYSTEM_FIELDS
            ]
            fields += [
                {
                    "id": i,
                    "name": n,
                    "custom": True,
                    "orderable": True,
                    "navigable": True,
                    "searchable": True,
                    "clauseNames": [f"cf[{i.split('_')[1]}]", n],
                    "schema": {"type": "string", "customId": int(i.split("_")[1])},
                }
                for i, n in srv.custom_fields.items()
            ]
            return ok(200, fields)
        if path == f"{REST}/priority" and method == "GET":
            return ok(
                200,
                [{"self": f"{base}{REST}/priority/{i}", "id": i, "name": n} for i, n in PRIORITIES],
            )
        if path == f"{REST}/issuetype" and method == "GET":
            return ok(
                200,
                [
                    {"self": f"{base}{REST}/issuetype/{i}", "id": i, "name": n, "subtask": False}
                    for i, n in ISSUE_TYPES
                ],
            )
        if path == f"{REST}/project" and method == "GET":
            return ok(200, [srv.project_json(base, k) for k in srv.projects])
        if (m := re.fullmatch(f"{REST}/project/([^/]+)", path)) and method == "GET":
            ref = urllib.parse.unquote(m.group(1))
            key = srv.project_by({"key": ref}) or srv.project_by({"id": ref})
            if key is None:
                raise JiraHttpError(404, [f"No project could be found with key '{ref}'."])
            return ok(200, srv.project_json(base, key))
        if path == f"{REST}/issue" and method == "POST":
            return ok(201, self._create(self._json_body(body), who))
        if srv.cloud and path == f"{REST}/search":
            raise JiraHttpError(410, [SEARCH_REMOVED])
        if srv.cloud and path == f"{REST}/search/jql" and method in ("GET", "POST"):
            if method == "POST":
                params = self._json_body(body)
                if not isinstance(params, Mapping):
                    raise JiraHttpError(400, ["Invalid request payload. Refer to the REST API "
                                              "documentation and try again."])  # fmt: skip
            else:
                multi = ("fields", "reconcileIssues", "expand")
                params = {k: (v if k in multi else v[-1]) for k, v in q.items()}
            return ok(200, self._search_jql(params, api))
        if path == f"{REST}/search" and method in ("GET", "POST"):
            if method == "POST":
                params = self._json_body(body)
                if not isinstance(params, Mapping):
                    raise JiraHttpError(400, ["Can not deserialize the search request."])
            else:
                params = {k: (v if k == "fields" else v[-1]) for k, v in q.items()}
            return ok(200, self._search(params))
        if m := re.fullmatch(f"{REST}/issue/([^/]+)", path):
            issue = srv.find_issue(m.group(1))
            if method == "GET":
                wanted = self._field_list(q.get("fields"))
                return ok(200, srv.issue_json(base, issue, wanted, api=api))
            if method == "PUT":
                self._edit(issue, self._json_body(body))
                return ok(204, None)
        if m := re.fullmatch(f"{REST}/issue/([^/]+)/comment", path):
            issue = srv.find_issue(m.group(1))
            if method == "GET":
                cs = [srv.comment_json(base, issue, c, api=api) for c in issue.comments]
                return ok(
                    200, {"startAt": 0, "maxResults": len(cs), "total": len(cs), "comments": cs}
                )
            if method == "POST":
                data = self._json_body(body)
                text = data.get("body") if isinstance(data, Mapping) else None
                if api == "3":  # Cloud's v3: an Atlassian Document, nothing else
                    if not adf_valid(text) or not adf_text(text).strip():
                        raise JiraHttpError(400, [], {"comment": COMMENT_NOT_VALID})
                elif not isinstance(text, str) or not text.strip():
                    raise JiraHttpError(400, [], {"comment": "Comment body can not be empty!"})
                if len(adf_text(text)) > TEXT_LIMIT:
                    raise JiraHttpError(400, [], {"comment": _TOO_LONG})
                with srv._lock:
                    srv._next_comment += 1
                    c = _Comment(
                        id=str(srv._next_comment), body=text, author=who, created=time.time()
                    )
                    issue.comments.append(c)
                    issue.updated = c.created
                return ok(201, srv.comment_json(base, issue, c, api=api))
        if m := re.fullmatch(f"{REST}/issue/([^/]+)/watchers", path):
            issue = srv.find_issue(m.group(1))
            if method == "GET":
                return ok(
                    200,
                    {
                        "self": f"{base}{REST}/issue/{issue.key}/watchers",
                        "isWatching": who in issue.watchers,
                        "watchCount": len(issue.watchers),
                        "watchers": [_user_json(u, cloud=srv.cloud) for u in issue.watchers],
                    },
                )
            if method == "POST":
                ref = self._json_body(body)
                person = srv.person(ref)
                if person is None:
                    raise JiraHttpError(404, [f'The user "{ref}" does not exist.'])
                with srv._lock:
                    if person not in issue.watchers:  # adding a watcher twice changes nothing
                        issue.watchers.append(person)
                return ok(204, None)
        if (m := re.fullmatch(f"{REST}/issue/([^/]+)/attachments", path)) and method == "POST":
            if self.headers.get("X-Atlassian-Token", "").lower() != "no-check":
                raise JiraHttpError(403, text="XSRF check failed")
            issue = srv.find_issue(m.group(1))
            return ok(200, self._attach(issue, body, who))
        if m := re.fullmatch(f"{REST}/issue/([^/]+)/transitions", path):
            issue = srv.find_issue(m.group(1))
            available = [t for t in TRANSITIONS if issue.status in t[3]]
            if method == "GET":
                return ok(
                    200,
                    {
                        "expand": "transitions",
                        "transitions": [
                            {
                                "id": tid,
                                "name": name,
                                "to": {
                                    "id": STATUSES[to][0],
                                    "name": to,
                                    "statusCategory": _CATEGORIES[STATUSES[to][1]],
                                },
                            }
                            for tid, name, to, _ in available
                        ],
                    },
                )
            if method == "POST":
                data = self._json_body(body)
                tid = (
                    str((data.get("transition") or {}).get("id", ""))
                    if isinstance(data, Mapping)
                    else ""
                )
                target = next((t for t in available if t[0] == tid), None)
                if target is None:
                    raise JiraHttpError(
                        400, [f"Transition id '{tid}' is not valid for this issue."]
                    )
                with srv._lock:
                    issue.transitions.append(
                        {
                            "id": tid,
                            "name": target[1],
                            "from": issue.status,
                            "to": target[2],
                            "by": who,
                            "at": time.time(),
                        }
                    )
                    issue.status = target[2]
                    issue.updated = time.time()
                    update = data.get("update") or {}
                    for op in update.get("comment", []):
                        if "add" in op:
                            srv._next_comment += 1
                            issue.comments.append(
                                _Comment(
                                    id=str(srv._next_comment),
                                    body=str(op["add"].get("body", "")),
                                    author=who,
                                    created=time.time(),
                                )
                            )
                return ok(204, None)
        if (m := re.fullmatch(f"{REST}/attachment/([^/]+)", path)) and method == "GET":
            return ok(200, srv.attachment_json(base, self._attachment(m.group(1))))
        if (m := re.fullmatch(r"/secure/attachment/([^/]+)/[^/]*", path)) and method == "GET":
            a = self._attachment(m.group(1))
            return 200, None, {}, a.data, a.mime_type
        if path.startswith("/rest/"):
            return ok(404, {"message": f"null for uri: {base}{asked}", "status-code": 404})
        return 404, None, {}, b"<html><body>Page not found</body></html>", "text/html"

    def _attachment(self, aid: str) -> _Attachment:
        for issue in self.jira._issues.values():
            for a in issue.attachments:
                if a.id == aid:
                    return a
        raise JiraHttpError(404, [f"The attachment with id '{aid}' does not exist"])

    def _field_list(self, raw: Any) -> set[str] | None:
        if raw is None:
            return None
        items = raw if isinstance(raw, list) else [raw]
        return {f.strip() for item in items for f in str(item).split(",") if f.strip()}

    def _create(self, data: Any, who: str) -> Json:
        srv = self.jira
        if not isinstance(data, Mapping) or not isinstance(data.get("fields"), Mapping):
            raise JiraHttpError(400, ["Can not deserialize instance of fields."])
        fields = data["fields"]
        project = srv.project_by(fields.get("project"))
        if project is None:
            # Jira answers with the project error alone: nothing else can be checked.
            raise JiraHttpError(400, [], {"project": "valid project is required"})
        clean = srv.validate_fields(
            fields, creating=True, project=project, adf=srv.cloud and self._api == "3"
        )
        clean.setdefault("priority", {"id": "3", "name": "Medium"})
        clean.setdefault("labels", [])
        clean.setdefault("components", [])
        clean.setdefault("description", None)
        with srv._lock:
            issue = srv._new_issue(project, clean, who)
        return {"id": issue.id, "key": issue.key, "self": f"{self._base()}{REST}/issue/{issue.id}"}

    def _edit(self, issue: _Issue, data: Any) -> None:
        srv = self.jira
        if not isinstance(data, Mapping):
            raise JiraHttpError(400, ["Can not deserialize instance of fields."])
        clean = srv.validate_fields(
            data.get("fields") or {},
            creating=False,
            project=issue.project,
            adf=srv.cloud and self._api == "3",
        )
        labels: list[str] = list(clean.get("labels") or issue.fields.get("labels") or [])
        update = data.get("update") or {}
        for op in update.get("labels", []) if isinstance(update, Mapping) else []:
            if "add" in op and op["add"] not in labels:
                labels.append(op["add"])
            if "remove" in op and op["remove"] in labels:
                labels.remove(op["remove"])
        with srv._lock:
            if labels != list(issue.fields.get("labels") or []):
                srv._reindex(issue, new=False)
            issue.fields.update(clean)
            issue.fields["labels"] = labels
            issue.updated = time.time()

    def _attach(self, issue: _Issue, body: bytes, who: str) -> list[Json]:
        srv = self.jira
        ctype = self.headers.get("Content-Type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise JiraHttpError(415, ["Unsupported Media Type: multipart/form-data expected"])
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
        out: list[Json] = []
        for part in msg.iter_parts() if msg.is_multipart() else ():
            if part.get_param("name", header="content-disposition") != "file":
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            filename = part.get_filename() or "attachment"
            if len(data) > srv.max_attachment_size:
                raise JiraHttpError(
                    413,
                    [
                        f"The file '{filename}' is too large to attach: the limit is "
                        f"{srv.max_attachment_size} bytes."
                    ],
                )
            with srv._lock:
                srv._next_attachment += 1
                a = _Attachment(
                    id=str(srv._next_attachment),
                    filename=filename,
                    data=data,
                    mime_type=part.get_content_type(),
                    created=time.time(),
                    author=who,
                )
                issue.attachments.append(a)
                issue.updated = a.created
            out.append(srv.attachment_json(self._base(), a))
        if not out:
            raise JiraHttpError(400, ["No file was attached: expected a multipart part 'file'."])
        return out

    def _search(self, params: Mapping[str, Any]) -> Json:
        srv = self.jira
        jql = str(params.get("jql") or "")
        query = parse_jql(jql)
        try:
            start = int(params.get("startAt") or 0)
            limit = min(int(params.get("maxResults") or 50), 1000)
        except (TypeError, ValueError):
            raise JiraHttpError(400, ["startAt and maxResults must be integers."]) from None
        self._check_projects(query)
        hits = self._hits(query)
        wanted = self._field_list(params.get("fields"))
        page = hits[start : start + limit]
        return {
            "expand": "schema,names",
            "startAt": start,
            "maxResults": limit,
            "total": len(hits),
            "issues": [srv.issue_json(self._base(), i, wanted) for i in page],
        }

    def _check_projects(self, query: JqlQuery) -> None:
        for c in query.clauses:
            if c.field == "project":
                for v in c.values:
                    if (
                        self.jira.project_by({"key": v}) is None
                        and self.jira.project_by({"id": v}) is None
                    ):
                        raise JiraHttpError(
                            400, [f"The value '{v}' does not exist for the field 'project'."]
                        )

    def _hits(self, query: JqlQuery, reconcile: set[str] | None = None) -> list[_Issue]:
        """Issues matching ``query`` as search sees them (stale within ``search_lag``)."""
        srv = self.jira
        hits: list[_Issue] = []
        with srv._lock:
            for i in srv._issues.values():
                labels = srv._search_labels(i, reconcile or set())
                if labels is not None and all(_matches(srv, i, c, labels) for c in query.clauses):
                    hits.append(i)
        for fname, desc in reversed(query.order_by or (("key", True),)):
            hits.sort(key=functools.partial(_sort_key, field=fname), reverse=desc)
        return hits

    def _search_jql(self, params: Mapping[str, Any], api: str) -> Json:
        """Cloud's enhanced search: ``nextPageToken`` paging, no ``total``, only ids
        unless fields are asked for; ``reconcileIssues`` (ids) read their own writes."""
        srv = self.jira
        jql = str(params.get("jql") or "")
        query = parse_jql(jql)
        if not query.clauses:
            raise JiraHttpError(400, [UNBOUNDED])
        self._check_projects(query)
        wanted = self._field_list(params.get("fields"))
        only_ids = not wanted or wanted <= {"id", "key"}
        try:
            limit = int(params.get("maxResults") or 50)
        except (TypeError, ValueError):
            raise JiraHttpError(400, ["maxResults must be an integer."]) from None
        limit = max(1, min(limit, 5000 if only_ids else 100))
        raw_rec = params.get("reconcileIssues") or []
        raw_rec = raw_rec if isinstance(raw_rec, list) else [raw_rec]
        reconcile = {p.strip() for r in raw_rec for p in str(r).split(",") if p.strip()}
        if len(reconcile) > 50:
            raise JiraHttpError(400, ["The maximum number of reconcileIssues is 50."])
        start = 0
        token = params.get("nextPageToken")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(str(token).encode()))
                start = int(state["at"])
                if state["jql"] != _jql_digest(jql):
                    raise ValueError("another query")
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise JiraHttpError(400, ["The provided next page token is invalid."]) from None
        hits = self._hits(query, reconcile)
        page = hits[start : start + limit]
        issues = [
            {"id": i.id}
            if not wanted
            else srv.issue_json(self._base(), i, wanted - {"id", "key"} or {"id"}, api=api)
            for i in page
        ]
        out: Json = {"issues": issues, "isLast": start + limit >= len(hits)}
        if not out["isLast"]:  # Cloud leaves the key out on the last page
            nxt = json.dumps({"at": start + limit, "jql": _jql_digest(jql)}).encode()
            out["nextPageToken"] = base64.urlsafe_b64encode(nxt).decode()
        return out


def _jql_digest(jql: str) -> str:
    return hashlib.sha256(jql.encode()).hexdigest()[:16]


def _sort_key(issue: _Issue, field: str) -> Any:
    if field == "created":
        return issue.created
    if field == "updated":
        return issue.updated
    if field == "priority":
        return (issue.fields.get("priority") or {}).get("id", "9")
    return (issue.project, int(issue.key.rsplit("-", 1)[1]))


def _matches(srv: JiraServer, issue: _Issue, c: JqlClause, labels: Sequence[str]) -> bool:
    values = [v.lower() for v in c.values]
    have: list[str]
    status_id, cat = STATUSES[issue.status]
    if c.field == "project":
        have = [issue.project.lower(), srv._project_ids[issue.project]]
    elif c.field == "labels":
        have = [x.lower() for x in labels]
    elif c.field == "statusCategory":
        info = _CATEGORIES[cat]
        have = [str(info["name"]).lower(), str(info["key"]), str(info["id"])]
    elif c.field == "status":
        have = [issue.status.lower(), status_id]
    elif c.field == "resolution":
        have = ["done"] if cat == "done" else ["unresolved"]
    elif c.field == "key":
        have = [issue.key.lower(), issue.id]
    elif c.field == "issuetype":
        t = issue.fields["issuetype"]
        have = [t["name"].lower(), t["id"]]
    else:  # priority
        p = issue.fields.get("priority") or {}
        have = [str(p.get("name", "")).lower(), str(p.get("id", ""))]
    hit = any(v in have for v in values)
    if c.op in ("=", "in"):
        return hit
    if c.op in ("!=", "not in"):
        return not hit and (c.field != "labels" or bool(have))
    empty = not have or have == ["unresolved"]
    return empty if c.op == "is" else not empty


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A Jira-REST-compatible server for the demo.")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    ap.add_argument("--user", default="selfheal", help="basic-auth user name")
    ap.add_argument(
        "--password",
        default=os.environ.get("JIRA_SERVER_PASSWORD", "selfheal-demo"),
        help="basic-auth password or API token (default: $JIRA_SERVER_PASSWORD or selfheal-demo)",
    )
    ap.add_argument("--token", default=None, help="a bearer token (personal access token)")
    ap.add_argument(
        "--project", action="append", default=None, help="project key (repeatable; default OPS)"
    )
    ap.add_argument(
        "--component", action="append", default=[], help="component of every project (repeatable)"
    )
    args = ap.parse_args(argv)
    server = JiraServer(
        port=args.port,
        users={args.user: args.password},
        tokens={args.token: args.user} if args.token else {},
        projects=[
            ProjectSpec(key=k, components=tuple(args.component)) for k in (args.project or ["OPS"])
        ],
    ).start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
