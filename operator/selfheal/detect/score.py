"""``python -m selfheal.detect.score INPUT.csv OUTPUT.csv [--seasonality SECONDS]``.

Reads ``timestamp,value`` rows (timestamp: Unix seconds or ISO 8601, e.g. ``2014-04-01
00:05:00``; naive times are UTC), scores them one at a time with ``AnomalyDetector`` (causal: a
row's score uses only the rows before it) and writes ``timestamp,value,anomaly_score`` as it
goes, one output row per input row. The detector's configuration is ``anomaly.DEFAULTS``, the
one the operator and the benchmark use.

Real exports are not clean, and refusing them helps nobody, so:

- A timestamp that is not after the previous row's (a repeated hour at a daylight-saving change
  in naive local time, a duplicated row, a late row) is scored in file order, as if it came one
  sampling step after the previous row (``effective_time``). Its row is written with its own
  timestamp.
- A missing, NaN or infinite value is what the operator calls ``unknown``: the detector is not
  updated and the row's score is 0.0 (no evidence of an anomaly).
- A gap in time needs nothing: the detector continues from its last state, as it does when the
  operator misses scrapes.

Each of these is counted, with the first line where it happened, and summed up on stderr.
A row that cannot be read at all (no timestamp, a value that is not a number) stops the run with
``FILE:LINE: field 'NAME': problem`` and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import math
import sys
from collections.abc import Sequence
from typing import Literal

from selfheal.detect.anomaly import DEFAULTS, AnomalyDetector

GAP_STEPS = 2.0
"""A jump of more than this many sampling steps is reported as a gap."""


class InputError(Exception):
    """A problem in the input file, located by file, line and field."""


def parse_timestamp(text: str) -> float:
    """Unix seconds, or ISO 8601 (naive means UTC)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_value(text: str) -> float | None:
    """The row's value; ``None`` for unknown (empty, NaN, infinite). Raises ValueError when the
    text is not a number at all."""
    text = text.strip()
    if not text:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Clock:
    """What the scorer knows about time so far."""

    last: float = -math.inf
    """Effective time of the previous row (``-inf`` before the first)."""
    stamped: float = -math.inf
    """The previous row's own timestamp."""
    step: float = 0.0
    """Smallest positive gap seen between rows' own timestamps (0.0 until one is seen)."""


Placement = Literal["on time", "repeated", "shifted"]
"""How a row was placed: at its own time; after a row stamped at or after it (a repeat, a
late row); or behind an earlier repair (its own time is later than the previous row's but not
than where that row was placed)."""


def effective_time(clock: Clock, ts: float) -> tuple[float, Clock, Placement]:
    """The time to score a row at, the next clock, and how the row was placed.

    A row later than the previous one keeps its time. One that is not is placed one step
    after the previous row, so the detector sees every row in file order instead of silently
    dropping it (before any step is known, that step is one second). After a daylight-saving
    repeat in naive local time, the rows that follow are an hour later than their stamps say:
    they stay behind the repaired rows, one step apart, until their stamps catch up.
    """
    gap = ts - clock.stamped
    step = clock.step
    if gap > 0.0 and math.isfinite(gap) and (step == 0.0 or gap < step):
        step = gap
    if ts > clock.last:
        return ts, Clock(last=ts, stamped=ts, step=step), "on time"
    placed = clock.last + (step if step > 0.0 else 1.0)
    kind: Placement = "repeated" if gap <= 0.0 else "shifted"
    return placed, Clock(last=placed, stamped=ts, step=step), kind


