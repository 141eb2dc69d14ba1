"""The two baselines the detector is compared with, run in the same pass.

Both are causal for every scored row (NAB never scores the first 15%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class RollingZScore:
    """``|x - mean| / std`` over the previous ``window`` samples (ring buffer, running sums)."""

    def __init__(self, *, window: int = 288) -> None:
        self.window = window
        self.ring = [0.0] * window
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0

    def update(self, timestamp: float, value: float) -> float:
        del timestamp  # the baseline ignores time
        k = min(self.n, self.window)
        score = 0.0
        if k >= 2:
            mean = self.total / k
            var = max(self.total_sq / k - mean * mean, 0.0)
            std = math.sqrt(var)
            z = abs(value - mean) / std if std > 0.0 else (0.0 if value == mean else 1e9)
            score = z / (1.0 + z)
        slot = self.n % self.window
        if self.n >= self.window:
            old = self.ring[slot]
            self.total -= old
            self.total_sq -= old * old
        self.ring[slot] = value
        self.total += value
        self.total_sq += value * value
        self.n += 1
        return score


def static_p99_scores(values: Sequence[float]) -> list[float]:
    """1.0 where the value exceeds the 99th percentile of the series' first 15%, else 0.0.

    The percentile is known once the first 15% (NAB's unscored probation) has been seen, so
    every scored row uses the past only.
    """
    head = sorted(values[: max(1, int(0.15 * len(values)))])
    # Nearest-rank percentile: no interpolation, no numpy needed.
    p99 = head[min(len(head) - 1, math.ceil(0.99 * len(head)) - 1)]
    return [1.0 if v > p99 else 0.0 for v in values]
