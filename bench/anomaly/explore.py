"""``python -m bench.anomaly.explore [--data DIR] [--out DIR]``: candidates vs ``DEFAULTS``.

Scores each candidate of ``members.py`` beside the shipped detector the way ``run.py`` scores
the latter: NAB in-sample (threshold optimised on the 24 files), leave-one-category-out
cross-validation (``cv.py``; each candidate's small parameter grid and the threshold chosen on
the other categories; also with the candidate's one configuration, threshold only), false
alarms on long quiet synthetic series (``noise.py``) at the in-sample thresholds, per-file
robustness of the cross-validated outputs, throughput and memory per series. Writes
``EXPLORE.md`` and ``explore.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import pathlib
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence

import numpy as np

from bench.anomaly import cv, members, nab, noise
from bench.anomaly.run import HERE, _data_dir, _diff
from selfheal.detect.anomaly import DEFAULTS, AnomalyDetector, Config

Update = Callable[[float, float], float]
Make = Callable[[], Update]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    name: str
    description: str
    grid: tuple[tuple[str, Make], ...]
    """(label, factory) per configuration; the first is the candidate's own."""


def _label(config: Config) -> str:
    return ", ".join(f"{k}={v}" for k, v in _diff(config).items()) or "DEFAULTS"


def _current(config_index: int) -> Make:
    config = cv.grid()[config_index]
    return lambda: AnomalyDetector(config).update


def _config(config: Config) -> Make:
    return lambda: AnomalyDetector(config).update


def _likelihood(k: int) -> Make:
    return lambda: members.LikelihoodScore(alpha=1.0 / k).update


def _blend(weight: float, k: int) -> Make:
    return lambda: members.Blend(weight=weight, alpha=1.0 / k).update


def _ensemble(bins: int, k: int) -> Make:
    return lambda: members.Ensemble(bins=bins, alpha=1.0 / k).update


def _floored(floor: float) -> Make:
    return lambda: members.Floored(floor=floor).update


def candidates() -> list[Candidate]:
    base = cv.grid().index(DEFAULTS)
    others = [i for i in range(len(cv.grid())) if i != base]
    return [
        Candidate(
            name="current (DEFAULTS)",
            description="the shipped detector; grid = cv.GRID_AXES (54 configurations)",
            grid=(
                ("DEFAULTS", _current(base)),
                *((_label(cv.grid()[i]), _current(i)) for i in others),
            ),
        ),
        Candidate(
            name="G: growing refractory memory (peak_memory=0.1)",
            description="`DEFAULTS` with the refractory peak remembering a tenth of the samples"
            " seen (at least 1 / (1 - decay), at most 1 / alpha_calibration), so quiet series"
            " alarm about log(n) times in n samples; grid = cv.GRID_AXES (54 configurations)",
            grid=tuple(
                (
                    _label(dataclasses.replace(c, peak_memory=0.1)),
                    _config(dataclasses.replace(c, peak_memory=0.1)),
                )
                for c in [DEFAULTS] + [c for c in cv.grid() if c != DEFAULTS]
            ),
        ),
        Candidate(
            name="P: refractory memory half the series' life",
            description="peak_memory=0.5 (and 1.0): G's mechanism pushed further",
            grid=tuple(
                (f"peak_memory={m}", _config(dataclasses.replace(DEFAULTS, peak_memory=m)))
                for m in (0.5, 1.0)
            ),
        ),
        Candidate(
            name="W: weekly seasonal profile instead of daily",
            description="seasonality=604800 (tweets, traffic and taxis follow a week too);"
            " with and without the growing memory",
            grid=tuple(
                (
                    f"seasonality=604800, peak_memory={m}",
                    _config(dataclasses.replace(DEFAULTS, seasonality=604800.0, peak_memory=m)),
                )
                for m in (0.1, 0.0)
            ),
        ),
        Candidate(
            name="L: likelihood of surprise",
            description="members.LikelihoodScore: NAB's likelihood over the detector's surprise"
            " (absolute rarity, no refractory peak); grid alpha in 1/250..1/2000",
            grid=tuple((f"alpha=1/{k}", _likelihood(k)) for k in (500, 250, 1000, 2000)),
        ),
        Candidate(
            name="M: blend 0.85 DEFAULTS + 0.15 L",
            description="members.Blend; grid weight in 0.75/0.85/0.95 x alpha in 1/500, 1/2000",
            grid=tuple(
                (f"weight={w}, alpha=1/{k}", _blend(w, k))
                for w, k in (
                    (0.85, 500),
                    (0.75, 500),
                    (0.95, 500),
                    (0.85, 2000),
                    (0.75, 2000),
                    (0.95, 2000),
                )
            ),
        ),
        Candidate(
            name="E: max(L, likelihood of context novelty)",
            description="members.Ensemble (CAD-OSE-like contexts, 32 bins x 6 lags); grid bins"
            " in 16/32 x alpha in 1/500, 1/2000",
            grid=tuple(
                (f"bins={b}, alpha=1/{k}", _ensemble(b, k))
                for b, k in ((32, 500), (16, 500), (32, 2000), (16, 2000))
            ),
        ),
        Candidate(
            name="F: refractory peak floored at 1 decade",
            description="members.Floored; grid floor in 0.5/1/2",
            grid=tuple((f"floor={f}", _floored(f)) for f in (1.0, 0.5, 2.0)),
        ),
    ]


