"""Candidate ensemble members (bench/anomaly/members.py): a level shift in noise fires, stationary
noise stays quiet under the likelihood, contexts learn a routine pattern, memory is fixed."""

from __future__ import annotations

import random

import pytest
from bench.anomaly import members

from selfheal.detect.anomaly import DEFAULTS, AnomalyDetector, Config

STEP = 300.0
T0 = 1_700_000_000.0


def noisy(n: int, *, seed: int = 1, level: float = 50.0, sd: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sd) for _ in range(n)]


def scores(update: members.Update, values: list[float]) -> list[float]:
    return [update(T0 + STEP * i, v) for i, v in enumerate(values)]


def test_likelihood_of_a_constant_raw_score_is_zero_and_a_jump_is_rare() -> None:
    lik = members.Likelihood(alpha=1.0 / 500.0, learn=300)
    quiet = [lik.update(0.1) for _ in range(2000)]
    assert max(quiet) == 0.0
    assert lik.update(5.0) == 1.0  # far beyond anything seen: tail below 1e-10


def test_likelihood_is_quiet_before_it_has_learnt() -> None:
    lik = members.Likelihood(learn=300)
    assert all(lik.update(100.0 * (i % 2)) == 0.0 for i in range(300))


def test_likelihood_score_stays_quiet_on_stationary_noise() -> None:
    out = scores(members.LikelihoodScore().update, noisy(12_000))
    alarms = sum(1 for s in out[750:] if s >= 0.9)
    assert alarms <= 12  # at most one in 1,000 samples


def test_likelihood_score_fires_on_a_level_shift_in_noise() -> None:
    values = noisy(4000)
    values[3000:] = [v + 20.0 for v in values[3000:]]  # ten standard deviations up
    out = scores(members.LikelihoodScore().update, values)
    assert max(out[3000:3005]) >= 0.9
    # Before it, a rare extreme point of the noise may fire (the surprise's tail is heavier than
    # the likelihood's Gaussian): about once in 1,000-2,000 samples, not more.
    assert sum(1 for s in out[750:3000] if s >= 0.9) <= 2


def test_members_ignore_out_of_order_and_nan_samples() -> None:
    for update in (
        members.LikelihoodScore().update,
        members.Blend().update,
        members.Ensemble().update,
        members.Floored().update,
    ):
        assert update(T0, 1.0) == 0.0
        assert update(T0, 2.0) == 0.0  # same timestamp: ignored
        assert update(T0 + STEP, float("nan")) == 0.0


def test_context_novelty_learns_a_repeating_pattern() -> None:
    ctx = members.ContextNovelty(bins=8, lags=3)
    pattern = [0.0, 5.0, 10.0, 3.0]
    out = [ctx.update(pattern[i % 4]) for i in range(40)]
    assert max(out[:4]) == 1.0  # every context new at first
    assert out[12:] == [0.0] * 28  # routine: nothing new
    assert ctx.update(7.0) > 0.0  # a value in a bin never visited


def test_context_novelty_memory_is_fixed() -> None:
    ctx = members.ContextNovelty(bins=16, lags=4)
    for v in noisy(5000):
        ctx.update(v)
    assert len(ctx.seen) == 4 * 16 * 16
    assert len(ctx.history) == 4


def test_floored_without_a_floor_is_the_shipped_detector() -> None:
    values = noisy(6000)
    values[2000:] = [v + 15.0 for v in values[2000:]]
    values[5000] += 40.0
    det = AnomalyDetector(DEFAULTS)
    expected = [det.update(T0 + STEP * i, v) for i, v in enumerate(values)]
    got = scores(members.Floored(floor=0.0).update, values)
    assert got == pytest.approx(expected, abs=1e-9)


def test_floored_follows_a_growing_refractory_memory() -> None:
    values = noisy(6000)  # past 1 / (1 - decay) / peak_memory samples: the memory grows
    values[5000] += 40.0
    config = Config(peak_memory=0.1)
    det = AnomalyDetector(config)
    expected = [det.update(T0 + STEP * i, v) for i, v in enumerate(values)]
    got = scores(members.Floored(floor=0.0, config=config).update, values)
    assert got == pytest.approx(expected, abs=1e-9)


def test_a_floor_silences_routine_noise() -> None:
    values = noisy(12_000)
    plain = sum(1 for s in scores(members.Floored(floor=0.0).update, values)[750:] if s >= 0.62)
    floored = sum(1 for s in scores(members.Floored(floor=2.0).update, values)[750:] if s >= 0.62)
    assert floored < plain


def test_blend_and_ensemble_scores_are_in_the_unit_interval() -> None:
    values = noisy(3000)
    values[2500] += 40.0
    for update in (members.Blend().update, members.Ensemble().update):
        out = scores(update, values)
        assert all(0.0 <= s <= 1.0 for s in out)
        assert max(out[2500:2502]) > 0.5
