"""The streaming anomaly detector: causal, deterministic, bounded, restartable, and it finds
the anomalies an on-call engineer would want paged about while staying quiet on routine noise."""

from __future__ import annotations

import json
import math
import random

import pytest

from selfheal.detect.anomaly import (
    DEFAULTS,
    STATE_VERSION,
    AnomalyDetector,
    Config,
    threshold_for,
)
from selfheal.policy.model import AnomalySpec, Sensitivity

STEP = 300.0  # 5-minute samples
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86400.0)  # midnight UTC
DAY = 86400.0


def noisy(n: int, *, seed: int = 1, level: float = 50.0, sd: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sd) for _ in range(n)]


def daily(n: int, *, seed: int = 2) -> list[float]:
    """A business-hours pattern (high 08:00-20:00) with a little noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hour = ((i * STEP) % DAY) / 3600.0
        out.append((80.0 if 8.0 <= hour < 20.0 else 20.0) + rng.gauss(0.0, 1.0))
    return out


def run(values: list[float], *, det: AnomalyDetector | None = None, start: int = 0) -> list[float]:
    det = det if det is not None else AnomalyDetector()
    return [det.update(T0 + (start + i) * STEP, v) for i, v in enumerate(values)]


def test_scores_stay_in_unit_interval_on_hostile_input() -> None:
    rng = random.Random(3)
    values = (
        [5.0] * 200  # flatline
        + [1e12, -1e12, 0.0, 1e-12] * 50  # wild swings
        + [rng.choice([0.0, 1.0, 1e6]) for _ in range(500)]
        + noisy(500)
    )
    scores = run(values)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores) > 0.9  # the swings out of a flatline do register


def test_future_samples_never_change_past_scores() -> None:
    base = noisy(1500, seed=4)
    calm_future = noisy(500, seed=5)
    wild_future = [v * 100.0 for v in noisy(500, seed=6)]
    a = run(base + calm_future)
    b = run(base + wild_future)
    alone = run(base)
    assert a[:1500] == alone
    assert b[:1500] == alone
    assert a[1500:] != b[1500:]


def test_same_input_gives_same_scores() -> None:
    values = daily(3000) + noisy(300, seed=7)
    assert run(values, det=AnomalyDetector(seasonality=DAY)) == run(
        values, det=AnomalyDetector(seasonality=DAY)
    )


def _numbers(obj: object) -> int:
    if isinstance(obj, dict):
        return sum(_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return sum(_numbers(v) for v in obj)
    return 1


def test_state_size_does_not_grow_with_the_stream() -> None:
    values = daily(40_000, seed=8)
    det = AnomalyDetector(seasonality=DAY)
    run(values[:3000], det=det)
    small = det.to_state()
    run(values[3000:], det=det, start=3000)
    large = det.to_state()
    assert _numbers(small) == _numbers(large)
    # Float text lengths vary a little; the size must not scale with 13x more samples.
    assert len(json.dumps(large)) < 1.2 * len(json.dumps(small))


@pytest.mark.parametrize("seasonality", [None, DAY])
def test_restart_from_serialised_state_gives_identical_scores(seasonality: float | None) -> None:
    values = daily(4000, seed=9)
    values[3500] += 200.0  # a spike after the restart point
    straight = run(values, det=AnomalyDetector(seasonality=seasonality))

    first = AnomalyDetector(seasonality=seasonality)
    before = run(values[:2000], det=first)
    wire = json.dumps(first.to_state())  # what the operator would persist
    resumed = AnomalyDetector.from_state(json.loads(wire))
    after = run(values[2000:], det=resumed, start=2000)
    assert before + after == straight
    assert max(after) > threshold_for(Sensitivity.MEDIUM)


def test_warm_replays_a_range_query_and_ignores_overlap() -> None:
    values = noisy(1200, seed=10)
    samples = [(T0 + i * STEP, v) for i, v in enumerate(values)]
    warmed = AnomalyDetector()
    warmed.warm(samples[:1000])
    # A restart re-warms with an overlapping window: old samples must not be counted twice.
    warmed.warm(samples[800:1100])
    fed = AnomalyDetector()
    run(values[:1100], det=fed)
    assert warmed.to_state() == fed.to_state()
    assert warmed.update(*samples[1100]) == fed.update(*samples[1100])


def test_nan_samples_are_skipped() -> None:
    values = noisy(600, seed=11)
    det = AnomalyDetector()
    run(values[:300], det=det)
    assert det.update(T0 + 300 * STEP, math.nan) == 0.0
    clean = AnomalyDetector()
    run(values[:300], det=clean)
    assert det.to_state() == clean.to_state()


def test_a_spike_fires_and_routine_noise_does_not() -> None:
    values = noisy(3000, seed=12)
    values[2500] = 90.0  # 20 standard deviations
    scores = run(values)
    medium = threshold_for(Sensitivity.MEDIUM)
    assert scores[2500] >= medium
    false_alarms = [i for i, s in enumerate(scores) if s >= medium and i != 2500]
    assert len(false_alarms) <= 3  # of ~2950 scored samples of pure noise


def test_a_level_shift_fires_once_not_for_every_sample() -> None:
    values = noisy(3000, seed=13) + noisy(1000, seed=14, level=70.0)
    scores = run(values)
    medium = threshold_for(Sensitivity.MEDIUM)
    fired = [i for i, s in enumerate(scores) if s >= medium]
    assert any(3000 <= i < 3010 for i in fired)
    assert len([i for i in fired if i >= 3000]) <= 3


def test_a_growing_refractory_memory_alarms_less_as_the_series_ages() -> None:
    # Config.peak_memory (off in DEFAULTS) makes the refractory memory grow: noise that beats the
    # recent peak fires about once per memory length, so alarms thin out as the series ages,
    # and a fixed memory keeps firing at its early rate.
    values = noisy(20_000, seed=17)
    high = threshold_for(Sensitivity.HIGH)
    growing = run(values, det=AnomalyDetector(Config(peak_memory=0.1)))
    fixed = run(values)  # DEFAULTS: a fixed memory
    early = sum(1 for s in growing[1000:5000] if s >= high)
    late = sum(1 for s in growing[16_000:20_000] if s >= high)
    assert late < early
    assert sum(1 for s in growing if s >= high) < sum(1 for s in fixed if s >= high)


def test_an_old_series_still_fires_on_a_spike() -> None:
    values = noisy(20_000, seed=18)
    values[19_000] = 90.0  # 20 standard deviations, once the memory has grown (1,900 samples)
    for config in (DEFAULTS, Config(peak_memory=0.1)):
        scores = run(values, det=AnomalyDetector(config))
        assert scores[19_000] >= threshold_for(Sensitivity.MEDIUM)


def test_daily_pattern_is_learned_and_a_broken_day_fires() -> None:
    values = daily(288 * 12, seed=15)
    broken_day = 288 * 10
    for i in range(broken_day + 8 * 12, broken_day + 20 * 12):
        values[i] = 20.0 + (values[i] - 80.0)  # business hours stay at night level
    det = AnomalyDetector(seasonality=DAY)
    scores = run(values, det=det)
    medium = threshold_for(Sensitivity.MEDIUM)
    normal_days = scores[288 * 4 : broken_day]
    assert max(normal_days) < medium
    assert max(scores[broken_day + 8 * 12 : broken_day + 9 * 12]) >= medium


def test_band_holds_normal_samples_and_explains_a_firing() -> None:
    values = noisy(2000, seed=16)
    det = AnomalyDetector()
    run(values[:1999], det=det)
    low, high = det.band()
    assert low < 50.0 < high
    score = det.update(T0 + 1999 * STEP, 120.0)
    assert score >= threshold_for(Sensitivity.HIGH)
    evidence = det.explain()
    json.dumps(evidence)  # must travel in a Signal
    band = evidence["band"]
    assert isinstance(band, list)
    assert not band[0] <= 120.0 <= band[1]
    assert evidence["value"] == 120.0


def test_sensitivity_orders_thresholds() -> None:
    low, medium, high = (threshold_for(s) for s in ("low", "medium", "high"))  # type: ignore[arg-type]
    assert 0.0 < high < medium < low < 1.0
    assert threshold_for(Sensitivity.MEDIUM) == medium


def test_for_spec_uses_the_policy_seasonality() -> None:
    det = AnomalyDetector.for_spec(AnomalySpec(seasonality=3600.0))
    assert det.config.seasonality == 3600.0


def test_one_configuration_for_operator_cli_and_bench() -> None:
    # A policy without seasonality gets DEFAULTS exactly (what the CLI and the bench run; the
    # CLI test compares its output with AnomalyDetector() sample by sample).
    assert AnomalyDetector.for_spec(AnomalySpec()).config == DEFAULTS
    assert AnomalyDetector().config == DEFAULTS
    # Explicitly none is still possible.
    assert AnomalyDetector(Config(seasonality=None)).config.seasonality is None


def test_bad_state_and_config_are_rejected_with_the_field() -> None:
    state = AnomalyDetector().to_state()
    with pytest.raises(ValueError, match=r"state\.version"):
        AnomalyDetector.from_state({**state, "version": STATE_VERSION + 1})
    broken = json.loads(json.dumps(state))
    del broken["scalars"]["level"]
    with pytest.raises(ValueError, match=r"state\.scalars\.level"):
        AnomalyDetector.from_state(broken)
    with pytest.raises(ValueError, match="seasonality"):
        AnomalyDetector(Config(seasonality=-5.0))
