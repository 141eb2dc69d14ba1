"""Crash-loop detection from pod status: pure functions, no I/O, explicit ``now``.

The handlers keep, per watched pod, a small :class:`PodHistory` (the latest
:class:`PodSummary` plus the change points of its restart count) and call:

* :func:`summarize` on each pod event: a compact, frozen summary of the body (this is what
  the kopf index holds, never whole bodies);
* :func:`observe` to fold the summary into the pod's history;
* :func:`evaluate` with the histories of one workload's pods and the policy's
  :class:`~selfheal.policy.model.CrashLoopTrigger` to get a :class:`Verdict`.

Rules (each is a decision the tests pin down):

* **Restarts within the window.** The restart count of a pod is the sum of its
  containers' ``restartCount`` (init containers included). Each change of that sum is
  stored as a change point ``(observed_at, count)``, at most :data:`MAX_POINTS` per pod.
  Restarts within ``within`` = count now - count at ``now - within``. The workload is
  unhealthy on the first observation where some pod's restarts within the window reach
  ``restarts`` (``>=``), whatever the container's current state: a container restarted
  three times in ten minutes is crash-looping even while it is briefly ``Running``.
* **Restarts that happened before the first observation** (the operator started, or
  restarted, while the pod already had restarts). They count as within the window when
  the pod started within the window (exact: they all happened since). Otherwise they count
  only if, at first sight, the pod *looked* crash-looping: a container waiting in
  ``CrashLoopBackOff`` whose last run ended within the window and lasted less than the
  window. A long-lived pod that crashed once after days of running does not pass (its last
  run was long), so an operator restart does not turn old restarts into a fresh incident;
  a pod crash-looping right now fires at once.
* **Stuck without restarts.** ``ImagePullBackOff``/``ErrImagePull``/``InvalidImageName``/
  ``ErrImageNeverPull`` (cause ``ImagePullBackOff``) and ``CreateContainerConfigError``/
  ``CreateContainerError`` (cause ``CreateContainerConfigError``) never restart, so they
  are judged by time: unhealthy once a container has been waiting in such a reason for
  ``stuck_grace`` seconds (default 60 s, long enough for a registry blip to clear on the
  kubelet's first retry). The clock starts at the pod's start when the container never ran
  (the pod has waited since then), else at the first observation in that state.
* **Cause** of a crash loop, from the worst pod's most restarting container (current
  ``terminated`` state, else ``lastState.terminated``): ``OOMKilled``; ``Error`` for a
  non-zero exit code (the code is in the detail and evidence); else ``CrashLoopBackOff``.
* **Three outcomes.** Unhealthy as above; healthy when every live pod is ready and no pod
  reached the threshold; otherwise unknown: ``NoPods`` (nothing to judge) or ``NotReady``
  (pods starting, or restarting below the threshold). Unknown never causes an action.
  Pods being deleted and pods in phase ``Succeeded``/``Failed`` are not judged.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.policy import ownership
from selfheal.policy.model import CrashLoopTrigger

MAX_POINTS = 64
"""Change points kept per pod; enough for any ``restarts`` threshold up to 64."""

MESSAGE_LIMIT = 200
"""Characters of a waiting message kept in a summary (bounded index memory)."""

DEFAULT_STUCK_GRACE = 60.0
"""Seconds a container may wait on an image pull or a config error before it is unhealthy."""

CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
PULL_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
STUCK_REASONS = PULL_REASONS | CONFIG_REASONS
POD_TEMPLATE_HASH = "pod-template-hash"
"""The revision label a ReplicaSet puts on its Pods."""
CONTROLLER_REVISION_HASH = "controller-revision-hash"
"""The revision label a StatefulSet or DaemonSet puts on its Pods."""


# -- summaries -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ContainerSummary:
    name: str
    init: bool = False
    restart_count: int = 0
    ready: bool = False
    running: bool = False
    waiting_reason: str = ""
    waiting_message: str = ""
    terminated_reason: str = ""
    """Current ``state.terminated.reason`` ("" when not terminated)."""
    terminated_exit_code: int | None = None
    last_reason: str = ""
    """``lastState.terminated.reason``: why the previous run ended."""
    last_exit_code: int | None = None
    last_started_at: float | None = None
    last_finished_at: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PodSummary:
    namespace: str
    name: str
    uid: str
    replicaset: str = ""
    """Name of the owning ReplicaSet (controller owner), "" if none."""
    owner_kind: str = ""
    """Kind of the controller owner (``ReplicaSet``, ``StatefulSet``, ``DaemonSet``, ...),
    "" if none: with ``owner``, the key the Pod cache files the Pod under."""
    owner: str = ""
    """Name of the controller owner, "" if none."""
    revision: str = ""
    """The revision label the owner put on the Pod: ``pod-template-hash`` (ReplicaSet) or
    ``controller-revision-hash`` (StatefulSet, DaemonSet); "" if none."""
    phase: str = ""
    ready: bool = False
    """The pod's ``Ready`` condition is ``True``."""
    deleting: bool = False
    """``metadata.deletionTimestamp`` is set."""
    started: float | None = None
    """``status.startTime``, else ``metadata.creationTimestamp`` (Unix seconds)."""
    containers: tuple[ContainerSummary, ...] = ()
    revision_hash: str = ""
    """The hash of the ControllerRevision the pod runs."""

    @property
    def restarts(self) -> int:
        return sum(c.restart_count for c in self.containers)