def _stream(files: Sequence[nab.DataFile], make: Make) -> tuple[dict[str, nab.FloatArray], float]:
    scores: dict[str, nab.FloatArray] = {}
    seconds = 0.0
    samples = 0
    for f in files:
        update = make()
        ts = f.timestamps.tolist()
        vs = f.values.tolist()
        start = time.perf_counter()
        out = [update(t, v) for t, v in zip(ts, vs, strict=True)]
        seconds += time.perf_counter() - start
        samples += len(out)
        scores[f.name] = np.asarray(out, dtype=np.float64)
    return scores, samples / seconds


def quiet_alarms(make: Make, thresholds: Sequence[float]) -> dict[str, list[float]]:
    """Alarms per 1,000 scored samples on ``noise.SHAPES`` at each threshold."""
    first = nab.probation_length(noise.SAMPLES)
    out: dict[str, list[float]] = {}
    for shape, generate in noise.SHAPES.items():
        pooled = []
        for seed in noise.SEEDS:
            values = generate(np.random.default_rng(seed), noise.SAMPLES).tolist()
            ts = noise.timestamps(shape, np.random.default_rng(1000 + seed), noise.SAMPLES)
            update = make()
            s = [update(t, v) for t, v in zip(ts, values, strict=True)]
            pooled.append(np.asarray(s[first:]))
        p = np.concatenate(pooled)
        out[shape] = [1000.0 * float(np.count_nonzero(p >= t)) / len(p) for t in thresholds]
    return out


def heap_per_series(make: Make, *, step: float = 300.0, samples: int = 20_000) -> float:
    rng = np.random.default_rng(1)
    values = (10.0 + rng.normal(0.0, 1.0, samples)).tolist()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    update = make()
    for i, v in enumerate(values):
        update(1.4e9 + step * i, v)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return float(sum(d.size_diff for d in after.compare_to(before, "filename")))


def _point_driven(det: AnomalyDetector) -> bool:
    return abs(det.config.point_weight * det.last_point - det.last_surprise) < 1e-12


def detection_surprise(files: Sequence[nab.DataFile], threshold: float) -> dict[str, object]:
    """Why the quiet-alarm rate is hard to lower on this subset: the surprise (decades,
    ``-log10`` of the calibrated tail) of ``DEFAULTS`` at each window's first detection at
    ``threshold``, beside its surprise at its false alarms on ``noise.py``'s Gaussian series."""
    in_windows: list[float] = []
    point_driven = 0  # low-surprise detections whose surprise is the point (spike/dip) feature
    for f in files:
        det = AnomalyDetector(DEFAULTS)
        score: list[float] = []
        surprise: list[float] = []
        is_point: list[bool] = []
        for t, v in zip(f.timestamps.tolist(), f.values.tolist(), strict=True):
            score.append(det.update(t, v))
            surprise.append(det.last_surprise)
            is_point.append(_point_driven(det))
        first = nab.probation_length(len(score))
        for a, b in f.windows:
            hits = [i for i in range(max(a, first), b + 1) if score[i] >= threshold]
            if hits:
                in_windows.append(surprise[hits[0]])
                point_driven += surprise[hits[0]] < 2.0 and is_point[hits[0]]
    on_noise: list[float] = []
    noise_point = 0
    first = nab.probation_length(noise.SAMPLES)
    for seed in noise.SEEDS:
        values = noise.gaussian(np.random.default_rng(seed), noise.SAMPLES).tolist()
        det = AnomalyDetector(DEFAULTS)
        for i, v in enumerate(values):
            if det.update(1.4e9 + noise.STEP * i, v) >= threshold and i >= first:
                on_noise.append(det.last_surprise)
                noise_point += _point_driven(det)
    return {
        "threshold": threshold,
        "detections": len(in_windows),
        "detections_below_2_decades": sum(1 for u in in_windows if u < 2.0),
        "detections_below_2_decades_point_driven": point_driven,
        "detection_surprise_quartiles": np.percentile(in_windows, [25, 50, 75]).tolist(),
        "noise_alarms": len(on_noise),
        "noise_alarms_point_driven": noise_point,
        "noise_alarm_surprise_quartiles": np.percentile(on_noise, [25, 50, 75]).tolist(),
    }


