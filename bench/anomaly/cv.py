"""Leave-one-category-out cross-validation: what the detector scores on files it was not tuned on.

For each of the corpus' categories (``artificialNoAnomaly``, ``artificialWithAnomaly``,
``realAdExchange``, ``realKnownCause``), every choice is made on the *other* categories only:
the configuration, among ``GRID`` (a product of the few parameters the score is most sensitive
to), and the score threshold, NAB's way (the one that maximises the summed raw score of the
training files, per cost profile). The held-out category's files are then scored with that
choice. No parameter is chosen on a file it is scored on.

The held-out outputs of the four folds are pooled and scored by NAB's rules with one threshold.
Each fold's scores are first mapped, monotonically, so that the fold's own threshold lands on
0.5 (``rebase``); the pooled files are then scored at 0.5. That is the headline figure: every
detection is exactly the one its fold decided. NAB's optimiser run on the pooled, rebased
outputs is reported beside it (``reoptimised``), labelled as such, because that threshold is
chosen on the held-out files themselves.

``artificialNoAnomaly`` has no labelled window. As a training category it only penalises false
positives (which is what it is for); held out, its files can only lose points (their false
positives), and its own normalised score is undefined (null and perfect are both 0), so it is
reported as raw score and false-positive rows, and counts in the pooled figure.

Caveat, said in the report too: ``DEFAULTS`` and the grid's centre were themselves developed
looking at all 24 files, so this measures how stable the choice is across categories, not a
score on data never looked at; the full 58-file corpus, scored from outside, is that.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from bench.anomaly import nab
from selfheal.detect.anomaly import DEFAULTS, Config

GRID_AXES: Mapping[str, Sequence[object]] = {
    "decay": (0.994, DEFAULTS.decay, 0.9985),
    "range_tolerance": (0.01, DEFAULTS.range_tolerance, 0.04),
    "alpha_scale": (0.04, DEFAULTS.alpha_scale, 0.16),
    "seasonality": (DEFAULTS.seasonality, None),
}
"""Parameters the folds choose (each at half, the default and double, or on/off): the ones the
standard score moves most with, one at a time (``REPORT.md``, "How tuned is it?")."""

STRICT_AXES: Mapping[str, Sequence[object]] = {
    **GRID_AXES,
    "peak_memory": (DEFAULTS.peak_memory, 0.1, 0.2),
}
"""``GRID_AXES`` and the refractory memory's growth (off as in ``DEFAULTS``, the candidate
0.1, double): a second cross-validation in which the folds choose whether to turn it on (the
subset's only long series are in ``realKnownCause``, so the other categories can hardly
inform it)."""


def grid(axes: Mapping[str, Sequence[object]] = GRID_AXES) -> list[Config]:
    """Every combination of ``axes`` applied to ``DEFAULTS`` (``DEFAULTS`` is one of them)."""
    names = list(axes)
    out = []
    for values in itertools.product(*(axes[n] for n in names)):
        fields: dict[str, object] = dict(zip(names, values, strict=True))
        out.append(dataclasses.replace(DEFAULTS, **fields))  # type: ignore[arg-type]
    return out


def category(name: str) -> str:
    """``category/file.csv`` -> ``category``."""
    return name.split("/", 1)[0]


def rebase(scores: nab.FloatArray, threshold: float) -> nab.FloatArray:
    """Map scores monotonically so that ``threshold`` becomes 0.5 (0 and 1 stay put).

    A threshold above every score (NAB's 1.1, "detect nothing") maps every score below 0.5.
    """
    if threshold > 1.0:
        return np.asarray(0.5 * scores / threshold, dtype=np.float64)
    low = 0.5 * scores / threshold if threshold > 0.0 else np.zeros_like(scores)
    high = 0.5 + 0.5 * (scores - threshold) / max(1e-12, 1.0 - threshold)
    return np.asarray(np.where(scores < threshold, low, high), dtype=np.float64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fold:
    held_out: str
    config_index: int
    """Index into the grid of the configuration chosen on the other categories."""
    threshold: float
    """Threshold chosen on the other categories."""
    train_normalised: float | None
    """The choice's normalised score on the training categories (``None`` without windows)."""
    held_out_raw: float
    """Raw NAB score of the held-out files at the chosen threshold."""
    held_out_normalised: float | None
    """Normalised score of the held-out files; ``None`` when they have no window."""
    detected: int
    missed: int
    false_positives: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileCV:
    profile: str
    folds: tuple[Fold, ...]
    pooled: float
    """Normalised score of the pooled held-out outputs, each at its fold's threshold."""
    reoptimised: float
    """The same outputs with NAB's optimiser choosing one threshold on them (optimistic)."""
    pooled_files: tuple[nab.FileScore, ...]


def _normalised(raw: float, null: float, profile: nab.Profile, windows: int) -> float | None:
    perfect = profile.tp * windows
    return None if perfect == null else 100.0 * (raw - null) / (perfect - null)


def cross_validate(
    files: Sequence[nab.DataFile],
    runs: Sequence[Mapping[str, nab.FloatArray]],
    profiles: Sequence[nab.Profile],
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> list[ProfileCV]:
    """``runs[i]`` holds the scores of grid configuration ``i`` for every file."""
    weights = {f.name: nab.row_weights(len(f.values), f.windows) for f in files}
    cats = sorted({category(f.name) for f in files})
    out: list[ProfileCV] = []
    for profile in profiles:
        folds: list[Fold] = []
        pooled: dict[str, nab.FloatArray] = {}
        for held in cats:
            train = [f for f in files if category(f.name) != held]
            test = [f for f in files if category(f.name) == held]
            best: tuple[float, int, float] | None = None
            for i, scores in enumerate(runs):
                pairs = [(scores[f.name], weights[f.name]) for f in train]
                threshold, raw = nab.optimise_threshold(pairs, profile=profile)
                if best is None or raw > best[0]:
                    best = (raw, i, threshold)
            assert best is not None
            train_raw, index, threshold = best
            null_pairs = [(np.full(len(f.values), 0.5), weights[f.name]) for f in train]
            _, train_null = nab.optimise_threshold(null_pairs, profile=profile)
            train_windows = sum(len(f.windows) for f in train)
            # Scored file by file: nab.evaluate would normalise, which a category without
            # windows (artificialNoAnomaly) cannot be.
            held_files = [
                nab.score_file(
                    runs[index][f.name],
                    weights[f.name],
                    n_windows=len(f.windows),
                    profile=profile,
                    threshold=threshold,
                )
                for f in test
            ]
            held_raw = sum(fs.raw for fs in held_files)
            test_null_pairs = [(np.full(len(f.values), 0.5), weights[f.name]) for f in test]
            _, test_null = nab.optimise_threshold(test_null_pairs, profile=profile)
            windows = sum(len(f.windows) for f in test)
            folds.append(
                Fold(
                    held_out=held,
                    config_index=index,
                    threshold=threshold,
                    train_normalised=_normalised(train_raw, train_null, profile, train_windows),
                    held_out_raw=held_raw,
                    held_out_normalised=_normalised(held_raw, test_null, profile, windows),
                    detected=sum(fs.detected for fs in held_files),
                    missed=sum(fs.missed for fs in held_files),
                    false_positives=sum(fs.false_positives for fs in held_files),
                )
            )
            for f in test:
                pooled[f.name] = rebase(runs[index][f.name], threshold)
            progress(f"{profile.name}: held out {held}: config {index}, threshold {threshold:.4f}")
        (strict,) = nab.evaluate(files, pooled, [profile], threshold=0.5)
        (free,) = nab.evaluate(files, pooled, [profile])
        out.append(
            ProfileCV(
                profile=profile.name,
                folds=tuple(folds),
                pooled=strict.normalised,
                reoptimised=free.normalised,
                pooled_files=strict.files,
            )
        )
    return out
