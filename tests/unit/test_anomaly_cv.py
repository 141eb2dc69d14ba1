"""Leave-one-category-out cross-validation (bench/anomaly/cv.py): a fold's choices come from the
other categories only, and pooling keeps each fold's decisions."""

from __future__ import annotations

import numpy as np
from bench.anomaly import cv, nab

from selfheal.detect.anomaly import DEFAULTS

STANDARD = nab.Profile(name="standard", tp=1.0, fn=1.0, fp=0.11)


def datafile(name: str, windows: tuple[tuple[int, int], ...], n: int = 1000) -> nab.DataFile:
    return nab.DataFile(
        name=name,
        timestamps=np.arange(n, dtype=np.float64) * 300.0,
        values=np.zeros(n),
        windows=windows,
    )


def spike_at(n: int, rows: list[int]) -> nab.FloatArray:
    s = np.zeros(n)
    s[rows] = 0.9
    return s


def test_rebase_is_monotone_and_puts_the_threshold_at_one_half() -> None:
    s = np.linspace(0.0, 1.0, 101)
    for threshold in (0.2, 0.62, 0.95):
        r = cv.rebase(s, threshold)
        assert np.all(np.diff(r) > 0)
        assert np.array_equal(r >= 0.5, s >= threshold)
        assert (r[0], r[-1]) == (0.0, 1.0)
    # NAB's "detect nothing" threshold keeps everything below one half.
    assert np.all(cv.rebase(s, 1.1) < 0.5)


def test_each_fold_chooses_on_the_other_categories_only() -> None:
    # Configuration 0 hits the windows of categories a and b and misses c's; configuration 1
    # does the opposite. Held out c, the fold must pick 0 (chosen on a and b), so c scores
    # badly; held out a or b, it picks 0 too (a, b and c vote 2 to 1).
    files = [datafile(f"{c}/f.csv", ((500, 520),)) for c in "abc"]
    good = {f.name: spike_at(1000, [505]) for f in files}
    bad = {f.name: spike_at(1000, [900]) for f in files}
    run0 = {"a/f.csv": good["a/f.csv"], "b/f.csv": good["b/f.csv"], "c/f.csv": bad["c/f.csv"]}
    run1 = {"a/f.csv": bad["a/f.csv"], "b/f.csv": bad["b/f.csv"], "c/f.csv": good["c/f.csv"]}
    (result,) = cv.cross_validate(files, [run0, run1], [STANDARD])
    by = {f.held_out: f for f in result.folds}
    assert by["c"].config_index == 0
    assert (by["c"].detected, by["c"].missed) == (0, 1)
    assert by["a"].config_index == 0
    assert by["a"].detected == 1
    # Choosing on c itself would have caught its window: cross-validation must not.
    assert result.pooled < 100.0


def test_a_category_without_windows_is_scored_by_its_false_positives() -> None:
    files = [datafile("a/f.csv", ((500, 520),)), datafile("quiet/f.csv", ())]
    run = {"a/f.csv": spike_at(1000, [505]), "quiet/f.csv": spike_at(1000, [300, 600])}
    (result,) = cv.cross_validate(files, [run], [STANDARD])
    quiet = next(f for f in result.folds if f.held_out == "quiet")
    assert quiet.held_out_normalised is None
    assert quiet.false_positives == 2
    assert quiet.held_out_raw < 0.0


def test_the_grid_is_built_around_the_one_configuration() -> None:
    grid = cv.grid()
    assert DEFAULTS in grid
    assert len(grid) == len(set(grid))