def evaluate(
    files: Sequence[nab.DataFile], profiles: Sequence[nab.Profile], cand: Candidate
) -> dict[str, object]:
    runs = []
    rates = []
    for _, make in cand.grid:
        scores, rate = _stream(files, make)
        runs.append(scores)
        rates.append(rate)
    _, again = _stream(files, cand.grid[0][1])
    rate = max(rates[0], again)
    in_sample = nab.evaluate(files, runs[0], profiles)
    grid_cv = cv.cross_validate(files, runs, profiles)
    single_cv = cv.cross_validate(files, runs[:1], profiles)
    thresholds = [r.threshold for r in in_sample]
    alarms = quiet_alarms(cand.grid[0][1], thresholds)
    standard = grid_cv[0]
    windowed = [fs for f, fs in zip(files, standard.pooled_files, strict=True) if f.windows]
    return {
        "name": cand.name,
        "description": cand.description,
        "grid": [label for label, _ in cand.grid],
        "in_sample": {r.profile: r.normalised for r in in_sample},
        "in_sample_thresholds": {r.profile: r.threshold for r in in_sample},
        "cv_grid": {p.profile: p.pooled for p in grid_cv},
        "cv_grid_choices": {
            p.profile: {f.held_out: cand.grid[f.config_index][0] for f in p.folds} for p in grid_cv
        },
        "cv_single": {p.profile: p.pooled for p in single_cv},
        "quiet_alarms_per_1000_at_in_sample_thresholds": alarms,
        "cv_standard_files_below_zero": sum(1 for fs in windowed if fs.raw < 0.0),
        "cv_standard_worst_file_raw": min(fs.raw for fs in windowed),
        "samples_per_second": rate,
        "heap_bytes_per_series_300s": heap_per_series(cand.grid[0][1]),
    }


