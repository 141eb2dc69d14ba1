"""The Prometheus client against the real server: results, error mapping, timeouts, counts."""

from __future__ import annotations

import itertools
import math
import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from selfheal.clients.prometheus import Prometheus, PrometheusUnavailable, QueryError
from tests.support.exporter import Exporter
from tests.support.prometheus import PrometheusServer, free_port


def _ready(server: PrometheusServer, exporter: Exporter) -> None:
    exporter.set_gauge("latency_seconds", 0.25, namespace="shop", deployment="web")
    exporter.set_gauge("latency_seconds", 0.5, namespace="shop", deployment="api")
    # Three scrapes of both series, so a range over the last seconds has them all.
    server.wait_until("count_over_time(latency_seconds[1m]) >= 3", lambda r: len(r) == 2)


async def test_instant_and_range_queries_return_typed_series(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    _ready(prometheus, exporter)
    client = Prometheus(url=prometheus.url, timeout=5)
    before = client.stats.queries, client.stats.bytes

    now = time.time()
    series = await client.instant("latency_seconds", at=now)
    by_name = {s.labels["deployment"]: s for s in series}
    assert set(by_name) == {"web", "api"}
    assert by_name["web"].labels["namespace"] == "shop"
    [(t, v)] = by_name["web"].samples
    assert t == pytest.approx(now, abs=0.01)
    assert v == 0.25

    window = await client.range("latency_seconds", start=now - 4, end=now, step=1)
    points = {s.labels["deployment"]: s.samples for s in window}
    assert 2 <= len(points["api"]) <= 5
    assert all(v == 0.5 for _, v in points["api"])
    times = [t for t, _ in points["api"]]
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(times))

    scalar = await client.instant("scalar(sum(latency_seconds))")
    assert scalar[0].labels == {}
    assert scalar[0].samples[0][1] == pytest.approx(0.75)
    nan = await client.instant("0/0")
    assert math.isnan(nan[0].samples[0][1])

    assert client.stats.queries - before[0] == 4
    assert client.stats.bytes - before[1] > 200
    await client.close()


async def test_bad_promql_is_a_query_error_with_prometheus_message(
    prometheus: PrometheusServer,
) -> None:
    client = Prometheus(url=prometheus.url, timeout=5)
    with pytest.raises(QueryError) as err:
        await client.instant("sum(rate(http_requests_total[5m])")
    assert err.value.status == 400
    assert err.value.error_type == "bad_data"
    assert "parse error" in err.value.message
    assert err.value.query == "sum(rate(http_requests_total[5m])"
    assert client.stats.errors == 1


async def test_an_execution_error_is_a_query_error_too(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    _ready(prometheus, exporter)
    client = Prometheus(url=prometheus.url, timeout=5)
    with pytest.raises(QueryError) as err:
        # Two series per namespace on each side: Prometheus refuses the match (422).
        await client.instant("latency_seconds + on(namespace) latency_seconds")
    assert err.value.status == 422
    assert "many-to-many" in err.value.message


async def test_a_server_that_is_down_is_unavailable_at_once() -> None:
    client = Prometheus(url=f"http://127.0.0.1:{free_port()}", timeout=5)
    started = time.monotonic()
    with pytest.raises(PrometheusUnavailable, match=r"127\.0\.0\.1"):
        await client.instant("up")
    assert time.monotonic() - started < 5  # no retries with backoff
    failed = REGISTRY.get_sample_value(
        "selfheal_backend_errors_total", {"backend": "prometheus", "kind": "unavailable"}
    )
    assert failed is not None
    assert failed >= 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


async def test_a_server_that_never_answers_times_out_as_unavailable(silent_server: int) -> None:
    client = Prometheus(url=f"http://127.0.0.1:{silent_server}", timeout=1)
    started = time.monotonic()
    with pytest.raises(PrometheusUnavailable, match="no answer within 1s"):
        await client.range("up", start=time.time() - 60, end=time.time(), step=15)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 4


async def test_requests_are_counted_in_the_operator_metrics(prometheus: PrometheusServer) -> None:
    def ok() -> float:
        return (
            REGISTRY.get_sample_value(
                "selfheal_backend_requests_total",
                {"backend": "prometheus", "operation": "query", "status": "200"},
            )
            or 0.0
        )

    client = Prometheus(url=prometheus.url, timeout=5)
    before = ok()
    await client.instant("up")
    await client.instant("up")
    assert ok() - before == 2
