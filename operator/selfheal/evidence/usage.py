"""Resource usage over the incident window, from cAdvisor's metrics in Prometheus.

The queries name the workload with label matchers built for PromQL: a value in a
double-quoted string literal escapes ``\\``, ``"`` and newlines (PromQL follows Go's
string syntax); a regex matcher is RE2, fully anchored, whose metacharacters are
escaped before the string escaping. Python's ``re.escape`` is neither: it escapes ``-``
as ``\\-``, which a PromQL string refuses (``unknown escape sequence``), so every usage
query of a pod named ``checkout-7d9f8-abcde`` failed.

Measured, per container of the blamed pod (or the Deployment's pods):

- ``memory``: ``container_memory_working_set_bytes`` now (what the OOM killer weighs);
- ``memory_peak``: its maximum over the incident window;
- ``cpu``: the ``container_cpu_usage_seconds_total`` rate over the last 5 minutes;
- ``cpu_peak``: the highest 1-minute rate within the window.
"""

from __future__ import annotations

import dataclasses
import math
import time

from selfheal.clients.prometheus import Prometheus, PrometheusError

MIN_WINDOW = 300.0
"""Seconds: a window shorter than this is widened (a 1-minute rate needs samples)."""
MAX_WINDOW = 86_400.0
"""Seconds: a longer incident looks at its last day only (bounded query cost)."""

_RE2_META = frozenset("\\.+*?()|[]{}^$")


def string_literal(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal, quotes included."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def re2_escape(value: str) -> str:
    """``value`` matched literally by an RE2 regex (``checkout.v2`` -> ``checkout\\.v2``)."""
    return "".join("\\" + c if c in _RE2_META else c for c in value)


def selector(*, namespace: str, deployment: str, pod: str | None) -> str:
    """The label matchers of one pod's containers, or of a Deployment's pods by name.

    A Deployment's pods are ``<deployment>-<pod-template-hash>-<5 characters>``.
    """
    ns = f"namespace={string_literal(namespace)}"
    if pod:
        who = f"pod={string_literal(pod)}"
    else:
        who = "pod=~" + string_literal(re2_escape(deployment) + "-[a-z0-9]+-[a-z0-9]+")
    # container="" is the pod's cgroup total, "POD" the pause container: neither is a
    # container of the spec.
    return "{" + f'{ns},{who},container!="",container!="POD"' + "}"


RATE_WINDOW = 300.0
"""Seconds of the ``cpu`` rate (``kubectl top`` reads a similar span)."""
PEAK_RATE_WINDOW = 60.0
"""Seconds of each rate whose maximum is ``cpu_peak``."""


def queries(
    *,
    namespace: str,
    deployment: str,
    pod: str | None,
    window: float,
    rate_window: float = RATE_WINDOW,
    peak_rate_window: float = PEAK_RATE_WINDOW,
) -> dict[str, str]:
    """Resource key -> PromQL, ``max by (container)`` so each container has one value."""
    sel = selector(namespace=namespace, deployment=deployment, pod=pod)
    w = f"{math.ceil(window)}s"
    rw, pw = f"{math.ceil(rate_window)}s", f"{math.ceil(peak_rate_window)}s"
    # About 300 points per window: a 5-minute window at 1 s (a peak lasting one scrape
    # still shows), a day at under 5 minutes (bounded cost).
    step = f"{max(1, math.ceil(window / 300))}s"
    return {
        "memory": f"max by (container) (container_memory_working_set_bytes{sel})",
        "memory_peak": (
            f"max by (container) (max_over_time(container_memory_working_set_bytes{sel}[{w}]))"
        ),
        "cpu": f"max by (container) (rate(container_cpu_usage_seconds_total{sel}[{rw}]))",
        "cpu_peak": (
            "max by (container) (max_over_time("
            f"rate(container_cpu_usage_seconds_total{sel}[{pw}])[{w}:{step}]))"
        ),
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Usage:
    """What Prometheus measured: pass ``by_container`` to ``collect(prometheus_usage=...)``."""

    by_container: dict[str, dict[str, object]]
    """Container -> ``{"memory": bytes, "memory_peak": bytes, "cpu": cores, "cpu_peak": cores}``
    (the keys Prometheus had data for)."""
    start: float
    end: float
    errors: dict[str, str]
    """Resource key -> why its query failed (the others may still have answered)."""

    @property
    def note(self) -> str:
        """One line for the ticket: the window, and what failed."""
        span = time.strftime("%Y-%m-%d %H:%M", time.gmtime(self.start))
        end = time.strftime("%H:%M UTC", time.gmtime(self.end))
        text = f"peak over the incident window {span} → {end}"
        if self.errors:
            text += "; failed: " + ", ".join(f"{k} ({v})" for k, v in sorted(self.errors.items()))
        return text


async def collect_usage(
    prometheus: Prometheus,
    *,
    namespace: str,
    deployment: str,
    pod: str | None,
    start: float | None,
    end: float | None = None,
    rate_window: float = RATE_WINDOW,
    peak_rate_window: float = PEAK_RATE_WINDOW,
) -> Usage:
    """Usage of the blamed pod (``pod``) or the Deployment's busiest pod, over the window
    ``start`` (the incident's detection; ``None``: ``MIN_WINDOW`` before ``end``) to
    ``end`` (``None``: now). Never raises for Prometheus: failures land in ``errors``."""
    end = time.time() if end is None else end
    window = min(MAX_WINDOW, max(MIN_WINDOW, end - (start if start is not None else end)))
    out: dict[str, dict[str, object]] = {}
    errors: dict[str, str] = {}
    for key, promql in queries(
        namespace=namespace,
        deployment=deployment,
        pod=pod,
        window=window,
        rate_window=rate_window,
        peak_rate_window=peak_rate_window,
    ).items():
        try:
            series = await prometheus.instant(promql, at=end)
        except PrometheusError as e:
            errors[key] = " ".join(str(e).split())[:200]
            continue
        for s in series:
            if s.samples and math.isfinite(s.samples[-1][1]):
                out.setdefault(s.labels.get("container", "?"), {})[key] = s.samples[-1][1]
    return Usage(by_container=out, start=end - window, end=end, errors=errors)


__all__ = [
    "MAX_WINDOW",
    "MIN_WINDOW",
    "Usage",
    "collect_usage",
    "queries",
    "re2_escape",
    "selector",
    "string_literal",
]