def parse_time(value: object) -> float | None:
    """An RFC 3339 timestamp as the API server writes it, as Unix seconds; ``None`` if absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _container(status: Mapping[str, Any], *, init: bool) -> ContainerSummary:
    state = _dict(status.get("state"))
    waiting = _dict(state.get("waiting"))
    terminated = _dict(state.get("terminated"))
    last = _dict(_dict(status.get("lastState")).get("terminated"))
    return ContainerSummary(
        name=str(status.get("name", "")),
        init=init,
        restart_count=_int(status.get("restartCount")) or 0,
        ready=status.get("ready") is True,
        running="running" in state,
        waiting_reason=str(waiting.get("reason", "")),
        waiting_message=str(waiting.get("message", ""))[:MESSAGE_LIMIT],
        terminated_reason=str(terminated.get("reason", "")),
        terminated_exit_code=_int(terminated.get("exitCode")),
        last_reason=str(last.get("reason", "")),
        last_exit_code=_int(last.get("exitCode")),
        last_started_at=parse_time(last.get("startedAt")),
        last_finished_at=parse_time(last.get("finishedAt")),
    )


def summarize(pod: Mapping[str, Any]) -> PodSummary:
    """The compact summary of a Pod body (a JSON dict as kopf or the API server gives it)."""
    meta = _dict(pod.get("metadata"))
    status = _dict(pod.get("status"))
    owner = next(
        (
            o
            for o in meta.get("ownerReferences") or ()
            if isinstance(o, Mapping) and o.get("controller")
        ),
        None,
    )
    owner_kind = str(owner.get("kind", "")) if owner else ""
    owner_name = str(owner.get("name", "")) if owner else ""
    labels = _dict(meta.get("labels"))
    revision = str(labels.get(POD_TEMPLATE_HASH) or labels.get(CONTROLLER_REVISION_HASH) or "")
    ready = any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    containers = tuple(
        _container(c, init=True)
        for c in status.get("initContainerStatuses") or ()
        if isinstance(c, Mapping)
    ) + tuple(
        _container(c, init=False)
        for c in status.get("containerStatuses") or ()
        if isinstance(c, Mapping)
    )
    direct = ownership.owner_of(pod)
    return PodSummary(
        revision_hash=direct.revision_hash if direct else "",
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        replicaset=owner_name if owner_kind == "ReplicaSet" else "",
        owner_kind=owner_kind,
        owner=owner_name,
        revision=revision,
        phase=str(status.get("phase", "")),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        started=parse_time(status.get("startTime")) or parse_time(meta.get("creationTimestamp")),
        containers=containers,
    )


# -- history ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PodHistory:
    summary: PodSummary
    """The latest observation."""
    first_seen: float
    points: tuple[tuple[float, int], ...]
    """Change points ``(observed_at, restarts)``, oldest first, at most :data:`MAX_POINTS`;
    the first is the first observation unless older ones were dropped."""
    prior_crashlooping: bool = False
    """At first sight the pod looked crash-looping (see the module rules)."""
    prior_last_run: float | None = None
    """At first sight: duration (s) of the last run of the crash-looping container."""
    prior_last_finished: float | None = None
    stuck_since: float | None = None
    """Since when some container has waited in a reason of :data:`STUCK_REASONS`."""


def _crashlooping_container(summary: PodSummary) -> ContainerSummary | None:
    return next(
        (c for c in summary.containers if c.waiting_reason == CRASH_LOOP_BACK_OFF),
        None,
    )


def _stuck(summary: PodSummary) -> ContainerSummary | None:
    return next((c for c in summary.containers if c.waiting_reason in STUCK_REASONS), None)


def observe(history: PodHistory | None, summary: PodSummary, *, now: float) -> PodHistory:
    """Fold one observation of a pod into its history (a new uid starts a new history)."""
    stuck = _stuck(summary)
    if history is None or history.summary.uid != summary.uid:
        looping = _crashlooping_container(summary)
        last_run = None
        if looping and looping.last_started_at is not None and looping.last_finished_at:
            last_run = looping.last_finished_at - looping.last_started_at
        stuck_since = None
        if stuck is not None:
            never_ran = stuck.restart_count == 0 and stuck.last_finished_at is None
            stuck_since = summary.started if never_ran and summary.started is not None else now
            stuck_since = min(stuck_since, now)
        return PodHistory(
            summary=summary,
            first_seen=now,
            points=((now, summary.restarts),),
            prior_crashlooping=looping is not None,
            prior_last_run=last_run,
            prior_last_finished=looping.last_finished_at if looping else None,
            stuck_since=stuck_since,
        )
    points = history.points
    if summary.restarts != points[-1][1]:
        points = (*points, (now, summary.restarts))[-MAX_POINTS:]
    stuck_since = None
    if stuck is not None:
        stuck_since = history.stuck_since if history.stuck_since is not None else now
    return dataclasses.replace(history, summary=summary, points=points, stuck_since=stuck_since)


def restarts_within(history: PodHistory, *, within: float, now: float) -> int:
    """Restarts of the pod in ``[now - within, now]`` under the module's rules."""
    start = now - within
    current = history.points[-1][1]
    before = [c for t, c in history.points if t <= start]
    if before:
        return current - before[-1]
    first_t, first_count = history.points[0]
    if first_t > history.first_seen:
        # Older change points were dropped: count from the oldest one kept (an undercount
        # only when more than MAX_POINTS changes fall within the window).
        return current - first_count
    summary = history.summary
    if summary.started is not None and summary.started >= start:
        return current  # the pod started within the window: every restart is in it
    if (
        history.prior_crashlooping
        and history.prior_last_finished is not None
        and history.prior_last_finished >= start
        and history.prior_last_run is not None
        and history.prior_last_run < within
    ):
        return current
    return current - first_count


