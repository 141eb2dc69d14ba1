"""Prometheus trigger logic without Prometheus: pending holds, thresholds, excursions."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence

import pytest

from selfheal.detect import prometheus as prom
from selfheal.detect.anomaly import AnomalyDetector, threshold_for
from selfheal.detect.prometheus import Hold, WorkloadState, fired, hold_step, threshold_step
from selfheal.detect.signal import Health
from selfheal.policy.model import AnomalySpec, PrometheusTrigger, Sensitivity

T0 = 1_800_000_000.0
ABOVE = PrometheusTrigger(query="q", above=0.05, for_=120.0, interval=30.0)
GAP = 2.5 * 30.0


def run(
    spec: PrometheusTrigger, values: Sequence[float | None], *, every: float = 30.0
) -> list[tuple[Health, str]]:
    hold: Hold | None = None
    out = []
    for i, v in enumerate(values):
        hold, health, cause = threshold_step(spec, value=v, hold=hold, t=T0 + i * every, gap=GAP)
        out.append((health, cause))
    return out


def test_fires_when_the_breach_has_held_exactly_for() -> None:
    # Evaluations every 30 s; the breach starts at the 2nd: it has held 120 s at the 6th.
    got = run(ABOVE, [0.01, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert got == [
        (Health.HEALTHY, ""),
        (Health.HEALTHY, "Pending"),
        (Health.HEALTHY, "Pending"),
        (Health.HEALTHY, "Pending"),
        (Health.HEALTHY, "Pending"),
        (Health.UNHEALTHY, "ThresholdExceeded"),
        (Health.UNHEALTHY, "ThresholdExceeded"),
    ]


def test_one_good_sample_restarts_the_wait() -> None:
    got = run(ABOVE, [0.2, 0.2, 0.2, 0.2, 0.01, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert [h for h, _ in got].count(Health.UNHEALTHY) == 1
    assert got[-1] == (Health.UNHEALTHY, "ThresholdExceeded")
    assert got[4] == (Health.HEALTHY, "")


def test_recovery_is_immediate() -> None:
    got = run(ABOVE, [0.2] * 6 + [0.01])
    assert got[5][0] is Health.UNHEALTHY
    assert got[6] == (Health.HEALTHY, "")


def test_the_threshold_itself_is_not_a_breach() -> None:
    assert run(dataclass_for(for_=0.0), [0.05]) == [(Health.HEALTHY, "")]
    assert run(dataclass_for(for_=0.0), [0.0500001]) == [(Health.UNHEALTHY, "ThresholdExceeded")]


def dataclass_for(**kw: float) -> PrometheusTrigger:
    return PrometheusTrigger(query="q", above=kw.get("above", 0.05), for_=kw["for_"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5.0, False), (0.5, True), (12.0, True), (1.0, False), (10.0, False)],
)
def test_a_band_breaches_on_either_side(value: float, expected: bool) -> None:
    assert prom.breaches(value, above=10.0, below=1.0) is expected


def test_no_data_and_nan_are_unknown_and_neither_start_nor_end_a_breach() -> None:
    got = run(ABOVE, [0.2, None, 0.2, math.nan, 0.2, 0.2])
    assert got[1] == (Health.UNKNOWN, "NoData")
    assert got[3] == (Health.UNKNOWN, "NaN")
    # The breach that started at t=0 is still pending through the blind evaluations; the gaps
    # (60 s between bad observations) are within 2.5 intervals, so it fires at 120 s as usual.
    assert got[4] == (Health.UNHEALTHY, "ThresholdExceeded")


def test_a_long_blind_spell_restarts_the_wait() -> None:
    got = run(ABOVE, [0.2, 0.2, None, None, None, 0.2, 0.2, 0.2, 0.2, 0.2])
    # Bad at 0 and 30, blind until 150: 120 s since the last bad observation > 75 s gap.
    assert got[5] == (Health.HEALTHY, "Pending")
    assert got[8] == (Health.HEALTHY, "Pending")
    assert got[9] == (Health.UNHEALTHY, "ThresholdExceeded")


def test_evaluations_later_than_the_interval_still_fire() -> None:
    # The operator was busy: evaluations every 100 s for a 30 s interval.
    got = run(ABOVE, [0.2, 0.2, 0.2], every=100.0)
    assert [c for _, c in got] == ["Pending", "Pending", "ThresholdExceeded"]


def test_for_zero_fires_on_the_first_bad_sample() -> None:
    spec = PrometheusTrigger(query="q", below=10.0, for_=0.0)
    assert run(spec, [12.0, 9.0]) == [(Health.HEALTHY, ""), (Health.UNHEALTHY, "ThresholdExceeded")]


def test_hold_primitives() -> None:
    h = hold_step(None, breach=True, t=10.0, gap=5.0)
    assert h == Hold(10.0, 10.0)
    blind = hold_step(h, breach=None, t=12.0, gap=5.0)
    assert blind == Hold(10.0, 10.0, 12.0)
    assert hold_step(blind, breach=None, t=13.0, gap=5.0) is blind
    assert hold_step(blind, breach=True, t=17.0, gap=5.0) == Hold(10.0, 17.0)
    assert hold_step(blind, breach=True, t=17.5, gap=5.0) == Hold(17.5, 17.5)
    assert hold_step(h, breach=True, t=1000.0, gap=5.0) == Hold(10.0, 1000.0)
    assert hold_step(h, breach=False, t=11.0, gap=5.0) is None
    assert hold_step(None, breach=None, t=11.0, gap=5.0) is None
    assert fired(Hold(10.0, 14.0), for_=4.0)
    assert not fired(Hold(10.0, 13.9), for_=4.0)
    assert not fired(None, for_=0.0)


def test_worst_series_value_counts_for_a_workload() -> None:
    assert prom._worst([0.01, 0.3, math.nan], ABOVE) == 0.3
    below = PrometheusTrigger(query="q", below=1.0)
    assert prom._worst([5.0, 0.2], below) == 0.2
    assert math.isnan(prom._worst([math.nan], ABOVE) or 0.0)
    assert prom._worst([], ABOVE) is None


# -- excursions of a learned baseline (the real detector, synthetic series) -------------------

STEP = 60.0
FOR = 180.0


def noisy(n: int, *, level: float, seed: int, start: float = T0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(start + i * STEP, level + rng.gauss(0.0, 1.0)) for i in range(n)]


def fresh_state(history: list[tuple[float, float]]) -> WorkloadState:
    det = AnomalyDetector.for_spec(AnomalySpec(sensitivity=Sensitivity.MEDIUM, step=STEP))
    det.warm(history)
    return WorkloadState(recent=deque(maxlen=10), detector=det, last_t=history[-1][0])


def firing_times(st: WorkloadState, samples: list[tuple[float, float]]) -> list[float]:
    thr = threshold_for(Sensitivity.MEDIUM)
    times = []
    for s in samples:
        prom.feed_samples(st, [s], threshold=thr, gap=2.5 * STEP)
        if fired(st.hold, for_=FOR):
            times.append(s[0])
    return times


def test_a_level_shift_fires_after_for_of_sample_time() -> None:
    history = noisy(600, level=100.0, seed=1)
    end = history[-1][0]
    shifted = noisy(10, level=140.0, seed=2, start=end + STEP)
    st = fresh_state(history)
    times = firing_times(st, shifted)
    assert st.onset is not None
    assert st.onset.t == end + STEP  # the first shifted sample is the onset
    assert st.onset.high < 140.0 - 3
    # Fires on the sample 180 s after the onset, and keeps firing while the shift lasts.
    assert times[0] == end + STEP + FOR
    assert times == [t for t, _ in shifted if t >= end + STEP + FOR]


def test_a_lone_spike_does_not_fire_and_the_same_series_without_shift_is_quiet() -> None:
    history = noisy(600, level=100.0, seed=1)
    end = history[-1][0]
    rest = noisy(10, level=100.0, seed=3, start=end + STEP)
    spiked = [*rest]
    spiked[2] = (spiked[2][0], 160.0)
    st = fresh_state(history)
    assert firing_times(st, spiked) == []
    assert st.hold is None
    assert firing_times(fresh_state(history), rest) == []


def test_a_drop_below_the_band_fires_too() -> None:
    history = noisy(600, level=100.0, seed=4)
    end = history[-1][0]
    st = fresh_state(history)
    times = firing_times(st, noisy(8, level=60.0, seed=5, start=end + STEP))
    assert st.onset is not None
    assert not st.onset.upward
    assert times[0] == end + STEP + FOR


def test_nan_samples_neither_feed_nor_break_an_excursion() -> None:
    history = noisy(600, level=100.0, seed=1)
    end = history[-1][0]
    shifted = noisy(6, level=140.0, seed=2, start=end + STEP)
    shifted[1] = (shifted[1][0], math.nan)
    st = fresh_state(history)
    times = firing_times(st, shifted)
    assert times[0] == end + STEP + FOR


def test_a_hole_in_the_samples_restarts_the_wait() -> None:
    history = noisy(600, level=100.0, seed=1)
    end = history[-1][0]
    shifted = noisy(10, level=140.0, seed=2, start=end + STEP)
    # No data for ten minutes after the second shifted sample.
    shifted = shifted[:2] + [(t + 600.0, v) for t, v in shifted[2:]]
    st = fresh_state(history)
    times = firing_times(st, shifted)
    # The excursion is still outside the band it left, but ``for`` counts from the resume.
    assert st.onset is not None
    assert st.onset.t == shifted[0][0]
    assert times[0] == shifted[2][0] + FOR


def test_feeding_without_a_detector_is_an_error_that_says_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"st\.detector"):
        prom.feed_samples(WorkloadState(recent=deque()), [(T0, 1.0)], threshold=0.2, gap=1.0)