@dataclasses.dataclass(kw_only=True)
class Tally:
    """Counts of what was done to imperfect rows, with the first line of each."""

    rows: int = 0
    repeated: int = 0
    first_repeated: int = 0
    shifted: int = 0
    unknown: int = 0
    first_unknown: int = 0
    gaps: int = 0
    first_gap: int = 0

    def notes(self, source: str, step: float) -> list[str]:
        """One stderr line per kind of repair that happened."""
        out = []
        if self.repeated:
            out.append(
                f"{source}: {self.repeated} row(s) with a timestamp not after the previous row "
                f"(first at line {self.first_repeated}): scored in file order, each one step "
                f"({step:g} s) after the previous row"
                + (
                    f"; {self.shifted} later row(s) stamped before that were shifted the same way"
                    if self.shifted
                    else ""
                )
            )
        if self.unknown:
            out.append(
                f"{source}: {self.unknown} row(s) with no finite value (first at line "
                f"{self.first_unknown}): unknown, detector not updated, score 0.0"
            )
        if self.gaps:
            out.append(
                f"{source}: {self.gaps} gap(s) longer than {GAP_STEPS:g} steps (first at line "
                f"{self.first_gap}): the detector continued from its last state"
            )
        return out


def score_file(
    *, source: str, target: str, seasonality: float | None = DEFAULTS.seasonality
) -> Tally:
    """Score ``source`` into ``target``; return what was done (rows written, repairs)."""
    detector = AnomalyDetector(dataclasses.replace(DEFAULTS, seasonality=seasonality))
    try:
        handle = open(source, newline="")  # noqa: SIM115 - closed below, errors located first
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    tally = Tally()
    clock = Clock()
    with handle, open(target, "w", newline="") as out:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{source}:1: empty file; expected a header 'timestamp,value'")
        names = [h.strip() for h in header]
        for field in ("timestamp", "value"):
            if field not in names:
                raise InputError(
                    f"{source}:1: header has no '{field}' column (got {','.join(names)}); "
                    "expected 'timestamp,value'"
                )
        ti, vi = names.index("timestamp"), names.index("value")
        writer = csv.writer(out)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(ti, vi):
                raise InputError(f"{source}:{line}: expected {len(names)} fields, got {len(row)}")
            try:
                ts = parse_timestamp(row[ti])
            except ValueError:
                raise InputError(
                    f"{source}:{line}: field 'timestamp': {row[ti]!r} is neither Unix seconds "
                    "nor ISO 8601 (e.g. 2014-04-01 00:05:00)"
                ) from None
            try:
                value = parse_value(row[vi])
            except ValueError:
                raise InputError(
                    f"{source}:{line}: field 'value': {row[vi]!r} is not a number"
                ) from None
            before = clock
            t, clock, placement = effective_time(clock, ts)
            if placement == "repeated":
                tally.repeated += 1
                tally.first_repeated = tally.first_repeated or line
            elif placement == "shifted":
                tally.shifted += 1
            elif before.step > 0.0 and t - before.last > GAP_STEPS * before.step:
                tally.gaps += 1
                tally.first_gap = tally.first_gap or line
            if value is None:
                tally.unknown += 1
                tally.first_unknown = tally.first_unknown or line
                score = 0.0
            else:
                score = detector.update(t, value)
            writer.writerow([row[ti], row[vi], repr(score)])
            tally.rows += 1
    for note in tally.notes(source, clock.step):
        print(f"note: {note}", file=sys.stderr)
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfheal.detect.score",
        description="Score a timestamp,value CSV with the streaming anomaly detector.",
    )
    parser.add_argument("input", help="CSV with a header containing 'timestamp' and 'value'")
    parser.add_argument("output", help="CSV to write: timestamp,value,anomaly_score")
    parser.add_argument(
        "--seasonality",
        type=float,
        default=DEFAULTS.seasonality,
        help=(
            "seasonal period in seconds, 0 for none; default: %(default)g, the operator's "
            "(the seasonal model is used only where it predicts better)"
        ),
    )
    args = parser.parse_args(argv)
    seasonality = args.seasonality if args.seasonality and args.seasonality > 0 else None
    try:
        score_file(source=args.input, target=args.output, seasonality=seasonality)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.output}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