def _markdown(
    root: pathlib.Path,
    rows: Sequence[dict[str, object]],
    when: str,
    why: dict[str, object] | None = None,
) -> str:
    def triple(d: object) -> str:
        assert isinstance(d, dict)
        return " / ".join(
            f"{d[p]:.2f}" for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
        )

    lines = [
        "# Candidate detectors vs `DEFAULTS` (NAB subset, cross-validated, quiet series)",
        "",
        f"Command: `python -m bench.anomaly.explore`, run on {when}, data: `{root}`."
        " All numbers below come from this one run. Scores are NAB-normalised,"
        " standard / reward_low_FP_rate / reward_low_FN_rate. CV = leave one category out"
        ' (`cv.py`), pooled at each fold\'s threshold; "grid": the fold also chooses the'
        ' configuration among the candidate\'s grid; "1 config": threshold only. Quiet alarms:'
        " per 1,000 scored samples on `noise.py`'s Gaussian / bursty-count series (3 x 12,000"
        " samples each, nothing to find), at the candidate's in-sample standard threshold."
        " Throughput: `update()` calls, best of two passes over the corpus on a shared"
        " 2-core machine (it varies by about a third between runs); heap: one series after"
        " 20,000 samples at a 300 s step (tracemalloc).",
        "",
        "| detector | in-sample | CV, grid | CV, 1 config | quiet alarms/1k (std thr) |"
        " CV files < 0 (worst raw) | samples/s | heap/series |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        alarms = r["quiet_alarms_per_1000_at_in_sample_thresholds"]
        assert isinstance(alarms, dict)
        q = " / ".join(f"{v[0]:.2f}" for v in alarms.values())
        lines.append(
            f"| {r['name']} | {triple(r['in_sample'])} | {triple(r['cv_grid'])} |"
            f" {triple(r['cv_single'])} | {q} | {r['cv_standard_files_below_zero']}"
            f" ({r['cv_standard_worst_file_raw']:.2f}) | {r['samples_per_second']:,.0f} |"
            f" {float(str(r['heap_bytes_per_series_300s'])) / 1024:.0f} KiB |"
        )
    lines += ["", "Candidates, grids and the folds' choices:", ""]
    for r in rows:
        grid = r["grid"]
        assert isinstance(grid, list)
        listed = ", ".join(grid) if len(grid) <= 8 else f"{len(grid)} configurations"
        lines.append(f"- **{r['name']}**: {r['description']}. Grid: {listed}.")
        choices = r["cv_grid_choices"]
        assert isinstance(choices, dict)
        for profile, chosen in choices.items():
            lines.append(
                f"  - {profile}: " + ", ".join(f"{k} held out: {v}" for k, v in chosen.items())
            )
    if why is not None:
        dq = why["detection_surprise_quartiles"]
        nq = why["noise_alarm_surprise_quartiles"]
        assert isinstance(dq, list)
        assert isinstance(nq, list)
        lines += [
            "",
            "Why demanding absolute rarity loses NAB score here"
            " (`detection_surprise`): at its in-sample standard threshold"
            f" ({float(str(why['threshold'])):.4f}), `DEFAULTS` detects {why['detections']}"
            f" windows; {why['detections_below_2_decades']} of those first detections have a"
            " surprise below 2 decades (tail probability above 1%;"
            f" {why['detections_below_2_decades_point_driven']} of them from the point feature),"
            " quartiles"
            f" {dq[0]:.2f} / {dq[1]:.2f} / {dq[2]:.2f}. Its {why['noise_alarms']} false alarms"
            f" on the Gaussian quiet series ({why['noise_alarms_point_driven']} from the point"
            " feature) have surprise quartiles"
            f" {nq[0]:.2f} / {nq[1]:.2f} / {nq[2]:.2f}: the same absolute rarity. Those"
            " detections (most of nyc_taxi's and rogue_agent's) are told apart from noise only"
            " by being above the decayed refractory peak, which is also what fires on quiet"
            " data; any post-processing that demands absolute rarity (L, F, the likelihood"
            " share of M) drops them with the quiet alarms. G instead makes that peak"
            " remember longer as the series ages (`peak_memory`): the short files'"
            " detections are untouched and long quiet series alarm half as often, but the"
            " long files' subtle detections (nyc_taxi) go with the alarms.",
        ]
    by_name = {str(r["name"]).split(":")[0]: r for r in rows}
    if "current (DEFAULTS)" in by_name and "G" in by_name:
        cur, g = by_name["current (DEFAULTS)"], by_name["G"]

        def alarms(r: dict[str, object]) -> str:
            a = r["quiet_alarms_per_1000_at_in_sample_thresholds"]
            assert isinstance(a, dict)
            return " / ".join(f"{v[0]:.2f}" for v in a.values())

        lines += [
            "",
            "Why G is not shipped: it is the one candidate that lowers the quiet alarms at its"
            f" own NAB optimum (per 1,000 on {len(noise.SHAPES)} shapes:"
            f" {alarms(cur)} for `DEFAULTS`, {alarms(g)} for G) while keeping the in-sample"
            f" bars ({triple(cur['in_sample'])} -> {triple(g['in_sample'])}), but with the"
            " folds choosing the grid its cross-validated scores are"
            f" {triple(g['cv_grid'])} against {triple(cur['cv_grid'])} (standard / low FP /"
            " low FN): the standard one is below the 65 bar. The"
            " subset's long files, where the growing memory acts, are all in realKnownCause;"
            " measured while developing it, it helps two of them (machine_temperature,"
            " cpu_utilization_asg: fewer false positives) and costs nyc_taxi two windows,"
            " whose detections are as rare as noise. Its value, 0.1, is a round one, bounded"
            " by the 24 files: less hardly changes the quiet alarms, more costs in-sample"
            " points (P pushes it to 0.5 and 1.0).",
        ]
    lines += [
        "",
        "Caveat: each candidate's own configuration (the first of its grid) was picked while"
        " looking at all 24 files, as `DEFAULTS` was; the cross-validation measures how stable"
        " the choice is across categories, not a score on never-seen data.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anomaly.explore", description=__doc__)
    parser.add_argument("--data", help="NAB subset directory (data/, windows.json, profiles.json)")
    parser.add_argument("--out", default=str(HERE), help="where EXPLORE.md and explore.json go")
    parser.add_argument("--only", help="substring of the candidates' names to run")
    args = parser.parse_args(argv)
    root = _data_dir(args.data)
    files = nab.load_corpus(root)
    profiles = nab.load_profiles(root / "profiles.json")
    rows = []
    for cand in candidates():
        if args.only and args.only not in cand.name:
            continue
        row = evaluate(files, profiles, cand)
        print(json.dumps(row), flush=True)
        rows.append(row)
    why = None
    if rows and rows[0]["name"] == "current (DEFAULTS)":
        thresholds = rows[0]["in_sample_thresholds"]
        assert isinstance(thresholds, dict)
        why = detection_surprise(files, float(thresholds["standard"]))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = pathlib.Path(args.out)
    (out / "EXPLORE.md").write_text(_markdown(root, rows, when, why))
    payload = {"generated": when, "rows": rows, "detection_surprise": why}
    (out / "explore.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out / 'EXPLORE.md'} and {out / 'explore.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
