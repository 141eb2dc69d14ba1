"""A thin, typed asyncio wrapper over ``prometheus_api_client.PrometheusConnect``.

The library is synchronous (``requests``), so every call runs in a worker thread of the
client's own small executor (threads named ``selfheal-prometheus``: a hung Jira or any
other backend cannot take them) under two timeouts: requests' own (connect and each read) and an
overall ``asyncio.wait_for`` a little longer, so a slow-dripping server cannot hold a
caller. Nothing is retried here: the evaluator's next interval is the retry.

Errors map to a small taxonomy:

* :class:`PrometheusUnavailable`: no connection, a timeout, a 5xx, or an answer that is not
  the Prometheus API (temporary: the trigger is ``unknown`` until it comes back);
* :class:`QueryError`: 400/422 with Prometheus' own message (a PromQL parse error, a
  many-to-many match): permanent until the policy changes.

:attr:`Prometheus.stats` counts queries and response bytes (for benchmarks and the tests
that pin "one query per trigger"); the ``selfheal_backend_*`` metrics are updated too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import TimeoutError as TimeoutError_
from urllib3.util.retry import Retry

from selfheal import metrics

BACKEND = "prometheus"

T = TypeVar("T")


class Series(NamedTuple):
    labels: dict[str, str]
    samples: list[tuple[float, float]]
    """``(unix seconds, value)``, oldest first; values may be NaN or +-Inf."""


class PrometheusError(Exception):
    """A query did not produce a result."""


class PrometheusUnavailable(PrometheusError):
    """Prometheus could not be reached or did not answer in time (temporary)."""


class QueryError(PrometheusError):
    """Prometheus rejected the query (400/422); ``message`` is Prometheus' own text."""

    def __init__(self, status: int, error_type: str, message: str, *, query: str) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message
        self.query = query


@dataclasses.dataclass
class Stats:
    """Counts since the client was made; read it before and after to get a delta."""

    queries: int = 0
    """Requests sent (instant and range), failed ones included."""
    bytes: int = 0
    """Response body bytes received."""
    errors: int = 0


