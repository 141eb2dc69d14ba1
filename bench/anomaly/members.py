"""Candidate ensemble members for the anomaly detector, measured by ``explore.py`` (not shipped:
``selfheal.detect.anomaly.DEFAULTS`` stays the operator's detector; see ``EXPLORE.md``).

Every member is streaming and causal (a sample's score depends on it and the past only), with
memory fixed at construction:

- ``Likelihood``: NAB's "anomaly likelihood" post-processing (what keeps Numenta HTM's alarms
  rare on long files), streaming: the short average of the last ``short`` raw scores is compared
  with a Gaussian fitted to its own past by an exponentially weighted mean and variance (weight
  ``alpha``, i.e. a memory of ~1/alpha samples instead of NAB's 8,640-sample window); the output
  is the upper tail probability on a log scale, ``log10(1 / tail) / 10`` in [0, 1] (0.5: a tail
  of 1e-5, 1.0: 1e-10 or rarer). Scores 0.0 during the first ``learn`` samples.
- ``ContextNovelty``: the core of contextOSE (CAD OSE), reduced: values are quantised into
  ``bins`` slots over the range seen so far; the contexts of a sample are the pairs (bin ``k``
  samples ago, bin now) for ``k = 1..lags``; the raw score is the fraction of them never seen
  before. One flag per possible context: ``lags * bins**2`` bytes.
- ``LikelihoodScore``: ``Likelihood`` over the learned-baseline detector's surprise (its
  calibrated ``-log10`` tail probability, before the refractory peak): absolute rarity instead
  of rarity relative to the recent peak.
- ``Blend``: ``weight * (DEFAULTS score) + (1 - weight) * LikelihoodScore``.
- ``Ensemble``: the largest of the likelihood-post-processed surprise and context novelty.
- ``Floored``: the detector's refractory peak (its memory growing with the series, as the
  detector's does), decaying no lower than ``floor`` decades.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from selfheal.detect.anomaly import DEFAULTS, AnomalyDetector, Config

Update = Callable[[float, float], float]
"""What every candidate exposes: ``update(timestamp, value) -> score`` in [0, 1]."""

__all__ = [
    "Blend",
    "ContextNovelty",
    "Ensemble",
    "Floored",
    "Likelihood",
    "LikelihoodScore",
    "Update",
]


class Likelihood:
    """Tail probability of the short average of raw scores under a Gaussian of its own past."""

    __slots__ = ("alpha", "learn", "mean", "n", "pos", "ring", "total", "var", "var_floor")

    def __init__(
        self,
        *,
        short: int = 1,
        alpha: float = 1.0 / 500.0,
        learn: int = 300,
        var_floor: float = 1e-4,
    ) -> None:
        if short < 1 or not 0.0 < alpha < 1.0:
            raise ValueError("Likelihood: short >= 1 and 0 < alpha < 1")
        self.alpha = alpha
        self.learn = learn
        self.var_floor = var_floor
        self.ring = [0.0] * short
        self.pos = 0
        self.total = 0.0
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def update(self, raw: float) -> float:
        ring = self.ring
        pos = self.pos
        self.total += raw - ring[pos]
        ring[pos] = raw
        k = len(ring)
        self.pos = (pos + 1) % k
        n = self.n + 1
        self.n = n
        avg = self.total / (n if n < k else k)
        mean = self.mean
        var = self.var
        # Score against the past only, then learn.
        out = 0.0
        if n > self.learn:
            sd = math.sqrt(var if var > self.var_floor else self.var_floor)
            z = (avg - mean) / sd
            if z > 0.0:
                tail = 0.5 * math.erfc(z * 0.7071067811865476)
                out = -math.log10(tail) / 10.0 if tail > 1e-10 else 1.0
        # Exact running mean/variance until 1/alpha samples, then exponentially weighted.
        a = self.alpha if n * self.alpha > 1.0 else 1.0 / n
        d = avg - mean
        self.mean = mean + a * d
        self.var = (1.0 - a) * (var + a * d * d)
        return out


class ContextNovelty:
    """Fraction of a sample's (lagged bin, bin) contexts never seen before, in [0, 1]."""

    __slots__ = ("bins", "hi", "history", "lags", "lo", "n", "pos", "seen")

    def __init__(self, *, bins: int = 32, lags: int = 6) -> None:
        if bins < 2 or lags < 1:
            raise ValueError("ContextNovelty: bins >= 2 and lags >= 1")
        self.bins = bins
        self.lags = lags
        self.seen = bytearray(lags * bins * bins)
        self.history = [0] * lags
        self.pos = 0
        self.n = 0
        self.lo = math.inf
        self.hi = -math.inf

    def update(self, x: float) -> float:
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        lo = self.lo
        hi = self.hi
        bins = self.bins
        b = 0
        if hi > lo:
            b = int((x - lo) / (hi - lo) * bins)
            if b >= bins:
                b = bins - 1
        lags = self.lags
        hist = self.history
        pos = self.pos
        seen = self.seen
        m = self.n if self.n < lags else lags
        new = 0
        for k in range(m):
            key = (k * bins + hist[(pos - 1 - k) % lags]) * bins + b
            if not seen[key]:
                seen[key] = 1
                new += 1
        hist[pos] = b
        self.pos = (pos + 1) % lags
        self.n += 1
        return new / m if m else 0.0