# -- verdicts --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    health: Health
    cause: str = ""
    detail: str = ""
    evidence: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def signal(self, *, policy: str, workload: WorkloadRef, trigger: str, at: float) -> Signal:
        return Signal(
            policy=policy,
            workload=workload,
            trigger=trigger,
            health=self.health,
            at=at,
            cause=self.cause,
            detail=self.detail,
            evidence=self.evidence,
        )


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _culprit(summary: PodSummary) -> ContainerSummary | None:
    if not summary.containers:
        return None
    return max(
        summary.containers,
        key=lambda c: (c.waiting_reason == CRASH_LOOP_BACK_OFF, c.restart_count),
    )


def classify(container: ContainerSummary) -> tuple[str, int | None, str]:
    """(cause, exit code, termination reason) of a restarting container."""
    if container.terminated_reason or container.terminated_exit_code is not None:
        reason, code = container.terminated_reason, container.terminated_exit_code
    else:
        reason, code = container.last_reason, container.last_exit_code
    if reason == "OOMKilled":
        return "OOMKilled", code, reason
    if code is not None and code != 0:
        return "Error", code, reason
    return CRASH_LOOP_BACK_OFF, code, reason


def _pod_line(h: PodHistory, in_window: int) -> dict[str, object]:
    return {"pod": h.summary.name, "ready": h.summary.ready, "restartsInWindow": in_window}


