"""NAB's scoring method, reimplemented (numenta/NAB sweeper.py, optimizer.py, runner.py).

The rules, exactly as NAB applies them:

- The first ``min(floor(0.15 * n), 0.15 * 5000)`` rows of each file are probationary: never scored.
- A row inside a labelled window is worth ``scaledSigmoid(-(right - i + 1) / width) * tp / maxTP``
  if detected; a window's reward is the best (earliest) detected row in it, so only the first
  detection in a window counts. A window with no detection costs ``-fnWeight``.
- A detected row outside every window costs ``scaledSigmoid(|i - prevRight| / (prevWidth - 1)) *
  fpWeight`` (a negative number), ``-fpWeight`` when no window precedes it: false positives just
  after a window are cheap, far from one they cost the full weight. Every such row counts.
- A row is "detected" when its anomaly score is ``>= threshold``. For each cost profile, the
  threshold is the one that maximises the summed raw score over the whole corpus (NAB sweeps every
  distinct score; ties go to the higher threshold).
- Normalised score = ``100 * (raw - null) / (perfect - null)``, where ``null`` is the raw score of
  NAB's null detector (a constant score, optimised the same way) and ``perfect`` is
  ``tpWeight * number of windows``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROBATION_PERCENT = 0.15


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    tp: float
    fn: float
    fp: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataFile:
    name: str
    """``category/file.csv``, the key in ``windows.json``."""
    timestamps: FloatArray
    """Unix seconds (UTC) per row."""
    values: FloatArray
    windows: tuple[tuple[int, int], ...]
    """Inclusive row-index limits of each labelled window."""


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.strip()).replace(tzinfo=dt.UTC).timestamp()


def load_profiles(path: pathlib.Path) -> list[Profile]:
    raw = json.loads(path.read_text())
    return [
        Profile(
            name=name,
            tp=float(spec["CostMatrix"]["tpWeight"]),
            fn=float(spec["CostMatrix"]["fnWeight"]),
            fp=float(spec["CostMatrix"]["fpWeight"]),
        )
        for name, spec in raw.items()
    ]


def load_corpus(root: pathlib.Path) -> list[DataFile]:
    """Every file listed in ``windows.json``, with its windows mapped to row indices."""
    labels: dict[str, list[list[str]]] = json.loads((root / "windows.json").read_text())
    files: list[DataFile] = []
    for name in sorted(labels):
        path = root / "data" / name
        ts: list[float] = []
        vs: list[float] = []
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                ts.append(_parse_time(row["timestamp"]))
                vs.append(float(row["value"]))
        t = np.asarray(ts, dtype=np.float64)
        windows: list[tuple[int, int]] = []
        for start, end in labels[name]:
            # NAB's labels sit on existing rows; searchsorted also copes with a label between rows.
            lo = int(np.searchsorted(t, _parse_time(start), side="left"))
            hi = int(np.searchsorted(t, _parse_time(end), side="right")) - 1
            if lo > hi:
                raise ValueError(f"{name}: window {start}..{end} holds no row")
            windows.append((lo, hi))
        files.append(
            DataFile(name=name, timestamps=t, values=np.asarray(vs), windows=tuple(windows))
        )
    return files


def probation_length(n: int) -> int:
    return int(min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * 5000))


def scaled_sigmoid(x: FloatArray) -> FloatArray:
    out = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x >= 3.0, -1.0, out)


MAX_TP = float(2.0 / (1.0 + math.exp(-5.0)) - 1.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowWeights:
    """Per scorable row of one file: which window it is in and its unweighted reward."""

    window: IntArray
    """Window number within the file, or -1 outside every window."""
    reward: FloatArray
    """In a window: ``scaledSigmoid(position) / maxTP`` (times tpWeight later); outside:
    ``scaledSigmoid(position past the previous window)`` (times fpWeight later)."""
    first: int
    """Index of the first scorable row (the probation length)."""


def row_weights(n: int, windows: Sequence[tuple[int, int]]) -> RowWeights:
    idx = np.arange(n, dtype=np.float64)
    window = np.full(n, -1, dtype=np.int64)
    reward = np.empty(n, dtype=np.float64)
    # Outside windows before any window: position 3.0, i.e. the full FP cost.
    reward[:] = scaled_sigmoid(np.full(n, 3.0))
    prev_right: int | None = None
    prev_width = 0.0
    bounds = [*windows, (n, n)]
    cursor = 0
    for k, (lo, hi) in enumerate(bounds):
        gap = slice(cursor, lo)
        if prev_right is not None and lo > cursor:
            past = np.abs(prev_right - idx[gap]) / (prev_width - 1.0)
            reward[gap] = scaled_sigmoid(past)
        if k == len(windows):
            break
        width = float(hi - lo + 1)
        inside = slice(lo, hi + 1)
        window[inside] = k
        reward[inside] = scaled_sigmoid(-(hi - idx[inside] + 1.0) / width) / MAX_TP
        prev_right, prev_width, cursor = hi, width, hi + 1
    first = probation_length(n)
    return RowWeights(window=window, reward=reward, first=first)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileScore:
    name: str
    raw: float
    detected: int
    missed: int
    false_positives: int


def score_file(
    scores: FloatArray, weights: RowWeights, *, n_windows: int, profile: Profile, threshold: float
) -> FileScore:
    s = scores[weights.first :]
    win = weights.window[weights.first :]
    rew = weights.reward[weights.first :]
    hit = s >= threshold
    fp_mask = hit & (win < 0)
    raw = float(np.sum(rew[fp_mask])) * profile.fp
    detected = 0
    missed = 0
    for k in range(n_windows):
        in_k = win == k
        if not np.any(in_k):
            continue  # a window wholly inside the probation period is not scorable
        got = hit & in_k
        if np.any(got):
            raw += float(np.max(rew[got])) * profile.tp
            detected += 1
        else:
            raw -= profile.fn
            missed += 1
    return FileScore(
        name="", raw=raw, detected=detected, missed=missed, false_positives=int(fp_mask.sum())
    )


def optimise_threshold(
    per_file: Sequence[tuple[FloatArray, RowWeights]], *, profile: Profile
) -> tuple[float, float]:
    """NAB's corpus-wide sweep: (best threshold, its raw score).

    Each row becomes an event "lowering the threshold to my score changes the total by delta":
    an FP row adds its (negative) cost; a window row raises the window's best reward from the
    running maximum so far (starting at -fnWeight). Sorting events by score and summing gives the
    total at every distinct threshold in one pass.
    """
    ev_score: list[FloatArray] = []
    ev_delta: list[FloatArray] = []
    base = 0.0
    for scores, w in per_file:
        s = scores[w.first :]
        win = w.window[w.first :]
        rew = w.reward[w.first :]
        out = win < 0
        ev_score.append(s[out])
        ev_delta.append(rew[out] * profile.fp)
        for k in np.unique(win[~out]):
            sel = win == k
            ks = s[sel]
            kr = rew[sel] * profile.tp
            order = np.argsort(-ks, kind="stable")
            best = np.maximum.accumulate(np.concatenate(([-profile.fn], kr[order])))
            ev_score.append(ks[order])
            ev_delta.append(np.diff(best))
            base -= profile.fn
    all_s = np.concatenate(ev_score)
    all_d = np.concatenate(ev_delta)
    order = np.argsort(-all_s, kind="stable")
    all_s = all_s[order]
    totals = base + np.cumsum(all_d[order])
    # The total for threshold t counts every row with score >= t: read it at the last row of
    # each run of equal scores.
    last = np.ones(len(all_s), dtype=bool)
    last[:-1] = all_s[1:] != all_s[:-1]
    cand_t = np.concatenate(([1.1], all_s[last]))
    cand_v = np.concatenate(([base], totals[last]))
    top = int(np.argmax(cand_v))  # first maximum: the highest threshold among ties
    return float(cand_t[top]), float(cand_v[top])


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    normalised: float
    files: tuple[FileScore, ...]


def evaluate(
    files: Sequence[DataFile],
    scores: Mapping[str, FloatArray],
    profiles: Sequence[Profile],
    *,
    threshold: float | None = None,
) -> list[ProfileResult]:
    """Optimise the threshold per profile over the corpus (or use ``threshold`` for all
    profiles), score each file, normalise."""
    weights = {f.name: row_weights(len(f.values), f.windows) for f in files}
    null_scores = {f.name: np.full(len(f.values), 0.5) for f in files}
    n_windows = sum(len(f.windows) for f in files)
    results: list[ProfileResult] = []
    for profile in profiles:
        pairs = [(scores[f.name], weights[f.name]) for f in files]
        chosen, raw = optimise_threshold(pairs, profile=profile)
        null_pairs = [(null_scores[f.name], weights[f.name]) for f in files]
        _, null_raw = optimise_threshold(null_pairs, profile=profile)
        perfect = profile.tp * n_windows
        per_file = tuple(
            dataclasses.replace(
                score_file(
                    scores[f.name],
                    weights[f.name],
                    n_windows=len(f.windows),
                    profile=profile,
                    threshold=chosen if threshold is None else threshold,
                ),
                name=f.name,
            )
            for f in files
        )
        if threshold is not None:
            chosen = threshold
            raw = sum(fs.raw for fs in per_file)
        results.append(
            ProfileResult(
                profile=profile.name,
                threshold=chosen,
                raw=raw,
                normalised=100.0 * (raw - null_raw) / (perfect - null_raw),
                files=per_file,
            )
        )
    return results
