"""False alarms on unlabelled series with nothing to find: what a threshold costs on quiet data.

NAB's optimiser trades false positives against its windows; an operator cannot. These series
have no anomaly by construction, so every sample scoring at or over a threshold is a false
alarm. Two shapes, seeded and reproducible:

- ``gaussian``: i.i.d. normal noise around a constant (the easiest case; what the detector's
  docstring quotes).
- ``bursty counts``: Poisson counts of a daily-cycling rate with routine heavy-tailed bursts
  (Pareto, a few a day), like request or message counts. The bursts are part of the series'
  normal life, so a detector that learns the series should stop alarming on them.

Three more, shaped like the kinds of series in NAB's categories that the bench does not have
(tweet volumes, cloud metrics, road traffic), generated here from the seed alone:

- ``tweet volume``: counts whose rate follows a day and a week (quieter weekends), with
  overdispersion (a gamma-Poisson mix) and routine heavy-tailed bursts that decay over a few
  samples, as a topic's mentions do.
- ``cpu utilisation``: a percentage that wanders (AR(1)) around a level that changes now and
  then (about one routine step a week, as autoscaling or a deploy moves it), clipped to
  0..100. A change of level is a change, so a detector firing once per step is doing its job:
  the series has ``SAMPLES // 2016`` steps, 0.4 per 1,000 samples.
- ``traffic occupancy``: a road sensor's occupancy in 0..1, a weekday double rush hour and a
  flatter weekend, multiplicative noise, sampled at a jittered step (as NAB's traffic files).
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


def tweet_volume(rng: np.random.Generator, n: int) -> nab.FloatArray:
    t = np.arange(n) * STEP
    day = 2.0 * np.pi * t / 86400.0
    weekend = ((t // 86400.0) % 7 >= 5).astype(np.float64)
    rate = 12.0 * (1.0 + 0.7 * np.sin(day - 1.0)) * (1.0 - 0.35 * weekend) + 1.0
    rate = rate * rng.gamma(4.0, 0.25, n)
    for i in rng.choice(n, n // 150, replace=False):
        size = rate[i] * rng.pareto(1.8)
        k = np.arange(min(n - i, 12))
        rate[i : i + len(k)] += size * np.exp(-k / 2.0)
    return np.asarray(rng.poisson(rate), dtype=np.float64)


def cpu_utilisation(rng: np.random.Generator, n: int) -> nab.FloatArray:
    level = np.empty(n)
    current = 30.0
    steps = set(rng.choice(n, max(1, n // 2016), replace=False).tolist())
    for i in range(n):
        if i in steps:
            current = float(np.clip(current + rng.normal(0.0, 12.0), 5.0, 90.0))
        level[i] = current
    ar = np.empty(n)
    e = rng.normal(0.0, 2.0, n)
    prev = 0.0
    for i in range(n):
        prev = 0.8 * prev + e[i]
        ar[i] = prev
    return np.asarray(np.clip(level + ar, 0.0, 100.0), dtype=np.float64)


def traffic_occupancy(rng: np.random.Generator, n: int) -> nab.FloatArray:
    t = np.arange(n) * STEP
    hour = (t % 86400.0) / 3600.0
    weekday = ((t // 86400.0) % 7 < 5).astype(np.float64)
    rush = np.exp(-(((hour - 8.0) / 1.2) ** 2)) + 0.8 * np.exp(-(((hour - 17.5) / 1.5) ** 2))
    base = 0.04 + 0.05 * np.exp(-(((hour - 14.0) / 4.0) ** 2))
    occ = base + (0.25 * weekday + 0.05) * rush
    occ = occ * rng.lognormal(0.0, 0.15, n)
    return np.asarray(np.clip(occ, 0.0, 1.0), dtype=np.float64)


def timestamps(shape: str, rng: np.random.Generator, n: int) -> list[float]:
    """Sample times: a fixed step, jittered for the traffic sensor (never out of order)."""
    if shape != "traffic occupancy":
        return [1.4e9 + STEP * i for i in range(n)]
    jitter = rng.uniform(-0.3, 0.3, n) * STEP
    return [float(t) for t in 1.4e9 + STEP * np.arange(n) + jitter]


SHAPES: dict[str, Callable[[np.random.Generator, int], nab.FloatArray]] = {
    "gaussian": gaussian,
    "bursty counts": bursty_counts,
    "tweet volume": tweet_volume,
    "cpu utilisation": cpu_utilisation,
    "traffic occupancy": traffic_occupancy,
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
            ts = timestamps(shape, np.random.default_rng(1000 + seed), SAMPLES)
            det = AnomalyDetector(config)
            s = [det.update(t, v) for t, v in zip(ts, values, strict=True)]
            scores.append(np.asarray(s[first:]))
        pooled = np.concatenate(scores)
        for thr in thresholds:
            rate = 1000.0 * float(np.count_nonzero(pooled >= thr)) / len(pooled)
            out.append(Alarms(shape=shape, threshold=thr, per_1000=rate))
    return out
