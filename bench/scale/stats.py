"""Pure helpers for the scale benchmark: percentiles, audit records, request counts.

No I/O here, so ``tests/unit/test_bench_scale.py`` checks them with plain values.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    The same definition as numpy's default (``method="linear"``): with one value it is
    that value, ``q=0`` is the minimum and ``q=100`` the maximum.
    """
    if not values:
        raise ValueError("percentile: values is empty; measure at least one sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: q={q} must be within 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(ordered[lo])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Distribution:
    """p50/p90/p99/max of a sample, in the sample's unit."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        return cls(
            n=len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=max(values),
            mean=sum(values) / len(values),
        )

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def ratio(a: float, b: float) -> float | None:
    """``a / b``, or ``None`` when ``b`` is zero (a ratio to nothing is not a figure)."""
    return a / b if b else None


# --- audit log -----------------------------------------------------------------------------


def parse_time(value: str) -> float:
    """An audit timestamp (RFC 3339, microseconds, ``Z``) as Unix seconds."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """One completed request of the API server's audit log (Metadata level)."""

    user: str
    verb: str
    resource: str
    """``pods``, ``pods/status``, ``deployments`` ...: the resource and its subresource."""
    namespace: str
    name: str
    code: int
    received: float
    completed: float
    """``stageTimestamp`` of ``ResponseComplete``: when the API server answered."""

    @property
    def is_write(self) -> bool:
        return self.verb in {"create", "update", "patch", "delete", "deletecollection"}


def audit_record(event: Mapping[str, Any]) -> AuditRecord | None:
    """The record of one audit event, or ``None`` for stages other than ResponseComplete."""
    if event.get("stage") != "ResponseComplete":
        return None
    ref = event.get("objectRef") or {}
    resource = str(ref.get("resource", ""))
    if ref.get("subresource"):
        resource += "/" + str(ref["subresource"])
    return AuditRecord(
        user=str((event.get("user") or {}).get("username", "")),
        verb=str(event.get("verb", "")),
        resource=resource or str(event.get("requestURI", "")).split("?")[0],
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        code=int((event.get("responseStatus") or {}).get("code", 0) or 0),
        received=parse_time(str(event["requestReceivedTimestamp"])),
        completed=parse_time(str(event["stageTimestamp"])),
    )


def count_requests(
    records: Iterable[AuditRecord], *, user: str, start: float, end: float
) -> Counter[str]:
    """``"verb resource"`` -> requests of ``user`` received within ``[start, end)``."""
    return Counter(
        f"{r.verb} {r.resource}" for r in records if r.user == user and start <= r.received < end
    )


def per(counts: Mapping[str, int], divisor: float) -> dict[str, float]:
    """Each count divided by ``divisor``, rounded to 3 decimals; ``{}`` for divisor 0."""
    if not divisor:
        return {}
    return {k: round(v / divisor, 3) for k, v in sorted(counts.items())}


def pod_writes(counts: Mapping[str, int]) -> int:
    """Writes to Pods (any subresource) among ``"verb resource"`` counts."""
    writes = ("create ", "update ", "patch ", "delete ", "deletecollection ")
    return sum(
        n
        for key, n in counts.items()
        if key.startswith(writes) and key.split(" ", 1)[1].split("/")[0] == "pods"
    )


# --- /proc ---------------------------------------------------------------------------------


def rss_bytes(status_text: str) -> int:
    """``VmRSS`` of a ``/proc/<pid>/status`` text, in bytes."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"VmRSS in {unit!r}: expected kB")
            return int(value) * 1024
    raise ValueError("no VmRSS line: the process has exited (or is a kernel thread)")


def cpu_seconds(stat_text: str, *, ticks_per_second: int) -> float:
    """utime + stime of a ``/proc/<pid>/stat`` text, in seconds.

    The command name (field 2) may hold spaces and parentheses: fields are counted
    after its closing parenthesis.
    """
    rest = stat_text[stat_text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): utime is field 14, stime field 15.
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_second
