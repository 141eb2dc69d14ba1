"""Streaming anomaly detector behind learned-baseline triggers (``anomaly: {sensitivity: ...}``).

The whole API, as ``detect/prometheus.py`` uses it::

    det = AnomalyDetector(seasonality=spec.seasonality)  # or AnomalyDetector.for_spec(spec)
    det.warm(samples)               # [(unix_seconds, value), ...] oldest first: a range query
                                    # over spec.baseline at spec.step
    score = det.update(ts, value)   # float in [0, 1] for this sample, from the past only
    if score >= threshold_for(spec.sensitivity):
        low, high = det.band()      # the expected range the sample fell out of
        evidence = det.explain()    # JSON-able: expected, band, score, model, samples seen
    state = det.to_state()          # JSON-able dict, size independent of the stream length
    det = AnomalyDetector.from_state(state)  # resumes exactly (same scores as never stopping)

Semantics:

- ``update`` is causal and deterministic: the score of a sample depends only on that sample and
  the ones fed before it. Samples at or before the last timestamp seen (a re-warm that overlaps) and
  non-finite values (NaN from Prometheus) are ignored: the state does not change and 0.0 is
  returned, so replaying an overlapping range query after a restart is harmless.
- The score says how surprising the sample is given the series' own history: with ``e`` the
  excess of its surprise (``-log10`` of a tail probability) over the recent peak surprise, the
  score is ``1 - 10**-e`` (0.9: one decade more surprising than anything lately). It is highest
  at the *onset* of an anomaly: once a surprise level has been seen, the same level shortly after
  scores lower (a refractory peak that decays with ``Config.decay`` per sample). A sustained
  anomaly therefore fires once; triggers should treat a score over the threshold as an event
  (fire, then hold the signal for ``for``), not as a level that must stay high.
- The refractory peak remembers about ``1 / (1 - decay)`` samples. On quiet data a sample
  beats the peak of the last m samples about once in m, so the detector fires at a fixed rate
  however long the series has been quiet. ``Config.peak_memory`` (off in ``DEFAULTS``) makes
  that memory grow with the series, so that it fires about ``log(n)`` times in n quiet
  samples; it halves the quiet alarms but failed the cross-validation, so it is not shipped
  (``bench/anomaly/EXPLORE.md``).
- ``threshold_for(sensitivity)`` maps the policy's low/medium/high to score thresholds: 0.99,
  0.9 and 0.65. High (0.65) is close to the threshold NAB's optimiser picks for this detector
  under its standard profile. NAB's costs favour recall, and its windows are wide, so that
  threshold fires on quiet data about once in 500-600 samples; medium and low about once in
  3,000 (the false-alarm table of ``bench/anomaly/REPORT.md`` measures it on five quiet shapes,
  beside the NAB score at each threshold).

How it scores (the ideas of NAB's best detectors, kept small enough for a few µs per sample):

1. Two predictors of the next value, each with a robust scale (Huber-clipped exponentially
   weighted mean absolute error): a local level (EWMA, spikes clipped out), and, when a
   seasonality is given, a seasonal profile (one slot per sampling step of the period, e.g. 288
   slots for a day of 5-minute samples). The seasonal one is used when its recent error is
   clearly lower (errors stop learning while the series is anomalous, so one odd day does not
   flip the choice), so a daily pattern is not an anomaly but a day that breaks the pattern is.
2. Four features of the chosen residual: point surprise (spikes, dips), level shift (a fast
   mean against a slow robust baseline), volatility change (fast against slow mean absolute
   residual: a flatline, a burst of noise) and the recent average point surprise (NAB's
   "anomaly likelihood" idea: a rising rate of moderate surprises).
3. Each feature is calibrated against its own history with a decaying log-spaced histogram
   (seeded with a heavy-tailed pseudo-history that fades as data arrives, so a young series is
   not trusted to be quiet), so a series whose spikes are routine learns that they are routine.
   A feature's surprise is the ``-log10`` of its empirical tail probability, capped at
   ``log10(n) + evidence_margin`` after n samples (n samples cannot vouch for rarer events).
4. Range novelty, as Numenta's detector does it: a value beyond the whole range seen so far by
   more than ``range_tolerance`` of that range is surprising in itself.
5. The sample's surprise is the largest of these; the score is its excess over the decaying
   refractory peak (see above).

All state is a fixed number of floats plus fixed-size lists (histograms, seasonal slots), so
memory does not grow with the stream. Pure Python floats on the hot path: no numpy needed.
``DEFAULTS`` (``Config()``) is the one configuration: the operator's (``for_spec`` changes only
the seasonality, when a policy names one), the CLI's (``python -m selfheal.detect.score``) and
the benchmark's. It was tuned on the 24-file NAB subset; ``bench/anomaly/REPORT.md`` says what
that does and does not prove, with a leave-one-category-out cross-validation beside the
in-sample score.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from selfheal.policy.model import AnomalySpec, Sensitivity

__all__ = [
    "DEFAULTS",
    "STATE_VERSION",
    "AnomalyDetector",
    "Config",
    "threshold_for",
]

STATE_VERSION = 1

_HIST_BINS = 48
"""Histogram slots: 4 per octave of (1 + feature), i.e. features up to ~4000 are resolved."""
_MAX_SEASON_SLOTS = 4096
"""Upper bound on seasonal slots (a week of 5-minute samples is 2016)."""
_STEP_SAMPLES = 16
"""The sampling step is the smallest gap among the first samples."""


_THRESHOLDS: Mapping[Sensitivity, float] = {
    Sensitivity.LOW: 0.99,
    Sensitivity.MEDIUM: 0.9,
    Sensitivity.HIGH: 0.65,
}


def threshold_for(sensitivity: Sensitivity) -> float:
    """The score at or above which a sample is anomalous for this sensitivity."""
    return _THRESHOLDS[Sensitivity(sensitivity)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Tuning of the detector. ``DEFAULTS`` is the one configuration: the operator's, the CLI's
    and the benchmark's."""

    seasonality: float | None = 86400.0
    """Seasonal period in seconds; ``None``: no seasonal predictor. The default is a day: the
    seasonal predictor is chosen only where it predicts clearly better than the local one, so
    a series without a daily pattern loses nothing (on NAB's full corpus, measured from outside,
    a day scores higher than none)."""
    warmup: int = 48
    """Samples scored 0.0 while the models settle."""
    season_warmup: int = 600
    """Samples before the seasonal predictor may be chosen over the local one."""
    season_advantage: float = 0.7
    """The seasonal predictor is chosen when its recent error is below this fraction of the
    local predictor's: clearly better, so noise does not flip between the two."""
    alpha_level: float = 0.1
    """EWMA weight of the local level (per sample)."""
    alpha_scale: float = 0.08
    """EWMA weight of the robust scales (mean absolute residual)."""
    alpha_slow: float = 0.001
    """EWMA weight of the slow baseline (level and volatility) the shift features compare to."""
    alpha_fast: float = 0.05
    """EWMA weight of the fast mean and fast volatility."""
    alpha_season: float = 0.3
    """EWMA weight of a seasonal slot, per visit (once per period)."""
    alpha_error: float = 0.01
    """EWMA weight of each predictor's error, used to choose between them."""
    freeze_surprise: float = 2.0
    """The predictors' errors do not learn from a sample following one this surprising."""
    alpha_calibration: float = 0.0002
    """Decay of the feature histograms (per sample): their memory is ~1/alpha samples."""
    alpha_likelihood: float = 0.02
    """EWMA weight of the recent average point surprise (the likelihood feature)."""
    clip: float = 3.0
    """Residuals beyond ``clip`` scales are clipped before they update a model (robustness)."""
    prior: float = 100.0
    """Pseudo-count of a light-tailed prior in each histogram: early tails stay finite."""
    prior_tail: float = 1.5
    """How fast the prior's tail falls: its mass drops by ``2**prior_tail`` per octave of
    ``1 + feature`` (1 is a heavy, Pareto-like tail; larger is lighter)."""
    seed_mass: float = 1000.0
    """Pseudo-samples a histogram starts with (they fade like data, with alpha_calibration)."""
    seed_tail: float = 1.0
    """Tail of the seed: its mass drops by ``2**seed_tail`` per octave of ``1 + feature``."""
    decay: float = 0.997
    """Per-sample decay of the refractory peak surprise."""
    peak_memory: float = 0.0
    """The refractory peak's memory grows with the series: it is ``1 / (1 - decay)`` samples,
    or ``peak_memory`` times the samples seen so far when that is longer, at most
    ``1 / alpha_calibration`` (what the histograms remember). 0: a fixed memory. On noise a
    sample beats the peak of the last m samples about once in m, so a fixed memory fires at a
    fixed rate however long the series has been quiet; a memory growing with the series fires
    about ``log(n)`` times in n samples instead, until the cap. Off in ``DEFAULTS``: at 0.1 it
    halves the quiet alarms of ``bench/anomaly/noise.py`` but the cross-validated score falls
    below the bar (``bench/anomaly/EXPLORE.md``)."""
    gamma: float = 1.0
    """Weight of the refractory peak subtracted from the surprise (0 disables it)."""
    boost: float = 0.0
    """Added to a new refractory peak (decades of surprise)."""
    likelihood: bool = True
    """Score the recent average surprise too (NAB's anomaly-likelihood idea)."""
    point_weight: float = 0.9
    """Weight of the point surprise (spikes, dips)."""
    shift: bool = True
    """Score level shifts."""
    shift_weight: float = 1.0
    """Weight of the level-shift surprise."""
    volatility: bool = True
    """Score volatility changes (flatlines, bursts)."""
    volatility_weight: float = 1.0
    """Weight of the volatility-change surprise."""
    range_tolerance: float = 0.02
    """A value beyond the range seen so far by more than this fraction of it is anomalous
    (0 disables the check)."""
    range_warmup: int = 300
    """Samples before a value beyond the range can fire (the range of a short history is
    not yet the series' range)."""
    range_surprise: float = 4.0
    """Surprise (decades) of a value just beyond the tolerance; more the further out."""
    evidence_margin: float = 0.5
    """The surprise of sample n is capped at ``log10(n) + evidence_margin``."""
    band_width: float = 4.0
    """``band()`` is the expected value +- ``band_width`` robust scales."""


