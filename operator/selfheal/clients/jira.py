"""A thin, typed asyncio wrapper over the synchronous ``jira`` package.

Every call runs in a worker thread of the client's own small executor (threads named
``selfheal-jira``, ``workers`` of them), so a hung Jira cannot take the threads other
backends need, under an overall deadline (``asyncio.wait_for``), on top of the
per-request timeout given to ``requests``. The
package's own retry loop is disabled (``max_retries=0``): it sleeps inside the thread
for up to a minute, and the caller's backoff (``selfheal.actions.ticket``) must rule.

Errors map to a small taxonomy:

- ``JiraUnavailable``: no answer (connection refused, reset, timeout), 5xx or 429;
  worth retrying, after ``retry_after`` seconds when Jira said so.
- ``JiraRejected``: 400 (with Jira's per-field errors), 401, 403, 404 and other 4xx;
  retrying the same request is useless.

Server/Data Center and Cloud are both spoken; ``serverInfo`` (read on connecting) tells
them apart. On Cloud the client uses REST API v3: descriptions and comments go out as
Atlassian Document Format (converted from selfheal's wiki markup by
``selfheal.clients.adf``) and come back as text; search is ``search/jql`` with
``nextPageToken`` paging (the old ``search`` is gone there, 410). Cloud's search is
eventually consistent: an issue created or relabelled in the last seconds may be
missing from ``search_open``/``find_by_label`` for a while (GET by key is current).

Messages never contain credentials: they are built from the status and Jira's error
body, never from ``str(JIRAError)`` (which dumps request headers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import dataclasses
import email.utils
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import requests

if TYPE_CHECKING:
    # Imported where first used (a connection, or mapping its error): the operator needs
    # no Jira to become ready.
    from jira import JIRA

from selfheal import metrics
from selfheal.clients import adf
from selfheal.settings import Settings

T = TypeVar("T")

BACKEND = "jira"
SEARCH_PAGE = 50
"""Issues per search request."""
SEARCH_PAGES = 4
"""At most this many pages per search (so at most 200 issues): the loop is bounded."""
_SEARCH_FIELDS = ["summary", "status", "labels"]


class JiraError(Exception):
    """A Jira call failed."""

    def __init__(self, message: str, *, operation: str, status: int) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        """HTTP status; 0 when no answer came (or the failure happened before sending)."""


class JiraUnavailable(JiraError):
    """Temporary: no answer, a timeout, 5xx or 429. Retry later."""

    def __init__(
        self, message: str, *, operation: str, status: int = 0, retry_after: float | None = None
    ) -> None:
        super().__init__(message, operation=operation, status=status)
        self.retry_after = retry_after
        """Seconds Jira asked us to wait (``Retry-After``); ``None``: it did not say."""


class JiraRejected(JiraError):
    """Permanent: Jira refused the request itself (400, 401, 403, 404, ...)."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        status: int,
        messages: tuple[str, ...] = (),
        field_errors: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, operation=operation, status=status)
        self.messages = messages
        """Jira's ``errorMessages``."""
        self.field_errors: Mapping[str, str] = dict(field_errors or {})
        """Jira's ``errors``: field id -> message (e.g. ``priority``)."""


