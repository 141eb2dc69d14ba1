"""``python -m selfheal.detect.score``: streams a CSV through the detector, and says exactly
which file, line and field is wrong when the input is bad."""

from __future__ import annotations

import csv
import datetime as dt
import pathlib
import random
import subprocess
import sys

import pytest

from selfheal.detect import score
from selfheal.detect.anomaly import AnomalyDetector

REPO = pathlib.Path(__file__).resolve().parents[2]


def write_series(path: pathlib.Path, n: int = 400) -> list[tuple[str, float]]:
    rng = random.Random(21)
    start = dt.datetime(2014, 4, 1)
    rows = []
    for i in range(n):
        ts = (start + dt.timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((ts, round(10.0 + rng.gauss(0.0, 1.0), 6)))
    rows[350] = (rows[350][0], 60.0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(rows)
    return rows


def test_cli_scores_a_small_file(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "in.csv"
    target = tmp_path / "out.csv"
    rows = write_series(source)
    proc = subprocess.run(
        [sys.executable, "-m", "selfheal.detect.score", str(source), str(target)],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'operator'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with target.open(newline="") as handle:
        out = list(csv.DictReader(handle))
    assert [r["timestamp"] for r in out] == [ts for ts, _ in rows]
    assert [float(r["value"]) for r in out] == [v for _, v in rows]
    scores = [float(r["anomaly_score"]) for r in out]
    assert all(0.0 <= s <= 1.0 for s in scores)
    # Same numbers as the library API, sample by sample.
    det = AnomalyDetector()
    expected = [
        det.update(
            dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC).timestamp(),
            v,
        )
        for ts, v in rows
    ]
    assert scores == expected
    assert scores.index(max(scores)) == 350


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"in\.csv:1: empty file"),
        ("time,value\n1,2\n", r"in\.csv:1: header has no 'timestamp' column"),
        ("timestamp,value\n1,2\nyesterday,3\n", r"in\.csv:3: field 'timestamp'"),
        ("timestamp,value\n1,2\n2,abc\n", r"in\.csv:3: field 'value': 'abc' is not a number"),
        ("timestamp,value\n1,2\n2\n", r"in\.csv:3: expected 2 fields, got 1"),
    ],
)
def test_bad_input_names_file_line_and_field(
    tmp_path: pathlib.Path, content: str, message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(content)
    with pytest.raises(score.InputError, match=message):
        score.score_file(source=str(source), target=str(tmp_path / "out.csv"))


def test_missing_file_exits_2_with_the_path(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert score.main([str(missing), str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert "nope.csv: cannot read" in err


def test_unix_seconds_and_seasonality_flag(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "value,timestamp\n" + "".join(f"{i % 7},{1000 + 60 * i}\n" for i in range(50))
    )
    target = tmp_path / "out.csv"
    assert score.main([str(source), str(target), "--seasonality", "420"]) == 0
    lines = target.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score"
    assert len(lines) == 51
    assert lines[1].startswith("1000,0,")


def test_repeated_and_late_timestamps_are_scored_in_file_order(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fall-back DST change in naive local time: the hour 01:00-01:55 appears twice.
    start = dt.datetime(2014, 11, 2, 0, 0)
    stamps = [start + dt.timedelta(minutes=5 * i) for i in range(24)]
    stamps += [start + dt.timedelta(hours=1, minutes=5 * i) for i in range(12)]
    stamps += [start + dt.timedelta(hours=2, minutes=5 * i) for i in range(12)]
    rng = random.Random(5)
    rows = [(s.strftime("%Y-%m-%d %H:%M:%S"), round(rng.gauss(5.0, 1.0), 4)) for s in stamps]
    source = tmp_path / "in.csv"
    source.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    target = tmp_path / "out.csv"
    tally = score.score_file(source=str(source), target=str(target))
    with target.open(newline="") as handle:
        out = list(csv.DictReader(handle))
    assert [r["timestamp"] for r in out] == [t for t, _ in rows]
    assert tally.rows == len(rows)
    # 01:00 again is the one repeat; the 23 rows after it are an hour later than stamped.
    assert (tally.repeated, tally.first_repeated, tally.shifted) == (1, 2 + 24, 23)
    # Every row moved the detector: the same scores as the same values sampled regularly.
    det = AnomalyDetector()
    t0 = start.replace(tzinfo=dt.UTC).timestamp()
    regular = [det.update(t0 + 300.0 * i, v) for i, (_, v) in enumerate(rows)]
    assert [float(r["anomaly_score"]) for r in out] == regular
    err = capsys.readouterr().err
    assert "1 row(s) with a timestamp not after the previous row (first at line 26)" in err
    assert "23 later row(s)" in err


@pytest.mark.parametrize("missing", ["nan", "NaN", "", "inf"])
def test_unknown_values_score_zero_and_do_not_move_the_detector(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    values = [float(i % 5) for i in range(80)]
    lines = [f"{1000 + 60 * i},{v}" for i, v in enumerate(values)]
    lines.insert(40, f"{1000 + 60 * 40 - 30},{missing}")
    source = tmp_path / "in.csv"
    source.write_text("timestamp,value\n" + "\n".join(lines) + "\n")
    target = tmp_path / "out.csv"
    tally = score.score_file(source=str(source), target=str(target))
    out = list(csv.DictReader(target.open(newline="")))
    assert len(out) == 81
    assert tally.unknown == 1
    assert float(out[40]["anomaly_score"]) == 0.0
    det = AnomalyDetector()
    expected = [det.update(1000.0 + 60 * i, v) for i, v in enumerate(values)]
    got = [float(r["anomaly_score"]) for k, r in enumerate(out) if k != 40]
    assert got == expected
    assert "1 row(s) with no finite value (first at line 42)" in capsys.readouterr().err


def test_a_gap_is_reported_and_the_detector_carries_on(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stamps = [1000 + 60 * i for i in range(50)] + [1000 + 60 * (i + 500) for i in range(50)]
    source = tmp_path / "in.csv"
    source.write_text("timestamp,value\n" + "".join(f"{t},{t % 7}\n" for t in stamps))
    tally = score.score_file(source=str(source), target=str(tmp_path / "out.csv"))
    assert (tally.rows, tally.gaps, tally.first_gap) == (100, 1, 52)
    assert "1 gap(s)" in capsys.readouterr().err


def test_clean_input_prints_nothing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    write_series(source)
    score.score_file(source=str(source), target=str(tmp_path / "out.csv"))
    assert capsys.readouterr().err == ""
