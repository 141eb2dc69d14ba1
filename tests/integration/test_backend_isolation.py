"""Each backend has its own threads: a hung Jira does not starve Prometheus queries.

Real servers on loopback: the Jira-compatible server made to hang on every request, and
the real Prometheus scraping the test exporter.
"""

from __future__ import annotations

import asyncio
import threading
import time

from selfheal.clients.jira import Jira, JiraCredentials, JiraUnavailable
from selfheal.clients.prometheus import Prometheus
from tests.support.exporter import Exporter
from tests.support.jira_server import JiraServer
from tests.support.prometheus import PrometheusServer

JIRA_CALLS = 12
"""More hung Jira calls than asyncio's default pool has threads on a small machine."""
QUERIES = 10


def _threads(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


async def test_a_hung_jira_leaves_prometheus_queries_answering(
    jira_server: JiraServer,
    jira_credentials: JiraCredentials,
    prometheus: PrometheusServer,
    exporter: Exporter,
) -> None:
    exporter.set_gauge("up_ratio", 1.0, namespace="shop", deployment="web")
    prometheus.wait_until("up_ratio", lambda r: len(r) == 1)
    # Every Jira request is received, then answered 30 s late: each call is abandoned
    # at its 0.5 s deadline while its thread waits for requests' 3 s read timeout.
    jira_server.delay_next(30.0, n=10_000)
    jira = Jira(url=jira_server.url, credentials=jira_credentials, timeout=3.0, deadline=0.5)
    prom = Prometheus(url=prometheus.url, timeout=3.0)
    try:
        jira_calls = [
            asyncio.create_task(jira.search_open(project="OPS", label=f"selfheal-{n}"))
            for n in range(JIRA_CALLS)
        ]
        await asyncio.sleep(0.1)  # the Jira calls hold their threads now
        jira_threads = _threads("selfheal-jira")

        started = time.monotonic()
        answers = await asyncio.gather(
            *(prom.instant("up_ratio") for _ in range(QUERIES)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        jira_results = await asyncio.gather(*jira_calls, return_exceptions=True)
    finally:
        await prom.close()
        await jira.close()

    ok = [a for a in answers if isinstance(a, list) and a and a[0].samples[0][1] == 1.0]
    assert len(ok) == QUERIES, [a for a in answers if not isinstance(a, list)]
    assert elapsed < 3.0  # generous: well under one Prometheus timeout
    assert [type(r) for r in jira_results] == [JiraUnavailable] * JIRA_CALLS
    assert all("no answer within 0.5s" in str(r) for r in jira_results)
    # Jira's pool is bounded: its hung calls never took more than its own workers.
    assert 1 <= jira_threads <= jira.workers
    # The hung calls were sent (the server got them), so Jira was really in the way.
    assert len(jira_server.requests_received()) >= 1
