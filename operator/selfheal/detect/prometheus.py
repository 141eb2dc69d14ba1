"""Prometheus triggers: static thresholds and learned baselines, one query per evaluation.

:class:`PrometheusEvaluator` evaluates one policy trigger over *all* the workloads the
policy matches with a single PromQL query, whatever their number, and maps the result
series to workloads by the labels the trigger names (``workloadLabels``).

Static thresholds (``above``/``below``)
    One instant query at ``now``. A workload breaches when its value is ``> above`` or
    ``< below``; it fires once the breach has held for ``for`` seconds, like a Prometheus
    alert's pending state, so one bad sample does not fire. When the query yields several
    series for one workload, the worst value counts.

Learned baselines (``anomaly``)
    A range query over the baseline window at ``step`` on first use (for workloads seen
    for the first time), then only the new grid points on each later evaluation (the range
    restarts at the last grid point fetched: one sample of overlap, dropped). Each new sample
    feeds the workload's streaming detector (:mod:`selfheal.detect.anomaly`). A score at or
    over ``threshold_for(sensitivity)``, or a sample far outside the band the detector expected
    for it (``BAND_WIDEN``), is the *onset* of an excursion: the detector's band at
    that sample is kept, and the excursion lasts while later samples stay outside that band
    on the same side. It fires once it has lasted ``for`` seconds of sample time, so a lone
    spike (back inside the band at the next sample) does not fire and a level shift does.
    History that predates ``now - (for + 2 * step)`` on first use only warms the detector,
    so an excursion already in progress when the operator starts is still seen.

Three outcomes, never two. A workload is ``unknown`` (never acted on) when Prometheus is
unreachable (``BackendUnavailable``), rejects the query (``QueryFailed``, with Prometheus'
message), returns no current series for it (``NoData``) or NaN (``NaN``); each message
names the policy's trigger. Unknown neither starts nor ends a pending breach, but after a
blind spell longer than ``gap_factor`` evaluation intervals (or a hole in the samples longer
than ``gap_factor`` steps) the breach starts over, so ``for`` is never satisfied across an
outage. Late evaluations do not reset it: consecutive bad observations always continue.

State is per (policy, trigger, workload), bounded: a pending-since pair, the last
``recent`` samples (the evidence), and for anomaly triggers one detector (fixed size).
It is dropped for workloads no longer passed in, and reset when the trigger's spec changes.
On an operator restart the baseline is rebuilt from Prometheus with one range query and
pending breaches start over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from selfheal.clients.prometheus import PrometheusUnavailable, QueryError, Series
from selfheal.detect.anomaly import AnomalyDetector, threshold_for
from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.policy.model import AnomalySpec, HealingPolicy, PrometheusTrigger, Trigger

Sample = tuple[float, float]
WorkloadKey = tuple[str, str]


class QueryClient(Protocol):
    """What the evaluator needs of :class:`selfheal.clients.prometheus.Prometheus`."""

    async def instant(self, query: str, *, at: float | None = None) -> list[Series]: ...

    async def range(self, query: str, *, start: float, end: float, step: float) -> list[Series]: ...


class Detector(Protocol):
    """What the evaluator needs of :class:`selfheal.detect.anomaly.AnomalyDetector`."""

    def update(self, timestamp: float, value: float) -> float: ...

    def warm(self, samples: Iterable[tuple[float, float]]) -> float: ...

    def band(self) -> tuple[float, float]: ...

    def explain(self) -> dict[str, object]: ...


# -- the pure core ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """A breach in progress."""

    since: float
    """First breaching observation."""
    last: float
    """Latest breaching observation."""
    blind_since: float | None = None
    """First unknown observation after ``last`` (``None``: none since)."""


def hold_step(prev: Hold | None, *, breach: bool | None, t: float, gap: float) -> Hold | None:
    """Advance a pending breach by one observation at ``t``.

    ``breach``: ``True`` bad, ``False`` good (ends it), ``None`` unknown. Consecutive bad
    observations continue the hold however far apart they are (evaluations may run late);
    unknown ones neither start nor end it, but a blind spell (from the first unknown to the
    next bad observation) longer than ``gap`` makes that observation start a new hold, so
    ``for`` is never satisfied across a long outage.
    """
    if breach is None:
        if prev is None or prev.blind_since is not None:
            return prev
        return Hold(prev.since, prev.last, t)
    if not breach:
        return None
    if prev is not None and (prev.blind_since is None or t - prev.blind_since <= gap):
        return Hold(prev.since, t)
    return Hold(t, t)


def fired(hold: Hold | None, *, for_: float) -> bool:
    """The breach has held for ``for_`` seconds (at the threshold: ``>=``)."""
    return hold is not None and hold.last - hold.since >= for_


def breaches(value: float, *, above: float | None, below: float | None) -> bool:
    return (above is not None and value > above) or (below is not None and value < below)


def threshold_step(
    spec: PrometheusTrigger, *, value: float | None, hold: Hold | None, t: float, gap: float
) -> tuple[Hold | None, Health, str]:
    """One static-threshold observation: (new hold, health, cause).

    ``value`` ``None`` is no data. Causes: ``ThresholdExceeded`` (fired), ``Pending``
    (breaching, ``for`` not yet elapsed: still healthy), ``NoData``, ``NaN``, "" (fine).
    """
    if value is None:
        return hold_step(hold, breach=None, t=t, gap=gap), Health.UNKNOWN, "NoData"
    if math.isnan(value):
        return hold_step(hold, breach=None, t=t, gap=gap), Health.UNKNOWN, "NaN"
    new = hold_step(hold, breach=breaches(value, above=spec.above, below=spec.below), t=t, gap=gap)
    if fired(new, for_=spec.for_):
        return new, Health.UNHEALTHY, "ThresholdExceeded"
    return new, Health.HEALTHY, "Pending" if new is not None else ""


@dataclasses.dataclass(frozen=True, slots=True)
class Onset:
    """The sample that started an excursion, and the band it left."""

    t: float
    value: float
    low: float
    high: float
    score: float
    explain: Mapping[str, object]

    @property
    def upward(self) -> bool:
        return self.value > self.high

    def outside(self, value: float) -> bool:
        return value > self.high if self.upward else value < self.low


def excursion_step(
    onset: Onset | None, *, value: float, score: float, threshold: float
) -> tuple[Onset | None, bool]:
    """Whether a scored sample continues or starts an excursion: (onset to keep, breach).

    An excursion continues while samples stay outside the onset's band on the onset's side,
    or score over the threshold again (a volatility change need not leave the band). The
    caller makes a new :class:`Onset` (it needs the detector's band): this returns
    ``(onset, True)`` when ``onset`` continues, ``(None, True)`` when a new onset must be
    recorded and ``(None, False)`` when the sample is unremarkable.
    """
    if onset is not None and (onset.outside(value) or score >= threshold):
        return onset, True
    if score >= threshold:
        return None, True
    return None, False


# -- the evaluator ---------------------------------------------------------------------------


@dataclasses.dataclass
class WorkloadState:
    """What the evaluator keeps per (policy, trigger, workload)."""

    recent: deque[Sample]
    """The last samples seen (the evidence), bounded by ``maxlen``."""
    hold: Hold | None = None
    detector: Detector | None = None
    onset: Onset | None = None
    last_t: float = -math.inf
    """Time of the last sample fed (anomaly triggers)."""


@dataclasses.dataclass
class _Trigger:
    fingerprint: str
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    """Overlapping evaluations of one trigger take turns (they share the state)."""
    workloads: dict[WorkloadKey, WorkloadState] = dataclasses.field(default_factory=dict)
    grid_end: float | None = None
    """Last grid point fetched by a range query (anomaly triggers)."""


BAND_WIDEN = {"low": 2.0, "medium": 1.5, "high": 1.0}
"""How far (a factor on the band's half-width) a sample must fall outside the band the
detector expected for it to open an excursion on its own, by sensitivity."""


def outside_band(value: float, band: tuple[float, float], *, widen: float) -> bool:
    """``value`` beyond ``band`` widened ``widen`` times about its centre."""
    low, high = band
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return False
    centre, half = (low + high) / 2, (high - low) / 2 * widen
    return abs(value - centre) > half


def feed_samples(
    st: WorkloadState,
    samples: Iterable[Sample],
    *,
    threshold: float,
    gap: float,
    widen: float = BAND_WIDEN["medium"],
) -> None:
    """Feed new samples (oldest first) to a workload's detector and advance its excursion.

    No I/O: it only updates ``st`` (its detector, onset, hold and recent samples).
    """
    if st.detector is None:
        raise ValueError("feed_samples: the workload state has no detector; set st.detector")
    for t, v in samples:
        if t - st.last_t > gap:
            st.hold = None  # after a hole in the data, ``for`` starts over (the band stays)
        st.last_t = t
        st.recent.append((t, v))
        if not math.isfinite(v):
            st.hold = hold_step(st.hold, breach=None, t=t, gap=gap)
            continue
        # The band expected for this sample, before the sample moves it. A score is
        # relative to recent surprises (it decays after a peak), so a far excursion
        # beyond the expected band opens one on its own: a level shift always does.
        expected = st.detector.band()
        score = st.detector.update(t, v)
        if st.onset is None and score < threshold and outside_band(v, expected, widen=widen):
            score = threshold
        onset, breach = excursion_step(st.onset, value=v, score=score, threshold=threshold)
        if breach and onset is None:
            low, high = st.detector.band()
            onset = Onset(
                t=t,
                value=v,
                low=low,
                high=high,
                score=score,
                explain=st.detector.explain(),
            )
            st.hold = None  # a new onset starts its own hold
        st.onset = onset
        st.hold = hold_step(st.hold, breach=breach, t=t, gap=gap)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Result:
    health: Health
    cause: str
    detail: str
    evidence: dict[str, object]


def _json(v: float) -> float | str:
    # JSON has no NaN or Inf: evidence carries them as the strings Prometheus uses.
    return v if math.isfinite(v) else str(v)


def _samples(samples: Iterable[Sample]) -> list[list[float | str]]:
    return [[t, _json(v)] for t, v in samples]


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


class PrometheusEvaluator:
    """Evaluates Prometheus triggers; holds their per-(policy, trigger, workload) state.

    ``client`` ``None`` (no Prometheus URL configured) makes every signal ``unknown``.
    Call :meth:`evaluate` once per trigger interval; one evaluator serves every policy.
    """

    def __init__(
        self,
        *,
        client: QueryClient | None,
        detector_factory: Callable[[AnomalySpec], Detector] = AnomalyDetector.for_spec,
        recent: int = 10,
        gap_factor: float = 2.5,
    ) -> None:
        self.client = client
        self.detector_factory = detector_factory
        self.recent = recent
        self.gap_factor = gap_factor
        self._triggers: dict[tuple[str, str, str], _Trigger] = {}

    @property
    def tracked(self) -> int:
        """Per-workload states held, over all triggers (memory stays bounded by this)."""
        return sum(len(t.workloads) for t in self._triggers.values())

    def forget(self, *, namespace: str, policy: str, trigger: str | None = None) -> None:
        """Drop the state of a deleted policy (or of one of its triggers)."""
        for key in [k for k in self._triggers if k[:2] == (namespace, policy)]:
            if trigger is None or key[2] == trigger:
                del self._triggers[key]

    async def evaluate(
        self,
        *,
        policy: HealingPolicy,
        trigger: Trigger,
        workloads: Sequence[WorkloadRef],
        now: float,
    ) -> list[Signal]:
        """One signal per workload, in the order given, from one query."""
        spec = trigger.prometheus
        if spec is None:
            raise ValueError(f"trigger {trigger.name!r} is not a prometheus trigger")
        key = (policy.namespace, policy.name, trigger.name)
        fingerprint = repr(spec)
        state = self._triggers.get(key)
        if state is None or state.fingerprint != fingerprint:
            state = self._triggers[key] = _Trigger(fingerprint=fingerprint)
        name = f"{policy.namespace}/{policy.name} trigger {trigger.name!r}"
        async with state.lock:
            wanted = {(w.namespace, w.name) for w in workloads}
            for gone in [k for k in state.workloads if k not in wanted]:
                del state.workloads[gone]
            if spec.anomaly is not None:
                results = await self._anomaly(spec, spec.anomaly, state, workloads, now, name)
            else:
                results = await self._threshold(spec, state, workloads, now, name)
        return [
            Signal(
                policy=policy.name,
                workload=w,
                trigger=trigger.name,
                health=r.health,
                at=now,
                cause=r.cause,
                detail=r.detail,
                evidence=r.evidence,
            )
            for w, r in zip(workloads, results, strict=True)
        ]

    # -- shared --------------------------------------------------------------------------------

    async def _query(
        self,
        spec: PrometheusTrigger,
        name: str,
        *,
        at: float,
        start: float | None = None,
        step: float | None = None,
    ) -> list[Series] | _Result:
        """The series, or the unknown result every workload gets when the query failed."""
        evidence: dict[str, object] = {"query": spec.query}
        if self.client is None:
            cause, detail = "BackendUnavailable", f"{name}: no Prometheus URL is configured"
        else:
            try:
                if start is None or step is None:
                    return await self.client.instant(spec.query, at=at)
                return await self.client.range(spec.query, start=start, end=at, step=step)
            except PrometheusUnavailable as e:
                cause, detail = "BackendUnavailable", f"{name}: Prometheus unavailable: {e}"
            except QueryError as e:
                cause = "QueryFailed"
                detail = f"{name}: Prometheus rejected the query ({e.error_type}): {e.message}"
                evidence["error"] = e.message
        return _Result(health=Health.UNKNOWN, cause=cause, detail=detail, evidence=evidence)

    @staticmethod
    def _group(series: list[Series], labels: Mapping[str, str]) -> dict[WorkloadKey, list[Series]]:
        ns_label, name_label = labels.get("namespace", "namespace"), labels.get("name", "")
        groups: dict[WorkloadKey, list[Series]] = {}
        for s in series:
            ns, nm = s.labels.get(ns_label), s.labels.get(name_label)
            if ns is not None and nm is not None:
                groups.setdefault((ns, nm), []).append(s)
        return groups

    def _workload(self, state: _Trigger, key: WorkloadKey) -> tuple[WorkloadState, bool]:
        w = state.workloads.get(key)
        if w is None:
            w = state.workloads[key] = WorkloadState(recent=deque(maxlen=self.recent))
            return w, True
        return w, False

    @staticmethod
    def _no_data(
        name: str,
        w: WorkloadRef,
        spec: PrometheusTrigger,
        returned: int,
        evidence: dict[str, object],
    ) -> _Result:
        labels = spec.workload_labels
        return _Result(
            health=Health.UNKNOWN,
            cause="NoData",
            detail=(
                f"{name}: no current series for {w.namespace}/{w.name} (the query returned "
                f"{returned} series; workload labels "
                f"{labels.get('namespace')}={w.namespace!r}, {labels.get('name')}={w.name!r})"
            ),
            evidence=evidence,
        )

    # -- static thresholds -----------------------------------------------------------------------

    async def _threshold(
        self,
        spec: PrometheusTrigger,
        state: _Trigger,
        workloads: Sequence[WorkloadRef],
        now: float,
        name: str,
    ) -> list[_Result]:
        series = await self._query(spec, name, at=now)
        gap = self.gap_factor * spec.interval
        if isinstance(series, _Result):
            for w in workloads:  # a blind evaluation for each pending breach
                st, _ = self._workload(state, (w.namespace, w.name))
                st.hold = hold_step(st.hold, breach=None, t=now, gap=gap)
            return [series] * len(workloads)
        groups = self._group(series, spec.workload_labels)
        out: list[_Result] = []
        for w in workloads:
            st, _ = self._workload(state, (w.namespace, w.name))
            values = [s.samples[-1][1] for s in groups.get((w.namespace, w.name), ()) if s.samples]
            value = _worst(values, spec)
            if value is not None:
                st.recent.append((now, value))
            st.hold, health, cause = threshold_step(spec, value=value, hold=st.hold, t=now, gap=gap)
            evidence: dict[str, object] = {
                "query": spec.query,
                "samples": _samples(st.recent),
                "above": spec.above,
                "below": spec.below,
                "for": spec.for_,
            }
            if value is not None:
                evidence["value"] = _json(value)
            if st.hold is not None:
                evidence["since"] = st.hold.since
            if cause == "NoData":
                out.append(self._no_data(name, w, spec, len(series), evidence))
                continue
            out.append(
                _Result(
                    health=health,
                    cause=cause,
                    detail=_threshold_detail(name, w, spec, value, cause, st.hold, now),
                    evidence=evidence,
                )
            )
        return out

    # -- learned baselines -----------------------------------------------------------------------

    async def _anomaly(
        self,
        spec: PrometheusTrigger,
        anomaly: AnomalySpec,
        state: _Trigger,
        workloads: Sequence[WorkloadRef],
        now: float,
        name: str,
    ) -> list[_Result]:
        step = max(1.0, float(round(anomaly.step)))
        grid_now = math.floor(now / step) * step
        fresh = any((w.namespace, w.name) not in state.workloads for w in workloads)
        start = state.grid_end
        if start is None or fresh or start > grid_now:
            start = grid_now - anomaly.baseline
        # After a long outage, never more than the baseline window (Prometheus' point limit).
        start = max(start, grid_now - anomaly.baseline)
        series = await self._query(spec, name, at=grid_now, start=start, step=step)
        if isinstance(series, _Result):
            return [series] * len(workloads)
        state.grid_end = grid_now
        groups = self._group(series, spec.workload_labels)
        threshold = threshold_for(anomaly.sensitivity)
        gap = self.gap_factor * step
        warm_until = grid_now - (spec.for_ + 2 * step)
        out: list[_Result] = []
        for w in workloads:
            st, new = self._workload(state, (w.namespace, w.name))
            if st.detector is None:
                st.detector = self.detector_factory(anomaly)
            found = groups.get((w.namespace, w.name), [])
            evidence: dict[str, object] = {
                "query": spec.query,
                "sensitivity": str(anomaly.sensitivity),
                "threshold": threshold,
                "for": spec.for_,
            }
            if len(found) > 1:
                out.append(
                    _Result(
                        health=Health.UNKNOWN,
                        cause="QueryFailed",
                        detail=(
                            f"{name}: the query returns {len(found)} series for {w.namespace}/"
                            f"{w.name}; a learned baseline needs one: aggregate with "
                            f"sum/avg/max by ({', '.join(spec.workload_labels.values())})"
                        ),
                        evidence=evidence,
                    )
                )
                continue
            samples = [(t, v) for t, v in (found[0].samples if found else ()) if t > st.last_t]
            if new:
                st.detector.warm((t, v) for t, v in samples if t <= warm_until)
                st.recent.extend((t, v) for t, v in samples if t <= warm_until)
                samples = [(t, v) for t, v in samples if t > warm_until]
                st.last_t = warm_until
            feed_samples(
                st,
                samples,
                threshold=threshold,
                gap=gap,
                widen=BAND_WIDEN[str(anomaly.sensitivity)],
            )
            last = found[0].samples[-1] if found and found[0].samples else None
            evidence["samples"] = _samples(st.recent)
            if st.hold is not None:
                evidence["since"] = st.hold.since
            if last is None or last[0] < grid_now - step:
                out.append(self._no_data(name, w, spec, len(series), evidence))
            elif not math.isfinite(last[1]):
                out.append(
                    _Result(
                        health=Health.UNKNOWN,
                        cause="NaN",
                        detail=f"{name}: {w.namespace}/{w.name}'s latest value is {last[1]}",
                        evidence=evidence,
                    )
                )
            else:
                out.append(self._anomaly_result(name, w, spec, st, last, evidence))
        return out

    @staticmethod
    def _anomaly_result(
        name: str,
        w: WorkloadRef,
        spec: PrometheusTrigger,
        st: WorkloadState,
        last: Sample,
        evidence: dict[str, object],
    ) -> _Result:
        t, value = last
        onset = st.onset
        if onset is not None:
            evidence.update(
                value=_json(value),
                band=[_json(onset.low), _json(onset.high)],
                score=_json(onset.score),
                onset={"t": onset.t, "value": _json(onset.value)},
                model={k: v for k, v in onset.explain.items() if k != "band"},
            )
        if onset is not None and fired(st.hold, for_=spec.for_):
            side = "above" if onset.upward else "below"
            return _Result(
                health=Health.UNHEALTHY,
                cause="AnomalyDetected",
                detail=(
                    f"{name}: {w.namespace}/{w.name} at {value:.6g} has stayed {side} its learned "
                    f"band [{onset.low:.6g}, {onset.high:.6g}] for "
                    f"{_duration(t - onset.t)} (for: {_duration(spec.for_)})"
                ),
                evidence=evidence,
            )
        if onset is not None and st.hold is not None:
            return _Result(
                health=Health.HEALTHY,
                cause="Pending",
                detail=(
                    f"{name}: {w.namespace}/{w.name} left its learned band "
                    f"{_duration(t - onset.t)} ago; fires after {_duration(spec.for_)}"
                ),
                evidence=evidence,
            )
        return _Result(
            health=Health.HEALTHY,
            cause="",
            detail=f"{name}: {w.namespace}/{w.name} at {value:.6g} is within its learned band",
            evidence={**evidence, "value": _json(value)},
        )


def _worst(values: list[float], spec: PrometheusTrigger) -> float | None:
    if not values:
        return None
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    if spec.above is not None and spec.below is None:
        return max(finite)
    if spec.below is not None and spec.above is None:
        return min(finite)
    # A band [below, above]: the value furthest outside it (or nearest an edge).
    above = spec.above if spec.above is not None else math.inf
    below = spec.below if spec.below is not None else -math.inf
    return max(finite, key=lambda v: max(v - above, below - v))


def _threshold_detail(
    name: str,
    w: WorkloadRef,
    spec: PrometheusTrigger,
    value: float | None,
    cause: str,
    hold: Hold | None,
    now: float,
) -> str:
    bounds = " and ".join(
        part
        for part in (
            f"above {spec.above:g}" if spec.above is not None else "",
            f"below {spec.below:g}" if spec.below is not None else "",
        )
        if part
    )
    where = f"{w.namespace}/{w.name}"
    if cause == "NaN":
        return f"{name}: {where}'s value is NaN (a ratio over no traffic?)"
    if cause == "ThresholdExceeded" and hold is not None:
        return (
            f"{name}: {where} at {value:.6g} has been {bounds} for "
            f"{_duration(now - hold.since)} (for: {_duration(spec.for_)})"
        )
    if cause == "Pending" and hold is not None:
        return (
            f"{name}: {where} at {value:.6g} is {bounds} since {_duration(now - hold.since)} "
            f"ago; fires after {_duration(spec.for_)}"
        )
    return f"{name}: {where} at {value:.6g} is not {bounds}"