class JiraCredentialsError(ValueError):
    """The credentials Secret cannot be used: names the key and the fix."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JiraCredentials:
    username: str | None
    """``None``: ``token`` is a bearer token (personal access token)."""
    token: str = dataclasses.field(repr=False)
    """The password or API token (basic auth), or the bearer token."""

    @property
    def kind(self) -> str:
        return "basic" if self.username is not None else "bearer"


def _decode(secret: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise JiraCredentialsError(f"Secret {secret}: data.{key} must be a base64 string")
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise JiraCredentialsError(
            f"Secret {secret}: data.{key} is not valid base64 of UTF-8 text; "
            f"recreate it with `kubectl create secret generic ... --from-literal={key}=...`"
        ) from None
    # `echo token | base64` keeps the newline; no credential ends with one.
    return text.strip("\r\n")


def credentials_from_secret(secret: Mapping[str, Any], *, name: str = "") -> JiraCredentials:
    """Credentials from a Kubernetes Secret object (as JSON): ``username`` and ``token``
    mean basic auth, ``token`` alone means a bearer token. Pure; ``name`` (namespace/name)
    only labels the error messages."""
    meta = secret.get("metadata") or {}
    label = name or (f"{meta.get('namespace', '')}/{meta.get('name', '')}" if meta else "?")
    data = dict(secret.get("data") or {})
    plain = {k: v for k, v in (secret.get("stringData") or {}).items() if k not in data}
    values: dict[str, str] = {k: _decode(label, k, v) for k, v in data.items()}
    values.update({k: str(v) for k, v in plain.items()})
    token = values.get("token", "")
    if not token:
        raise JiraCredentialsError(
            f"Secret {label}: key `token` is missing or empty; add the Jira API token "
            "(with `username` for basic auth, alone for a bearer personal access token)"
        )
    username = values.get("username") or None
    if username is not None and ":" in username:
        raise JiraCredentialsError(
            f"Secret {label}: key `username` contains ':', which basic auth cannot carry"
        )
    return JiraCredentials(username=username, token=token)


def secret_ref(settings: Settings) -> tuple[str, str] | None:
    """``(namespace, name)`` of the credentials Secret (``jira_secret``); a bare name is
    looked up in the operator's namespace. ``None``: anonymous."""
    ref = settings.jira_secret
    if not ref:
        return None
    namespace, _, name = ref.rpartition("/")
    if not name or "/" in namespace:
        raise JiraCredentialsError(
            f"jira_secret: {ref!r} must be `namespace/name` (or a name in {settings.namespace})"
        )
    return (namespace or settings.namespace, name)


