"""A level shift far outside the expected band opens an excursion even when the
detector's score stays low: scores are relative to recent surprises, so a shift ten
seconds after a spike scores low, yet it is the incident."""

from __future__ import annotations

import random
from collections import deque

from selfheal.detect.anomaly import AnomalyDetector
from selfheal.detect.prometheus import WorkloadState, feed_samples, fired, outside_band

Samples = list[tuple[float, float]]


def _noise(start: int, n: int, level: float, rng: random.Random) -> Samples:
    return [(float(t), level + rng.gauss(0, 0.002)) for t in range(start, start + n)]


def _warmed(history: Samples) -> WorkloadState:
    st = WorkloadState(recent=deque(maxlen=10), detector=AnomalyDetector())
    assert st.detector is not None
    st.detector.warm(history)
    st.last_t = history[-1][0]
    return st


def test_outside_band_widens_about_the_centre() -> None:
    assert outside_band(1.3, (0.0, 1.0), widen=1.0)
    assert not outside_band(1.2, (0.0, 1.0), widen=1.5)  # half-width 0.75 about 0.5
    assert outside_band(-0.3, (0.0, 1.0), widen=1.5)
    assert not outside_band(5.0, (1.0, 1.0), widen=1.0)  # a degenerate band says nothing


def test_a_shift_right_after_a_spike_fires_after_for_and_the_spike_alone_never_does() -> None:
    rng = random.Random(7)
    history = _noise(0, 1800, 0.1, rng)
    before = [*_noise(1800, 20, 0.1, rng), (1820.0, 0.16), *_noise(1821, 9, 0.1, rng)]
    quiet, shifted = _warmed(history), _warmed(history)

    feed_samples(quiet, before + _noise(1830, 30, 0.1, rng), threshold=0.9, gap=2.5)
    assert not fired(quiet.hold, for_=3.0)  # the lone spike came and went

    feed_samples(shifted, before, threshold=0.9, gap=2.5)
    feed_samples(shifted, _noise(1830, 2, 0.2, rng), threshold=0.9, gap=2.5)
    assert shifted.onset is not None
    assert shifted.onset.upward
    assert not fired(shifted.hold, for_=3.0)  # two bad seconds are not enough
    feed_samples(shifted, _noise(1832, 5, 0.2, rng), threshold=0.9, gap=2.5)
    assert fired(shifted.hold, for_=3.0)
