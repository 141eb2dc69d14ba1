"""Gather the evidence for one incident into a ``Bundle``, redacted as it is collected.

``collect`` reads, never writes: the crashed container's termination, its previous
logs (or the current ones), the stack trace in them, YAML snapshots of the Pod, its
ReplicaSet and the Deployment, the rollout history, recent events, requests and
limits beside the usage Prometheus saw. Every text passes through the redactor here,
before it is stored in the bundle, so no sink (Jira, the Remediation status, a log)
ever sees a raw value. A failing read (403, 404, a timeout) is recorded as
``unavailable`` with its reason and never raised: the ticket must go out anyway.
Secrets and mounted secret volumes are never read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import yaml

from selfheal.clients import kube as k8s
from selfheal.evidence import stacks
from selfheal.evidence.changes import (
    Change,
    ConfigChange,
    config_change,
    referenced_keys,
    template_changes,
)
from selfheal.evidence.changes import to_json as changes_json
from selfheal.evidence.dependencies import Dependency, DependencyReport, dependency_health
from selfheal.evidence.redact import Redactor, env_values
from selfheal.policy import ownership

T = TypeVar("T")

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"

DEFAULT_TAIL_LINES = 500
DEFAULT_LOG_MAX_BYTES = 256 * 1024
FETCH_MIN_BYTES = 1024 * 1024
"""The least ``limitBytes`` asked of the API server (see ``_logs``)."""
MIN_TAIL_LINES = 20
REDACT_MARGIN_BYTES = 64 * 1024
"""Kept beyond the log bound while redacting, so the final cut never halves a secret."""
DEFAULT_MAX_TOTAL_BYTES = 1024 * 1024
"""Bound on all attachments together; Jira's default attachment limit is 10 MiB."""
SNAPSHOT_MAX_BYTES = 128 * 1024
MAX_EVENTS = 30
MAX_REVISIONS = 15
MAX_JSON_BYTES = 32 * 1024
MAX_REASON = 300

