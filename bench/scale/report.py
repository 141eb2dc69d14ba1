"""Renders ``bench/out/report.json`` as markdown: every figure with its command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TARGET_P99_S = 1.0
TARGET_RATIO = 3.0
"""Reaction p99 within this many times the floor's, at the largest size."""
TARGET_RSS_MIB = 150.0
"""Resident memory at 10,000 Pods (the largest size when it is 10,000)."""
TARGET_KIB_PER_POD = 6.0
"""Marginal resident memory per watched Pod, smallest to largest size."""
TARGET_STARTUP_RATIO = 2.0
"""Start-up within this many times the floor's listing."""
TARGET_IDLE_GROWTH = 1.5
"""Idle CPU per minute is "flat" when the largest size uses at most this many times the
smallest size's (plus 0.1 s, the resolution of a minute's /proc ticks on a busy box)."""


def idle_per_minute(fp: Mapping[str, Any], *, floor: bool = False) -> float:
    cpu = fp["floor_cpu_idle_s"] if floor else fp["cpu_idle_s"]
    return float(cpu) * 60 / float(fp["idle_s"])


def marginal_kib(a: Mapping[str, Any], b: Mapping[str, Any], *, key: str = "rss_idle_mib") -> float:
    """KiB of resident memory per Pod added between sizes ``a`` and ``b``."""
    return float((b["footprint"][key] - a["footprint"][key]) * 1024 / (b["pods"] - a["pods"]))


def shard_split(
    sizes: Sequence[Mapping[str, Any]],
) -> tuple[Mapping[str, Any], float | None] | None:
    """The shard measurement (at the largest size) and the single process's fixed cost in
    MiB, estimated as its RSS minus its Pods times the marginal cost per Pod between the
    smallest and the largest size (``None`` with one size: no marginal to use)."""
    if not sizes or not sizes[-1].get("shards"):
        return None
    big = sizes[-1]
    if len(sizes) < 2:
        return big["shards"], None
    kib = marginal_kib(sizes[0], big)
    return big["shards"], float(big["footprint"]["rss_idle_mib"] - kib * big["pods"] / 1024)


def _shard_rows(sh: Mapping[str, Any], fixed: float | None) -> list[str]:
    single = float(sh["single_rss_idle_mib"])
    rows = []
    for e in sh["each"]:
        share = e["pods"] / sh["single_pods"] if sh["single_pods"] else 0.0
        per_pod = (
            f"{(e['rss_idle_mib'] - fixed) / (single - fixed):.2f}"
            if fixed is not None and single > fixed
            else "–"
        )
        listed = "–" if e.get("pods_listed") is None else str(e["pods_listed"])
        rows.append(
            f"| {e['shard']} of {sh['total']} | {', '.join(e['namespaces'])} | {e['pods']} "
            f"({share:.0%}) | {listed} | {e['startup_s']:.2f} | {e['rss_ready_mib']:.0f} "
            f"| {e['rss_idle_mib']:.0f} | {e['rss_idle_mib'] / single:.2f} | {per_pod} "
            f"| {e['cpu_idle_s'] * 60 / sh['idle_s']:.2f} |"
        )
    return rows


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f}"


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def _ok(good: bool) -> str:
    return "met" if good else "**missed**"


def _counts(d: Mapping[str, float]) -> str:
    # API discovery (GET /api, /apis/<group>/<version>) is logged by path: one line for all.
    merged: dict[str, float] = {}
    for k, v in d.items():
        key = "get (API discovery)" if k.startswith("get /") else k
        merged[key] = merged.get(key, 0) + v
    return ", ".join(f"{k}: {v:g}" for k, v in sorted(merged.items())) or "none"


