"""Values as an on-call reads them: times in UTC with their age, durations, numbers.

The evidence carries Unix floats (``1796151861.8246496``), RFC 3339 strings with or
without microseconds, and ``None`` for what is not known; a ticket shows none of those
raw. Pure functions, no I/O.
"""

from __future__ import annotations

import datetime
import math

MISSING = "-"
"""What a ticket shows for a value that is not known (never ``None``)."""


def parse_time(value: object) -> float | None:
    """Unix seconds from a Unix number or an RFC 3339 string; ``None`` when neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        # Below 1e9 is not a wall-clock time (a duration, a counter): not a time.
        return float(value) if math.isfinite(value) and value >= 1e9 else None
    if isinstance(value, str) and value:
        text = value.strip().replace("Z", "+00:00")
        try:
            dt = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.UTC)
        return dt.timestamp()
    return None


def when(value: object, *, now: float | None = None, date: bool = True) -> str:
    """``2026-11-28 08:00:05 UTC (3m before collection)``; ``-`` when ``value`` is no time.

    ``now``: the reference for the age (the collection time), none shown when ``None``.
    ``date=False`` leaves the date out (table cells of one incident's events).
    """
    t = parse_time(value)
    if t is None:
        return str(value) if isinstance(value, str) and value else MISSING
    dt = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    text = dt.strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S")
    if now is not None:
        delta = now - t
        if abs(delta) >= 1:
            side = "before" if delta > 0 else "after"
            text += f" ({duration(abs(delta))} {side} collection)"
    return text


def duration(seconds: object) -> str:
    """``45s``, ``2m``, ``2m 30s``, ``3h 5m``, ``2d 4h``; ``-`` when not a number."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return MISSING
    if not math.isfinite(seconds):
        return MISSING
    s = round(abs(float(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m}m" + (f" {r}s" if r else "")
    if s < 86400:
        h, r = divmod(s, 3600)
        return f"{h}h" + (f" {r // 60}m" if r // 60 else "")
    d, r = divmod(s, 86400)
    return f"{d}d" + (f" {r // 3600}h" if r // 3600 else "")


def number(value: object) -> str:
    """A measurement: six significant digits, no ``None``, ``NaN`` said as such."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return " – ".join(number(v) for v in value)
    text = str(value)
    return text if text and text != "None" else MISSING


def mebibytes(value: float) -> str:
    """Bytes as ``511Mi`` (or ``1.5Gi``), the unit Kubernetes limits are written in."""
    if value >= 2**30:
        return f"{value / 2**30:.1f}Gi"
    return f"{value / 2**20:.0f}Mi"


def millicores(value: float) -> str:
    """CPU cores as ``412m``."""
    return f"{value * 1000:.0f}m"


__all__ = ["MISSING", "duration", "mebibytes", "millicores", "number", "parse_time", "when"]
