"""The NAB scorer in bench/anomaly reproduces NAB's rules (numenta/NAB sweeper, optimiser,
normalisation) on hand-checkable cases."""

from __future__ import annotations

import datetime as dt
import math
import os
import pathlib

import numpy as np
import pytest
from bench.anomaly import baselines, nab

STANDARD = nab.Profile(name="standard", tp=1.0, fn=1.0, fp=0.11)
LOW_FN = nab.Profile(name="reward_low_FN_rate", tp=1.0, fn=2.0, fp=0.11)
REPO = pathlib.Path(__file__).resolve().parents[2]


def data_dir() -> pathlib.Path:
    """The NAB subset, where the bench looks for it (``$SELFHEAL_NAB_DIR`` overrides)."""
    return pathlib.Path(
        os.environ.get("SELFHEAL_NAB_DIR") or REPO.parent / "shared" / "datasets" / "nab"
    )


def datafile(name: str, n: int, windows: tuple[tuple[int, int], ...]) -> nab.DataFile:
    return nab.DataFile(
        name=name,
        timestamps=np.arange(n, dtype=np.float64) * 300.0,
        values=np.zeros(n),
        windows=windows,
    )


@pytest.mark.parametrize(("rows", "length"), [(100, 15), (4032, 604), (5000, 750), (22695, 750)])
def test_probation_is_15_percent_capped_at_750(rows: int, length: int) -> None:
    assert nab.probation_length(rows) == length


def test_scaled_sigmoid_matches_nab_reference_points() -> None:
    xs = np.array([-1.0, -0.5, 0.0, 1.0, 3.0])
    got = nab.scaled_sigmoid(xs)
    assert got == pytest.approx([0.98661, 0.84828, 0.0, -0.98661, -1.0], abs=1e-5)


def test_rows_in_windows_reward_earliness_and_fps_cost_by_distance() -> None:
    w = nab.row_weights(100, [(30, 39), (75, 95)])
    inside = w.window >= 0
    assert inside.sum() == 10 + 21
    assert (w.reward[inside] > 0).all()
    assert (w.reward[~inside] < 0).all()
    # The first row of a window is worth exactly tpWeight; later rows less.
    assert w.reward[30] == pytest.approx(1.0)
    assert w.reward[31] < w.reward[30]
    # Before any window an FP costs the full weight; right after a window almost nothing.
    assert w.reward[20] == -1.0
    assert -0.5 < w.reward[40] < 0.0
    assert w.reward[40] > w.reward[60]


def test_only_the_first_detection_in_a_window_counts() -> None:
    w = nab.row_weights(100, [(30, 39)])
    early = np.zeros(100)
    early[[31, 33, 35, 37]] = 1.0
    late_only = np.zeros(100)
    late_only[37] = 1.0
    a = nab.score_file(early, w, n_windows=1, profile=STANDARD, threshold=0.5)
    b = nab.score_file(late_only, w, n_windows=1, profile=STANDARD, threshold=0.5)
    assert a.detected == 1
    assert a.false_positives == 0
    assert a.raw == pytest.approx(w.reward[31])
    assert b.raw == pytest.approx(w.reward[37])
    assert a.raw > b.raw


def test_missed_window_and_false_positives_add_up() -> None:
    w = nab.row_weights(200, [(100, 119)])
    s = np.zeros(200)
    s[[50, 60]] = 1.0  # two FPs before the window: full cost each
    got = nab.score_file(s, w, n_windows=1, profile=LOW_FN, threshold=0.5)
    assert got.missed == 1
    assert got.false_positives == 2
    assert got.raw == pytest.approx(-2.0 - 2 * 0.11)


def test_probationary_rows_are_never_scored() -> None:
    w = nab.row_weights(100, [(5, 9), (50, 59)])
    s = np.zeros(100)
    s[[2, 6]] = 1.0  # an FP and a "detection" inside the probation period
    got = nab.score_file(s, w, n_windows=2, profile=STANDARD, threshold=0.5)
    # The first window lies in the probation period: neither detected nor missed.
    assert (got.detected, got.missed, got.false_positives) == (0, 1, 0)


