"""A thin, typed asyncio client of Alertmanager's API v2 silences (aiohttp).

One session with a bounded connection pool (``limit``) and one overall timeout per
request, so a hung Alertmanager holds neither the loop nor more than a few sockets.
Nothing is retried here: the caller records the error in the Remediation's status and
retries on a later pass.

Errors map to a small taxonomy:

* :class:`AlertmanagerUnavailable`: no connection, a timeout, a 5xx or an answer that is
  not the API (temporary);
* :class:`AlertmanagerRejected`: a 4xx with Alertmanager's own message (permanent for
  this request).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from selfheal import metrics

BACKEND = "alertmanager"
ERROR_LIMIT = 300
"""Characters of an error body kept in a message."""


class AlertmanagerError(Exception):
    """A request to Alertmanager did not do what was asked."""


class AlertmanagerUnavailable(AlertmanagerError):
    """Temporary: no connection, a timeout, a 5xx; retry later."""


class AlertmanagerRejected(AlertmanagerError):
    """Permanent for this request: a 4xx with Alertmanager's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat()


def silence_body(
    *,
    matchers: Mapping[str, str],
    starts_at: float,
    ends_at: float,
    comment: str,
    created_by: str,
) -> dict[str, Any]:
    """``postableSilence`` with equality matchers."""
    return {
        "matchers": [
            {"name": k, "value": v, "isRegex": False, "isEqual": True}
            for k, v in sorted(matchers.items())
        ],
        "startsAt": _rfc3339(starts_at),
        "endsAt": _rfc3339(ends_at),
        "createdBy": created_by,
        "comment": comment,
    }


class Alertmanager:
    def __init__(
        self, *, url: str, token: str | None = None, timeout: float = 10.0, limit: int = 4
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        body: object = None,
        params: Sequence[tuple[str, str]] = (),
    ) -> Any:
        started = time.monotonic()
        status = "error"
        url = f"{self.url}/api/v2/{path}"
        try:
            async with self._http().request(method, url, json=body, params=params) as resp:
                status = str(resp.status)
                text = await resp.text()
                if resp.status >= 500:
                    raise AlertmanagerUnavailable(f"{resp.status}: {text[:ERROR_LIMIT]}")
                if resp.status >= 400:
                    raise AlertmanagerRejected(resp.status, text[:ERROR_LIMIT].strip())
                try:
                    return json.loads(text) if text.strip() else None
                except ValueError:
                    raise AlertmanagerUnavailable(
                        f"{resp.status}: not the Alertmanager API: {text[:ERROR_LIMIT]!r}"
                    ) from None
        except TimeoutError as e:
            metrics.BACKEND_ERRORS.labels(BACKEND, "timeout").inc()
            raise AlertmanagerUnavailable(f"no answer within {self.timeout:g}s") from e
        except (OSError, aiohttp.ClientError) as e:
            metrics.BACKEND_ERRORS.labels(BACKEND, "connection").inc()
            raise AlertmanagerUnavailable(f"{type(e).__name__}: {e}") from e
        finally:
            metrics.BACKEND_REQUESTS.labels(BACKEND, operation, status).inc()
            metrics.BACKEND_LATENCY.labels(BACKEND).observe(time.monotonic() - started)

    async def create_silence(
        self,
        *,
        matchers: Mapping[str, str],
        ends_at: float,
        comment: str,
        created_by: str = "selfheal",
        now: float | None = None,
    ) -> str:
        """``POST /api/v2/silences``; the new silence's id."""
        body = silence_body(
            matchers=matchers,
            starts_at=time.time() if now is None else now,
            ends_at=ends_at,
            comment=comment,
            created_by=created_by,
        )
        got = await self._call("POST", "silences", operation="create_silence", body=body)
        if not isinstance(got, Mapping) or not isinstance(got.get("silenceID"), str):
            raise AlertmanagerUnavailable(f"no silenceID in the answer: {str(got)[:ERROR_LIMIT]}")
        return str(got["silenceID"])

    async def alerts(self, *, matchers: Mapping[str, str]) -> Sequence[Mapping[str, Any]]:
        """``GET /api/v2/alerts`` with equality filters: every alert Alertmanager holds
        that matches, silenced and inhibited ones too (a silenced alert is not notified,
        so its resolution never reaches a webhook: this is how it is learned)."""
        params = [("filter", f'{k}="{v}"') for k, v in sorted(matchers.items())]
        params += [(p, "true") for p in ("active", "silenced", "inhibited", "unprocessed")]
        got = await self._call("GET", "alerts", operation="list_alerts", params=params)
        if not isinstance(got, list):
            raise AlertmanagerUnavailable("the alerts answer is not a list")
        return [a for a in got if isinstance(a, Mapping)]

    async def silences(self) -> Sequence[Mapping[str, Any]]:
        """``GET /api/v2/silences``: every silence (active, pending, expired)."""
        got = await self._call("GET", "silences", operation="list_silences")
        if not isinstance(got, list):
            raise AlertmanagerUnavailable("the silences answer is not a list")
        return [s for s in got if isinstance(s, Mapping)]

    async def find_silence(self, *, marker: str) -> Mapping[str, Any] | None:
        """The silence whose comment carries ``marker`` (the newest), or ``None``."""
        found = [s for s in await self.silences() if marker in str(s.get("comment", ""))]
        return max(found, key=lambda s: str(s.get("updatedAt", "")), default=None)

    async def expire_silence(self, silence_id: str) -> None:
        """``DELETE /api/v2/silence/{id}``. A silence already expired (or gone) is done:
        Alertmanager answers that with an error, so it is looked up to tell."""
        try:
            await self._call("DELETE", f"silence/{silence_id}", operation="expire_silence")
        except AlertmanagerError as e:
            if isinstance(e, AlertmanagerRejected) and e.status == 404:
                return
            try:
                got = await self._call("GET", f"silence/{silence_id}", operation="get_silence")
            except AlertmanagerRejected as gone:
                if gone.status == 404:
                    return
                raise e from None
            state = (got or {}).get("status", {}).get("state") if isinstance(got, dict) else None
            if state != "expired":
                raise
