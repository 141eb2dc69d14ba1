"""Resource usage from the real Prometheus: the queries parse, match the right pods, and
report the current value and the peak over the incident window."""

from __future__ import annotations

import re
import time

import pytest

from selfheal.clients.prometheus import Prometheus, QueryError
from selfheal.evidence import usage as u
from tests.support.exporter import Exporter
from tests.support.prometheus import PrometheusServer

MI = 2**20
# A Deployment name with a dot (DNS subdomain names allow it): the regex matcher must
# match the dot literally, and the string literal must stay valid PromQL.
DEPLOYMENT = "checkout.v2"
POD = "checkout.v2-7d9f8c6b5-x2x7k"
MEMORY = "container_memory_working_set_bytes"
CPU = "container_cpu_usage_seconds_total"


def _series(exporter: Exporter, pod: str, container: str, memory: float, cpu: float) -> None:
    labels = {"namespace": "shop", "pod": pod, "container": container}
    exporter.set_gauge(MEMORY, memory, **labels)
    exporter.set_rate(CPU, cpu, **labels)


async def test_usage_now_and_peak_over_the_window(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    start = time.time()
    level = {"memory": 300.0 * MI}
    labels = {"namespace": "shop", "pod": POD, "container": "app"}
    exporter.set_gauge(MEMORY, lambda: level["memory"], **labels)
    exporter.set_rate(CPU, 0.25, **labels)
    # What must not be counted: the pod's cgroup total (container=""), the pause
    # container, and a pod of another Deployment whose name differs only at the dot.
    _series(exporter, POD, "", 4000 * MI, 3.0)
    _series(exporter, POD, "POD", 1 * MI, 0.001)
    _series(exporter, "checkoutXv2-7d9f8c6b5-abcde", "app", 900 * MI, 2.0)
    _series(exporter, "checkout.v2-7d9f8c6b5-q8w7e", "sidecar", 40 * MI, 0.01)

    prometheus.wait_until(
        f'count_over_time({MEMORY}{{pod="{POD}",container="app"}}[1m]) >= 3',
        lambda r: len(r) == 1,
    )
    level["memory"] = 200.0 * MI
    prometheus.wait_until(
        f'{MEMORY}{{pod="{POD}",container="app"}} == {200 * MI}', lambda r: len(r) == 1
    )
    client = Prometheus(url=prometheus.url, timeout=5)
    try:
        # Rates over a few seconds: the test's series are seconds old, a real pod's are
        # not (the defaults are 5 minutes and 1 minute).
        rates = {"rate_window": 4.0, "peak_rate_window": 3.0}
        one = await u.collect_usage(
            client, namespace="shop", deployment=DEPLOYMENT, pod=POD, start=start, **rates
        )
        assert one.errors == {}
        assert set(one.by_container) == {"app"}
        app = one.by_container["app"]
        assert app["memory"] == 200 * MI
        assert app["memory_peak"] == 300 * MI
        assert app["cpu"] == pytest.approx(0.25, rel=0.25)
        assert app["cpu_peak"] == pytest.approx(0.25, rel=0.25)
        assert one.end - one.start == u.MIN_WINDOW  # a short incident is widened

        # No pod blamed (a metric incident): the Deployment's pods, by name; the busiest
        # value per container, never the other Deployment's.
        all_pods = await u.collect_usage(
            client, namespace="shop", deployment=DEPLOYMENT, pod=None, start=start, **rates
        )
        assert all_pods.errors == {}
        assert set(all_pods.by_container) == {"app", "sidecar"}
        assert all_pods.by_container["app"]["memory_peak"] == 300 * MI
        assert all_pods.by_container["sidecar"]["memory"] == 40 * MI

        # What the operator sent before: Python's re.escape in a PromQL string.
        with pytest.raises(QueryError) as err:
            await client.instant(f'{MEMORY}{{pod=~"{re.escape(POD)}"}}')
        assert err.value.status == 400
    finally:
        await client.close()


async def test_a_failing_backend_is_reported_per_query_never_raised(
    prometheus: PrometheusServer,
) -> None:
    url = prometheus.url
    prometheus.stop()
    client = Prometheus(url=url, timeout=2)
    try:
        got = await u.collect_usage(
            client, namespace="shop", deployment="web", pod=None, start=None
        )
    finally:
        await client.close()
    assert got.by_container == {}
    assert set(got.errors) == {"memory", "memory_peak", "cpu", "cpu_peak"}
    assert "failed: " in got.note


async def test_hostile_names_stay_inside_their_string_literal(
    prometheus: PrometheusServer,
) -> None:
    client = Prometheus(url=prometheus.url, timeout=5)
    try:
        # Not a valid Kubernetes name, but the matchers must hold for any string.
        got = await u.collect_usage(
            client, namespace='sh"op\\', deployment='a"}) or vector(1) #', pod=None, start=None
        )
    finally:
        await client.close()
    assert got.errors == {}
    assert got.by_container == {}