_API_VERSION = {"pod": "v1", "replicaset": "apps/v1", "deployment": "apps/v1"}
_KIND = {"pod": "Pod", "replicaset": "ReplicaSet", "deployment": "Deployment"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Termination:
    """The last termination of the crashed container (``lastState.terminated``)."""

    container: str
    exit_code: int | None
    reason: str
    message: str
    signal: int | None = None
    started_at: str = ""
    finished_at: str = ""
    restart_count: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Waiting:
    """Why the container is not running now (``state.waiting``): the kubelet's reason
    (``ImagePullBackOff``, ``CreateContainerConfigError``...) and message, redacted."""

    container: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Revision:
    """One entry of ``kubectl rollout history``: a ReplicaSet owned by the Deployment."""

    revision: int
    replicaset: str
    images: tuple[str, ...]
    change_cause: str
    created: str
    replicas: int
    limits: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    """Container -> its resource limits in this revision's template."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EventRecord:
    time: str
    type: str
    reason: str
    object: str
    """``Kind/name`` of the involved object."""
    count: int
    message: str

    def line(self) -> str:
        n = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.time}  {self.type:<7}  {self.reason}  {self.object}{n}: {self.message}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContainerResources:
    container: str
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    usage: Mapping[str, str]
    """What Prometheus measured (``cpu``, ``memory``...); empty when unavailable."""


@dataclasses.dataclass(kw_only=True)
class Bundle:
    """The evidence of one incident, already redacted and bounded in size."""

    namespace: str
    deployment: str
    pod: str | None
    container: str | None
    collected_at: float
    """Unix time of the collection."""
    revision: str = ""
    """The Deployment's current revision (its ``deployment.kubernetes.io/revision``)."""
    images: tuple[str, ...] = ()
    """Images of the crashed pod's containers (or the Deployment's template)."""
    termination: Termination | None = None
    waiting: Waiting | None = None
    """The blamed container's current waiting state, when it is waiting."""
    pull_secrets: tuple[str, ...] = ()
    """Names of the pod's ``imagePullSecrets`` (never their content)."""
    probes: dict[str, str] = dataclasses.field(default_factory=dict)
    """``liveness`` / ``readiness`` / ``startup`` -> the blamed container's probe, described
    (``HTTP GET :8080/healthz every 10s, fails after 3``)."""
    logs: str = ""
    logs_source: str = "unavailable"
    """``previous`` (the crashed container), ``current`` (fallback) or ``unavailable``."""
    stack: stacks.StackTrace | None = None
    snapshots: dict[str, str] = dataclasses.field(default_factory=dict)
    """``pod`` / ``replicaset`` / ``deployment`` -> redacted YAML."""
    rollout_history: list[Revision] = dataclasses.field(default_factory=list)
    events: list[EventRecord] = dataclasses.field(default_factory=list)
    resources: list[ContainerResources] = dataclasses.field(default_factory=list)
    usage_source: str = "unavailable: Prometheus not configured"
    usage_note: str = ""
    """How usage was measured (the window, failed queries), for the ticket."""
    trigger_evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    """What could not be collected -> why (``403 Forbidden: ...``, ``not found``...)."""
    redactions: dict[str, int] = dataclasses.field(default_factory=dict)
    """Redactions made while collecting, by rule."""
    truncated: list[str] = dataclasses.field(default_factory=list)
    """Items cut to fit the size bounds."""
    changes: list[Change] = dataclasses.field(default_factory=list)
    """The current revision's pod template against ``changes_since``'s (redacted)."""
    changes_since: int | None = None
    """The revision the changes are counted from (the last healthy one), if any."""
    config_changes: list[ConfigChange] = dataclasses.field(default_factory=list)
    """ConfigMaps and Secrets the pod references, and whether they changed since the
    last healthy revision was created (names and keys only)."""
    dependencies: list[Dependency] = dataclasses.field(default_factory=list)
    """Services named in the logs, stack and env, with their ready endpoints."""
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    kind: str = "Deployment"
    """The workload's kind; its snapshot is still filed under ``deployment``."""
    redactor: Redactor | None = dataclasses.field(default=None, repr=False, compare=False)
    """The incident's redactor (the policy's plus the pod's env values), for text added
    after collection, e.g. the steps' messages in the description."""

    def redact(self, text: str) -> str:
        """``text`` through the incident's redactor (the built-in rules when there is none)."""
        r = self.redactor if self.redactor is not None else Redactor()
        return r.redact_text(text)

    @property
    def redaction_count(self) -> int:
        return sum(self.redactions.values())

    def summary(self) -> str:
        """A few short sentences for a Jira comment or the Remediation status."""
        parts: list[str] = []
        where = f"{self.namespace}/{self.deployment}"
        if self.pod:
            where += f" pod {self.pod}" + (f" container {self.container}" if self.container else "")
        parts.append(where)
        t = self.termination
        if t is not None:
            code = "?" if t.exit_code is None else str(t.exit_code)
            parts.append(f"exit {code} ({t.reason or 'unknown'}) after {t.restart_count} restarts")
        if self.stack is not None:
            parts.append(f"{self.stack.runtime} {_one_line(self.stack.headline, 160)}")
        elif self.logs_source != "unavailable":
            parts.append("no stack trace in the logs")
        if self.revision:
            img = f" ({_one_line(', '.join(self.images), 120)})" if self.images else ""
            parts.append(f"revision {self.revision}{img}")
        warnings = sum(1 for e in self.events if e.type == "Warning")
        if self.events:
            parts.append(f"events: {len(self.events)}, warnings: {warnings}")
        if self.redaction_count:
            parts.append(f"secrets redacted: {self.redaction_count}")
        if self.unavailable:
            parts.append("unavailable: " + ", ".join(sorted(self.unavailable)))
        return _one_line("; ".join(parts), 600)

    def to_json(self) -> dict[str, Any]:
        """Everything but the logs and the snapshots (those are attachments of their own)."""
        return {
            "namespace": self.namespace,
            "deployment": self.deployment,
            "pod": self.pod,
            "container": self.container,
            "collectedAt": _iso(self.collected_at),
            "revision": self.revision,
            "images": list(self.images),
            "termination": dataclasses.asdict(self.termination) if self.termination else None,
            "logsSource": self.logs_source,
            "stack": dataclasses.asdict(self.stack) if self.stack else None,
            "rolloutHistory": [dataclasses.asdict(r) for r in self.rollout_history],
            "events": [dataclasses.asdict(e) for e in self.events],
            "resources": [
                {
                    "container": r.container,
                    "requests": dict(r.requests),
                    "limits": dict(r.limits),
                    "usage": dict(r.usage),
                }
                for r in self.resources
            ],
            "usageSource": self.usage_source,
            "usageNote": self.usage_note,
            "triggerEvidence": self.trigger_evidence,
            "steps": self.steps,
            "unavailable": self.unavailable,
            "redactions": self.redactions,
            "truncated": self.truncated,
            "whatChanged": {"since": self.changes_since, "changes": changes_json(self.changes)},
            "configChanges": [dataclasses.asdict(c) for c in self.config_changes],
            "dependencies": [d.to_json() for d in self.dependencies],
        }

    def attachments(self) -> dict[str, bytes]:
        """File name -> content, all redacted; together at most ``max_total_bytes``."""
        files: dict[str, str] = {}
        if self.logs_source != "unavailable":
            files[f"{self.logs_source}-logs.txt"] = self.logs
        if self.stack is not None:
            files["stack.txt"] = self.stack.text
        for kind in ("pod", "replicaset", "deployment"):
            if kind in self.snapshots:
                files[f"{kind}.yaml"] = self.snapshots[kind]
        if self.events:
            files["events.txt"] = "\n".join(e.line() for e in self.events) + "\n"
        if self.rollout_history:
            files["rollout-history.txt"] = render_history(self.rollout_history)
        files["evidence.json"] = json.dumps(self.to_json(), indent=2, default=str)
        out = {name: text.encode() for name, text in files.items()}
        # The biggest go first when over the bound; evidence.json is small and kept whole.
        while sum(len(b) for b in out.values()) > self.max_total_bytes:
            name = max((n for n in out if n != "evidence.json"), key=lambda n: len(out[n]))
            over = sum(len(b) for b in out.values()) - self.max_total_bytes
            keep = max(0, len(out[name]) - over - 128)
            out[name] = _cut_bytes(out[name], keep, tail=name.endswith("logs.txt"))
            if keep == 0:
                break
        return out


def render_history(history: Sequence[Revision]) -> str:
    """The rollout history as ``kubectl rollout history`` would list it, with images."""
    rows = ["REVISION  CREATED               REPLICAS  REPLICASET / IMAGES / CHANGE-CAUSE"]
    for r in history:
        cause = r.change_cause or "<none>"
        rows.append(
            f"{r.revision:<9} {r.created:<21} {r.replicas:<9} {r.replicaset}  "
            f"{', '.join(r.images)}  {cause}"
        )
    return "\n".join(rows) + "\n"


async def collect(
    *,
    kube: k8s.Kube,
    namespace: str,
    deployment: str,
    pod: str | None,
    container: str | None,
    redactor: Redactor,
    log_tail_lines: int = DEFAULT_TAIL_LINES,
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    prometheus_usage: Mapping[str, Mapping[str, object]] | None = None,
    usage_note: str = "",
    trigger_evidence: Mapping[str, object],
    steps: Sequence[Mapping[str, object]],
    now: float | None = None,
    request_timeout: float = 10.0,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    last_healthy: int | None = None,
    known_bad: Collection[str] = (),
    dependencies: bool = False,
    config_changes: bool = False,
    kind: str = "Deployment",
) -> Bundle:
    """The redacted evidence of one incident; never raises for an API failure.

    ``kind``: the workload's kind (``deployment`` is its name); a StatefulSet's or
    DaemonSet's history is its ControllerRevisions, numbered by ``revision``.
    ``pod=None``: the workload's pod with the most restarts is chosen.
    ``container=None``: the pod's container that terminated last (most restarts).
    ``prometheus_usage``: container name -> ``{"cpu": cores, "memory": bytes}`` and their
    ``cpu_peak`` / ``memory_peak`` (numbers are formatted, strings kept) as measured by
    Prometheus (``selfheal.evidence.usage.collect_usage(...).by_container``); ``None``
    when not configured. ``usage_note``: ``Usage.note``, shown beside the table.
    ``redactor``: the policy's; a derived one also removes the pod's literal env values.
    ``last_healthy``: the last healthy revision when the caller knows it (the rollback's
    choice), for ``changes``; ``None``: the newest older revision whose
    ``pod-template-hash`` is not in ``known_bad`` and that differs from the current one
    in what the diff shows (a restart's re-roll is the same release).
    ``dependencies``: check the Services named in the logs, stack and env (``list`` on
    Services, then on EndpointSlices per Service found). Off by default: it needs RBAC
    the chart grants only with it (``services`` and ``discovery.k8s.io/endpointslices``:
    list). ``config_changes``: read the ConfigMaps the pod references (``get`` on
    configmaps; off by default for the same reason) to tell which changed since the last
    healthy revision; Secrets are never read, only named.
    """
    c = _Collector(kube=kube, namespace=namespace, timeout=request_timeout)
    bundle = Bundle(
        namespace=namespace,
        deployment=deployment,
        pod=pod,
        container=container,
        collected_at=time.time() if now is None else now,
        max_total_bytes=max_total_bytes,
        kind=kind,
    )
    dep = await c.get("deployment", k8s.apps(namespace, ownership.PLURALS[kind], deployment))
    pod_obj: dict[str, Any] | None = None
    if pod:
        pod_obj = await c.get("pod", k8s.core(namespace, "pods", pod))
    elif dep is not None:
        pod_obj = await _worst_pod(c, dep)
        bundle.pod = _name(pod_obj) if pod_obj else None
        if pod_obj is None and "pod" not in c.unavailable:
            c.unavailable["pod"] = f"no pod of the {kind} exists"

    # Every literal env value of the pod and the template is redacted wherever it appears.
    r = redactor.with_literals([*env_values(pod_obj or {}), *env_values(dep or {})])

    if pod_obj is not None:
        bundle.container = container or _crashed_container(pod_obj)
        bundle.termination = _termination(pod_obj, bundle.container, r)
        bundle.waiting = _waiting(pod_obj, bundle.container, r)
        bundle.images = tuple(_images(pod_obj.get("spec") or {}))
        bundle.pull_secrets = _pull_secrets(pod_obj.get("spec") or {})
        bundle.probes = _probes(pod_obj.get("spec") or {}, bundle.container, r)
    elif dep is not None:
        bundle.images = tuple(_images(_template_spec(dep)))
        bundle.pull_secrets = _pull_secrets(_template_spec(dep))
        bundle.probes = _probes(_template_spec(dep), container, r)
    if dep is not None:
        bundle.revision = str(_annotations(dep).get(REVISION, ""))

    rs_name = _owner(pod_obj, "ReplicaSet") if pod_obj and kind == "Deployment" else None
    logs_task = _logs(
        c,
        bundle.pod,
        bundle.container,
        log_tail_lines,
        log_max_bytes,
        crashed=pod_obj is None or bundle.termination is not None,
    )
    rs_task = c.get("replicaset", k8s.apps(namespace, "replicasets", rs_name)) if rs_name else None
    history_task = (
        None
        if dep is None
        else _history(c, dep)
        if kind == "Deployment"
        else _revision_history(c, dep)
    )
    names = [(kind, deployment)]
    if rs_name:
        names.append(("ReplicaSet", rs_name))
    if bundle.pod:
        names.append(("Pod", bundle.pod))
    events_task = _events(c, names)

    logs, rs, found, events = await asyncio.gather(
        logs_task, _maybe(rs_task), _maybe(history_task), events_task
    )
    history, templates = found if found is not None else ([], {})
    if kind != "Deployment" and dep is not None:
        bundle.revision = _current_revision(dep, templates)
    bundle.changes_since, bundle.changes = _changes(
        bundle.revision, templates, last_healthy, redactor, known_bad
    )

    text, source = logs
    bundle.logs_source = source
    # Redaction, extraction and YAML are CPU work on up to megabytes: off the event loop.
    await asyncio.to_thread(_digest, bundle, text, log_max_bytes, (pod_obj, rs, dep), r)

    bundle.rollout_history = [
        dataclasses.replace(h, change_cause=r.redact_text(h.change_cause)) for h in history or []
    ]
    bundle.events = [dataclasses.replace(e, message=r.redact_text(e.message)) for e in events]

    if config_changes and bundle.changes_since is not None:
        since = next((h.created for h in history if h.revision == bundle.changes_since), "")
        spec_now = (pod_obj or {}).get("spec") or (_template_spec(dep) if dep else {})
        bundle.config_changes = await _config_changes(c, spec_now, since)

    if dependencies:
        # Raw env values are searched for host names only; nothing of them is stored.
        texts = [
            *env_values(pod_obj or dep or {}),
            bundle.logs,
            bundle.termination.message if bundle.termination else "",
        ]
        report = await dependency_health(
            kube=kube,
            namespace=namespace,
            texts=texts,
            timeout=request_timeout,
            own_labels=_template_labels(dep) if dep is not None else None,
            incidents=True,
        )
        bundle.dependencies = report.dependencies
        c.unavailable.update(report.unavailable)

    spec = (pod_obj or {}).get("spec") or (_template_spec(dep) if dep is not None else {})
    bundle.resources, bundle.usage_source = _resources(spec, prometheus_usage)
    bundle.usage_note = usage_note

    bundle.trigger_evidence = _bounded_json(r.redact_object(dict(trigger_evidence)), bundle)
    bundle.steps = [r.redact_object(dict(s)) for s in steps]
    if len(json.dumps(bundle.steps, default=str)) > MAX_JSON_BYTES:
        bundle.steps = bundle.steps[-10:]
        bundle.truncated.append("steps")

    bundle.unavailable = {k: r.redact_text(v) for k, v in c.unavailable.items()}
    bundle.redactions = dict(r.counts)
    bundle.redactor = r
    return bundle


async def dependency_report(
    *,
    kube: k8s.Kube,
    namespace: str,
    deployment: str,
    pod: str | None = None,
    container: str | None = None,
    timeout: float = 5.0,
    log_tail_lines: int = 200,
) -> DependencyReport:
    """The dependencies checked before a step: the Services named in the crashed
    container's logs, termination message and env, but the workload's own, each with its
    ready endpoints and open incidents.

    ``pod=None``: the Deployment's pod with the most restarts. A read that failed is
    named in ``unavailable`` (logs that do not exist, a 400 or 404, are not a failure:
    there is nothing to search). Never raises for the API server; the texts are searched
    for host names and dropped, nothing of them is kept.
    """
    c = _Collector(kube=kube, namespace=namespace, timeout=timeout)
    dep = await c.get("deployment", k8s.apps(namespace, "deployments", deployment))
    if dep is None:
        return DependencyReport(unavailable=dict(c.unavailable))
    pod_obj = await c.get("pod", k8s.core(namespace, "pods", pod)) if pod else None
    if pod_obj is None:
        # The pod the signal blamed may be gone (restarted, rolled): take the worst one.
        c.unavailable.pop("pod", None)
        pod_obj = await _worst_pod(c, dep)
    texts = env_values(pod_obj or dep)
    if pod_obj is not None:
        name = container or _crashed_container(pod_obj)
        found = _terminated(pod_obj, name)
        if found is not None:
            texts.append(str(found[1].get("message") or ""))
        text, _ = await _logs(
            c, _name(pod_obj), name, log_tail_lines, DEFAULT_LOG_MAX_BYTES, crashed=bool(found)
        )
        failed = {k: v for k, v in c.unavailable.items() if k.endswith(" logs")}
        for what, why in failed.items():
            if text is not None or why.startswith(("400", "404")):
                del c.unavailable[what]  # read the other one, or no such log: nothing lost
        texts.append(text or "")
    report = await dependency_health(
        kube=kube,
        namespace=namespace,
        texts=texts,
        timeout=timeout,
        own_labels=_template_labels(dep),
        incidents=True,
    )
    report.unavailable = {**c.unavailable, **report.unavailable}
    return report


def _digest(
    bundle: Bundle,
    text: str | None,
    log_max_bytes: int,
    objects: tuple[dict[str, Any] | None, ...],
    r: Redactor,
) -> None:
    """Logs -> redacted tail and stack; objects -> redacted YAML snapshots (in a thread)."""
    if text is not None:
        # Cut (keeping the end) with a margin, redact, then cut to the bound: a secret
        # halved by the first cut lies in the margin, which the second cut drops.
        rough, cut = _bound_log(text, log_max_bytes + REDACT_MARGIN_BYTES)
        bounded, cut_again = _bound_log(r.redact_text(rough), log_max_bytes)
        if cut or cut_again:
            bundle.truncated.append("logs")
        bundle.logs = bounded
        bundle.stack = stacks.extract_stack(bundle.logs)
    if bundle.stack is None and bundle.termination and bundle.termination.message:
        # terminationMessagePolicy FallbackToLogsOnError puts the log tail there.
        bundle.stack = stacks.extract_stack(bundle.termination.message)

    for kind, obj in zip(("pod", "replicaset", "deployment"), objects, strict=True):
        if obj is not None:
            # List items carry no apiVersion/kind; a snapshot should apply as it reads.
            typed = {"apiVersion": _API_VERSION[kind], "kind": _KIND[kind], **obj}
            if kind == "deployment":
                typed["kind"] = bundle.kind
            snap = yaml.safe_dump(r.redact_object(typed), sort_keys=False, width=120)
            if len(snap.encode()) > SNAPSHOT_MAX_BYTES:
                cut_snap = _cut_bytes(snap.encode(), SNAPSHOT_MAX_BYTES, tail=False)
                snap = cut_snap.decode(errors="ignore")
                bundle.truncated.append(kind)
            bundle.snapshots[kind] = snap


# --- reads ------------------------------------------------------------------------------------


class _Collector:
    def __init__(self, *, kube: k8s.Kube, namespace: str, timeout: float) -> None:
        self.kube = kube
        self.namespace = namespace
        self.timeout = timeout
        self.unavailable: dict[str, str] = {}

    async def raw(self, what: str, path: str, **query: object) -> bytes | None:
        try:
            return await self.kube.raw(
                "GET", path, query={k: v for k, v in query.items() if v is not None} or None,
                timeout=self.timeout,
            )  # fmt: skip
        except k8s.KubeError as e:
            self.unavailable[what] = _reason(e)
        except (TimeoutError, OSError) as e:
            self.unavailable[what] = _one_line(f"{type(e).__name__}: {e}", MAX_REASON)
        return None

    async def get(self, what: str, path: str, **query: object) -> dict[str, Any] | None:
        data = await self.raw(what, path, **query)
        if data is None:
            return None
        try:
            obj = json.loads(data)
        except ValueError as e:
            self.unavailable[what] = f"unreadable response: {e}"
            return None
        return obj if isinstance(obj, dict) else None


async def _maybe(aw: Awaitable[T] | None) -> T | None:
    return None if aw is None else await aw


def _reason(e: k8s.KubeError) -> str:
    status = f"{e.status} {e.reason}" if e.status else e.reason
    return _one_line(f"{status}: {e.message}", MAX_REASON)


async def _worst_pod(c: _Collector, dep: Mapping[str, Any]) -> dict[str, Any] | None:
    selector = _selector(dep)
    if selector is None:
        c.unavailable["pod"] = "the Deployment has no matchLabels selector"
        return None
    pods = await c.get("pod", k8s.core(c.namespace, "pods"), labelSelector=selector)
    items = [p for p in (pods or {}).get("items", []) if isinstance(p, dict)]
    if not items:
        return None

    def badness(p: Mapping[str, Any]) -> tuple[int, int, str]:
        statuses = (p.get("status") or {}).get("containerStatuses") or []
        restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
        waiting = sum(1 for s in statuses if (s.get("state") or {}).get("waiting"))
        return (restarts, waiting, _name(p))

    return max(items, key=badness)


async def _logs(
    c: _Collector,
    pod: str | None,
    container: str | None,
    tail: int,
    max_bytes: int,
    *,
    crashed: bool = True,
) -> tuple[str | None, str]:
    if not pod:
        return None, "unavailable"
    path = k8s.core(c.namespace, "pods", pod) + "/log"
    # limitBytes keeps the *first* bytes of the tail: a log of long lines would lose its
    # end, where the final stack trace is. Ask for a generous limit and, when the answer
    # fills it, for fewer lines, so the end always arrives; _bound_log cuts the head.
    limit = max(4 * max_bytes, FETCH_MIN_BYTES)
    lines = tail
    for what, previous in (("previous logs", True), ("current logs", False)):
        # A container that never terminated has no previous logs: asking only yields a 400.
        if previous and not crashed:
            continue
        while True:
            q: dict[str, object] = {"container": container, "tailLines": lines, "limitBytes": limit}
            if previous:
                q["previous"] = True
            data = await c.raw(what, path, **q)
            if data is None or len(data) < limit or lines <= MIN_TAIL_LINES:
                break
            lines = max(MIN_TAIL_LINES, lines // 4)
        if data is not None:
            return data.decode("utf-8", "replace"), "previous" if previous else "current"
    return None, "unavailable"


async def _history(
    c: _Collector, dep: Mapping[str, Any]
) -> tuple[list[Revision], dict[int, dict[str, Any]]]:
    """The revisions, and each one's ReplicaSet (for the template diff; never stored)."""
    selector = _selector(dep)
    uid = (dep.get("metadata") or {}).get("uid")
    listing = await c.get(
        "rollout history", k8s.apps(c.namespace, "replicasets"), labelSelector=selector
    )
    out: list[Revision] = []
    templates: dict[int, dict[str, Any]] = {}
    for rs in (listing or {}).get("items", []):
        owners = (rs.get("metadata") or {}).get("ownerReferences") or []
        if uid and not any(o.get("uid") == uid for o in owners):
            continue
        ann = _annotations(rs)
        try:
            rev = int(ann.get(REVISION, "0"))
        except ValueError:
            rev = 0
        out.append(
            Revision(
                revision=rev,
                replicaset=_name(rs),
                images=tuple(_images(_template_spec(rs))),
                change_cause=str(ann.get(CHANGE_CAUSE, "")),
                created=str((rs.get("metadata") or {}).get("creationTimestamp", "")),
                replicas=int((rs.get("status") or {}).get("replicas") or 0),
                limits=_limits(_template_spec(rs)),
            )
        )
        templates[rev] = rs
    out.sort(key=lambda r: r.revision)
    return out[-MAX_REVISIONS:], templates


async def _revision_history(
    c: _Collector, obj: Mapping[str, Any]
) -> tuple[list[Revision], dict[int, dict[str, Any]]]:
    """A StatefulSet's or DaemonSet's ControllerRevisions as the rollout history, each with
    the number of its pods now, and each one's template shaped like a ReplicaSet's (its
    revision hash as ``pod-template-hash``) for the template diff."""
    selector = _selector(obj)
    meta = obj.get("metadata") or {}
    uid, name = meta.get("uid"), str(meta.get("name", ""))
    listing, pods = await asyncio.gather(
        c.get(
            "rollout history", k8s.apps(c.namespace, "controllerrevisions"), labelSelector=selector
        ),
        c.get("pods of the revisions", k8s.core(c.namespace, "pods"), labelSelector=selector),
    )
    per_hash: dict[str, int] = {}
    for p in (pods or {}).get("items", []):
        owner = ownership.owner_of(p)
        if owner is not None and owner.name == name:
            per_hash[owner.revision_hash] = per_hash.get(owner.revision_hash, 0) + 1
    out: list[Revision] = []
    templates: dict[int, dict[str, Any]] = {}
    for cr in (listing or {}).get("items", []):
        owners = (cr.get("metadata") or {}).get("ownerReferences") or []
        if uid and not any(o.get("uid") == uid for o in owners):
            continue
        rev = int(cr.get("revision") or 0)
        hash_ = ownership.revision_hash(name, _name(cr))
        template = dict(((cr.get("data") or {}).get("spec") or {}).get("template") or {})
        template.pop("$patch", None)
        shaped = {
            "metadata": {**(cr.get("metadata") or {}), "labels": {"pod-template-hash": hash_}},
            "spec": {"template": template},
        }
        out.append(
            Revision(
                revision=rev,
                replicaset=_name(cr),
                images=tuple(_images(_template_spec(shaped))),
                change_cause="",
                created=str((cr.get("metadata") or {}).get("creationTimestamp", "")),
                replicas=per_hash.get(hash_, 0),
                limits=_limits(_template_spec(shaped)),
            )
        )
        templates[rev] = shaped
    out.sort(key=lambda r: r.revision)
    return out[-MAX_REVISIONS:], templates


def _current_revision(obj: Mapping[str, Any], templates: Mapping[int, Mapping[str, Any]]) -> str:
    """The number of the newest revision whose template is the object's: what runs."""
    current = (obj.get("spec") or {}).get("template") or {}
    numbers = [n for n, t in templates.items() if (t.get("spec") or {}).get("template") == current]
    return str(max(numbers)) if numbers else ""


async def _config_changes(
    c: _Collector, pod_spec: Mapping[str, Any], since: str
) -> list[ConfigChange]:
    refs = sorted(referenced_keys(pod_spec).items())

    async def one(kind: str, name: str, keys: set[str]) -> ConfigChange:
        obj = None
        if kind == "ConfigMap":  # Secrets are never read, not even their metadata
            obj = await c.get(f"configmap {name}", k8s.core(c.namespace, "configmaps", name))
        return config_change(kind, name, keys, obj, since=since)

    return list(await asyncio.gather(*(one(kind, name, keys) for (kind, name), keys in refs)))


def _changes(
    current: str,
    templates: Mapping[int, Mapping[str, Any]],
    last_healthy: int | None,
    redactor: Redactor,
    known_bad: Collection[str] = (),
) -> tuple[int | None, list[Change]]:
    # The policy's redactor, not the incident's: that one removes every literal env value,
    # and a changed LOG_LEVEL is exactly what the diff is for. Secret-looking names and
    # Secret references are hidden by template_changes itself.
    try:
        now = int(current)
    except ValueError:
        return None, []
    if now not in templates:
        return None, []
    if last_healthy is None:
        # The newest older revision that is neither known bad nor the same release
        # rolled again (a restart changes only an annotation the diff does not show).
        for n in sorted((n for n in templates if n < now), reverse=True):
            labels = (templates[n].get("metadata") or {}).get("labels") or {}
            if labels.get("pod-template-hash") in known_bad:
                continue
            if template_changes(bad=templates[now], healthy=templates[n], redactor=redactor):
                last_healthy = n
                break
    if last_healthy is None or last_healthy not in templates:
        return None, []
    return last_healthy, template_changes(
        bad=templates[now], healthy=templates[last_healthy], redactor=redactor
    )


async def _events(c: _Collector, objects: Sequence[tuple[str, str]]) -> list[EventRecord]:
    async def one(kind: str, name: str) -> list[dict[str, Any]]:
        body = await c.get(
            f"events of {kind}",
            k8s.core(c.namespace, "events"),
            fieldSelector=f"involvedObject.kind={kind},involvedObject.name={name}",
        )
        return [e for e in (body or {}).get("items", []) if isinstance(e, dict)]

    batches = await asyncio.gather(*(one(kind, name) for kind, name in objects))
    seen: set[str] = set()
    out: list[EventRecord] = []
    for ev in (e for batch in batches for e in batch):
        uid = str((ev.get("metadata") or {}).get("uid") or id(ev))
        if uid in seen:
            continue
        seen.add(uid)
        inv = ev.get("involvedObject") or {}
        out.append(
            EventRecord(
                time=_event_time(ev),
                type=str(ev.get("type") or ""),
                reason=str(ev.get("reason") or ""),
                object=f"{inv.get('kind', '')}/{inv.get('name', '')}",
                count=int(ev.get("count") or (ev.get("series") or {}).get("count") or 1),
                message=_one_line(str(ev.get("message") or ""), 1000),
            )
        )
    out.sort(key=lambda e: e.time)
    return out[-MAX_EVENTS:]


def _event_time(ev: Mapping[str, Any]) -> str:
    series = ev.get("series") or {}
    for t in (
        series.get("lastObservedTime"),
        ev.get("lastTimestamp"),
        ev.get("eventTime"),
        ev.get("firstTimestamp"),
        (ev.get("metadata") or {}).get("creationTimestamp"),
    ):
        if t:
            # eventTime has microseconds; seconds sort and read the same as the others.
            return str(t)[:19] + "Z"
    return ""


# --- pure helpers -----------------------------------------------------------------------------


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _owner(obj: Mapping[str, Any], kind: str) -> str | None:
    for o in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if o.get("kind") == kind:
            return str(o.get("name"))
    return None


def _selector(dep: Mapping[str, Any]) -> str | None:
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None


def _template_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}


def _template_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def _images(pod_spec: Mapping[str, Any]) -> list[str]:
    return [str(c.get("image", "")) for c in pod_spec.get("containers") or []]


def _statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # Init containers crash-loop too (Init:CrashLoopBackOff).
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _crashed_container(pod: Mapping[str, Any]) -> str | None:
    statuses = _statuses(pod)
    crashed = [s for s in statuses if (s.get("lastState") or {}).get("terminated")]
    if crashed:
        return str(max(crashed, key=lambda s: int(s.get("restartCount") or 0)).get("name"))
    containers = (pod.get("spec") or {}).get("containers") or []
    return str(containers[0].get("name")) if containers else None


def _terminated(
    pod: Mapping[str, Any], container: str | None
) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """(container status, its last ``terminated`` state) of ``container``; ``None``: none."""
    for s in _statuses(pod):
        if s.get("name") != container:
            continue
        t = (s.get("lastState") or {}).get("terminated") or (s.get("state") or {}).get("terminated")
        return (s, t) if t else None
    return None


def _termination(pod: Mapping[str, Any], container: str | None, r: Redactor) -> Termination | None:
    found = _terminated(pod, container)
    if found is not None:
        s, t = found
        return Termination(
            container=str(container),
            exit_code=t.get("exitCode"),
            reason=str(t.get("reason") or ""),
            # The kubelet's FallbackToLogsOnError message is the log's end: keep the end.
            message=r.redact_text(str(t.get("message") or ""))[-4096:],
            signal=t.get("signal"),
            started_at=str(t.get("startedAt") or ""),
            finished_at=str(t.get("finishedAt") or ""),
            restart_count=int(s.get("restartCount") or 0),
        )
    return None


def _waiting(pod: Mapping[str, Any], container: str | None, r: Redactor) -> Waiting | None:
    for s in _statuses(pod):
        if s.get("name") != container:
            continue
        w = (s.get("state") or {}).get("waiting")
        if not w:
            return None
        return Waiting(
            container=str(container),
            reason=str(w.get("reason") or ""),
            message=r.redact_text(str(w.get("message") or ""))[-2048:],
        )
    return None


def _pull_secrets(pod_spec: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(s.get("name")) for s in pod_spec.get("imagePullSecrets") or [] if s.get("name")
    )


def _limits(pod_spec: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    return {
        str(c.get("name", "")): {
            k: str(v) for k, v in ((c.get("resources") or {}).get("limits") or {}).items()
        }
        for c in pod_spec.get("containers") or []
    }


def _probes(pod_spec: Mapping[str, Any], container: str | None, r: Redactor) -> dict[str, str]:
    containers = pod_spec.get("containers") or []
    c = next((c for c in containers if c.get("name") == container), None)
    if c is None and containers and container is None:
        c = containers[0]
    if c is None:
        return {}
    out = {}
    for kind in ("liveness", "readiness", "startup"):
        probe = c.get(f"{kind}Probe")
        if isinstance(probe, dict):
            out[kind] = r.redact_text(describe_probe(probe))
    return out


def describe_probe(probe: Mapping[str, Any]) -> str:
    """``HTTP GET :8080/healthz every 10s, timeout 1s, fails after 3`` (defaults as the
    kubelet applies them)."""
    if isinstance(probe.get("httpGet"), dict):
        h = probe["httpGet"]
        what = f"HTTP GET :{h.get('port', '?')}{h.get('path', '/')}"
    elif isinstance(probe.get("tcpSocket"), dict):
        what = f"TCP :{probe['tcpSocket'].get('port', '?')}"
    elif isinstance(probe.get("grpc"), dict):
        what = f"gRPC :{probe['grpc'].get('port', '?')}"
    elif isinstance(probe.get("exec"), dict):
        # The command may carry a credential: _probes redacts the description.
        what = "exec " + " ".join(str(a) for a in probe["exec"].get("command") or [])
    else:
        what = "probe"
    period = probe.get("periodSeconds", 10)
    timeout = probe.get("timeoutSeconds", 1)
    failures = probe.get("failureThreshold", 3)
    text = f"{what} every {period}s, timeout {timeout}s, fails after {failures}"
    if probe.get("initialDelaySeconds"):
        text += f", first after {probe['initialDelaySeconds']}s"
    return text


def _resources(
    pod_spec: Mapping[str, Any], usage: Mapping[str, Mapping[str, object]] | None
) -> tuple[list[ContainerResources], str]:
    out = []
    for c in pod_spec.get("containers") or []:
        res = c.get("resources") or {}
        name = str(c.get("name", ""))
        measured = (usage or {}).get(name) or {}
        out.append(
            ContainerResources(
                container=name,
                requests={k: str(v) for k, v in (res.get("requests") or {}).items()},
                limits={k: str(v) for k, v in (res.get("limits") or {}).items()},
                usage={k: _quantity(k, v) for k, v in measured.items()},
            )
        )
    source = "prometheus" if usage is not None else "unavailable: Prometheus not configured"
    return out, source


def _quantity(resource: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    # "memory", "memory_peak"; "cpu", "cpu_peak" (see selfheal.evidence.usage).
    if resource.startswith("memory") or resource.endswith("bytes"):
        return f"{value / 2**20:.0f}Mi"
    if resource.startswith("cpu"):
        return f"{value * 1000:.0f}m"
    return f"{value:g}"


def _bound_log(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    return _cut_bytes(data, max_bytes, tail=True).decode(errors="ignore"), True


def _cut_bytes(data: bytes, limit: int, *, tail: bool) -> bytes:
    """``data`` within ``limit`` bytes plus a marker; logs keep their end, YAML its start."""
    if len(data) <= limit:
        return data
    marker = f"[... {len(data) - limit} bytes truncated ...]\n".encode()
    if tail:
        kept = data[len(data) - limit :]
        nl = kept.find(b"\n")
        return marker + (kept[nl + 1 :] if 0 <= nl < 200 else kept)
    kept = data[:limit]
    return kept[: kept.rfind(b"\n") + 1 or limit] + b"\n" + marker


def _bounded_json(obj: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    text = json.dumps(obj, default=str)
    if len(text) <= MAX_JSON_BYTES:
        return obj
    bundle.truncated.append("trigger evidence")
    return {"truncated": text[:MAX_JSON_BYTES]}


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
