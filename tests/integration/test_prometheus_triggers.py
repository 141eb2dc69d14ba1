"""Prometheus triggers evaluated against the real Prometheus scraping a test exporter.

Every wait is bounded; evaluations use the wall clock as ``now`` because Prometheus'
samples carry wall-clock timestamps.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from selfheal.clients.prometheus import Prometheus
from selfheal.detect.prometheus import PrometheusEvaluator
from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.policy.model import (
    AnomalySpec,
    HealingPolicy,
    PrometheusTrigger,
    Sensitivity,
    Trigger,
)
from tests.support.exporter import Exporter
from tests.support.fixtures.prometheus import MakePrometheus
from tests.support.prometheus import PrometheusServer, openmetrics

ERROR_RATIO = (
    'sum by (namespace, deployment) (rate(http_requests_total{code=~"5.."}[5s]))\n'
    "  / sum by (namespace, deployment) (rate(http_requests_total[5s]))"
)
LATENCY = "max by (namespace, deployment) (latency_seconds)"


def policy(*triggers: Trigger) -> HealingPolicy:
    return HealingPolicy(namespace="shop", name="checkout", generation=1, triggers=triggers)


def ref(name: str) -> WorkloadRef:
    return WorkloadRef(namespace="shop", name=name)


def traffic(exporter: Exporter, deployment: str, *, ok: float, errors: float) -> None:
    labels = {"namespace": "shop", "deployment": deployment}
    exporter.set_rate("http_requests_total", ok, code="200", **labels)
    exporter.set_rate("http_requests_total", errors, code="500", **labels)


def deployments(result: list[dict[str, object]]) -> set[str]:
    """The ``deployment`` labels of a raw query result."""
    out = set()
    for item in result:
        metric = item.get("metric")
        if isinstance(metric, dict):
            out.add(str(metric.get("deployment")))
    return out


def by_workload(signals: Sequence[Signal]) -> dict[str, Signal]:
    return {s.workload.name: s for s in signals}


async def evaluate_until(
    evaluator: PrometheusEvaluator,
    p: HealingPolicy,
    trigger: Trigger,
    workloads: Sequence[WorkloadRef],
    done: Callable[[dict[str, Signal]], bool],
    *,
    every: float = 0.5,
    timeout: float = 30.0,
) -> list[tuple[float, dict[str, Signal]]]:
    """Evaluate every ``every`` s until ``done`` (bounded); returns every (now, signals)."""
    history: list[tuple[float, dict[str, Signal]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        got = by_workload(
            await evaluator.evaluate(policy=p, trigger=trigger, workloads=workloads, now=now)
        )
        history.append((now, got))
        if done(got):
            return history
        await asyncio.sleep(every)
    pytest.fail(f"condition not met within {timeout}s; last signals: {history[-1][1]}")


# -- static thresholds -----------------------------------------------------------------------


async def test_error_ratio_over_threshold_fires_only_after_for(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    traffic(exporter, "web", ok=20, errors=0)
    traffic(exporter, "api", ok=20, errors=0)
    traffic(exporter, "idle", ok=0, errors=0)  # 0/0: NaN
    prometheus.wait_until(ERROR_RATIO, lambda r: len(r) == 3)
    trigger = Trigger(
        name="error-ratio",
        prometheus=PrometheusTrigger(query=ERROR_RATIO, above=0.05, for_=3.0, interval=0.5),
    )
    p = policy(trigger)
    workloads = [ref("web"), ref("api"), ref("idle"), ref("absent")]
    evaluator = PrometheusEvaluator(client=Prometheus(url=prometheus.url, timeout=5))

    first = by_workload(
        await evaluator.evaluate(policy=p, trigger=trigger, workloads=workloads, now=time.time())
    )
    assert first["web"].health is Health.HEALTHY
    assert first["api"].health is Health.HEALTHY
    assert (first["idle"].health, first["idle"].cause) == (Health.UNKNOWN, "NaN")
    assert (first["absent"].health, first["absent"].cause) == (Health.UNKNOWN, "NoData")
    assert "'error-ratio'" in first["absent"].detail

    traffic(exporter, "web", ok=20, errors=10)  # a third of the requests fail
    prometheus.wait_until(ERROR_RATIO + " > 0.05", lambda r: "web" in deployments(r))
    history = await evaluate_until(
        evaluator, p, trigger, workloads, lambda s: s["web"].health is Health.UNHEALTHY
    )
    seen = [(now, s["web"]) for now, s in history]
    fired_at, fired = seen[-1]
    pending = [(now, s) for now, s in seen if s.cause == "Pending"]
    assert pending, "the breach must be pending before it fires"
    first_bad = pending[0][0]
    # Not before ``for`` has elapsed since the first evaluation that saw the breach ...
    assert all(now - first_bad < 3.0 for now, _ in pending)
    assert fired_at - first_bad >= 3.0
    # ... and not much later either (evaluations every 0.5 s).
    assert fired_at - first_bad < 3.0 + 2.0
    assert fired.cause == "ThresholdExceeded"
    assert fired.evidence["value"] == pytest.approx(1 / 3, rel=0.2)
    assert fired.evidence["above"] == 0.05
    assert fired.evidence["since"] == first_bad
    samples = fired.evidence["samples"]
    assert isinstance(samples, list)
    assert len(samples) >= 3
    assert "'error-ratio'" in fired.detail
    assert fired.at == fired_at
    # The healthy neighbour never fired.
    assert all(s["api"].health is Health.HEALTHY for _, s in history)

    traffic(exporter, "web", ok=20, errors=0)
    await evaluate_until(
        evaluator,
        p,
        trigger,
        workloads,
        lambda s: s["web"].health is Health.HEALTHY,
        timeout=20,
    )


# -- learned baselines -----------------------------------------------------------------------


class Level:
    """A noisy gauge level a test can shift; called at each scrape."""

    def __init__(self, level: float, noise: float, seed: int) -> None:
        self.level = level
        self.noise = noise
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.level + self._rng.gauss(0.0, self.noise)


def latency_history(
    exporter: Exporter, deployments: Sequence[str], *, seconds: int, level: float, noise: float
) -> str:
    """The last ``seconds`` of a noisy latency gauge, as if scraped each second."""
    end = time.time()
    rng = random.Random(7)
    series = []
    for d in deployments:
        labels = {
            "job": "test",
            "instance": exporter.target,
            "namespace": "shop",
            "deployment": d,
        }
        samples = [(end - seconds + i, level + rng.gauss(0.0, noise)) for i in range(seconds)]
        series.append((labels, samples))
    return openmetrics("latency_seconds", series)


async def test_learned_baseline_fires_on_a_level_shift_and_not_on_the_same_series_without(
    make_prometheus: MakePrometheus, exporter: Exporter
) -> None:
    # Half an hour of history at 1 s resolution, backfilled, then live scrapes continue the
    # same two series: ~100 ms latency with 2 ms of noise.
    history = latency_history(exporter, ["web", "api"], seconds=1800, level=0.1, noise=0.002)
    web, api = Level(0.1, 0.002, seed=1), Level(0.1, 0.002, seed=2)
    exporter.set_gauge("latency_seconds", web, namespace="shop", deployment="web")
    exporter.set_gauge("latency_seconds", api, namespace="shop", deployment="api")
    server = make_prometheus(history)
    server.wait_until("latency_seconds", lambda r: len(r) == 2)
    await asyncio.sleep(3)  # a few live samples past the backfill's end

    client = Prometheus(url=server.url, timeout=10)
    trigger = Trigger(
        name="latency",
        prometheus=PrometheusTrigger(
            query=LATENCY,
            anomaly=AnomalySpec(sensitivity=Sensitivity.MEDIUM, baseline=1800.0, step=1.0),
            for_=3.0,
            interval=1.0,
        ),
    )
    p = policy(trigger)
    workloads = [ref("web"), ref("api")]
    evaluator = PrometheusEvaluator(client=client)

    first = by_workload(
        await evaluator.evaluate(policy=p, trigger=trigger, workloads=workloads, now=time.time())
    )
    first_bytes = client.stats.bytes
    assert first["web"].health is Health.HEALTHY, first["web"].detail
    assert first["api"].health is Health.HEALTHY, first["api"].detail

    # Quiet for a while: the same series, nothing shifted.
    quiet: list[tuple[float, dict[str, Signal]]] = []
    for _ in range(8):
        await asyncio.sleep(0.5)
        got = by_workload(
            await evaluator.evaluate(
                policy=p, trigger=trigger, workloads=workloads, now=time.time()
            )
        )
        quiet.append((time.time(), got))
    assert all(s[w].health is Health.HEALTHY for _, s in quiet for w in ("web", "api"))
    # Later evaluations fetch only new points: far fewer bytes than the first.
    later_bytes = (client.stats.bytes - first_bytes) / len(quiet)
    assert later_bytes < first_bytes / 20

    shifted_at = time.time()
    web.level = 0.2  # the deploy doubled latency
    history_web = await evaluate_until(
        evaluator, p, trigger, workloads, lambda s: s["web"].health is Health.UNHEALTHY
    )
    fired_at, signals = history_web[-1]
    fired = signals["web"]
    assert fired.cause == "AnomalyDetected"
    assert fired_at - shifted_at >= 3.0
    band = fired.evidence["band"]
    assert isinstance(band, list)
    low, high = band
    assert high < 0.15 < 0.2
    assert low < 0.1 < high
    onset = fired.evidence["onset"]
    assert isinstance(onset, dict)
    assert onset["value"] == pytest.approx(0.2, abs=0.02)
    assert "'latency'" in fired.detail
    assert "above its learned band" in fired.detail
    # The unshifted series stayed quiet throughout.
    assert all(s["api"].health is Health.HEALTHY for _, s in history_web)


# -- outages and errors ----------------------------------------------------------------------


async def test_prometheus_down_mid_test_is_unknown_never_unhealthy(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    traffic(exporter, "web", ok=10, errors=5)  # breaching from the start
    prometheus.wait_until(ERROR_RATIO, lambda r: len(r) == 1)
    trigger = Trigger(
        name="error-ratio",
        prometheus=PrometheusTrigger(query=ERROR_RATIO, above=0.05, for_=2.0, interval=0.5),
    )
    p = policy(trigger)
    evaluator = PrometheusEvaluator(client=Prometheus(url=prometheus.url, timeout=2))
    before = by_workload(
        await evaluator.evaluate(policy=p, trigger=trigger, workloads=[ref("web")], now=time.time())
    )["web"]
    assert (before.health, before.cause) == (Health.HEALTHY, "Pending")

    prometheus.stop()
    down: list[Signal] = []
    for _ in range(6):  # 3 s of outage: longer than ``for``
        down += await evaluator.evaluate(
            policy=p, trigger=trigger, workloads=[ref("web")], now=time.time()
        )
        await asyncio.sleep(0.5)
    assert all(s.health is Health.UNKNOWN for s in down)
    assert {s.cause for s in down} == {"BackendUnavailable"}
    assert "'error-ratio'" in down[0].detail
    assert "unavailable" in down[0].detail

    prometheus.start()
    # Back: the breach is seen again, and (the outage having been longer than 2.5
    # intervals) it waits a full ``for`` again before firing.
    history = await evaluate_until(
        evaluator, p, trigger, [ref("web")], lambda s: s["web"].health is Health.UNHEALTHY
    )
    seen = [s["web"] for _, s in history]
    assert seen[0].health is not Health.UNHEALTHY
    assert any(s.cause == "Pending" for s in seen)


async def test_bad_promql_is_unknown_with_a_message_naming_the_trigger(
    prometheus: PrometheusServer,
) -> None:
    trigger = Trigger(
        name="broken",
        prometheus=PrometheusTrigger(query="sum(rate(http_requests_total[5m])", above=1.0),
    )
    evaluator = PrometheusEvaluator(client=Prometheus(url=prometheus.url, timeout=5))
    signals = await evaluator.evaluate(
        policy=policy(trigger),
        trigger=trigger,
        workloads=[ref("web"), ref("api")],
        now=time.time(),
    )
    assert [(s.health, s.cause) for s in signals] == [(Health.UNKNOWN, "QueryFailed")] * 2
    assert "shop/checkout trigger 'broken'" in signals[0].detail
    assert "parse error" in signals[0].detail
    assert signals[0].evidence["query"] == "sum(rate(http_requests_total[5m])"


async def test_no_prometheus_configured_is_unknown() -> None:
    trigger = Trigger(name="t", prometheus=PrometheusTrigger(query="up", above=1.0))
    signals = await PrometheusEvaluator(client=None).evaluate(
        policy=policy(trigger), trigger=trigger, workloads=[ref("web")], now=time.time()
    )
    assert (signals[0].health, signals[0].cause) == (Health.UNKNOWN, "BackendUnavailable")
    assert "no Prometheus URL" in signals[0].detail


# -- one query per trigger -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        PrometheusTrigger(query=LATENCY, above=1.0, for_=0.0),
        PrometheusTrigger(query=LATENCY, anomaly=AnomalySpec(baseline=120.0, step=1.0), for_=0.0),
    ],
    ids=["threshold", "anomaly"],
)
async def test_queries_per_evaluation_do_not_grow_with_the_workloads(
    prometheus: PrometheusServer, exporter: Exporter, spec: PrometheusTrigger
) -> None:
    names = [f"svc-{i:02d}" for i in range(50)]
    for i, name in enumerate(names):
        exporter.set_gauge("latency_seconds", 0.1 + i / 1000, namespace="shop", deployment=name)
    # Three scrapes, so the grid point before now has data for every series.
    prometheus.wait_until("count_over_time(latency_seconds[1m]) >= 3", lambda r: len(r) == 50)
    trigger = Trigger(name="latency", prometheus=spec)
    p = policy(trigger)

    async def queries_per_evaluation(workloads: list[WorkloadRef]) -> list[int]:
        client = Prometheus(url=prometheus.url, timeout=5)
        evaluator = PrometheusEvaluator(client=client)
        counts = []
        for _ in range(3):
            before = client.stats.queries
            signals = await evaluator.evaluate(
                policy=p, trigger=trigger, workloads=workloads, now=time.time()
            )
            counts.append(client.stats.queries - before)
            assert len(signals) == len(workloads)
            assert all(s.health is Health.HEALTHY for s in signals), signals[0].detail
            await asyncio.sleep(1.0)
        return counts

    one = await queries_per_evaluation([ref(names[0])])
    fifty = await queries_per_evaluation([ref(n) for n in names])
    assert one == fifty == [1, 1, 1]