def _chain(size: Mapping[str, Any]) -> list[str]:
    """The operator's requests in the median incident of a size, as table rows."""
    each = [e for e in size["reaction"].get("each") or [] if e.get("operator_s") is not None]
    if not each:
        return []
    median = sorted(each, key=lambda e: e["operator_s"])[len(each) // 2]
    rows = [
        f"Median incident at {size['pods']} Pods ({median['deployment']}, "
        f"{median['operator_s'] * 1000:.0f} ms; floor {_ms(median.get('floor_s'))} ms): the "
        "operator's requests between the status write and its patch, times from the "
        "audit log relative to the write.",
        "",
        "| request | received at ms | took ms |",
        "|---|---|---|",
    ]
    rows += [f"| {c['request']} | {c['at_ms']:.1f} | {c['took_ms']:.1f} |" for c in median["chain"]]
    return [*rows, ""]


def main() -> None:
    """``python -m bench.scale.report bench/out/report.json``: re-render the markdown."""
    import json
    import sys
    from pathlib import Path

    src = Path(sys.argv[1])
    src.with_name("report.md" if src.name == "report.json" else "REPORT.md").write_text(
        markdown(json.loads(src.read_text()))
    )


def markdown(r: Mapping[str, Any]) -> str:
    cmd = "make bench  # = .venv/bin/python -m bench.run"
    sizes: list[dict[str, Any]] = list(r.get("sizes") or [])
    lines = [
        "# selfheal at cluster scale",
        "",
        f"Run {r['started']} on {r['machine']['cpus']} CPUs, Python {r['machine']['python']}; "
        f"`{r['command']}` took {r['total_s'] / 60:.1f} min. Every figure below comes from this "
        f"one run (`{cmd}`); the operator and the floor ran side by side, so their ratio holds "
        "on a noisy shared machine even when absolute times move. Raw figures: "
        "[report.json](report.json). How it is measured: [README.md](README.md).",
        "",
    ]
    if sizes:
        # The targets are set at 10,000 Pods; a run that also goes further reports those
        # sizes in the tables.
        big = next((s for s in sizes if s["pods"] == 10000), sizes[-1])
        reac = big["reaction"]
        op, fl = reac["operator_s"], reac["floor_s"]
        lines += ["## Targets", "", "| target | figure | |", "|---|---|---|"]
        if op and fl:
            lines.append(
                f"| reaction p99 within {TARGET_RATIO:g}x the floor ({big['pods']} Pods) | "
                f"{op['p99'] / fl['p99']:.2f}x ({_ms(op['p99'])} vs {_ms(fl['p99'])} ms) | "
                f"{_ok(op['p99'] <= TARGET_RATIO * fl['p99'])} |"
            )
            lines.append(
                f"| reaction p99 under 1 s at {big['pods']} Pods | {_ms(op['p99'])} ms | "
                f"{_ok(op['p99'] < TARGET_P99_S)} |"
            )
        fp = big["footprint"]
        rss = fp["rss_idle_mib"]
        peak = fp["rss_storm_peak_mib"]
        lines.append(
            f"| at most {TARGET_RSS_MIB:g} MiB resident at {big['pods']} Pods | {rss:.0f} MiB "
            f"idle, {peak:.0f} MiB peak in the storm ({rss / fp['floor_rss_idle_mib']:.2f}x the "
            f"floor's {fp['floor_rss_idle_mib']:.0f} MiB) "
            f"| {_ok(max(rss, peak) <= TARGET_RSS_MIB)} |"
        )
        if len(sizes) >= 2 and big is not sizes[0]:
            small = sizes[0]
            kib = marginal_kib(small, big)
            fkib = marginal_kib(small, big, key="floor_rss_idle_mib")
            lines.append(
                f"| at most {TARGET_KIB_PER_POD:g} KiB per Pod, marginal ({small['pods']} -> "
                f"{big['pods']}) | {kib:.1f} KiB (floor {fkib:.1f} KiB) "
                f"| {_ok(kib <= TARGET_KIB_PER_POD)} |"
            )
            idle_a, idle_b = idle_per_minute(small["footprint"]), idle_per_minute(fp)
            fidle_a = idle_per_minute(small["footprint"], floor=True)
            fidle_b = idle_per_minute(fp, floor=True)
            lines.append(
                f"| idle CPU per minute flat from {small['pods']} to {big['pods']} Pods | "
                f"{idle_a:.2f} -> {idle_b:.2f} s (floor {fidle_a:.2f} -> {fidle_b:.2f} s) "
                f"| {_ok(idle_b <= TARGET_IDLE_GROWTH * idle_a + 0.1)} |"
            )
        st, fst = big["startup_s"], big["floor_startup_s"]
        lines.append(
            f"| start-up within {TARGET_STARTUP_RATIO:g}x the floor's list ({big['pods']} Pods) "
            f"| {st / fst:.2f}x ({st:.2f} vs {fst:.2f} s) "
            f"| {_ok(st <= TARGET_STARTUP_RATIO * fst)} |"
        )
        split = shard_split(sizes)
        if split is not None:
            sh, fixed = split
            single = float(sh["single_rss_idle_mib"])
            each = sh["each"]
            ratios = " / ".join(f"{e['rss_idle_mib'] / single:.2f}x" for e in each)
            shares = " / ".join(
                f"{e['pods'] / sh['single_pods']:.0%}" for e in each if sh["single_pods"]
            )
            if fixed is not None:
                parts = [(e["rss_idle_mib"] - fixed) / (single - fixed) for e in each]
                good = all(
                    p <= 1.2 * e["pods"] / sh["single_pods"] + 0.05
                    for p, e in zip(parts, each, strict=True)
                )
                verdict = _ok(good)
                part = " / ".join(f"{p:.2f}x" for p in parts)
                detail = f"; per-Pod part {part} (fixed cost {fixed:.0f} MiB each, not halved)"
            else:
                verdict, detail = "–", " (one size: the per-Pod part is not separated)"
            lines.append(
                f"| {sh['total']} shards, each holding its share of the memory "
                f"({sizes[-1]['pods']} Pods) | RSS "
                f"{ratios} of the single process's {single:.0f} MiB for {shares} of the Pods"
                f"{detail} | {verdict} |"
            )
        writes = sum(s["api"]["pod_writes_total"] for s in sizes)
        lines.append(f"| zero Pod writes | {writes} | {_ok(writes == 0)} |")
        prom = r.get("prometheus") or []
        if len(prom) >= 2:
            q = [p["steady_queries_per_cycle"] for p in prom]
            lines.append(
                "| Prometheus queries per cycle independent of Deployments | "
                + " vs ".join(f"{v:g} ({p['deployments']})" for v, p in zip(q, prom, strict=True))
                + f" | {_ok(len(set(q)) == 1)} |"
            )
        lines.append("")

        lines += [
            "## 1. Reaction latency",
            "",
            "From the `pods/status` write that reaches the policy's threshold to the rollback "
            "patch accepted by the API server, both read from the audit log (`stageTimestamp`, "
            "microseconds). Floor: a bare watch client receiving the same write and sending one "
            "equivalent JSON patch. Milliseconds.",
            "",
            "| Pods | Deployments | incidents | operator p50 | p90 | p99 | max | floor p50 | p90 "
            "| p99 | max | ratio p50 | ratio p99 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in sizes:
            rc = s["reaction"]
            o, f = rc["operator_s"] or {}, rc["floor_s"] or {}
            missed = rc["missed_operator"]
            lines.append(
                f"| {s['pods']} | {s['deployments']} | {rc['incidents']}"
                + (f" ({missed} missed)" if missed else "")
                + f" | {_ms(o.get('p50'))} | {_ms(o.get('p90'))} | {_ms(o.get('p99'))} "
                f"| {_ms(o.get('max'))} | {_ms(f.get('p50'))} | {_ms(f.get('p90'))} "
                f"| {_ms(f.get('p99'))} | {_ms(f.get('max'))} | {_f(rc['ratio_p50'], '.2f')} "
                f"| {_f(rc['ratio_p99'], '.2f')} |"
            )
        lines += ["", *_chain(sizes[-1])]
        lines += [
            f"Reproduce: `{cmd}` (or a subset: `.venv/bin/python -m bench.run --sizes 1000 "
            "--incidents 30 --skip-prometheus`, which writes bench/out/ only).",
            "",
            "## 2. Footprint",
            "",
            "Resident memory (VmRSS) and CPU seconds (utime+stime) of the operator process, "
            "from /proc. *ready*: just after the initial listing; *idle*: after a minute "
            "without changes; *storm*: every Pod's status rewritten once, measured until the "
            "operator's CPU falls under twice its idle rate (at least 5%) again, at most 3 min.",
            "",
            "| Pods | RSS ready MiB | RSS idle MiB | RSS storm peak MiB | KiB per Pod (idle) "
            "| CPU s start-up | CPU s idle/min | storm writes | CPU s storm | CPU ms per Pod event "
            "| floor RSS idle MiB | floor CPU s idle/min | floor CPU s storm | RSS ratio "
            "| idle CPU ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in sizes:
            fp = s["footprint"]
            idle, fidle = idle_per_minute(fp), idle_per_minute(fp, floor=True)
            lines.append(
                f"| {s['pods']} | {fp['rss_ready_mib']:.0f} | {fp['rss_idle_mib']:.0f} "
                f"| {fp['rss_storm_peak_mib']:.0f} | {fp['rss_per_pod_kib']:.1f} "
                f"| {fp['cpu_startup_s']:.1f} | {idle:.2f} "
                f"| {fp['storm_writes']} | {fp['cpu_storm_s']:.1f} "
                f"| {fp['cpu_ms_per_pod_event']:.2f} | {fp['floor_rss_idle_mib']:.0f} "
                f"| {fidle:.2f} | {fp['floor_cpu_storm_s']:.1f} "
                f"| {fp['rss_idle_mib'] / fp['floor_rss_idle_mib']:.2f} "
                f"| {_f(idle / fidle if fidle else None, '.1f')} |"
            )
        if len(sizes) >= 2:
            a, b = sizes[0], sizes[-1]
            lines += [
                "",
                f"Marginal memory per watched Pod ({a['pods']} -> {b['pods']}): "
                f"{marginal_kib(a, b):.1f} KiB; the floor's: "
                f"{marginal_kib(a, b, key='floor_rss_idle_mib'):.1f} KiB.",
            ]
        lines += [
            "",
            f"Reproduce: `{cmd}`.",
            "",
            "## 3. API cost",
            "",
            "The operator's requests from the audit log (user "
            "`system:serviceaccount:selfheal-system:selfheal-test`), by verb and resource; "
            "watches are not counted (each is one long request).",
            "",
            "| Pods | per incident | per 1000 Pod events (storm) | idle, per minute "
            "| Pod writes (whole run) |",
            "|---|---|---|---|---|",
        ]
        for s in sizes:
            a = s["api"]
            lines.append(
                f"| {s['pods']} | {_counts(a['per_incident'])} | "
                f"{_counts(a['per_1000_pod_events'])} | {_counts(a['idle_per_minute'])} "
                f"| {a['pod_writes_total']} |"
            )
        lines += [
            "",
            f"Reproduce: `{cmd}`; the audit log is kept with `--keep-audit` (bench/out/audit.log).",
            "",
            "## 4. Start-up",
            "",
            "From process start to `/readyz` 200 (kopf's indexes and the Pod cache filled: a "
            "decision is possible), polled every 50 ms. The floor's time to list every "
            "Pod is its start-up.",
            "",
            "| Pods | operator s | floor s | ratio | start-up requests |",
            "|---|---|---|---|---|",
        ]
        for s in sizes:
            lines.append(
                f"| {s['pods']} | {s['startup_s']:.2f} | {s['floor_startup_s']:.2f} "
                f"| {s['startup_s'] / s['floor_startup_s']:.2f} "
                f"| {_counts(s['startup_requests'])} |"
            )
        lines += ["", f"Reproduce: `{cmd}`.", ""]
        split = shard_split(sizes)
        if split is not None:
            sh, fixed = split
            lines += [
                "## 6. Shards",
                "",
                f"At {sizes[-1]['pods']} Pods, after the single process stopped (its incidents "
                f"retired first, as before each size), {sh['total']} operator processes "
                f"`python -m selfheal ... --shard i --total-shards {sh['total']}` started side "
                "by side on the same cluster, each with its own Lease. Each watches every Pod "
                "cluster-wide and drops other shards' namespaces before summarising them. "
                "*Pods*: of its namespaces (the world's count); *listed*: its own first "
                f"listing (its log); RSS after {sh['idle_s']:.0f} s idle; *ratio*: to the "
                f"single process's {sh['single_rss_idle_mib']:.0f} MiB idle at this size "
                f"(floor: {sh['floor_rss_idle_mib']:.0f} MiB).",
                "",
                "| shard | namespaces | Pods | listed | ready s | RSS ready MiB | RSS idle MiB "
                "| ratio | per-Pod part ratio | CPU s idle/min |",
                "|---|---|---|---|---|---|---|---|---|---|",
                *_shard_rows(sh, fixed),
                "",
            ]
            if fixed is not None:
                lines += [
                    f"The interpreter, kopf and the clients cost about {fixed:.0f} MiB in every "
                    "process whatever it holds (the single process's RSS minus its Pods times "
                    "the marginal KiB per Pod above): that part does not halve. Only the "
                    "per-Pod part (RSS minus that fixed cost) splits with the Pods.",
                    "",
                ]
            lines += [
                f"Measured by `{r['command']}`. Reproduce: `{cmd}` (`--shards 0` leaves them "
                "out; `--shards 3` runs three).",
                "",
            ]
    prom = r.get("prometheus") or []
    if prom:
        lines += [
            "## 5. Prometheus cost",
            "",
            "One evaluation cycle = one `PrometheusEvaluator.evaluate` per trigger of a policy "
            "with two triggers (an error-ratio threshold and a learned latency baseline), in "
            "process against the real Prometheus. The first cycle of the baseline trigger "
            "fetches its history with a range query; later cycles fetch only new points.",
            "",
            "| Deployments | triggers | queries, first cycle | bytes, first cycle "
            "| queries per cycle (steady) | bytes per cycle (steady) | seconds per cycle |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in prom:
            lines.append(
                f"| {p['deployments']} | {p['triggers']} | {p['first_cycle']['queries']} "
                f"| {p['first_cycle']['bytes']} | {p['steady_queries_per_cycle']:g} "
                f"| {p['steady_bytes_per_cycle']:.0f} | {p['steady_seconds_per_cycle']:.3f} |"
            )
        lines += [
            "",
            "Reproduce: `.venv/bin/python -m bench.run --skip-scale` (bench/out/ only) or "
            f"`{cmd}`.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