def from_settings(settings: Settings, *, credentials: JiraCredentials | None) -> Jira | None:
    """The client the settings ask for; ``None`` when ``jira_url`` is unset (no tickets)."""
    if not settings.jira_url:
        return None
    return Jira(url=settings.jira_url, credentials=credentials, timeout=settings.jira_timeout)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IssueRef:
    key: str
    url: str
    """The browsable URL (``<server>/browse/<key>``)."""
    labels: tuple[str, ...] = ()
    """The issue's labels as Jira returned them (from ``create``: the labels sent)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class IssueDetails:
    key: str
    url: str
    status: str
    status_category: str
    """``new``, ``indeterminate`` or ``done`` (Jira's fixed category keys)."""
    labels: tuple[str, ...]
    comments: tuple[str, ...]
    """Comment bodies, oldest first."""
    attachments: tuple[str, ...]
    """Attachment file names."""


def jql_string(value: str) -> str:
    """A JQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _jira_errors(response: requests.Response | None) -> tuple[tuple[str, ...], dict[str, str]]:
    if response is None:
        return (), {}
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return ((text[:300],) if text else ()), {}
    if not isinstance(body, Mapping):
        return (), {}
    msgs = body.get("errorMessages") or ([body["message"]] if "message" in body else [])
    errs = body.get("errors") if isinstance(body.get("errors"), Mapping) else {}
    return tuple(str(m) for m in msgs), {str(k): str(v) for k, v in (errs or {}).items()}


_HINTS = {
    401: "check the username and token in the Secret named by jira_secret",
    403: "the Jira user lacks a permission for this (browse, create, comment or attach)",
    404: "the issue or project does not exist, or the Jira user cannot see it",
}


def _map_error(exc: BaseException, operation: str, now: float) -> JiraError:
    from jira import JIRAError

    if isinstance(exc, JiraError):
        return exc
    if isinstance(exc, requests.Timeout):
        return JiraUnavailable(
            f"Jira {operation}: timed out ({type(exc).__name__})", operation=operation
        )
    if isinstance(exc, requests.ConnectionError):
        return JiraUnavailable(
            f"Jira {operation}: cannot connect ({type(exc).__name__})", operation=operation
        )
    if isinstance(exc, JIRAError) and exc.status_code:
        status = int(exc.status_code)
        resp: requests.Response | None = exc.response
        msgs, fields = _jira_errors(resp)
        detail = "; ".join([*msgs, *(f"{k}: {v}" for k, v in fields.items())]) or "no details"
        if status == 429 or status >= 500 or status == 408:
            headers = resp.headers if resp is not None else {}
            return JiraUnavailable(
                f"Jira {operation}: HTTP {status}: {detail}",
                operation=operation,
                status=status,
                retry_after=_retry_after(headers, now),
            )
        hint = _HINTS.get(status)
        return JiraRejected(
            f"Jira {operation}: HTTP {status}: {detail}" + (f" ({hint})" if hint else ""),
            operation=operation,
            status=status,
            messages=msgs,
            field_errors=fields,
        )
    if isinstance(exc, JIRAError):
        return JiraRejected(
            f"Jira {operation}: {exc.text or 'failed'}", operation=operation, status=0
        )
    if isinstance(exc, requests.RequestException):  # bad URL, too many redirects, ...
        return JiraRejected(
            f"Jira {operation}: {type(exc).__name__}: {exc}", operation=operation, status=0
        )
    return JiraUnavailable(f"Jira {operation}: {type(exc).__name__}", operation=operation)


class Jira:
    """One Jira server. Construction does no I/O; the first call connects."""

    def __init__(
        self,
        *,
        url: str,
        credentials: JiraCredentials | None,
        timeout: float = 15.0,
        deadline: float | None = None,
        verify: bool | str = True,
        workers: int = 2,
    ) -> None:
        """``timeout``: seconds for one HTTP request (connect and read); ``deadline``:
        seconds for one whole call (several requests), ``None``: ``4 * timeout``;
        ``verify``: TLS verification, or a CA bundle path; ``workers``: threads of this
        client's own executor (calls run one at a time anyway; a call abandoned by its
        deadline keeps its thread until ``requests`` times out)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"jira_url: {url!r} must start with http:// or https://")
        if workers < 1:
            raise ValueError(f"workers: {workers} must be at least 1")
        self.workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else 4 * timeout
        self._credentials = credentials
        self._verify = verify
        self._client: JIRA | None = None
        self._cloud: bool | None = None
        # requests.Session is not thread-safe, and a call abandoned by its deadline
        # still runs in its thread: calls go one at a time.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        kind = self._credentials.kind if self._credentials else "anonymous"
        return f"Jira(url={self.url!r}, auth={kind})"

    @property
    def cloud(self) -> bool | None:
        """Jira Cloud (``True``) or Server/Data Center (``False``); ``None`` until the
        first call has read ``serverInfo``."""
        return self._cloud

    def browse_url(self, key: str) -> str:
        return f"{self.url}/browse/{key}"

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Made on first use (threads start lazily too), again after close().
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="selfheal-jira"
            )
        return self._pool

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(self._executor(), fn), timeout=self.deadline
        )

    def _connect(self) -> JIRA:
        from jira import JIRA

        if self._client is None:
            auth: dict[str, Any] = {}
            if self._credentials is not None and self._credentials.username is not None:
                auth["basic_auth"] = (self._credentials.username, self._credentials.token)
            elif self._credentials is not None:
                auth["token_auth"] = self._credentials.token

            def make(api: str) -> JIRA:
                return JIRA(
                    self.url,
                    options={"verify": self._verify, "rest_api_version": api},
                    timeout=self.timeout,
                    max_retries=0,  # our backoff rules; theirs sleeps in the thread
                    get_server_info=True,  # Server/DC vs Cloud: the API and the search
                    logging=False,
                    **auth,
                )

            client = make("2")
            if client.deploymentType == "Cloud":
                # v3 for everything: ADF bodies; Cloud keeps v2 but selfheal speaks one.
                client.close()  # type: ignore[no-untyped-call]
                client = make("3")
            self._cloud = client.deploymentType == "Cloud"
            self._client = client
        return self._client

    async def _call(self, operation: str, fn: Callable[[JIRA], T]) -> T:
        def run() -> T:
            with self._lock:
                return fn(self._connect())

        started = time.monotonic()
        status = "ok"
        try:
            return await self._in_thread(run)
        except TimeoutError:
            status = "timeout"
            metrics.BACKEND_ERRORS.labels(BACKEND, "timeout").inc()
            raise JiraUnavailable(
                f"Jira {operation}: no answer within {self.deadline:g}s", operation=operation
            ) from None
        except Exception as e:
            err = _map_error(e, operation, time.time())
            status = str(err.status or type(err).__name__)
            kind = "unavailable" if isinstance(err, JiraUnavailable) else "rejected"
            metrics.BACKEND_ERRORS.labels(BACKEND, kind).inc()
            raise err from None
        finally:
            metrics.BACKEND_REQUESTS.labels(BACKEND, operation, status).inc()
            metrics.BACKEND_LATENCY.labels(BACKEND).observe(time.monotonic() - started)

    async def close(self) -> None:
        """Close the HTTP session and the executor. Calls still queued are cancelled;
        a call stuck in ``requests`` ends at its own timeout. A later call starts anew."""

        def run() -> None:
            with self._lock:
                if self._client is not None:
                    self._client.close()  # type: ignore[no-untyped-call]
                    self._client = None

        if self._pool is None:
            return
        try:
            await self._in_thread(run)
        except TimeoutError:
            pass  # the workers are stuck on a hung Jira: let them end on their own
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, *, project: str) -> None:
        """The server answers, the credentials work and ``project`` exists and is visible."""

        def run(j: JIRA) -> None:
            j.myself()
            j.project(project)

        try:
            await self._call("check", run)
        except JiraRejected as e:
            if e.status == 404:
                raise JiraRejected(
                    f"Jira project {project!r} does not exist or the Jira user cannot browse "
                    "it; fix spec.remediation.escalate.jira.project or the user's permissions",
                    operation="check",
                    status=404,
                    messages=e.messages,
                ) from None
            raise

    def _search(self, j: JIRA, jql: str) -> list[IssueRef]:
        """In the worker thread: up to ``SEARCH_PAGES`` pages of ``jql``."""
        raw: list[Mapping[str, Any]] = []
        if self._cloud:
            token: str | None = None
            for _ in range(SEARCH_PAGES):
                page = j.enhanced_search_issues(
                    jql,
                    nextPageToken=token,
                    maxResults=SEARCH_PAGE,
                    fields=list(_SEARCH_FIELDS),
                    json_result=True,
                )
                raw += page.get("issues") or []
                token = page.get("nextPageToken")
                if not token or page.get("isLast"):
                    break
        else:
            for _ in range(SEARCH_PAGES):
                page = j.search_issues(
                    jql,
                    startAt=len(raw),
                    maxResults=SEARCH_PAGE,
                    fields=list(_SEARCH_FIELDS),
                    json_result=True,
                )
                issues = page.get("issues") or []
                raw += issues
                if not issues or len(raw) >= int(page.get("total") or 0):
                    break
        return [self._ref(i) for i in raw]

    def _ref(self, raw: Mapping[str, Any]) -> IssueRef:
        key = str(raw.get("key", ""))
        labels = (raw.get("fields") or {}).get("labels") or ()
        return IssueRef(key=key, url=self.browse_url(key), labels=tuple(str(x) for x in labels))

    async def search_open(self, *, project: str, label: str) -> list[IssueRef]:
        """Issues of ``project`` carrying ``label`` whose status is not in the Done
        category, oldest first (at most ``SEARCH_PAGE * SEARCH_PAGES``)."""
        jql = (
            f"project = {jql_string(project)} AND labels = {jql_string(label)} "
            "AND statusCategory != Done ORDER BY created ASC"
        )
        return await self._call("search", lambda j: self._search(j, jql))

    async def find_by_label(self, *, project: str, label: str) -> list[IssueRef]:
        """Issues of ``project`` carrying ``label`` in any status (closed ones too),
        oldest first: to adopt a create whose answer was lost, even if someone has
        closed the issue since. On Cloud an issue created seconds ago may be missing
        (search is eventually consistent)."""
        jql = (
            f"project = {jql_string(project)} AND labels = {jql_string(label)} ORDER BY created ASC"
        )
        return await self._call("search", lambda j: self._search(j, jql))

    async def create(self, *, fields: Mapping[str, Any]) -> IssueRef:
        """Create an issue from REST ``fields`` (``project``, ``issuetype``, ``summary``...)."""
        payload = dict(fields)
        labels = tuple(str(x) for x in payload.get("labels") or ())

        def run(j: JIRA) -> str:
            sent = dict(payload)
            if self._cloud and isinstance(sent.get("description"), str):
                sent["description"] = adf.wiki_to_adf(sent["description"])
            assignee = sent.get("assignee")
            if self._cloud and isinstance(assignee, Mapping) and "name" in assignee:
                # Cloud has no user names: the policy gives the account id.
                sent["assignee"] = {"accountId": assignee["name"]}
            # prefetch=False: no second request; the key is all we need.
            return str(j.create_issue(fields=sent, prefetch=False).key)

        key = await self._call("create", run)
        return IssueRef(key=key, url=self.browse_url(key), labels=labels)

    async def issue(self, *, key: str) -> IssueDetails:
        def run(j: JIRA) -> dict[str, Any]:
            raw: dict[str, Any] = j.issue(key, fields="status,labels,comment,attachment").raw
            return raw

        raw = await self._call("get", run)
        f = raw.get("fields") or {}
        status = f.get("status") or {}
        return IssueDetails(
            key=str(raw.get("key", key)),
            url=self.browse_url(str(raw.get("key", key))),
            status=str(status.get("name", "")),
            status_category=str((status.get("statusCategory") or {}).get("key", "")),
            labels=tuple(f.get("labels") or ()),
            # Cloud's v3 gives ADF documents: their text, so markers are found.
            comments=tuple(
                adf.adf_to_text(c.get("body", ""))
                for c in (f.get("comment") or {}).get("comments", [])
            ),
            attachments=tuple(str(a.get("filename", "")) for a in f.get("attachment") or []),
        )

    async def comment(self, *, key: str, body: str) -> None:
        """Add a comment; ``body`` is wiki markup (sent as ADF on Cloud)."""

        def run(j: JIRA) -> None:
            # jira's add_comment sends whatever JSON body it is given (an ADF dict too).
            j.add_comment(key, adf.wiki_to_adf(body) if self._cloud else body)

        await self._call("comment", run)

    async def attach(self, *, key: str, filename: str, data: bytes) -> None:
        if not data:
            # Jira stores nothing for an empty upload and the client raises afterwards.
            raise JiraRejected(
                f"Jira attach: {filename!r} is empty; leave it out", operation="attach", status=0
            )
        await self._call(
            "attach", lambda j: j.add_attachment(key, io.BytesIO(data), filename=filename)
        )

    async def add_watcher(self, *, key: str, user: str) -> None:
        """Add ``user`` (a user name on Server, an account id on Cloud) to the issue's
        watchers; adding one who watches already changes nothing."""

        def run(j: JIRA) -> None:
            # Not j.add_watcher: it looks the user up first, a request Cloud refuses
            # for names and Server does not need.
            r = j._session.post(j._get_url(f"issue/{key}/watchers"), data=json.dumps(user))
            r.raise_for_status()

        await self._call("watch", run)

    async def transition(self, *, key: str, name: str) -> bool:
        """Apply the transition called ``name`` (case-insensitive). ``False`` when the
        issue is already in the Done category and has no such transition (nothing to do)."""

        def run(j: JIRA) -> bool:
            available = j.transitions(key)
            match = next((t for t in available if str(t["name"]).lower() == name.lower()), None)
            if match is None:
                category = j.issue(key, fields="status").fields.status.statusCategory.key
                if category == "done":
                    return False
                names = ", ".join(repr(str(t["name"])) for t in available) or "none"
                raise JiraRejected(
                    f"Jira transition: {key} has no transition {name!r} from its status "
                    f"(available: {names}); fix spec.remediation.escalate.jira."
                    "resolveTransition",
                    operation="transition",
                    status=400,
                )
            j.transition_issue(key, str(match["id"]))
            return True

        return await self._call("transition", run)
