"""Watching without touching: Pods, ReplicaSets, Deployments and Remediations.

Pods, ReplicaSets and Deployments are watched by the light watcher of
``selfheal.clients.podwatch`` (a paged list and a watch, read only): each body is
summarised at once into a small frozen tuple and dropped, and the summaries are filed
in ``Runtime``'s caches, shaped like kopf indexes (``handlers.podcache``):

- ``Runtime.pods``: (namespace, controller owner) -> PodSummary of each pod (the owner is
  a ReplicaSet, or a StatefulSet or DaemonSet with no ReplicaSet between);
- ``Runtime.rs_owner``: (namespace, ReplicaSet) -> the Deployment that controls it;
- ``Runtime.rs_by_deployment``: (namespace, Deployment) -> RsInfo of each of its ReplicaSets;
- ``Runtime.deployments``: (namespace, name) -> DeploymentInfo (and namespace -> all).

kopf keeps the indexes of the operator's own Remediations and of the (few) StatefulSets,
DaemonSets and their ControllerRevisions (``@kopf.index``; kopf writes nothing for them):
- ``remediations``: namespace -> ``Record`` of each Remediation (typed, status parsed);
- ``statefulsets``, ``daemonsets``: (namespace, name) -> DeploymentInfo of that kind;
- ``controller_revisions``: (namespace, kind, owner) -> RevInfo of each ControllerRevision.
:func:`pod_changed` queues the owner's workload for evaluation.

A pod change costs a cache update; only pods in namespaces that some policy covers
go on to crash-loop evaluation (once per burst of changes of one owner), and only
workloads with an unhealthy verdict or an open incident reach the remediation driver.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

import kopf
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs import finalizers as kopf_finalizers

from selfheal import GROUP, VERSION, metrics
from selfheal.detect import alerts, crashloop
from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.handlers.podcache import Index, PodCache
from selfheal.handlers.runtime import Runtime
from selfheal.handlers.summaries import (
    DeploymentInfo,
    RevInfo,
    RsInfo,
    workload_info,
)
from selfheal.policy import ownership
from selfheal.policy.model import HealingPolicy
from selfheal.policy.selector import selector_matches
from selfheal.remediation import naming
from selfheal.remediation.facts import Facts
from selfheal.remediation.records import Record, Records
from selfheal.sharding import Shard

logger = logging.getLogger(__name__)


# --- kopf's index pre-population, in linear time ---------------------------------------------


class _CountedToggle(aiotoggles.Toggle):
    """A member of a :class:`CountingToggleSet`: tells its set when it turns."""

    def __init__(self, state: bool, *, owner: CountingToggleSet, name: str | None) -> None:
        super().__init__(state, name=name, condition=owner._condition)
        self._owner = owner

    async def turn_to(self, state: bool) -> None:
        before = self.is_on()
        await super().turn_to(state)
        if self in self._owner and before != self.is_on():
            self._owner._on += 1 if self.is_on() else -1
            self._owner._changed()


class CountingToggleSet(aiotoggles.ToggleSet):
    """kopf's ``ToggleSet`` with an O(1) state and one wake-up per waiter per flip.

    kopf makes one toggle per object while it pre-populates indexes, and every
    object's worker waits on the set. kopf's own set wakes every waiter on every
    toggle change and each re-checks every toggle: cubic in the number of objects.
    Profiled with py-spy at 5,000 Pods, 75% of the start-up was in
    ``ToggleSet.make_toggle -> Condition.notify_all -> call_soon``, and start-up
    took minutes. Same semantics (``all``/``any`` over the toggles' states).
    """

    def __init__(self, fn: Any) -> None:
        super().__init__(fn)
        self._on = 0
        self._state = self._compute()
        self._flipped = asyncio.Event()
        if fn is all:
            # kopf's only all-set is the "every resource's index is filled" one.
            INDEXED.append(self)

    def _compute(self) -> bool:
        n = len(self._toggles)
        if self._fn is all:
            return bool(self._on == n)
        if self._fn is any:
            return bool(self._on > 0)
        return bool(self._fn(t.is_on() for t in self._toggles))

    def _changed(self) -> None:
        state = self._compute()
        if state != self._state:
            self._state = state
            # Wake the waiters of this flip once; later ones wait on a fresh event.
            self._flipped.set()
            self._flipped = asyncio.Event()

    def is_on(self) -> bool:
        return bool(self._state)

    async def wait_for(self, state: bool) -> None:
        while self._state != bool(state):
            await self._flipped.wait()

    async def make_toggle(self, value: bool = False, *, name: str | None = None) -> Any:
        toggle = _CountedToggle(bool(value), owner=self, name=name)
        self._toggles.add(toggle)
        self._on += 1 if toggle.is_on() else 0
        self._changed()
        return toggle

    async def drop_toggle(self, toggle: Any) -> None:
        await self.drop_toggles([toggle])

    async def drop_toggles(self, toggles: Iterable[Any]) -> None:
        for toggle in toggles:
            if toggle in self._toggles:
                self._toggles.discard(toggle)
                self._on -= 1 if toggle.is_on() else 0
        self._changed()


INDEXED: list[CountingToggleSet] = []
"""kopf's ``operator_indexed`` set(s): on once every watched resource's index is filled."""


def caches_synced() -> bool:
    """Every index kopf keeps is filled (also when the watched namespaces are empty)."""
    return bool(INDEXED) and all(t.is_on() for t in INDEXED)


# kopf builds its sets as ``aiotoggles.ToggleSet(all)`` when the operator starts.
aiotoggles.ToggleSet = CountingToggleSet  # type: ignore[misc]


def _rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- indexes ------------------------------------------------------------------------------


FINALIZER = f"{GROUP}/finalizer"
"""kopf's finalizer on HealingPolicies (kopf puts one on every object with a timer)."""


def finalizer(shard: Shard) -> str:
    """This shard's finalizer. kopf removes its finalizer from any object no handler of
    its needs it on, so shards sharing one name would strip each other's, endlessly: each
    shard has its own (unchanged when unsharded)."""
    return shard.name(FINALIZER)


def stale_finalizers(body: Mapping[str, Any], own: str) -> list[str]:
    """selfheal finalizers on ``body`` that are not ``own``: left by a run with another
    shard count, which no running process would ever remove (a deletion would hang)."""
    return [
        f
        for f in (body.get("metadata") or {}).get("finalizers") or ()
        if isinstance(f, str) and f.startswith(FINALIZER) and f != own
    ]


def drop_stale_finalizers(body: Mapping[str, Any], patch: kopf.Patch, memo: kopf.Memo) -> None:
    shard: Shard = memo.get("shard") or Shard()
    for stale in stale_finalizers(body, finalizer(shard)):
        logger.info(
            "removing the finalizer %s (another shard count's) from %s",
            stale,
            (body.get("metadata") or {}).get("name"),
        )
        patch.fns.append(functools.partial(kopf_finalizers.allow_deletion, finalizer=stale))


def in_shard(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """kopf's ``when=`` filter on every handler and index: only this shard's namespaces.
    kopf is then blind to the others' objects: nothing indexed, handled or written."""
    shard: Shard | None = memo.get("shard")
    return shard is None or shard.owns(namespace)


def rs_changed(rt: Runtime, old: RsInfo | None, new: RsInfo | None) -> None:
    """File a ReplicaSet change in ``rs_owner`` and ``rs_by_deployment``."""
    if old is not None:
        rt.rs_owner.discard((old.namespace, old.name), old.name)
        rt.rs_by_deployment.discard((old.namespace, old.deployment), old.name)
    if new is not None:
        rt.rs_owner.add((new.namespace, new.name), new.name, new.deployment)
        rt.rs_by_deployment.add((new.namespace, new.deployment), new.name, new)
        if old is None and rt.judging and rt.covers(new.namespace):
            # Its Pods may have come first: judge them now that they have a workload.
            rt.evaluations.want((new.namespace, "ReplicaSet", new.name))


def deployment_changed(rt: Runtime, old: DeploymentInfo | None, new: DeploymentInfo | None) -> None:
    """File a Deployment change in ``deployments`` (by (namespace, name) and by namespace)."""
    for info in (old, new):
        if info is not None:
            rt.deployment_versions[info.namespace] = (
                rt.deployment_versions.get(info.namespace, 0) + 1
            )
    if old is not None:
        rt.deployments.discard((old.namespace, old.name), old.uid)
        rt.deployments.discard(old.namespace, old.uid)
    if new is not None:
        rt.deployments.add((new.namespace, new.name), new.uid, new)
        rt.deployments.add(new.namespace, new.uid, new)


@kopf.index("apps", "v1", "statefulsets", when=in_shard)  # type: ignore[arg-type]
async def statefulsets(
    namespace: str, name: str, uid: str, body: kopf.Body, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    info = workload_info(ownership.STATEFULSET, name, uid, body, spec)
    return {(namespace, name): info, namespace: info}


@kopf.index("apps", "v1", "daemonsets", when=in_shard)  # type: ignore[arg-type]
async def daemonsets(
    namespace: str, name: str, uid: str, body: kopf.Body, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    info = workload_info(ownership.DAEMONSET, name, uid, body, spec)
    return {(namespace, name): info, namespace: info}


@kopf.index("apps", "v1", "controllerrevisions", when=in_shard)  # type: ignore[arg-type]
async def controller_revisions(
    namespace: str, name: str, body: kopf.Body, **_: Any
) -> dict[Any, Any] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") in ownership.KINDS:
            owner = str(ref.get("name"))
            info = RevInfo(
                name=name,
                revision=int(body.get("revision") or 0),
                revision_hash=ownership.revision_hash(owner, name),
            )
            return {(namespace, str(ref.get("kind")), owner): info}
    return None


@kopf.index(GROUP, VERSION, "remediations", when=in_shard)  # type: ignore[arg-type]
async def remediations(
    namespace: str,
    body: kopf.Body,
    memo: kopf.Memo,
    remediations: kopf.Index[Any, Any],
    **_: Any,
) -> dict[Any, Any]:
    rt: Runtime | None = memo.get("runtime")
    if rt is not None and "remediations" not in rt.indexes:
        # kopf's index is a live object: Pod evaluations (not kopf handlers) read it.
        rt.indexes["remediations"] = remediations
    # Parsed once here, when the watch delivers it, not once per decision.
    return {namespace: Record.from_body(body)}


def records_of(remediations: kopf.Index[Any, Any], namespace: str) -> Records:
    return Records(remediations.get(namespace, ()))


# --- lookups over the indexes ----------------------------------------------------------------


def one(index: Index, key: Any) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store else None


def workload_pods(
    namespace: str,
    deployment: str,
    *,
    rs_by_deployment: Index,
    pods_by_rs: PodCache,
    kind: str = "Deployment",
) -> list[crashloop.PodSummary]:
    if kind != "Deployment":
        return list(pods_by_rs.get((namespace, kind, deployment), ()))
    pods: list[crashloop.PodSummary] = []
    for rs in rs_by_deployment.get((namespace, deployment), ()):
        pods.extend(pods_by_rs.get((namespace, "ReplicaSet", rs.name), ()))
    return pods


def newest_hash(namespace: str, deployment: str, rs_by_deployment: Index) -> str:
    infos = list(rs_by_deployment.get((namespace, deployment), ()))
    return max(infos, key=lambda i: i.revision).template_hash if infos else ""


def newest_revision_hash(rt: Runtime, namespace: str, info: DeploymentInfo) -> str:
    """The hash of a StatefulSet's or DaemonSet's newest ControllerRevision."""
    index = rt.indexes.get("controller_revisions")
    infos = list(index.get((namespace, info.kind, info.name), ())) if index is not None else []
    return max(infos, key=lambda i: i.revision).revision_hash if infos else ""


def workload_infos(namespace: str, *indexes: kopf.Index[Any, Any]) -> list[DeploymentInfo]:
    """The watched workloads of a namespace, every kind (one index per kind)."""
    return [info for index in indexes for info in index.get(namespace, ())]


def find_workload(namespace: str, kind: str, name: str, **by_kind: Any) -> DeploymentInfo | None:
    """``by_kind``: ``deployments=``, ``statefulsets=``, ``daemonsets=``."""
    index = by_kind.get(ownership.PLURALS.get(kind, ""))
    return one(index, (namespace, name)) if index is not None else None


def matching_policies(rt: Runtime, namespace: str, info: DeploymentInfo) -> list[HealingPolicy]:
    labels = dict(info.labels)
    return [
        p
        for p in rt.policies_in(namespace)
        if p.target.kind == info.kind and selector_matches(p.target, labels)
    ]


def facts_for(
    namespace: str,
    info: DeploymentInfo,
    *,
    rt: Runtime,
    remediations: kopf.Index[Any, Any],
    rs_by_deployment: Index,
    culprit: tuple[str, str] | None = None,
) -> Facts:
    return Facts(
        records=records_of(remediations, namespace),
        unhealthy=rt.unhealthy_workloads(namespace),
        availability=info.availability(),
        template_hash=(
            newest_hash(namespace, info.name, rs_by_deployment)
            if info.kind == "Deployment"
            else newest_revision_hash(rt, namespace, info)
        ),
        pod=culprit[0] if culprit else None,
        container=culprit[1] if culprit else None,
        replicasets=lambda: [rs.body() for rs in rs_by_deployment.get((namespace, info.name), ())],
        workload=lambda: _cached_body(rt, namespace, info),
    )


def _cached_body(rt: Runtime, namespace: str, info: DeploymentInfo) -> dict[str, Any] | None:
    """The freshest cached view of the workload (when it is acted on, not when judged)."""
    if info.kind != "Deployment":
        return None
    fresh = one(rt.deployments, (namespace, info.name))
    return fresh.body() if fresh is not None and fresh.uid == info.uid else None


def culprit_of(signal: Signal) -> tuple[str, str] | None:
    """The pod and container a crash-loop verdict blames, from its evidence."""
    pod, container = signal.evidence.get("pod"), signal.evidence.get("container")
    if isinstance(pod, str) and isinstance(container, str):
        return pod, container
    return None


async def feed(
    rt: Runtime,
    signals: Iterable[tuple[HealingPolicy, Signal, DeploymentInfo]],
    *,
    remediations: kopf.Index[Any, Any],
    rs_by_deployment: Index,
) -> None:
    """Send signals to the driver: unhealthy ones, and any for an open incident."""
    open_fps = rt.driver.open_incidents()
    known = rt.alerts.alerts()
    signals = [
        # verify.alertResolved: healthy only while no alert about the workload fires.
        (p, alerts.gate(s, known, now=s.at) if p.remediation.verify_alert_resolved else s, i)
        for p, s, i in signals
    ]
    # Mark the whole batch first: the storm brake must see every workload of it.
    for policy, signal, info in signals:
        if signal.health is Health.UNKNOWN:
            continue
        bad = signal.health is Health.UNHEALTHY
        changed = rt.mark(
            signal.workload.namespace,
            info.name,
            trigger=signal.trigger,
            unhealthy=bad,
            now=signal.at,
        )
        if changed:
            rt.remember(
                signal.workload.namespace,
                policy.name,
                {
                    "at": _rfc3339(signal.at),
                    "trigger": signal.trigger,
                    "workload": info.name,
                    "health": str(signal.health),
                    "cause": signal.cause or "Healthy",
                    "detail": signal.detail[:512],
                },
            )
        if changed and bad:
            logger.info(
                "%s: trigger %s/%s says unhealthy: %s %s",
                signal.workload,
                policy.name,
                signal.trigger,
                signal.cause,
                signal.detail,
            )
    for policy, signal, info in signals:
        ns = signal.workload.namespace
        fp = naming.fingerprint(
            namespace=ns, policy=policy.name, workload=info.name, trigger=signal.trigger
        )
        if (
            signal.health is not Health.UNHEALTHY
            and fp not in open_fps
            and not records_of(remediations, ns).has_open(fp)
        ):
            continue
        if not rt.is_leader:
            continue  # a standby decides nothing: the leader does
        await isolated(
            rt.driver.handle(
                event=signal,
                policy=policy,
                workload=signal.workload,
                trigger=signal.trigger,
                facts=facts_for(
                    ns,
                    info,
                    rt=rt,
                    remediations=remediations,
                    rs_by_deployment=rs_by_deployment,
                    culprit=culprit_of(signal),
                ),
            ),
            what=f"incident {ns}/{info.name}/{signal.trigger}",
        )


async def isolated(work: Awaitable[object], *, what: str) -> None:
    """Run one incident's work; its failure is logged and counted, never raised, so
    the other incidents, the policy's pass and the event handlers go on. The next pass
    (or event) retries it: the due work is read again from the stored status."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        metrics.RECONCILE_ERRORS.labels("incident").inc()
        logger.exception("%s failed; retried on the next pass", what)


def crash_signals(
    rt: Runtime,
    namespace: str,
    info: DeploymentInfo,
    *,
    pods: list[crashloop.PodSummary],
    now: float,
) -> list[tuple[HealingPolicy, Signal, DeploymentInfo]]:
    out: list[tuple[HealingPolicy, Signal, DeploymentInfo]] = []
    policies = [p for p in matching_policies(rt, namespace, info) if p.mode != "Paused"]
    if not policies:
        return out
    histories = []
    for pod in pods:
        history = rt.histories.get(pod.uid)
        if history is None or history.summary != pod:
            # First sight (e.g. after a restart, from the pre-filled index), or newer.
            history = crashloop.observe(history, pod, now=now)
            rt.histories[pod.uid] = history
        histories.append(history)
    ref = WorkloadRef(namespace=namespace, name=info.name, uid=info.uid, kind=info.kind)
    for policy in policies:
        for trigger in policy.triggers:
            if trigger.crash_loop is None:
                continue
            verdict = crashloop.evaluate(trigger.crash_loop, histories, now=now)
            out.append(
                (
                    policy,
                    verdict.signal(policy=policy.name, workload=ref, trigger=trigger.name, at=now),
                    info,
                )
            )
    return out


# --- pods (from the light watcher, not kopf) -------------------------------------------------

OwnerKey = tuple[str, str, str]
"""(namespace, controller owner kind, owner name): what one evaluation judges."""


def pod_changed(
    rt: Runtime, old: crashloop.PodSummary | None, new: crashloop.PodSummary | None
) -> None:
    """The Pod cache's change callback (on the loop, inside the watch stream's loop):
    fold the change into the pod's history at the time it was seen, and queue its
    owner's evaluation. The evaluation itself runs in its own task."""
    pod = new or old
    if pod is None:
        return
    covered = rt.covers(pod.namespace)
    if new is None or not covered:
        rt.histories.pop(pod.uid, None)
    else:
        rt.histories[new.uid] = crashloop.observe(rt.histories.get(new.uid), new, now=time.time())
    if covered and pod.owner and rt.judging:
        rt.evaluations.want((pod.namespace, pod.owner_kind, pod.owner))


def evaluate_all(rt: Runtime) -> None:
    """Queue every owner of a covered namespace once (at start, when the caches are in:
    what kopf's first event per Pod did)."""
    for ns in {ns for ns, _ in rt.policies}:
        for kind, owner in rt.pods.owners(ns):
            rt.evaluations.want((ns, kind, owner))


async def evaluate_owner(rt: Runtime, key: OwnerKey) -> None:
    """Judge the workload of one Pod owner now, from the caches."""
    namespace, kind, owner = key
    remediations = rt.indexes.get("remediations")
    if remediations is None:
        # Before kopf's index of Remediations exists nothing can be decided; the policy
        # timer's look at unready workloads catches up.
        return
    if kind in ownership.KINDS:
        info = find_workload(
            namespace,
            kind,
            owner,
            statefulsets=rt.indexes.get("statefulsets"),
            daemonsets=rt.indexes.get("daemonsets"),
        )
    elif kind == "ReplicaSet":
        deployment = one(rt.rs_owner, (namespace, owner))
        info = one(rt.deployments, (namespace, deployment)) if deployment else None
    else:
        return
    if info is None:
        return
    pods = workload_pods(
        namespace,
        info.name,
        rs_by_deployment=rt.rs_by_deployment,
        pods_by_rs=rt.pods,
        kind=info.kind,
    )
    signals = crash_signals(rt, namespace, info, pods=pods, now=time.time())
    await feed(rt, signals, remediations=remediations, rs_by_deployment=rt.rs_by_deployment)


# --- events ----------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "remediations", when=in_shard)  # type: ignore[arg-type]
async def remediation_event(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    remediations: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """A record changed: a record deleted by hand is forgotten; any change wakes the
    reconciler, which reads the record's due work from its status."""
    rt: Runtime = memo["runtime"]
    # kopf's index is a live object: the reconciler reads it between events.
    rt.indexes["remediations"] = remediations
    if event.get("type") == "DELETED":
        rt.driver.forget(namespace, name)
        return
    rt.wake.set()
