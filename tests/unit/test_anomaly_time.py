"""Placing rows whose timestamps do not increase (``score.effective_time``): every row is
scored, in file order, never dropped."""

from __future__ import annotations

import itertools
import math

from selfheal.detect.score import Clock, effective_time, parse_value


def place(stamps: list[float]) -> tuple[list[float], list[str], Clock]:
    clock = Clock()
    times: list[float] = []
    kinds: list[str] = []
    for ts in stamps:
        t, clock, kind = effective_time(clock, ts)
        times.append(t)
        kinds.append(kind)
    return times, kinds, clock


def test_increasing_stamps_keep_their_time_and_learn_the_step() -> None:
    times, kinds, clock = place([0.0, 300.0, 600.0, 1500.0])
    assert times == [0.0, 300.0, 600.0, 1500.0]
    assert set(kinds) == {"on time"}
    assert clock.step == 300.0


def test_a_duplicate_goes_one_step_after_the_previous_row() -> None:
    times, kinds, _ = place([0.0, 300.0, 300.0, 900.0])
    assert times == [0.0, 300.0, 600.0, 900.0]
    assert kinds == ["on time", "on time", "repeated", "on time"]


def test_a_daylight_saving_repeat_shifts_the_rest_of_the_hour() -> None:
    hour = [3600.0 + 300.0 * i for i in range(12)]
    stamps = [300.0 * i for i in range(12)] + hour + hour + [7200.0 + 300.0 * i for i in range(3)]
    times, kinds, _ = place(stamps)
    # Strictly increasing, one step apart: the file's rows are consecutive samples.
    assert all(b - a == 300.0 for a, b in itertools.pairwise(times))
    assert kinds.count("repeated") == 1  # 01:00 again; the rest of that hour follows it
    assert kinds.count("shifted") == 11 + 3


def test_a_late_row_is_scored_where_it_arrives() -> None:
    times, kinds, _ = place([0.0, 60.0, 120.0, 30.0, 180.0])
    assert kinds[3] == "repeated"
    assert times[3] == 180.0
    assert times[4] == 240.0  # behind the late row, until stamps catch up
    assert kinds[4] == "shifted"


def test_before_any_step_is_known_a_repeat_is_one_second_later() -> None:
    times, _, _ = place([50.0, 50.0, 50.0])
    assert times == [50.0, 51.0, 52.0]


def test_unknown_values() -> None:
    assert parse_value(" 1.5 ") == 1.5
    assert parse_value("") is None
    assert parse_value("nan") is None
    assert parse_value("-inf") is None
    assert math.isclose(parse_value("1e3") or 0.0, 1000.0)