class Prometheus:
    """One connection pool to one Prometheus server."""

    def __init__(
        self,
        *,
        url: str,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        workers: int = 4,
    ) -> None:
        """``timeout``: seconds for connect and each read (the whole call gets 2 s more);
        ``workers``: threads of this client's own executor, so at most that many queries
        are in flight (more wait their turn within their deadline)."""
        if workers < 1:
            raise ValueError(f"workers: {workers} must be at least 1")
        self.url = url.rstrip("/")
        self.workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.timeout = timeout
        self.stats = Stats()
        self._lock = threading.Lock()
        self._last = threading.local()  # the last response seen by this worker thread
        session = requests.Session()
        session.hooks["response"].append(self._on_response)
        # No retries: an outage must surface within one timeout, not after a backoff.
        self._connect = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            session=session,
            timeout=timeout,
            retry=Retry(total=0, connect=0, read=0, status=0, raise_on_status=False),
        )

    def _on_response(self, response: requests.Response, *args: object, **kw: object) -> None:
        self._last.response = response
        with self._lock:
            self.stats.bytes += len(response.content)

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Made on first use (threads start lazily too), again after close().
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="selfheal-prometheus"
            )
        return self._pool

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._executor(), fn), self.timeout + 2)

    async def close(self) -> None:
        """Close the connection pool and the executor (queued calls are cancelled)."""
        try:
            await self._in_thread(self._connect.close)
        except TimeoutError:
            pass  # every worker is stuck: they end at requests' own timeout
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def instant(self, query: str, *, at: float | None = None) -> list[Series]:
        """Evaluate ``query`` at ``at`` (Unix seconds; ``None``: now)."""
        params = {"time": repr(float(at))} if at is not None else {}
        return await self._call(
            "query", query, lambda: self._connect.custom_query(query, params=params)
        )

    async def range(self, query: str, *, start: float, end: float, step: float) -> list[Series]:
        """Evaluate ``query`` at ``start, start + step, ... <= end``.

        The library rounds ``start`` and ``end`` to whole seconds; ``step`` is seconds.
        """
        if end < start:
            raise ValueError(f"range: end ({end}) is before start ({start}); swap them")
        if step <= 0:
            raise ValueError(f"range: step must be positive seconds, got {step}")

        def call() -> object:
            return self._connect.custom_query_range(
                query,
                start_time=datetime.datetime.fromtimestamp(start, datetime.UTC),
                end_time=datetime.datetime.fromtimestamp(end, datetime.UTC),
                step=f"{step:g}",
            )

        return await self._call("query_range", query, call)

    async def _call(self, operation: str, query: str, fn: Callable[[], object]) -> list[Series]:
        started = time.monotonic()
        status = "error"
        with self._lock:
            self.stats.queries += 1
        try:
            series = await self._in_thread(lambda: self._run(fn, query))
            status = "200"
            return series
        except TimeoutError as e:
            raise self._fail("timeout", PrometheusUnavailable(self._timed_out())) from e
        except QueryError as e:
            status = str(e.status)
            raise self._fail("query", e) from e
        except PrometheusUnavailable as e:
            raise self._fail("unavailable", e) from e
        finally:
            metrics.BACKEND_REQUESTS.labels(BACKEND, operation, status).inc()
            metrics.BACKEND_LATENCY.labels(BACKEND).observe(time.monotonic() - started)

    def _timed_out(self) -> str:
        return f"{self.url}: no answer within {self.timeout:g}s"

    def _fail(self, kind: str, error: PrometheusError) -> PrometheusError:
        with self._lock:
            self.stats.errors += 1
        metrics.BACKEND_ERRORS.labels(BACKEND, kind).inc()
        return error

    def _run(self, fn: Callable[[], object], query: str) -> list[Series]:
        """In the worker thread: call the library, parse its answer, map its errors."""
        self._last.response = None
        try:
            return _parse(fn())
        except requests.Timeout as e:
            raise PrometheusUnavailable(self._timed_out()) from e
        except requests.RequestException as e:
            if _timed_out(e):
                raise PrometheusUnavailable(self._timed_out()) from e
            raise PrometheusUnavailable(f"{self.url}: {type(e).__name__}: {e}") from e
        except PrometheusApiClientException as e:
            response: requests.Response | None = getattr(self._last, "response", None)
            raise _http_error(response, query, self.url, str(e)) from e
        except (ValueError, KeyError) as e:  # a 200 that is not the Prometheus API
            raise PrometheusUnavailable(f"{self.url}: not a Prometheus API answer: {e}") from e


def _timed_out(error: requests.RequestException) -> bool:
    # With retries off, requests reports a read timeout as a ConnectionError wrapping
    # urllib3's MaxRetryError(reason=ReadTimeoutError).
    cause = error.args[0] if error.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, TimeoutError_)


def _http_error(
    response: requests.Response | None, query: str, url: str, fallback: str
) -> PrometheusError:
    if response is None:
        return PrometheusUnavailable(f"{url}: {fallback}")
    status = response.status_code
    try:
        body = response.json()
        error_type, message = str(body.get("errorType", "")), str(body.get("error", ""))
    except ValueError:
        error_type, message = "", response.text[:500]
    if status in (400, 422):
        return QueryError(status, error_type or "bad_data", message, query=query)
    return PrometheusUnavailable(f"{url}: HTTP {status}: {message or response.reason}")


def _value(raw: object) -> float:
    # Prometheus sends values as strings: "1.5", "NaN", "+Inf".
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _sample(pair: object) -> tuple[float, float]:
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise ValueError(f"sample is not [time, value]: {json.dumps(pair)[:80]}")
    return float(pair[0]), _value(pair[1])


def _parse(result: object) -> list[Series]:
    """``data.result`` of a vector, matrix or scalar answer as a list of :class:`Series`."""
    if not isinstance(result, list):
        raise PrometheusUnavailable(f"unexpected result: {json.dumps(result)[:200]}")
    if len(result) == 2 and not isinstance(result[0], Mapping):
        return [Series({}, [_sample(result)])]  # a scalar: [time, "value"]
    out: list[Series] = []
    for item in result:
        if not isinstance(item, Mapping):
            raise PrometheusUnavailable(f"unexpected series: {json.dumps(item)[:200]}")
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        if "value" in item:
            samples = [_sample(item["value"])]
        else:
            samples = [_sample(p) for p in item.get("values") or ()]
        out.append(Series(labels, samples))
    return out
