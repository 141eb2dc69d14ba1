"""False alarms on unlabelled series with nothing to find: what a threshold costs on quiet data.

NAB's optimiser trades false positives against its windows; an operator cannot. These series
have no anomaly by construction, so every sample scoring at or over a threshold is a false
alarm. Two shapes, seeded and reproducible:

- ``gaussian``: i.i.d. normal noise around a constant (the easiest case; what the detector's
  docstring quotes).
- ``bursty counts``: Poisson counts of a daily-cycling rate with routine heavy-tailed bursts
  (Pareto, a few a day), like request or message counts. The bursts are part of the series'
  normal life, so a detector that learns the series should stop alarming on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from bench.anomaly import nab
from selfheal.detect.anomaly import AnomalyDetector, Config

STEP = 300.0
"""Seconds between samples (NAB's usual 5 minutes)."""
SAMPLES = 12_000
"""Per series: about six weeks at STEP."""
SEEDS = (1, 2, 3)


def gaussian(rng: np.random.Generator, n: int) -> nab.FloatArray:
    return np.asarray(10.0 + rng.normal(0.0, 1.0, n), dtype=np.float64)


def bursty_counts(rng: np.random.Generator, n: int) -> nab.FloatArray:
    t = np.arange(n) * STEP
    rate = 20.0 * (1.0 + 0.6 * np.sin(2.0 * np.pi * t / 86400.0))
    x = rng.poisson(rate).astype(np.float64)
    for i in rng.choice(n, n // 100, replace=False):
        x[i : i + int(rng.integers(1, 6))] += rate[i] * rng.pareto(1.5)
    return np.asarray(x, dtype=np.float64)


SHAPES: dict[str, Callable[[np.random.Generator, int], nab.FloatArray]] = {
    "gaussian": gaussian,
    "bursty counts": bursty_counts,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Alarms:
    shape: str
    threshold: float
    per_1000: float
    """False alarms (samples at or over the threshold) per 1,000 scored samples."""


def false_alarms(config: Config, thresholds: Sequence[float]) -> list[Alarms]:
    """Alarm rates at each threshold, after NAB's probation (the first 750 samples)."""
    first = nab.probation_length(SAMPLES)
    out: list[Alarms] = []
    for shape, make in SHAPES.items():
        scores: list[nab.FloatArray] = []
        for seed in SEEDS:
            values = make(np.random.default_rng(seed), SAMPLES).tolist()
            det = AnomalyDetector(config)
            s = [det.update(1.4e9 + STEP * i, v) for i, v in enumerate(values)]
            scores.append(np.asarray(s[first:]))
        pooled = np.concatenate(scores)
        for thr in thresholds:
            rate = 1000.0 * float(np.count_nonzero(pooled >= thr)) / len(pooled)
            out.append(Alarms(shape=shape, threshold=thr, per_1000=rate))
    return out
