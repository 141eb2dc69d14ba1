"""Alertmanager as a trigger source: its webhook payload as pure data, and the verdicts.

Alertmanager POSTs notifications (webhook ``version: "4"``) to the operator's receiver
(``handlers/alert_webhook.py``). :func:`parse_payload` turns one into :class:`Alert`
values or raises :class:`PayloadError` naming the field; an :class:`AlertBook` keeps
the newest word on each alert by Alertmanager's fingerprint (a resend replaces, never
adds); :func:`evaluate` turns the book into one Signal per workload of a trigger:

- a matching alert firing (and not past its ``endsAt``): unhealthy;
- matching alerts known, all resolved or past their ``endsAt``: healthy;
- no word at all: unknown, never an action.

The book lives in memory only, and nothing depends on it to stay safe: after a restart
every workload is unknown until Alertmanager resends (every ``group_interval`` for a
changed group, every ``repeat_interval`` for a firing one).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from selfheal.detect import crashloop
from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.policy.model import AlertTrigger

FIRING = "firing"
RESOLVED = "resolved"

WORKLOAD_LABELS = (("deployment", "Deployment"), ("statefulset", "StatefulSet"))
"""Alert labels naming a workload directly (kube-state-metrics' names), and its kind."""
POD_LABEL = "pod"
"""An alert about a pod is about the workload that owns it."""

KEEP_RESOLVED = 6 * 3600.0
"""Seconds a resolved (or expired) alert is remembered: long enough to verify a heal."""
MAX_ALERTS = 10_000
"""Fingerprints kept at most; beyond it the oldest ended alerts are forgotten first."""
LISTING_FRESH = 30.0
"""Seconds Alertmanager's answer "no such alert fires" is trusted (it is asked every 10 s)."""
_MAX_LABEL = 1024
"""Longest label or annotation value kept (characters); Alertmanager has no limit."""


class PayloadError(ValueError):
    """A webhook body that is not an Alertmanager notification: names the field."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Alert:
    fingerprint: str
    status: str
    """``firing`` or ``resolved``."""
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    starts_at: float | None = None
    """Unix seconds; ``None``: not given."""
    ends_at: float | None = None
    """Unix seconds; ``None``: not given (Alertmanager's zero time ``0001-01-01``)."""
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def firing(self, now: float) -> bool:
        """Firing, and not past its ``endsAt`` (an alert never heard of again has ended)."""
        return self.status == FIRING and (self.ends_at is None or self.ends_at > now)


def parse_time(value: object, field: str) -> float | None:
    """RFC 3339 to Unix seconds; Alertmanager's zero time (year 1) and empty are ``None``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{field}: expected an RFC 3339 time string, got {value!r}")
    if value.startswith("0001-01-01"):
        return None
    parsed = crashloop.parse_time(value)
    if parsed is None:
        raise PayloadError(f"{field}: {value!r} is not an RFC 3339 time")
    return parsed


def _strings(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError(f"{field}: expected an object of strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise PayloadError(f"{field}.{k}: expected a string value")
        out[k] = v[:_MAX_LABEL]
    return out


def parse_payload(body: object) -> list[Alert]:
    """One webhook notification (Alertmanager's ``version: "4"``) as alerts."""
    if not isinstance(body, Mapping):
        raise PayloadError("body: expected a JSON object (an Alertmanager webhook notification)")
    version = body.get("version")
    if version is not None and str(version) != "4":
        raise PayloadError(f"version: {version!r} is not supported; Alertmanager sends 4")
    raw = body.get("alerts")
    if not isinstance(raw, list):
        raise PayloadError("alerts: expected a list of alerts")
    out = []
    for i, item in enumerate(raw):
        where = f"alerts[{i}]"
        if not isinstance(item, Mapping):
            raise PayloadError(f"{where}: expected an object")
        status = item.get("status")
        if status not in (FIRING, RESOLVED):
            raise PayloadError(f"{where}.status: {status!r} is neither firing nor resolved")
        fingerprint = item.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise PayloadError(f"{where}.fingerprint: missing; Alertmanager always sends it")
        labels = _strings(item.get("labels"), f"{where}.labels")
        if not labels.get("alertname"):
            raise PayloadError(f"{where}.labels.alertname: missing")
        url = item.get("generatorURL")
        out.append(
            Alert(
                fingerprint=fingerprint,
                status=str(status),
                labels=labels,
                annotations=_strings(item.get("annotations"), f"{where}.annotations"),
                starts_at=parse_time(item.get("startsAt"), f"{where}.startsAt"),
                ends_at=parse_time(item.get("endsAt"), f"{where}.endsAt"),
                generator_url=url[:_MAX_LABEL] if isinstance(url, str) else "",
            )
        )
    return out


def from_api(items: Iterable[Mapping[str, Any]]) -> list[Alert]:
    """Alertmanager's ``GET /api/v2/alerts`` answer as alerts: all of them are firing
    (active, suppressed by a silence or an inhibition, or unprocessed); resolved alerts
    are not listed. An item that is not one is skipped."""
    out = []
    for i, item in enumerate(items):
        try:
            labels = _strings(item.get("labels"), f"[{i}].labels")
            fingerprint = item.get("fingerprint")
            if not isinstance(fingerprint, str) or not labels.get("alertname"):
                continue
            url = item.get("generatorURL")
            out.append(
                Alert(
                    fingerprint=fingerprint,
                    status=FIRING,
                    labels=labels,
                    annotations=_strings(item.get("annotations"), f"[{i}].annotations"),
                    starts_at=parse_time(item.get("startsAt"), f"[{i}].startsAt"),
                    ends_at=parse_time(item.get("endsAt"), f"[{i}].endsAt"),
                    generator_url=url[:_MAX_LABEL] if isinstance(url, str) else "",
                )
            )
        except PayloadError:
            continue
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seen:
    alert: Alert
    received: float
    """Unix seconds the receiver got this word."""


class AlertBook:
    """The newest word on each alert, by fingerprint. In memory: a restart forgets it,
    which is safe (unknown until Alertmanager resends)."""

    def __init__(self) -> None:
        self._by_fp: dict[str, Seen] = {}
        self._listed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def receive(self, alerts: Iterable[Alert], *, now: float) -> int:
        """Record a notification; returns how many alerts it changed (a resend of the
        same word changes nothing)."""
        changed = 0
        for alert in alerts:
            prev = self._by_fp.get(alert.fingerprint)
            if prev is None or prev.alert != alert:
                changed += 1
            self._by_fp[alert.fingerprint] = Seen(alert=alert, received=now)
        self.prune(now=now)
        return changed

    def replace_matching(
        self, trigger: AlertTrigger, listed: Sequence[Alert], *, now: float
    ) -> int:
        """A full listing of the alerts matching ``trigger`` (Alertmanager's API): those
        listed are recorded, and the ones the book holds firing but the listing lacks have
        resolved (Alertmanager lists every alert it still holds unresolved)."""
        self._listed[_key(trigger)] = now
        return self.replace_listed(listed, covers=lambda a: matches(trigger, a), now=now)

    def replace_listed(
        self, listed: Sequence[Alert], *, covers: Callable[[Alert], bool], now: float
    ) -> int:
        """A full listing of the alerts ``covers`` selects: record them, and resolve the
        firing ones it selects that the listing lacks."""
        present = {a.fingerprint for a in listed}
        gone = [
            dataclasses.replace(seen.alert, status=RESOLVED, ends_at=now)
            for fp, seen in self._by_fp.items()
            if fp not in present and seen.alert.firing(now) and covers(seen.alert)
        ]
        return self.receive([*listed, *gone], now=now)

    def prune(self, *, now: float) -> None:
        """Forget ended alerts after ``KEEP_RESOLVED``, and the oldest beyond ``MAX_ALERTS``."""
        for fp, seen in list(self._by_fp.items()):
            if not seen.alert.firing(now) and now - _ended(seen, now) > KEEP_RESOLVED:
                del self._by_fp[fp]
        if len(self._by_fp) > MAX_ALERTS:
            # Ended alerts go first, then the least recently heard of.
            order = sorted(
                self._by_fp.items(), key=lambda kv: (kv[1].alert.firing(now), kv[1].received)
            )
            for fp, _ in order[: len(self._by_fp) - MAX_ALERTS]:
                del self._by_fp[fp]

    def alerts(self) -> list[Alert]:
        return [s.alert for s in self._by_fp.values()]

    def listed_at(self, trigger: AlertTrigger) -> float | None:
        """When Alertmanager last listed the trigger's alerts in full; ``None``: never."""
        return self._listed.get(_key(trigger))

    def __len__(self) -> int:
        return len(self._by_fp)


def _key(trigger: AlertTrigger) -> tuple[str, tuple[tuple[str, str], ...]]:
    return trigger.alertname, tuple(sorted(trigger.matchers.items()))


def _ended(seen: Seen, now: float) -> float:
    end = seen.alert.ends_at
    return min(end, now) if end is not None else seen.received


def matches(trigger: AlertTrigger, alert: Alert) -> bool:
    """The trigger's ``name`` is the alert's ``alertname`` and every matcher's label equals."""
    if alert.name != trigger.alertname:
        return False
    return all(alert.labels.get(k) == v for k, v in trigger.matchers.items())


def workload_of(
    alert: Alert, *, pod_owners: Mapping[tuple[str, str], WorkloadRef]
) -> tuple[str, str, str] | None:
    """(kind, namespace, name) the alert is about, from its labels: ``namespace`` plus
    ``deployment`` or ``statefulset``, or plus ``pod`` mapped to the pod's owner through
    ``pod_owners`` ((namespace, pod) -> workload). ``None``: it names no workload."""
    namespace = alert.labels.get("namespace")
    if not namespace:
        return None
    for label, kind in WORKLOAD_LABELS:
        if name := alert.labels.get(label):
            return kind, namespace, name
    pod = alert.labels.get(POD_LABEL)
    if pod and (owner := pod_owners.get((namespace, pod))) is not None:
        return owner.kind, owner.namespace, owner.name
    return None


def split_by_shard(
    alerts: Iterable[Alert], owns: Callable[[str], bool]
) -> tuple[list[Alert], list[Alert]]:
    """(this shard's alerts, other shards') by the ``namespace`` label: an alert about a
    namespace ``owns`` refuses is another shard's to judge. One naming no namespace names
    no workload either; it stays on this side, as without shards."""
    mine: list[Alert] = []
    others: list[Alert] = []
    for alert in alerts:
        namespace = alert.labels.get("namespace")
        (mine if not namespace or owns(namespace) else others).append(alert)
    return mine, others


def pods_named(alerts: Iterable[Alert]) -> set[tuple[str, str]]:
    """(namespace, pod) of alerts that name a pod and no workload: what needs an owner."""
    out = set()
    for alert in alerts:
        labels = alert.labels
        direct = any(labels.get(label) for label, _ in WORKLOAD_LABELS)
        if labels.get("namespace") and labels.get(POD_LABEL) and not direct:
            out.add((labels["namespace"], labels[POD_LABEL]))
    return out


def _evidence(alert: Alert) -> dict[str, object]:
    out: dict[str, object] = {
        "alertname": alert.name,
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "labels": dict(alert.labels),
    }
    if alert.annotations:
        out["annotations"] = dict(alert.annotations)
    if alert.starts_at is not None:
        out["startsAt"] = _rfc3339(alert.starts_at)
    if alert.generator_url:
        out["generatorURL"] = alert.generator_url
    return out


def _rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate(
    *,
    policy: str,
    trigger_name: str,
    trigger: AlertTrigger,
    alerts: Sequence[Alert],
    workloads: Sequence[WorkloadRef],
    pod_owners: Mapping[tuple[str, str], WorkloadRef],
    now: float,
    listed_at: float | None = None,
) -> list[Signal]:
    """One Signal per workload: unhealthy while a matching alert fires, healthy once
    every matching alert resolved or passed its ``endsAt``, or when Alertmanager's own
    list of the trigger's alerts (``listed_at``, if within ``LISTING_FRESH``) has none for
    it; unknown with no word."""
    listed = listed_at is not None and now - listed_at <= LISTING_FRESH
    about: dict[tuple[str, str, str], list[Alert]] = {}
    for alert in alerts:
        if not matches(trigger, alert):
            continue
        key = workload_of(alert, pod_owners=pod_owners)
        if key is not None:
            about.setdefault(key, []).append(alert)
    out = []
    for w in workloads:
        known = about.get((w.kind, w.namespace, w.name), [])
        firing = sorted(
            (a for a in known if a.firing(now)), key=lambda a: (a.starts_at or 0.0, a.fingerprint)
        )
        if firing:
            first = firing[0]
            summary = first.annotations.get("summary") or first.annotations.get("description")
            detail = f"alert {trigger.alertname} is firing"
            if len(firing) > 1:
                detail += f" ({len(firing)} instances)"
            if summary:
                detail += f": {summary}"
            evidence = _evidence(first)
            evidence["firing"] = len(firing)
            evidence["fingerprints"] = [a.fingerprint for a in firing]
            health, cause = Health.UNHEALTHY, "AlertFiring"
        elif known:
            resolved = any(a.status == RESOLVED for a in known)
            cause = "AlertResolved" if resolved else "AlertExpired"
            detail = (
                f"alert {trigger.alertname} resolved"
                if resolved
                else f"alert {trigger.alertname} was not sent again after its endsAt"
            )
            health, evidence = Health.HEALTHY, {"alertname": trigger.alertname}
        elif listed:
            health, cause, evidence = Health.HEALTHY, "NotListed", {"alertname": trigger.alertname}
            detail = f"Alertmanager holds no firing {trigger.alertname} alert for {w.name}"
        else:
            health, cause = Health.UNKNOWN, "NoData"
            detail = f"Alertmanager has sent no word on alert {trigger.alertname} for {w.name}"
            evidence = {"alertname": trigger.alertname}
        out.append(
            Signal(
                policy=policy,
                workload=w,
                trigger=trigger_name,
                health=health,
                at=now,
                cause=cause,
                detail=detail,
                evidence=evidence,
            )
        )
    return out


def about(alert: Alert, workload: WorkloadRef) -> bool:
    """The alert's ``namespace`` and ``deployment`` (or ``statefulset``) labels name it."""
    return workload_of(alert, pod_owners={}) == (workload.kind, workload.namespace, workload.name)


def gate(signal: Signal, alerts: Iterable[Alert], *, now: float) -> Signal:
    """``verify.alertResolved``: a healthy verdict counts only while no alert about the
    workload fires; otherwise it becomes unknown (the verify window waits, nothing acts)."""
    if signal.health is not Health.HEALTHY:
        return signal
    firing = sorted({a.name for a in alerts if a.firing(now) and about(a, signal.workload)})
    if not firing:
        return signal
    return dataclasses.replace(
        signal,
        health=Health.UNKNOWN,
        cause="AlertFiring",
        detail=f"trigger {signal.trigger} says healthy, but alert {', '.join(firing)} still "
        f"fires for {signal.workload.name}: verification waits for it to resolve",
        evidence={**signal.evidence, "firing": firing},
    )
