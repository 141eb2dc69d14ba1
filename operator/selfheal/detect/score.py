"""``python -m selfheal.detect.score INPUT.csv OUTPUT.csv [--seasonality SECONDS]``.

Reads ``timestamp,value`` rows (timestamp: Unix seconds or ISO 8601, e.g. ``2014-04-01
00:05:00``; naive times are UTC), scores them one at a time with ``AnomalyDetector`` (causal: a
row's score uses only the rows before it) and writes ``timestamp,value,anomaly_score`` as it
goes. A bad row stops the run with ``FILE:LINE: field 'NAME': problem`` and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import sys
from collections.abc import Sequence

from selfheal.detect.anomaly import AnomalyDetector


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


def score_file(*, source: str, target: str, seasonality: float | None = None) -> int:
    """Score ``source`` into ``target``; return the number of rows written."""
    detector = AnomalyDetector(seasonality=seasonality)
    try:
        handle = open(source, newline="")  # noqa: SIM115 - closed below, errors located first
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
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
        rows = 0
        previous = -math.inf
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
            if not ts > previous:
                raise InputError(
                    f"{source}:{line}: field 'timestamp': {row[ti]!r} is not after the previous "
                    "row; sort the file by time and drop duplicates"
                )
            previous = ts
            try:
                value = float(row[vi])
            except ValueError:
                raise InputError(
                    f"{source}:{line}: field 'value': {row[vi]!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise InputError(f"{source}:{line}: field 'value': {row[vi]!r} is not finite")
            score = detector.update(ts, value)
            writer.writerow([row[ti], row[vi], repr(score)])
            rows += 1
    return rows


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
        default=None,
        help="seasonal period in seconds (e.g. 86400); default: none",
    )
    args = parser.parse_args(argv)
    try:
        score_file(source=args.input, target=args.output, seasonality=args.seasonality)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.output}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
