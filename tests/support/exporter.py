"""A metrics exporter on 127.0.0.1 whose series the tests set, for the real Prometheus to scrape.

Gauges hold what a test sets. Counters are *rates*: a counter set to ``5`` per second
grows continuously, computed from the wall clock at each scrape, so ``rate()`` in PromQL
sees exactly that rate with no background thread to drive it.

    exporter = Exporter().start()
    exporter.set_rate("http_requests_total", 20.0, namespace="shop", deployment="web", code="200")
    exporter.set_gauge("latency_seconds", 0.12, namespace="shop", deployment="web")
    exporter.set_gauge("latency_seconds", lambda: 0.1 + rng.gauss(0, 0.002), ...)  # per scrape
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LabelKey = tuple[tuple[str, str], ...]
V = TypeVar("V")


@dataclasses.dataclass
class _Counter:
    base: float
    rate: float
    since: float

    def value(self, now: float) -> float:
        return self.base + self.rate * max(0.0, now - self.since)


class _Series(Collector):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gauges: dict[str, dict[LabelKey, float | Callable[[], float]]] = {}
        self.counters: dict[str, dict[LabelKey, _Counter]] = {}

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        with self.lock:
            for name, series in self.gauges.items():
                g = GaugeMetricFamily(name, f"{name} (set by the test)", labels=_names(series))
                for key, value in series.items():
                    g.add_metric([v for _, v in key], value() if callable(value) else value)
                yield g
            for name, counters in self.counters.items():
                c = CounterMetricFamily(
                    name.removesuffix("_total"),
                    f"{name} (set by the test)",
                    labels=_names(counters),
                )
                for key, counter in counters.items():
                    c.add_metric([v for _, v in key], counter.value(now))
                yield c


def _names(series: Mapping[LabelKey, object]) -> list[str]:
    first = next(iter(series), ())
    return [k for k, _ in first]


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


class Exporter:
    def __init__(self) -> None:
        self._series = _Series()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._series)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> Exporter:
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self._registry)
        self.port = int(self._server.server_port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None

    @property
    def target(self) -> str:
        """``host:port`` for a Prometheus scrape config."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def _check(
        self, store: Mapping[str, Mapping[LabelKey, object]], name: str, key: LabelKey
    ) -> None:
        existing = next(iter(store.get(name, {})), None)
        if existing is not None and [k for k, _ in existing] != [k for k, _ in key]:
            raise ValueError(
                f"{name}: every series needs the same label names "
                f"({[k for k, _ in existing]}), got {[k for k, _ in key]}"
            )

    def set_gauge(self, name: str, value: float | Callable[[], float], **labels: str) -> None:
        """Set a gauge; a callable is called at each scrape (noise, a shifting level)."""
        key = _key(labels)
        with self._series.lock:
            self._check(self._series.gauges, name, key)
            self._series.gauges.setdefault(name, {})[key] = value

    def set_rate(self, name: str, per_second: float, **labels: str) -> None:
        """Make counter ``name`` (ending in ``_total``) grow at ``per_second`` from now on."""
        if not name.endswith("_total"):
            raise ValueError(f"{name}: counter names end in _total")
        key = _key(labels)
        now = time.time()
        with self._series.lock:
            self._check(self._series.counters, name, key)
            series = self._series.counters.setdefault(name, {})
            old = series.get(key)
            base = old.value(now) if old else 0.0
            series[key] = _Counter(base=base, rate=per_second, since=now)

    def remove(self, name: str, **labels: str) -> None:
        """Stop exporting one series (Prometheus marks it stale at the next scrape)."""
        key = _key(labels)
        with self._series.lock:
            _drop(self._series.gauges, name, key)
            _drop(self._series.counters, name, key)


def _drop(store: dict[str, dict[LabelKey, V]], name: str, key: LabelKey) -> None:
    series = store.get(name)
    if series is not None:
        series.pop(key, None)
        if not series:
            del store[name]
