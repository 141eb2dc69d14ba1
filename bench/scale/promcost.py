"""Prometheus cost per evaluation cycle, with 10 and with 500 matched Deployments.

The operator's own code path (``PrometheusEvaluator`` over ``clients.prometheus``) runs
in-process against the real Prometheus binary, which scrapes an exporter of request
counters for every Deployment. One cycle is one ``evaluate`` of each trigger of the
policy: a static error-ratio threshold and a learned latency baseline.
"""

from __future__ import annotations

import asyncio
import pathlib
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.support.exporter import Exporter
from tests.support.prometheus import PrometheusServer

from selfheal.clients.prometheus import Prometheus
from selfheal.detect.prometheus import PrometheusEvaluator
from selfheal.detect.signal import WorkloadRef
from selfheal.policy.parse import parse

ERROR_RATIO = (
    "sum by (namespace, deployment) "
    '(rate(http_requests_total{{namespace="{ns}",code=~"5.."}}[30s]))'
    ' / sum by (namespace, deployment) (rate(http_requests_total{{namespace="{ns}"}}[30s]))'
)
LATENCY = 'max by (namespace, deployment) (latency_seconds{{namespace="{ns}"}})'


def _policy(ns: str) -> Any:
    return parse(
        {
            "apiVersion": "selfheal.dev/v1alpha1",
            "kind": "HealingPolicy",
            "metadata": {"name": "prom", "namespace": ns, "generation": 1},
            "spec": {
                "target": {"kind": "Deployment", "selector": {"matchLabels": {"tier": "web"}}},
                "triggers": [
                    {
                        "name": "error-ratio",
                        "prometheus": {
                            "query": ERROR_RATIO.format(ns=ns),
                            "above": 0.05,
                            "for": "10s",
                            "interval": "1s",
                        },
                    },
                    {
                        "name": "latency",
                        "prometheus": {
                            "query": LATENCY.format(ns=ns),
                            "anomaly": {"sensitivity": "medium", "baseline": "10m", "step": "1s"},
                            "for": "10s",
                            "interval": "1s",
                        },
                    },
                ],
                "remediation": {"steps": [{"rollback": {"to": "LastHealthy"}}]},
            },
        }
    )


async def _cycles(url: str, ns: str, n: int, cycles: int) -> dict[str, Any]:
    client = Prometheus(url=url, timeout=10)
    evaluator = PrometheusEvaluator(client=client)
    policy = _policy(ns)
    workloads = [
        WorkloadRef(namespace=ns, name=f"w-{i:03d}", uid=str(uuid.uuid4())) for i in range(n)
    ]
    per_cycle: list[dict[str, float]] = []
    try:
        for c in range(cycles):
            q0, b0, t0 = client.stats.queries, client.stats.bytes, time.perf_counter()
            for trigger in policy.triggers:
                signals = await evaluator.evaluate(
                    policy=policy, trigger=trigger, workloads=workloads, now=time.time()
                )
                assert len(signals) == n
            per_cycle.append(
                {
                    "cycle": c,
                    "queries": client.stats.queries - q0,
                    "bytes": client.stats.bytes - b0,
                    "seconds": round(time.perf_counter() - t0, 4),
                }
            )
            await asyncio.sleep(1.0)
    finally:
        await client.close()
    steady = per_cycle[1:]
    return {
        "deployments": n,
        "triggers": len(policy.triggers),
        "first_cycle": per_cycle[0],
        "steady_queries_per_cycle": sum(c["queries"] for c in steady) / len(steady),
        "steady_bytes_per_cycle": sum(c["bytes"] for c in steady) / len(steady),
        "steady_seconds_per_cycle": sum(c["seconds"] for c in steady) / len(steady),
        "cycles": per_cycle,
    }


def _noisy(level: float, rnd: random.Random) -> Callable[[], float]:
    """A gauge around ``level`` with 2 ms of noise, drawn at each scrape."""
    return lambda: level + rnd.gauss(0, 0.002)


def _has(n: int) -> Callable[[list[dict[str, object]]], bool]:
    return lambda result: len(result) == n


def measure(out: pathlib.Path, *, sizes: tuple[int, ...] = (10, 500), cycles: int = 6) -> list[Any]:
    exporter = Exporter().start()
    rnd = random.Random(7)
    for n in sizes:
        ns = f"p{n}"
        for i in range(n):
            name = f"w-{i:03d}"
            exporter.set_rate(
                "http_requests_total", 20.0, namespace=ns, deployment=name, code="200"
            )
            exporter.set_rate("http_requests_total", 0.1, namespace=ns, deployment=name, code="500")
            level = 0.1 + rnd.random() * 0.05
            exporter.set_gauge("latency_seconds", _noisy(level, rnd), namespace=ns, deployment=name)
    server = PrometheusServer(data_dir=out / "prometheus" / "tsdb", targets=[exporter.target])
    (out / "prometheus").mkdir(parents=True, exist_ok=True)
    server.start()
    try:
        for n in sizes:
            server.wait_until(ERROR_RATIO.format(ns=f"p{n}"), _has(n), timeout=60)
        return [asyncio.run(_cycles(server.url, f"p{n}", n, cycles)) for n in sizes]
    finally:
        server.stop()
        exporter.stop()