class LikelihoodScore:
    """``Likelihood`` over the learned-baseline detector's surprise."""

    __slots__ = ("detector", "likelihood")

    def __init__(self, *, alpha: float = 1.0 / 500.0, config: Config = DEFAULTS) -> None:
        self.detector = AnomalyDetector(config)
        self.likelihood = Likelihood(alpha=alpha)

    def update(self, timestamp: float, value: float) -> float:
        det = self.detector
        n = det.n
        det.update(timestamp, value)
        if det.n == n:  # ignored sample (out of order, NaN): no evidence, state unchanged
            return 0.0
        return self.likelihood.update(det.last_surprise)


class Blend:
    """``weight * (detector score) + (1 - weight) * (likelihood of its surprise)``."""

    __slots__ = ("detector", "likelihood", "weight")

    def __init__(
        self, *, weight: float = 0.85, alpha: float = 1.0 / 500.0, config: Config = DEFAULTS
    ) -> None:
        self.detector = AnomalyDetector(config)
        self.likelihood = Likelihood(alpha=alpha)
        self.weight = weight

    def update(self, timestamp: float, value: float) -> float:
        det = self.detector
        n = det.n
        score = det.update(timestamp, value)
        if det.n == n:
            return 0.0
        lik = self.likelihood.update(det.last_surprise)
        return self.weight * score + (1.0 - self.weight) * lik


class Ensemble:
    """The larger of two likelihood-post-processed members: the detector's surprise and
    context novelty."""

    __slots__ = ("context", "detector", "lik_context", "lik_surprise")

    def __init__(
        self,
        *,
        bins: int = 32,
        lags: int = 6,
        alpha: float = 1.0 / 500.0,
        config: Config = DEFAULTS,
    ) -> None:
        self.detector = AnomalyDetector(config)
        self.context = ContextNovelty(bins=bins, lags=lags)
        self.lik_surprise = Likelihood(alpha=alpha)
        self.lik_context = Likelihood(alpha=alpha)

    def update(self, timestamp: float, value: float) -> float:
        det = self.detector
        n = det.n
        det.update(timestamp, value)
        if det.n == n:
            return 0.0
        a = self.lik_surprise.update(det.last_surprise)
        b = self.lik_context.update(self.context.update(value))
        return a if a > b else b


class Floored:
    """The detector's score with its refractory peak never below ``floor`` decades.

    Runs the detector without its own refractory (``gamma=0``: the score is then
    ``1 - 10**-surprise``, the surprise capped by the evidence) and re-applies the refractory
    here; ``floor=0`` reproduces ``DEFAULTS`` exactly.
    """

    __slots__ = ("decay", "detector", "floor", "peak")

    def __init__(self, *, floor: float = 1.0, config: Config = DEFAULTS) -> None:
        if config.boost != 0.0 or config.gamma != 1.0:
            raise ValueError("Floored: reimplements the refractory for boost=0, gamma=1 only")
        self.detector = AnomalyDetector(Config(**{**config.__dict__, "gamma": 0.0}))
        self.decay = config.decay
        self.floor = floor
        self.peak = 0.0

    def update(self, timestamp: float, value: float) -> float:
        det = self.detector
        n = det.n
        raw = det.update(timestamp, value)
        if det.n == n or det.n <= det.config.warmup + 1:
            return 0.0
        surprise = -math.log10(1.0 - raw) if raw < 1.0 else 16.0
        peak = self.peak if self.peak > self.floor else self.floor
        decay = self.decay
        n = det.n - 1  # the samples before this one, as the detector counts them
        if n > det._grow_from:
            m = det.config.peak_memory * n
            decay = 1.0 - 1.0 / (m if m < det._memory_cap else det._memory_cap)
        decayed = peak * decay
        if decayed < self.floor:
            decayed = self.floor
        self.peak = surprise if surprise > decayed else decayed
        excess = surprise - peak
        return 0.0 if excess <= 0.0 else 1.0 - 10.0**-excess