DEFAULTS = Config()
"""The one configuration the operator, ``python -m selfheal.detect.score`` and
``bench/anomaly`` all use."""


class _Tail:
    """A decaying histogram of one feature; gives the surprise of a new value, then learns it.

    Decay is done by growing the increment geometrically instead of shrinking every slot; the
    slots are renormalised when the increment gets large.
    """

    __slots__ = ("counts", "growth", "increment", "total")

    def __init__(self, *, alpha: float, seed_mass: float = 0.0, seed_tail: float = 1.0) -> None:
        # Seeded with a heavy-tailed pseudo-history that fades like real data: a new series is
        # not trusted to be quiet until it has shown it.
        weights = [2.0 ** (-b * 0.25 * seed_tail) for b in range(_HIST_BINS)]
        norm = sum(weights)
        self.counts = [seed_mass * w / norm for w in weights]
        self.total = sum(self.counts)
        self.increment = 1.0
        self.growth = 1.0 / (1.0 - alpha)

    def surprise(self, value: float, prior: float, prior_tail: float) -> float:
        b = int(math.log2(1.0 + value) * 4.0) if value > 0.0 else 0
        if b >= _HIST_BINS:
            b = _HIST_BINS - 1
        counts = self.counts
        inc = self.increment
        # A Pareto-like prior: its tail mass falls by 2**prior_tail per octave of (1 + value).
        p = (sum(counts[b:]) + prior * inc * 2.0 ** (-b * 0.25 * prior_tail)) / (
            self.total + prior * inc
        )
        counts[b] += inc
        self.total += inc
        inc *= self.growth
        if inc > 1e150:
            self.counts = [c / inc for c in counts]
            self.total /= inc
            inc = 1.0
        self.increment = inc
        return -math.log10(p) if p < 1.0 else 0.0

    def to_state(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "total": self.total, "increment": self.increment}

    def load(self, state: Mapping[str, Any]) -> None:
        counts = [float(c) for c in state["counts"]]
        if len(counts) != _HIST_BINS:
            raise ValueError(f"histogram: expected {_HIST_BINS} counts, got {len(counts)}")
        self.counts = counts
        self.total = float(state["total"])
        self.increment = float(state["increment"])


