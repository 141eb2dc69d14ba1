"""The scale benchmark's pure parts: percentiles, audit records, request counts, /proc."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from bench.scale import report, world
from bench.scale.stats import (
    AuditRecord,
    Distribution,
    audit_record,
    count_requests,
    cpu_seconds,
    per,
    percentile,
    pod_writes,
    ratio,
    rss_bytes,
)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
@pytest.mark.parametrize("values", [[3.0], [5.0, 1.0], [0.2, 0.1, 0.9, 0.4, 0.3], list(range(31))])
def test_percentile_agrees_with_numpy_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q=101"):
        percentile([1.0], 101)


def test_distribution_of_thirty_incidents() -> None:
    d = Distribution.of([i / 100 for i in range(1, 31)])
    assert (d.n, d.max) == (30, 0.30)
    assert d.p50 == pytest.approx(0.155)
    assert d.p90 == pytest.approx(0.271)
    assert d.p99 == pytest.approx(0.2971)
    assert ratio(0.3, 0.1) == pytest.approx(3.0)
    assert ratio(1.0, 0.0) is None


AUDIT = [
    # A watch start is logged at ResponseStarted and again when it ends: only the latter counts.
    {
        "stage": "ResponseStarted",
        "verb": "watch",
        "user": {"username": "op"},
        "objectRef": {"resource": "pods"},
        "requestReceivedTimestamp": "2026-01-01T00:00:00.000000Z",
        "stageTimestamp": "2026-01-01T00:00:00.001000Z",
    },
    {
        "stage": "ResponseComplete",
        "verb": "patch",
        "user": {"username": "admin"},
        "objectRef": {"resource": "pods", "subresource": "status", "namespace": "a", "name": "p"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-01-01T00:00:01.000000Z",
        "stageTimestamp": "2026-01-01T00:00:01.004250Z",
    },
    {
        "stage": "ResponseComplete",
        "verb": "patch",
        "user": {"username": "op"},
        "objectRef": {"resource": "deployments", "namespace": "a", "name": "d", "apiGroup": "apps"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-01-01T00:00:01.050000Z",
        "stageTimestamp": "2026-01-01T00:00:01.061500Z",
    },
    {
        "stage": "ResponseComplete",
        "verb": "get",
        "user": {"username": "op"},
        "requestURI": "/apis/apps/v1?timeout=32s",
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-01-01T00:00:02.000000Z",
        "stageTimestamp": "2026-01-01T00:00:02.001000Z",
    },
]


def _records() -> list[AuditRecord]:
    return [r for e in AUDIT if (r := audit_record(json.loads(json.dumps(e)))) is not None]


def test_audit_records_keep_completed_requests_with_microsecond_times() -> None:
    recs = _records()
    assert [r.resource for r in recs] == ["pods/status", "deployments", "/apis/apps/v1"]
    write, patch = recs[0], recs[1]
    assert (write.namespace, write.name, write.code) == ("a", "p", 200)
    # The latency the benchmark reports: patch accepted minus status write completed.
    assert patch.completed - write.completed == pytest.approx(0.05725, abs=1e-6)
    assert write.is_write
    assert patch.is_write
    assert not recs[2].is_write


def test_request_counts_by_user_and_window_and_pod_writes() -> None:
    recs = _records()
    start = recs[0].received
    op = count_requests(recs, user="op", start=start, end=start + 10)
    assert op == {"patch deployments": 1, "get /apis/apps/v1": 1}
    assert count_requests(recs, user="op", start=start, end=start + 0.01) == {}
    admin = count_requests(recs, user="admin", start=start, end=start + 10)
    assert pod_writes(admin) == 1
    assert pod_writes(op) == 0
    assert pod_writes({"get pods": 5, "list pods": 1, "watch pods": 1}) == 0
    assert pod_writes({"delete pods/eviction": 1, "create pods": 2}) == 3
    assert per({"b": 3, "a": 1}, 2) == {"a": 0.5, "b": 1.5}
    assert per({"a": 1}, 0) == {}


def test_proc_parsing() -> None:
    status = "Name:\tpython\nVmPeak:\t  9000 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n"
    assert rss_bytes(status) == 123456 * 1024
    with pytest.raises(ValueError, match="exited"):
        rss_bytes("Name:\tzombie\n")
    # A command name with spaces and parentheses must not shift the fields.
    stat = "4242 (python (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100"
    assert cpu_seconds(stat, ticks_per_second=100) == pytest.approx(3.0)


def test_victims_are_covered_and_spread() -> None:
    got = world.victims(100, 500, 30)
    assert len(set(got)) == 30
    assert all(100 <= i < 500 and world.is_covered(i) for i in got)
    assert max(got) - min(got) > 200  # spread over the range, not the first 30
    # Every namespace gets its share (3 each), in round-robin order.
    assert sorted(i % 10 for i in got) == sorted(list(range(10)) * 3)
    assert [i % 10 for i in got[:10]] == sorted(i % 10 for i in got[:10])
    small = world.victims(0, 100, 30)
    assert sorted(i % 10 for i in small) == sorted(list(range(10)) * 3)
    with pytest.raises(ValueError, match="only 10 covered"):
        world.victims(0, 10, 30)


def test_floor_detector_fires_at_the_threshold_only() -> None:
    now = 1_800_000_000.0
    for restarts, expected in [(0, False), (1, False), (world.THRESHOLD, True)]:
        status = world.pod_status("d-00001", 0, started=now, now=now, restarts=restarts)["status"]
        assert world.crossing(status) is expected


def _full_size() -> dict[str, Any]:
    dist = {"n": 30, "p50": 0.05, "p90": 0.08, "p99": 0.3, "max": 0.4, "mean": 0.06}
    floor = {"n": 30, "p50": 0.01, "p90": 0.02, "p99": 0.05, "max": 0.06, "mean": 0.015}
    size = {
        "pods": 10000,
        "deployments": 1000,
        "startup_s": 20.0,
        "floor_startup_s": 2.0,
        "startup_requests": {"list pods": 1},
        "reaction": {
            "incidents": 30,
            "missed_operator": 0,
            "missed_floor": 0,
            "operator_s": dist,
            "floor_s": floor,
            "ratio_p50": 5.0,
            "ratio_p99": 6.0,
            "each": [],
        },
        "footprint": {
            "rss_ready_mib": 150,
            "rss_idle_mib": 160,
            "rss_storm_peak_mib": 250,
            "rss_per_pod_kib": 16.4,
            "cpu_startup_s": 9.0,
            "cpu_idle_s": 3.0,
            "idle_s": 60,
            "storm_writes": 10000,
            "cpu_storm_s": 20.0,
            "cpu_ms_per_pod_event": 2.0,
            "floor_rss_idle_mib": 60,
            "floor_cpu_idle_s": 0.5,
            "floor_cpu_storm_s": 3.0,
        },
        "api": {
            "idle_per_minute": {},
            "per_incident": {"patch deployments": 1},
            "per_1000_pod_events": {},
            "pod_writes_total": 0,
        },
    }
    return size


def test_markdown_names_every_section_and_marks_missed_targets() -> None:
    size = _full_size()
    md = report.markdown(
        {
            "started": "2026-01-01T00:00:00Z",
            "command": "python -m bench.run",
            "machine": {"cpus": 2, "python": "3.11"},
            "total_s": 600,
            "sizes": [size],
            "prometheus": [
                {
                    "deployments": n,
                    "triggers": 2,
                    "first_cycle": {"queries": 2, "bytes": 10},
                    "steady_queries_per_cycle": 2.0,
                    "steady_bytes_per_cycle": 10.0 * n,
                    "steady_seconds_per_cycle": 0.01,
                }
                for n in (10, 500)
            ],
        }
    )
    for heading in ("1. Reaction", "2. Footprint", "3. API cost", "4. Start-up", "5. Prometheus"):
        assert heading in md
    assert (
        "| reaction p99 within 3x the floor (10000 Pods) | 6.00x (300 vs 50 ms) | **missed** |"
        in md
    )
    assert "| reaction p99 under 1 s at 10000 Pods | 300 ms | met |" in md
    assert "250 MiB peak in the storm (2.67x the floor's 60 MiB) | **missed** |" in md
    assert (
        "| start-up within 2x the floor's list (10000 Pods) | 10.00x (20.00 vs 2.00 s) "
        "| **missed** |" in md
    )
    assert "| zero Pod writes | 0 | met |" in md
    assert "2 (10) vs 2 (500) | met |" in md


def _two_sizes(idle_cpu_big: float) -> list[dict[str, Any]]:
    small, big = _full_size(), _full_size()
    small["pods"] = 1000
    small["footprint"].update(rss_idle_mib=60, floor_rss_idle_mib=40, cpu_idle_s=0.3)
    big["footprint"].update(rss_idle_mib=100, floor_rss_idle_mib=70, cpu_idle_s=idle_cpu_big)
    return [small, big]


def test_marginal_memory_and_idle_cpu_flatness_between_two_sizes() -> None:
    small, big = _two_sizes(0.35)
    assert report.marginal_kib(small, big) == pytest.approx(40 * 1024 / 9000)
    assert report.marginal_kib(small, big, key="floor_rss_idle_mib") == pytest.approx(
        30 * 1024 / 9000
    )
    assert report.idle_per_minute(big["footprint"]) == pytest.approx(0.35)
    for idle, verdict in ((0.35, "met"), (3.0, "**missed**")):
        md = report.markdown(
            {
                "started": "x",
                "command": "c",
                "machine": {"cpus": 2, "python": "3"},
                "total_s": 60,
                "sizes": _two_sizes(idle),
            }
        )
        line = next(x for x in md.splitlines() if x.startswith("| idle CPU per minute flat"))
        assert line.endswith(f"| {verdict} |")
        assert (
            "| at most 6 KiB per Pod, marginal (1000 -> 10000) | 4.6 KiB (floor 3.4 KiB) | met |"
            in md
        )


def test_the_shards_are_reported_beside_the_single_process_with_their_command() -> None:
    small, big = _two_sizes(0.35)  # 100 MiB idle at 10000 Pods; 4.6 KiB marginal
    big["shards"] = {
        "total": 2,
        "idle_s": 60,
        "single_rss_idle_mib": 100,
        "single_pods": 10000,
        "floor_rss_idle_mib": 70,
        "each": [
            {
                "shard": i,
                "namespaces": [f"bench-{n}" for n in range(i, 10, 2)],
                "pods": 5000,
                "pods_listed": 5000,
                "startup_s": 3.0,
                "rss_ready_mib": 70,
                "rss_idle_mib": 78,
                "cpu_idle_s": 0.2,
            }
            for i in range(2)
        ],
    }
    run: dict[str, Any] = {
        "started": "x",
        "command": "python -m bench.run --sizes 1000,10000",
        "machine": {"cpus": 2, "python": "3"},
        "total_s": 60,
        "sizes": [small, big],
    }
    split = report.shard_split([small, big])
    assert split is not None
    fixed = split[1]
    assert fixed == pytest.approx(100 - 40 / 9000 * 10000)  # about 55.6 MiB
    md = report.markdown(run)
    assert "## 6. Shards" in md
    assert "Measured by `python -m bench.run --sizes 1000,10000`" in md
    row = next(x for x in md.splitlines() if x.startswith("| 0 of 2 |"))
    # 78 MiB is 0.78x the single process; its per-Pod part (78 - 55.6) / (100 - 55.6).
    assert "| 5000 (50%) | 5000 | 3.00 | 70 | 78 | 0.78 | 0.51 | 0.20 |" in row
    target = next(x for x in md.splitlines() if x.startswith("| 2 shards"))
    assert "0.78x / 0.78x of the single process's 100 MiB for 50% / 50% of the Pods" in target
    assert "fixed cost 56 MiB each, not halved" in target
    assert target.endswith("| met |")
    # Without shards in the run: no section.
    del big["shards"]
    assert "## 6. Shards" not in report.markdown(run)
