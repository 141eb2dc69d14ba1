"""PromQL label matchers for the usage queries, and usage as the ticket shows it."""

from __future__ import annotations

from selfheal.evidence import usage as u
from selfheal.evidence.collect import ContainerResources
from tests.unit.test_render import bundle, describe


def test_matchers_escape_for_promql_strings_and_re2() -> None:
    assert u.string_literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert u.re2_escape("checkout.v2-x") == "checkout\\.v2-x"
    # A pod is matched exactly; "-" needs no escape anywhere (re.escape's "\-" broke it).
    assert u.selector(namespace="shop", deployment="web", pod="web-7d9f8-abcde") == (
        '{namespace="shop",pod="web-7d9f8-abcde",container!="",container!="POD"}'
    )
    assert u.selector(namespace="shop", deployment="web.v2", pod=None) == (
        '{namespace="shop",pod=~"web\\\\.v2-[a-z0-9]+-[a-z0-9]+",container!="",container!="POD"}'
    )


def test_queries_cover_the_window_with_bounded_resolution() -> None:
    q = u.queries(namespace="shop", deployment="web", pod="web-1-2", window=3600)
    assert set(q) == {"memory", "memory_peak", "cpu", "cpu_peak"}
    assert "max_over_time(container_memory_working_set_bytes{" in q["memory_peak"]
    assert q["memory_peak"].endswith("[3600s]))")
    assert "rate(container_cpu_usage_seconds_total{" in q["cpu"]
    assert q["cpu_peak"].endswith("[60s])[3600s:12s]))")


def test_the_ticket_shows_usage_now_and_its_peak_beside_the_limits() -> None:
    b = bundle()
    b.resources = [
        ContainerResources(
            container="app",
            requests={"cpu": "250m", "memory": "256Mi"},
            limits={"memory": "512Mi"},
            usage={"cpu": "412m", "cpu_peak": "900m", "memory": "300Mi", "memory_peak": "511Mi"},
        )
    ]
    b.usage_note = "peak over the incident window 2025-11-28 07:50 → 08:00 UTC"
    text = describe(b)
    assert "|app|250m|-|412m (peak 900m)|256Mi|512Mi|300Mi (peak 511Mi)|" in text
    assert "Usage: now, and peak over the incident window 2025-11-28 07:50 → 08:00 UTC." in text