def evaluate(
    trigger: CrashLoopTrigger,
    histories: Iterable[PodHistory],
    *,
    now: float,
    stuck_grace: float = DEFAULT_STUCK_GRACE,
) -> Verdict:
    """Judge one workload from the histories of its pods (see the module rules)."""
    live = [
        h
        for h in histories
        if not h.summary.deleting and h.summary.phase not in ("Succeeded", "Failed")
    ]
    window = _duration(trigger.within)
    if not live:
        return Verdict(
            health=Health.UNKNOWN, cause="NoPods", detail="The workload has no running pods."
        )
    counts = [(restarts_within(h, within=trigger.within, now=now), h) for h in live]
    counts.sort(key=lambda p: (-p[0], p[1].summary.name))
    pods = [_pod_line(h, n) for n, h in counts[:10]]
    worst, worst_h = counts[0]
    base: dict[str, object] = {
        "threshold": trigger.restarts,
        "within": trigger.within,
        "restarts": worst,
        "pods": pods,
    }

    if worst >= trigger.restarts:
        container = _culprit(worst_h.summary)
        cause, code, reason = classify(container) if container else (CRASH_LOOP_BACK_OFF, None, "")
        name = container.name if container else ""
        finished = None
        if container:
            finished = container.last_finished_at
        evidence = {
            **base,
            "pod": worst_h.summary.name,
            "container": name,
            "restartCount": container.restart_count if container else 0,
            "exitCode": code,
            "reason": reason,
            "waiting": container.waiting_reason if container else "",
            "finishedAt": _iso(finished),
        }
        what = {
            "OOMKilled": "was killed for exceeding its memory limit (OOMKilled)",
            "Error": f"exited with code {code}",
            CRASH_LOOP_BACK_OFF: "keeps exiting" + (f" (code {code})" if code is not None else ""),
        }[cause]
        return Verdict(
            health=Health.UNHEALTHY,
            cause=cause,
            detail=(
                f"Container {name!r} of pod {worst_h.summary.name} restarted {worst} times "
                f"within {window} (threshold {trigger.restarts}); it {what}."
            ),
            evidence=evidence,
        )

    for _, h in counts:
        container = _stuck(h.summary)
        if container is None or h.stuck_since is None or now - h.stuck_since < stuck_grace:
            continue
        pulling = container.waiting_reason in PULL_REASONS
        cause = "ImagePullBackOff" if pulling else "CreateContainerConfigError"
        return Verdict(
            health=Health.UNHEALTHY,
            cause=cause,
            detail=(
                f"Container {container.name!r} of pod {h.summary.name} has waited in "
                f"{container.waiting_reason} for {now - h.stuck_since:.0f}s"
                + (f": {container.waiting_message}" if container.waiting_message else ".")
            ),
            evidence={
                **base,
                "pod": h.summary.name,
                "container": container.name,
                "waiting": container.waiting_reason,
                "message": container.waiting_message,
                "since": _iso(h.stuck_since),
            },
        )

    not_ready = [h.summary.name for _, h in counts if not h.summary.ready]
    if not not_ready:
        return Verdict(
            health=Health.HEALTHY,
            detail=(
                f"All {len(live)} pods are ready; at most {worst} restarts within {window} "
                f"(threshold {trigger.restarts})."
            ),
            evidence=base,
        )
    return Verdict(
        health=Health.UNKNOWN,
        cause="NotReady",
        detail=(
            f"{len(not_ready)} of {len(live)} pods not ready ({', '.join(not_ready[:3])}"
            f"{', ...' if len(not_ready) > 3 else ''}); at most {worst} restarts within "
            f"{window} (threshold {trigger.restarts})."
        ),
        evidence=base,
    )