def _clip(r: float, c: float) -> float:
    return r if -c <= r <= c else (c if r > 0.0 else -c)


# Fields of the detector saved by to_state (floats/ints/None), besides histograms and slots.
_SCALAR_FIELDS = (
    "n",
    "last_t",
    "step",
    "level",
    "scale_local",
    "error_local",
    "unlearnt_local",
    "unlearnt_season",
    "fast_mean",
    "slow_mean",
    "slow_dev",
    "scale_season",
    "error_season",
    "fast_residual",
    "vol_fast",
    "vol_slow",
    "vol_fast_season",
    "vol_slow_season",
    "lik",
    "last_point",
    "last_surprise",
    "peak",
    "range_low",
    "range_high",
    "last_score",
    "last_value",
    "last_expected",
    "last_spread",
    "last_model",
)


_NONFINITE_DEFAULTS = {"last_t": -math.inf, "range_low": math.inf, "range_high": -math.inf}


class AnomalyDetector:
    """One series' causal anomaly scorer. See the module docstring for the API and its contract."""

    __slots__ = (
        "_grow_from",
        "_memory_cap",
        "_slots",
        "_t_lik",
        "_t_point",
        "_t_shift",
        "_t_vol",
        "config",
        "error_local",
        "error_season",
        "fast_mean",
        "fast_residual",
        "last_expected",
        "last_model",
        "last_point",
        "last_score",
        "last_spread",
        "last_surprise",
        "last_t",
        "last_value",
        "level",
        "lik",
        "n",
        "peak",
        "range_high",
        "range_low",
        "scale_local",
        "scale_season",
        "slow_dev",
        "slow_mean",
        "step",
        "unlearnt_local",
        "unlearnt_season",
        "vol_fast",
        "vol_fast_season",
        "vol_slow",
        "vol_slow_season",
    )

    def __init__(self, config: Config | None = None, *, seasonality: float | None = None) -> None:
        if config is None:
            config = DEFAULTS
        if seasonality is not None:
            config = dataclasses.replace(config, seasonality=seasonality)
        if config.seasonality is not None and not config.seasonality > 0:
            raise ValueError(
                f"seasonality: must be a positive number of seconds, got {config.seasonality}"
            )
        self.config = config
        a = config.alpha_calibration
        seed = {"seed_mass": config.seed_mass, "seed_tail": config.seed_tail}
        self._t_point = _Tail(alpha=a, **seed)
        self._t_shift = _Tail(alpha=a, **seed)
        self._t_vol = _Tail(alpha=a, **seed)
        self._t_lik = _Tail(alpha=a, **seed)
        self._slots: list[float | None] = []
        # Refractory memory: 1 / (1 - decay) samples, then peak_memory * n, up to what the
        # histograms remember (1 / alpha_calibration).
        base = 1.0 / (1.0 - config.decay) if config.decay < 1.0 else math.inf
        self._memory_cap = 1.0 / a
        self._grow_from = (
            base / config.peak_memory
            if config.peak_memory > 0.0 and self._memory_cap > base
            else math.inf
        )
        self.n = 0
        self.last_t = -math.inf
        self.step = 0.0
        self.level = 0.0
        self.scale_local = 0.0
        self.error_local = 0.0
        self.unlearnt_local = 1.0
        self.unlearnt_season = 1.0
        self.fast_mean = 0.0
        self.slow_mean = 0.0
        self.slow_dev = 0.0
        self.scale_season = 0.0
        self.error_season = 0.0
        self.fast_residual = 0.0
        self.vol_fast = 0.0
        self.vol_slow = 0.0
        self.vol_fast_season = 0.0
        self.vol_slow_season = 0.0
        self.lik = 0.0
        self.last_point = 0.0
        self.last_surprise = 0.0
        self.peak = 0.0
        self.range_low = math.inf
        self.range_high = -math.inf
        self.last_score = 0.0
        self.last_value = math.nan
        self.last_expected = math.nan
        self.last_spread = 0.0
        self.last_model = "local"

    @classmethod
    def for_spec(cls, spec: AnomalySpec) -> AnomalyDetector:
        """A detector configured from a policy's ``anomaly`` block: ``DEFAULTS``, with the
        policy's seasonality when it names one."""
        return cls(DEFAULTS, seasonality=spec.seasonality)

    # -- the hot path -------------------------------------------------------------------------

    def update(self, timestamp: float, value: float) -> float:
        """Feed one sample; return its anomaly score in [0, 1] (see the module docstring)."""
        if not (timestamp > self.last_t) or not math.isfinite(value):
            return 0.0
        cfg = self.config
        n = self.n
        x = value
        if n == 0:
            self.level = self.fast_mean = self.slow_mean = x
            self.range_low = self.range_high = x
            self.last_t = timestamp
            self.n = 1
            self.last_value = self.last_expected = x
            self.last_score = 0.0
            return 0.0
        dt = timestamp - self.last_t
        self.last_t = timestamp
        if n < _STEP_SAMPLES:
            self.step = dt if self.step == 0.0 else min(self.step, dt)
        clip = cfg.clip
        eps = 1e-9 + 1e-9 * abs(self.slow_mean)

        # Local predictor: Huber-clipped EWMA level.
        level = self.level
        scale_l = self.scale_local
        r = x - level
        a = r if r >= 0.0 else -r
        cl = clip * scale_l if scale_l > 0.0 else a
        self.level = level + cfg.alpha_level * _clip(r, cl)
        ac = a if a < cl else cl
        self.scale_local = scale_l + cfg.alpha_scale * (ac - scale_l) if scale_l > 0.0 else a
        # The errors that choose between predictors do not learn from anomalous stretches: an
        # odd day must not make the seasonal predictor look worse than the local one.
        learn_error = self.last_surprise < cfg.freeze_surprise
        if learn_error:
            self.error_local += cfg.alpha_error * (ac - self.error_local)
            self.unlearnt_local *= 1.0 - cfg.alpha_error

        # Slow robust baseline, for level shifts.
        slow = self.slow_mean
        dev = self.slow_dev
        dx = x - slow
        adx = dx if dx >= 0.0 else -dx
        cd = clip * dev if dev > 0.0 else adx
        fast = self.fast_mean + cfg.alpha_fast * (x - self.fast_mean)
        self.fast_mean = fast
        shift_local = (fast - slow if fast >= slow else slow - fast) / (dev + eps)
        self.slow_mean = slow + cfg.alpha_slow * _clip(dx, cd)
        self.slow_dev = dev + cfg.alpha_slow * ((adx if adx < cd else cd) - dev) if dev > 0 else adx

        # Volatility of the local residual: fast against slow mean absolute residual.
        af = cfg.alpha_fast
        aslow = cfg.alpha_slow
        vf = self.vol_fast + af * (a - self.vol_fast)
        self.vol_fast = vf
        vs = self.vol_slow + aslow * (ac - self.vol_slow)
        self.vol_slow = vs

        # Seasonal predictor: one slot per step of the period. Its features are kept up to date
        # even while the local predictor is chosen, so switching causes no jump.
        expected = level
        spread = scale_l
        use_season = False
        point = a / (scale_l + eps)
        shift = shift_local
        season = cfg.seasonality
        if season is not None and n >= _STEP_SAMPLES and self.step > 0.0:
            slots = self._slots
            if not slots:
                count = max(1, min(_MAX_SEASON_SLOTS, round(season / self.step)))
                slots = self._slots = [None] * count
            k = len(slots)
            b = int((timestamp % season) / season * k) % k
            v = slots[b]
            if v is None:
                slots[b] = x
            else:
                rs = x - v
                ars = rs if rs >= 0.0 else -rs
                ss = self.scale_season
                if ss == 0.0:
                    # First residual (or a series the profile has matched exactly so far): let
                    # the scale start from it rather than grow out of zero through the clip.
                    ss = ars
                cs = clip * ss + eps
                acs = ars if ars < cs else cs
                fr = self.fast_residual + af * (rs - self.fast_residual)
                self.fast_residual = fr
                vfs = self.vol_fast_season + af * (ars - self.vol_fast_season)
                self.vol_fast_season = vfs
                vss = self.vol_slow_season + aslow * (acs - self.vol_slow_season)
                self.vol_slow_season = vss
                # Both errors start at 0: compare them bias-corrected (as Adam does).
                if n > cfg.season_warmup and self.error_season * (
                    1.0 - self.unlearnt_local
                ) < cfg.season_advantage * self.error_local * (1.0 - self.unlearnt_season):
                    use_season = True
                    expected = v
                    spread = ss
                    point = ars / (ss + eps)
                    shift = (fr if fr >= 0.0 else -fr) / (ss + eps)
                    vf = vfs
                    vs = vss
                if learn_error:
                    self.error_season += cfg.alpha_error * (acs - self.error_season)
                    self.unlearnt_season *= 1.0 - cfg.alpha_error
                self.scale_season = ss + cfg.alpha_scale * (acs - ss)
                slots[b] = v + cfg.alpha_season * _clip(rs, cs)
        vol = abs(math.log((vf + eps) / (vs + eps)))

        # Calibrated surprises; the sample's surprise is the largest.
        prior = cfg.prior
        tail = cfg.prior_tail
        u_point = self._t_point.surprise(point, prior, tail)
        surprise = cfg.point_weight * u_point
        if cfg.shift:
            u = cfg.shift_weight * self._t_shift.surprise(shift, prior, tail)
            if u > surprise:
                surprise = u
        if cfg.volatility:
            u = cfg.volatility_weight * self._t_vol.surprise(vol, prior, tail)
            if u > surprise:
                surprise = u
        if cfg.likelihood:
            self.lik += cfg.alpha_likelihood * (self.last_point - self.lik)
            u = self._t_lik.surprise(self.lik, prior, tail)
            if u > surprise:
                surprise = u
        # Range novelty (Numenta's "spatial anomaly"): a value beyond everything seen so far by
        # more than a fraction of the range seen so far.
        lo = self.range_low
        hi = self.range_high
        if cfg.range_tolerance > 0.0 and hi > lo and n >= cfg.range_warmup:
            beyond = (x - hi if x > hi else lo - x if x < lo else 0.0) / (hi - lo)
            if beyond > cfg.range_tolerance:
                u = cfg.range_surprise + math.log10(beyond / cfg.range_tolerance)
                if u > surprise:
                    surprise = u
        if x > hi:
            self.range_high = x
        if x < lo:
            self.range_low = x
        self.last_point = u_point
        self.last_surprise = surprise
        self.n = n + 1
        self.last_value = x
        self.last_expected = expected
        self.last_spread = spread
        self.last_model = "seasonal" if use_season else "local"
        if n <= cfg.warmup:
            self.last_score = 0.0
            return 0.0
        # n samples cannot vouch for a tail probability much below 1/n.
        cap = math.log10(n) + cfg.evidence_margin
        if surprise > cap:
            surprise = cap

        # Refractory: only surprise above the (decaying) recent peak scores.
        peak = self.peak
        # The refractory memory grows with the series (see Config.peak_memory): a series quiet
        # for n samples has to show a surprise above what a tenth of its life has seen.
        decay = cfg.decay
        if n > self._grow_from:
            m = cfg.peak_memory * n
            cap = self._memory_cap
            decay = 1.0 - 1.0 / (m if m < cap else cap)
        decayed = peak * decay
        # A new peak is raised by ``boost`` so a surprise still rising does not fire again.
        self.peak = surprise + cfg.boost if surprise > decayed else decayed
        excess = surprise - cfg.gamma * peak
        score = 0.0 if excess <= 0.0 else 1.0 - 10.0**-excess
        self.last_score = score
        return score

    # -- building and explaining ---------------------------------------------------------------

    def warm(self, samples: Iterable[tuple[float, float]]) -> float:
        """Replay history (e.g. a Prometheus range query, oldest first); return the last score."""
        score = 0.0
        for t, v in samples:
            score = self.update(float(t), float(v))
        return score

    def band(self) -> tuple[float, float]:
        """The expected range of the last sample: expected value +- ``band_width`` scales."""
        half = self.config.band_width * self.last_spread
        return (self.last_expected - half, self.last_expected + half)

    def explain(self) -> dict[str, object]:
        """What a signal carries as evidence when the last sample fired (JSON-able)."""
        low, high = self.band()
        return {
            "value": self.last_value,
            "expected": self.last_expected,
            "band": [low, high],
            "score": self.last_score,
            "model": self.last_model,
            "samples": self.n,
        }

    # -- persistence ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-able snapshot; ``from_state`` resumes with identical scores."""
        scalars: dict[str, Any] = {}
        for name in _SCALAR_FIELDS:
            v = getattr(self, name)
            # JSON has no inf/nan: encode them as null.
            scalars[name] = None if isinstance(v, float) and not math.isfinite(v) else v
        return {
            "version": STATE_VERSION,
            "config": dataclasses.asdict(self.config),
            "scalars": scalars,
            "tails": {
                "point": self._t_point.to_state(),
                "shift": self._t_shift.to_state(),
                "volatility": self._t_vol.to_state(),
                "likelihood": self._t_lik.to_state(),
            },
            "slots": list(self._slots),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AnomalyDetector:
        """Rebuild a detector from ``to_state()``; raises ValueError naming a bad field."""
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(
                f"state.version: expected {STATE_VERSION}, got {version!r}; rebuild the "
                "detector with warm() from a range query instead"
            )
        try:
            config = Config(**state["config"])
        except TypeError as exc:
            raise ValueError(f"state.config: {exc}") from exc
        det = cls(config)
        scalars = state["scalars"]
        for name in _SCALAR_FIELDS:
            if name not in scalars:
                raise ValueError(f"state.scalars.{name}: missing")
            v = scalars[name]
            if name == "last_model":
                det.last_model = str(v)
            elif name == "n":
                det.n = int(v)
            elif v is None:
                setattr(det, name, _NONFINITE_DEFAULTS.get(name, math.nan))
            else:
                setattr(det, name, float(v))
        tails = state["tails"]
        det._t_point.load(tails["point"])
        det._t_shift.load(tails["shift"])
        det._t_vol.load(tails["volatility"])
        det._t_lik.load(tails["likelihood"])
        slots = state["slots"]
        if len(slots) > _MAX_SEASON_SLOTS:
            raise ValueError(f"state.slots: at most {_MAX_SEASON_SLOTS}, got {len(slots)}")
        det._slots = [None if s is None else float(s) for s in slots]
        return det