def test_threshold_sweep_picks_the_best_total() -> None:
    w = nab.row_weights(100, [(40, 59)])
    s = np.zeros(100)
    s[45] = 0.8  # a true detection
    s[70] = 0.9  # a louder false positive after the window
    s[20] = 0.5  # a quieter false positive before it
    threshold, raw = nab.optimise_threshold([(s, w)], profile=STANDARD)
    # 0.8 keeps the TP and the cheap late FP; 0.5 would add a full-cost FP; 0.9 misses.
    assert threshold == 0.8
    assert raw == pytest.approx(w.reward[45] + 0.11 * w.reward[70])


def test_normalisation_null_is_0_and_perfect_is_100() -> None:
    files = [
        datafile("a.csv", 1000, ((400, 449),)),
        datafile("b.csv", 1000, ((200, 249), (600, 649))),
    ]
    null = {f.name: np.full(1000, 0.5) for f in files}
    perfect = {f.name: np.zeros(1000) for f in files}
    for f in files:
        for lo, _ in f.windows:
            perfect[f.name][lo] = 1.0
    for result in nab.evaluate(files, null, [STANDARD, LOW_FN]):
        assert result.normalised == pytest.approx(0.0)
    for result in nab.evaluate(files, perfect, [STANDARD, LOW_FN]):
        assert result.normalised == pytest.approx(100.0)


def test_rolling_zscore_flags_a_spike_and_static_p99_uses_the_head() -> None:
    rz = baselines.RollingZScore(window=50)
    scores = [rz.update(float(i), math.sin(i / 3.0)) for i in range(200)]
    spike = rz.update(200.0, 10.0)
    assert spike > max(scores[60:])
    flags = baselines.static_p99_scores([float(i % 100) for i in range(1000)] + [500.0])
    assert flags[-1] == 1.0
    assert sum(flags[:150]) <= 2


def test_scorer_reproduces_a_published_nab_file_score() -> None:
    """NAB's published Numenta HTM result for realAdExchange/exchange-3_cpc_results.csv.

    numenta/NAB results/numenta/numenta_standard_scores.csv lists 2.72249645115 at threshold
    0.5422 (4 true-positive rows, no false positive). Its results file has exactly four rows at or
    above that threshold after the probation period; these are their timestamps.
    """
    root = data_dir()
    files = nab.load_corpus(root)
    f = next(f for f in files if f.name == "realAdExchange/exchange-3_cpc_results.csv")
    detections = [
        "2011-07-14 10:15:01",
        "2011-07-20 10:15:01",
        "2011-08-12 14:15:01",
        "2011-08-13 12:15:01",
    ]
    scores = np.zeros(len(f.values))
    for ts in detections:
        t = dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC).timestamp()
        scores[int(np.searchsorted(f.timestamps, t))] = 1.0
    weights = nab.row_weights(len(scores), f.windows)
    got = nab.score_file(scores, weights, n_windows=3, profile=STANDARD, threshold=0.5422)
    assert got.raw == pytest.approx(2.72249645115, abs=1e-9)
    assert (got.detected, got.missed, got.false_positives) == (3, 0, 0)


def test_published_totals_normalise_to_the_published_scores() -> None:
    """NAB's normalisation: Numenta HTM's total 46.6344501971 over 116 windows is 70.1."""
    files = [datafile(f"f{i}.csv", 1000, ((400, 449),)) for i in range(116)]
    null = {f.name: np.full(1000, 0.5) for f in files}
    (null_result,) = nab.evaluate(files, null, [STANDARD])
    null_raw = null_result.raw
    assert null_raw == pytest.approx(-116.0)
    assert 100 * (46.6344501971 - null_raw) / (116 - null_raw) == pytest.approx(70.1, abs=0.01)
