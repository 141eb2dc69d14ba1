"""The driver: runs the pure machine for every incident and executes its effects.

One incident is one (policy, workload, trigger), identified by its fingerprint. For
each event the driver, under a per-namespace lock (guardrails count across workloads):

1. finds the open Remediation record (its own cache first, then the records the
   handlers pass in from kopf's index, so a restarted operator resumes from the API);
2. calls ``machine.step`` with the facts the handlers gathered;
3. persists the new state *before* executing any ``Act``: a new record is created
   (the name is the lock: a 409 means another replica owns the incident), an
   existing one is patched with its ``resourceVersion`` (a 409 means somebody else
   moved it: the driver reloads and drops the effects of the stale decision);
4. executes the effects: actions (reported back as ``ActionDone``), Events, and
   ticket work, which runs in background tasks so a slow Jira never holds the lock.

Nothing here imports kopf; the handlers own the watches and call ``handle``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from selfheal import API_VERSION, metrics
from selfheal.actions import notify as notify_action
from selfheal.actions import restart as restart_action
from selfheal.actions import rollback as rollback_action
from selfheal.actions import scale as scale_action
from selfheal.actions import ticket as ticket_action
from selfheal.actions.result import ActionResult, failed
from selfheal.clients import kube as k
from selfheal.clients.jira import Jira
from selfheal.clients.notify import Notifier
from selfheal.detect.signal import WorkloadRef
from selfheal.policy.model import (
    HealingPolicy,
    Mode,
    RestartStep,
    RollbackStep,
    ScaleStep,
    Step,
    step_action,
)
from selfheal.remediation import machine, naming
from selfheal.remediation.guardrails import Availability, RecordSummary, trigger_name
from selfheal.remediation.state import (
    Phase,
    RemediationState,
    StepResult,
    parse_time,
    remediation_spec,
)

logger = logging.getLogger(__name__)

PLURAL = "remediations"
ACT_RETRIES = (1.0, 2.0, 4.0)
"""Seconds before each retry of a step whose action failed transiently, sending nothing."""
TEMPLATE_HASH_LABEL = "pod-template-hash"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Facts:
    """What the handlers know about the incident's surroundings, read from kopf indexes."""

    records: Sequence[Mapping[str, Any]] = ()
    """Remediation objects of the namespace (bodies or compact dicts with metadata,
    spec and status)."""
    unhealthy: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Workload name -> unix time it turned unhealthy (namespace-wide, storm brake)."""
    availability: Availability | None = None
    template_hash: str = ""
    """``pod-template-hash`` of the workload's newest ReplicaSet at detection time."""
    pod: str | None = None
    """The pod and container whose evidence goes into a ticket, when known."""
    container: str | None = None


@dataclasses.dataclass(kw_only=True)
class _Record:
    name: str
    namespace: str
    state: RemediationState | None
    resource_version: str | None
    spec: Mapping[str, Any]


EvidenceFn = Callable[..., Awaitable[tuple[str, str, Mapping[str, bytes], str]]]
"""``(policy, workload, trigger, state, facts) -> (summary, description, attachments,
short evidence summary)``: gathers and renders redacted evidence for a ticket."""


class Driver:
    def __init__(
        self,
        *,
        kube: k.Kube,
        jira: Jira | None = None,
        evidence: EvidenceFn | None = None,
        events: EventRecorder | None = None,
        clock: Callable[[], float] = time.time,
        ticket_horizon: float = ticket_action.GIVE_UP_AFTER,
        notifier: Notifier | None = None,
        failpoint: str = "",
    ) -> None:
        self.kube = kube
        self.jira = jira
        self.notifier = notifier
        self.evidence = evidence
        self.events = events or EventRecorder(kube=kube, clock=clock)
        self.clock = clock
        self.ticket_horizon = ticket_horizon
        """Seconds after the first attempt when ticket work is given up (loudly)."""
        self.failpoint = failpoint
        """Tests only (``Settings.failpoint``)."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._open: dict[str, _Record] = {}
        # Our own last write of each record: fresher than kopf's index for a moment.
        self._written: collections.OrderedDict[tuple[str, str], _Record] = collections.OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self._evidence: dict[tuple[str, str], tuple[str, str, Mapping[str, bytes], str]] = {}

    # --- public ----------------------------------------------------------------------

    async def handle(
        self,
        *,
        event: machine.Event,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
        name: str | None = None,
    ) -> RemediationState | None:
        """Apply one event to the incident of (policy, workload, trigger).

        ``name``: apply it to that record only (open or final; never a new one), as
        the results of ticket work and the periodic pass over stored records do.
        """
        fp = naming.fingerprint(
            namespace=workload.namespace,
            policy=policy.name,
            workload=workload.name,
            trigger=trigger,
        )
        # One decision at a time per namespace: guardrails that count (concurrency,
        # storm brake, rate limits) must see the decisions made just before.
        lock = self._locks.setdefault(workload.namespace, asyncio.Lock())
        async with lock:
            return await self._apply(fp, event, policy, workload, trigger, facts, name)

    def forget(self, namespace: str, name: str) -> None:
        """A Remediation was deleted (by hand, or pruned): drop everything held for it."""
        self._written.pop((namespace, name), None)
        self._evidence.pop((namespace, name), None)
        for fp, rec in list(self._open.items()):
            if (rec.namespace, rec.name) == (namespace, name):
                del self._open[fp]

    async def end(
        self,
        *,
        namespace: str,
        name: str,
        reason: machine.EndReason,
        facts: Facts,
        policy: HealingPolicy | None,
    ) -> RemediationState | None:
        """Close one open record from outside (its workload or policy is gone)."""
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        async with lock:
            record = self._find_named(namespace, name, facts)
            if record is None or record.state is None:
                return None
            state = record.state
            if reason is machine.EndReason.POLICY_DELETED and state.ticket.get("createSent"):
                # Without its policy no Jira project is known to search: the filing ends.
                state = dataclasses.replace(state, ticket={**state.ticket, "createSent": False})
            new, effects = machine.end(state, reason=reason, now=self.clock())
            if new is state:
                return state
            saved = await self._save_or_forget(record, new)
            if saved is None:
                return None
            logger.info("remediation %s/%s closed: %s", namespace, name, reason)
            self._run_effects_soon(effects, saved, policy=policy, facts=facts)
            return saved.state

    async def work(
        self, *, namespace: str, name: str, facts: Facts, policy: HealingPolicy | None
    ) -> None:
        """Run the ticket work due on a record whose policy is not served (gone or
        invalid): telling a filed ticket the incident ended needs no policy."""
        record = self._find_named(namespace, name, facts)
        if record is None or record.state is None:
            return
        effects = [
            e
            for e in machine.due_work(record.state, now=self.clock())
            if isinstance(e, machine.Resolve) or policy is not None
        ]
        self._run_effects_soon(effects, record, policy=policy, facts=facts)

    def open_incidents(self) -> dict[str, RemediationState]:
        """Fingerprint -> state of every open record this driver holds."""
        return {
            fp: r.state
            for fp, r in self._open.items()
            if r.state is not None and not r.state.phase.final
        }

    async def close(self) -> None:
        await self.events.drain()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self.notifier is not None:
            self.notifier.close()

    # --- the loop ----------------------------------------------------------------------

    async def _apply(
        self,
        fp: str,
        event: machine.Event,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
        target: str | None = None,
    ) -> RemediationState | None:
        # Bounded: each Act is reported once; a step never acts twice (machine rule).
        queue: list[machine.Event] = [event]
        if target is not None:
            record = self._find_named(workload.namespace, target, facts)
            if record is None:
                record = await self._fetch(workload.namespace, target)
            if record is None or record.state is None:
                return None  # deleted: a named event never creates a record
        else:
            record = self._find(fp, facts)
        conflicts = 0
        for _ in range(2 * len(policy.remediation.steps) + 8):
            if not queue:
                break
            ev = queue.pop(0)
            old = record.state if record else None
            if record is None:
                name = naming.remediation_name(
                    namespace=workload.namespace,
                    policy=policy.name,
                    workload=workload.name,
                    trigger=trigger,
                    ordinal=naming.next_ordinal(
                        existing=(_name_of(b) for b in facts.records), fingerprint=fp
                    ),
                )
            else:
                name = record.name
            context = machine.Context(
                workload=workload,
                trigger=trigger,
                name=name,
                records=_summaries(facts.records, self._open.values()),
                unhealthy=facts.unhealthy,
                availability=facts.availability,
            )
            now = self.clock()
            new, effects = machine.step(old, event=ev, policy=policy, context=context, now=now)
            if new is None:
                return None
            if new is not old and record is not None and _bookkeeping_only(old, new):
                # Only lastSignalAt moved: keep it in memory and spare the API a write
                # per pod event. After a restart an older value only means a signal is
                # not ignored as out of order, which is harmless.
                record.state = new
            elif new is not old:
                try:
                    record = await self._persist(
                        record,
                        new,
                        name=name,
                        fp=fp,
                        policy=policy,
                        workload=workload,
                        trigger=trigger,
                        facts=facts,
                    )
                except k.NotFound:
                    # Deleted by hand (or its namespace is going): forget it, act on nothing.
                    logger.info("remediation %s/%s is gone; forgotten", workload.namespace, name)
                    self.forget(workload.namespace, name)
                    return None
                except k.Conflict:
                    logger.info(
                        "remediation %s/%s changed under us; reloading", workload.namespace, name
                    )
                    self._open.pop(fp, None)
                    self._written.pop((workload.namespace, name), None)
                    record = await self._reload(fp, workload.namespace, name)
                    if isinstance(ev, machine.TicketDone) and record is not None and conflicts < 3:
                        # What Jira did is a fact, not a stale decision: record it on
                        # the fresh state.
                        conflicts += 1
                        queue.insert(0, ev)
                        continue
                    # Another writer owns or moved this incident: its decision stands.
                    return None
            assert record is not None
            if reverts_due(record.state, policy):
                # Due work read from the status, so a crash after Resolved still reverts.
                await self._revert_scales(record, policy, workload)
            for eff in effects:
                done = await self._execute(eff, record, policy, workload, trigger, facts)
                if done is not None:
                    queue.append(done)
        return record.state if record else None

    def _find(self, fp: str, facts: Facts) -> _Record | None:
        if (cached := self._open.get(fp)) is not None:
            return cached
        newest: Mapping[str, Any] | None = None
        for body in facts.records:
            labels = (body.get("metadata") or {}).get("labels") or {}
            if labels.get(naming.LABEL_FINGERPRINT) != fp:
                continue
            phase = (body.get("status") or {}).get("phase")
            if phase and Phase(phase).final:
                continue
            if newest is None or _ordinal(body) > _ordinal(newest):
                newest = body
        if newest is None:
            return None
        record = _from_body(newest)
        self._open[fp] = record
        return record

    def _find_named(self, namespace: str, name: str, facts: Facts) -> _Record | None:
        if (written := self._written.get((namespace, name))) is not None:
            return written
        for body in facts.records:
            if _name_of(body) == name:
                try:
                    return _from_body(body)
                except ValueError:
                    return None  # malformed: not ours to decide on
        return None

    async def _fetch(self, namespace: str, name: str) -> _Record | None:
        try:
            body = await self.kube.get(k.group(API_VERSION, namespace, PLURAL, name))
        except k.NotFound:
            return None
        return _from_body(body)

    async def _reload(self, fp: str, namespace: str, name: str) -> _Record | None:
        record = await self._fetch(namespace, name)
        if record is None:
            return None
        if record.state is not None and not record.state.phase.final:
            self._open[fp] = record
        return record

    def _remember(self, record: _Record) -> None:
        key = (record.namespace, record.name)
        self._written[key] = record
        self._written.move_to_end(key)
        while len(self._written) > 4096:
            self._written.popitem(last=False)

    async def _save_or_forget(self, record: _Record, new: RemediationState) -> _Record | None:
        try:
            return await self._save(record, new)
        except k.NotFound:
            self.forget(record.namespace, record.name)
            return None
        except k.Conflict:
            self._written.pop((record.namespace, record.name), None)
            return None

    async def _persist(
        self,
        record: _Record | None,
        new: RemediationState,
        *,
        name: str,
        fp: str,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
    ) -> _Record:
        ns = workload.namespace
        if record is None:
            trig = policy.trigger(trigger)
            spec = remediation_spec(
                policy=policy.name,
                workload=workload,
                trigger=trigger,
                trigger_kind=trig.kind if trig else "",
            )
            spec["fingerprint"] = fp
            if facts.template_hash:
                spec["workload"]["templateHash"] = facts.template_hash
            body = {
                "apiVersion": API_VERSION,
                "kind": "Remediation",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": naming.labels(
                        namespace=ns,
                        policy=policy.name,
                        workload=workload.name,
                        trigger=trigger,
                    ),
                },
                "spec": spec,
            }
            # Creating the record is the lock: a 409 means another replica has it.
            created = await self.kube.create(k.group(API_VERSION, ns, PLURAL), body)
            record = _Record(
                name=name,
                namespace=ns,
                state=None,
                resource_version=created["metadata"]["resourceVersion"],
                spec=spec,
            )
        return await self._save(record, new)

    async def _save(self, record: _Record, new: RemediationState) -> _Record:
        """Write ``new`` as the record's status, guarded by its resourceVersion."""
        status = new.to_status()
        # A merge patch keeps keys it does not name: null the ones a ticket or a
        # resolution no longer has (a filed ticket has no retryAt).
        for field, keys in (("ticket", _TICKET_KEYS), ("resolution", _RESOLUTION_KEYS)):
            status[field] = {**dict.fromkeys(keys), **status[field]}
        patch = {"metadata": {"resourceVersion": record.resource_version}, "status": status}
        out = await self.kube.patch(
            k.group(API_VERSION, record.namespace, PLURAL, record.name),
            patch,
            subresource="status",
        )
        was_final = record.state is not None and record.state.phase.final
        record.state = new
        record.resource_version = out["metadata"]["resourceVersion"]
        fp = str(record.spec.get("fingerprint") or "")
        if new.phase.final:
            if self._open.get(fp) is record:
                del self._open[fp]
            if new.phase is Phase.RESOLVED and not was_final:
                metrics.TIME_TO_RESOLVE.observe(max(0.0, (new.closed_at or 0) - new.detected_at))
        elif fp:
            self._open[fp] = record
        self._remember(record)
        return record

    # --- effects -------------------------------------------------------------------------

    async def _execute(
        self,
        eff: machine.Effect,
        record: _Record,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
    ) -> machine.Event | None:
        if isinstance(eff, machine.Emit):
            if eff.guardrail:
                metrics.GUARDRAIL_REFUSALS.labels(eff.guardrail).inc()
            # Off the decision path: an Event must not delay the action it reports.
            self.events.emit_soon(
                namespace=workload.namespace,
                involved=[
                    _ref("Remediation", API_VERSION, workload.namespace, record.name),
                    _ref(workload.kind, "apps/v1", workload.namespace, workload.name, workload.uid),
                ],
                reason=str(eff.reason),
                message=eff.message,
                type=str(eff.type),
            )
            return None
        if isinstance(eff, machine.Act):
            result = await self._act(eff, policy, workload, record, facts)
            for delay in ACT_RETRIES:
                # A transient error before anything was sent (429, 5xx, a lost race):
                # the same step again, not the next one. Once a patch went out its
                # outcome is ambiguous, and the step's deadline decides instead.
                if result.ok or not result.retryable or result.change.get("patch"):
                    break
                logger.info(
                    "%s: %s retried in %.0fs: %s", workload, record.name, delay, result.message
                )
                await asyncio.sleep(delay)
                result = await self._act(eff, policy, workload, record, facts)
            if self.failpoint == "after-action":
                logger.warning("failpoint after-action: stopped before storing the outcome")
                await asyncio.Event().wait()  # a test kills the process here
            metrics.REMEDIATIONS.labels(result.action, str(result.result)).inc()
            logger.info(
                "%s: %s step %d (%s) %s: %s",
                workload,
                record.name,
                eff.index + 1,
                result.action,
                result.result,
                result.message,
            )
            return machine.ActionDone(
                index=eff.index,
                result=StepResult(str(result.result)),
                message=result.message,
                change=_status_change(result.change),
            )
        if isinstance(eff, machine.Escalate):
            self._spawn(
                record,
                "ticket",
                functools.partial(
                    self._ticket_attempt, eff, record, policy, workload, trigger, facts
                ),
            )
            return None
        if isinstance(eff, machine.Resolve):
            self._spawn(
                record,
                "resolve",
                functools.partial(self._resolve_attempt, eff, record, policy, facts),
            )
            return None
        if isinstance(eff, machine.Notify):
            self._spawn(
                record,
                f"notify-{eff.kind}",
                functools.partial(self._notify_attempt, eff, record, policy, facts),
            )
            return None
        raise TypeError(f"unknown effect {eff!r}")

    def _run_effects_soon(
        self,
        effects: Sequence[machine.Effect],
        record: _Record,
        *,
        policy: HealingPolicy | None,
        facts: Facts,
    ) -> None:
        """Events and ticket work of a record handled without its policy's machine."""
        spec_wl = record.spec.get("workload") or {}
        workload = WorkloadRef(
            namespace=record.namespace,
            name=str(spec_wl.get("name") or ""),
            uid=str(spec_wl.get("uid") or ""),
        )
        for eff in effects:
            if isinstance(eff, machine.Emit):
                self.events.emit_soon(
                    namespace=record.namespace,
                    involved=[_ref("Remediation", API_VERSION, record.namespace, record.name)],
                    reason=str(eff.reason),
                    message=eff.message,
                    type=str(eff.type),
                )
            elif isinstance(eff, machine.Resolve):
                self._spawn(
                    record,
                    "resolve",
                    functools.partial(self._resolve_attempt, eff, record, policy, facts),
                )
            elif isinstance(eff, machine.Notify) and policy is not None:
                self._spawn(
                    record,
                    f"notify-{eff.kind}",
                    functools.partial(self._notify_attempt, eff, record, policy, facts),
                )
            elif isinstance(eff, machine.Escalate) and policy is not None:
                trigger = trigger_name(record.spec)
                self._spawn(
                    record,
                    "ticket",
                    functools.partial(
                        self._ticket_attempt, eff, record, policy, workload, trigger, facts
                    ),
                )

    async def _act(
        self,
        eff: machine.Act,
        policy: HealingPolicy,
        workload: WorkloadRef,
        record: _Record,
        facts: Facts,
    ) -> ActionResult:
        step: Step = eff.step
        ns, name = workload.namespace, workload.name
        cause = f"selfheal: {policy.name}/{record.name} step {eff.index + 1} ({step_action(step)})"
        try:
            if isinstance(step, RollbackStep):
                return await rollback_action.rollback(
                    kube=self.kube,
                    namespace=ns,
                    name=name,
                    to=step.to,
                    known_bad=_known_bad(workload, facts, record),
                    allow_gitops=policy.guardrails.allow_gitops,
                    dry_run=eff.dry_run,
                    change_cause=cause,
                )
            if isinstance(step, ScaleStep):
                return await scale_action.scale(
                    kube=self.kube,
                    namespace=ns,
                    name=name,
                    by=step.by,
                    max_replicas=step.max,
                    dry_run=eff.dry_run,
                )
            if isinstance(step, RestartStep):
                return await restart_action.restart(
                    kube=self.kube,
                    namespace=ns,
                    name=name,
                    dry_run=eff.dry_run,
                    requested_at=datetime.datetime.fromtimestamp(self.clock(), datetime.UTC),
                )
        except k.KubeError as e:
            # Actions report API errors themselves; this is the last line of defence.
            return failed(step_action(step), e, doing=step_action(step), change={})
        raise TypeError(f"unknown step {step!r}")

    async def _revert_scales(
        self, record: _Record, policy: HealingPolicy, workload: WorkloadRef
    ) -> None:
        """After a verified heal, undo scale steps whose policy asks for it; each undo is
        recorded in its step's change (``reverted``), so it is done once."""
        state = record.state
        assert state is not None
        steps = list(state.steps)
        for i, rec in enumerate(steps):
            if not _revert_wanted(rec, policy):
                continue
            result = await scale_action.revert_scale(
                kube=self.kube,
                namespace=workload.namespace,
                name=workload.name,
                change=rec.change,
                dry_run=policy.mode is Mode.DRY_RUN,
            )
            metrics.REMEDIATIONS.labels(result.action, str(result.result)).inc()
            logger.info("%s: %s", workload, result.message)
            if not result.ok and result.retryable:
                continue  # the API failed: the next pass tries again
            steps[i] = dataclasses.replace(
                rec, change={**rec.change, "reverted": str(result.result)}
            )
        new = dataclasses.replace(state, steps=tuple(steps))
        if new != state:
            await self._save_or_forget(record, new)

    async def prune(self, *, records: Sequence[Mapping[str, Any]], retention: float) -> int:
        """Delete Resolved and Closed records older than ``retention`` seconds; how many."""
        now, pruned = self.clock(), 0
        for body in records:
            status = body.get("status") or {}
            if status.get("phase") not in (Phase.RESOLVED, Phase.CLOSED):
                continue
            closed = parse_time(status.get("closedAt"), field="status.closedAt")
            if closed is None or now - closed < retention:
                continue
            try:
                if machine.work_wakeup(RemediationState.from_status(status), now=now):
                    continue  # its ticket still has to be filed or told: keep the record
            except ValueError:
                continue  # not written by selfheal: not ours to delete
            meta = body.get("metadata") or {}
            try:
                await self.kube.delete(
                    k.group(API_VERSION, meta.get("namespace", ""), PLURAL, meta.get("name", ""))
                )
                pruned += 1
            except k.NotFound:
                pass
            except k.KubeError as e:
                logger.warning("pruning remediation %s: %s", meta.get("name"), e)
        return pruned

    def _spawn(
        self, record: _Record, kind: str, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Run one attempt of a record's ticket work in the background, one at a time
        per (record, kind): passes re-derive the work from status until it is done."""
        key = f"{record.namespace}/{record.name}/{kind}"
        running = self._tasks.get(key)
        if running is not None and not running.done():
            return
        failures, until = self._failures.get(key, (0, 0.0))
        if self.clock() < until:
            return  # this record's work failed lately: others go on, it waits its backoff

        async def guarded() -> None:
            try:
                await work()
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Isolation: one record's failure is retried with backoff and reported
                # on that record; nothing else stops.
                delay = min(5.0 * 2.0**failures, 300.0)
                self._failures[key] = (failures + 1, self.clock() + delay)
                metrics.RECONCILE_ERRORS.labels(kind).inc()
                logger.exception("%s for remediation %s failed; retried in %.0fs", kind, key, delay)
                self.events.emit_soon(
                    namespace=record.namespace,
                    involved=[_ref("Remediation", API_VERSION, record.namespace, record.name)],
                    reason="ReconcileError",
                    message=f"{kind}: {type(e).__name__}: {e}; retried in {delay:.0f}s"[:1024],
                    type="Warning",
                )
            finally:
                self._tasks.pop(key, None)

        self._tasks[key] = asyncio.create_task(guarded(), name=key)

    def _current(self, record: _Record) -> RemediationState | None:
        fresh = self._written.get((record.namespace, record.name))
        return (fresh or record).state

    async def _ticket_attempt(
        self,
        eff: machine.Escalate,
        record: _Record,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
    ) -> None:
        """One attempt to file the incident's ticket; the result goes into its status."""
        escalation = policy.remediation.jira
        state = self._current(record)
        if state is None:
            return
        key = (record.namespace, record.name)

        async def report(ticket: Mapping[str, object]) -> RemediationState | None:
            return await self.handle(
                event=machine.TicketDone(ticket=ticket),
                policy=policy,
                workload=workload,
                trigger=trigger,
                facts=facts,
                name=record.name,
            )

        if self.jira is None or escalation is None:
            why = (
                "Jira is not configured (settings: jira_url)"
                if self.jira is None
                else ("the policy has no remediation.escalate.jira")
            )
            await report({"state": "Failed", "lastError": why})
            return
        if self.evidence is None:
            raise RuntimeError("driver: evidence collector missing")
        if key not in self._evidence:
            self._evidence[key] = await self.evidence(
                policy=policy,
                workload=workload,
                trigger=trigger,
                state=state,
                facts=facts,
                reason=eff.reason,
                related=eff.related,
            )
        summary, description, attachments, short = self._evidence[key]
        fp = str(record.spec.get("fingerprint") or "")
        try:
            pending = ticket_action.PendingTicket.from_status(state.ticket)
        except ValueError as e:
            logger.warning("remediation %s/%s: %s; filing afresh", *key, e)
            pending = None

        async def record_intent(p: ticket_action.PendingTicket) -> None:
            saved = await report({**p.to_status(), "evidenceSummary": short})
            if saved is None or saved.ticket.get("createMarker") != p.create_marker:
                raise RuntimeError("the intent to create a ticket could not be stored")

        outcome = await ticket_action.escalate(
            jira=self.jira,
            escalation=escalation,
            fingerprint=fp,
            summary=summary,
            description=description,
            attachments=attachments,
            pending=pending,
            now=self.clock(),
            record_intent=record_intent,
            horizon=self.ticket_horizon,
        )
        logger.info(
            "%s: %s ticket %s%s",
            workload,
            record.name,
            outcome.state,
            f" {outcome.key}"
            if outcome.key
            else f" (attempt {outcome.attempts}: {outcome.last_error})",
        )
        status = dict(outcome.to_status())
        status["evidenceSummary"] = short
        if outcome.pending is None:
            self._evidence.pop(key, None)
        await report(status)

    async def _resolve_attempt(
        self,
        eff: machine.Resolve,
        record: _Record,
        policy: HealingPolicy | None,
        facts: Facts,
    ) -> None:
        """One attempt to tell the ticket the incident ended (comment, transition)."""
        state = self._current(record)
        if state is None:
            return
        key = str(state.ticket.get("key") or "")
        if not key:
            return
        jira_cfg = policy.remediation.jira if policy is not None else None
        transition = jira_cfg.resolve_transition if (eff.recovered and jira_cfg) else None
        before = state.resolution
        now = self.clock()
        if self.jira is None:
            status: dict[str, Any] = {
                **before,
                "state": "Failed",
                "lastError": "Jira is not configured (settings: jira_url)",
            }
        else:
            raw_attempts = before.get("attempts")
            out = await ticket_action.resolve(
                jira=self.jira,
                key=key,
                comment=eff.message,
                transition=transition,
                now=now,
                attempts=raw_attempts if isinstance(raw_attempts, int) else 0,
            )
            status = ticket_action.resolution_status(
                out, before=before, now=now, horizon=self.ticket_horizon
            )
        await self._record_resolution(record, status, facts)

    async def _notify_attempt(
        self, eff: machine.Notify, record: _Record, policy: HealingPolicy, facts: Facts
    ) -> None:
        """One attempt at one notification; the outcome goes into status.notifications."""
        state = self._current(record)
        if state is None:
            return
        kind = notify_action.Kind(eff.kind)
        entry = machine.notification(state, eff.kind) or notify_action.pending(kind)
        cfg = policy.remediation.notify
        now = self.clock()
        if self.notifier is None or cfg is None:
            why = (
                "notifications are off in this operator"
                if self.notifier is None
                else "the policy has no remediation.escalate.notify"
            )
            outcome = notify_action.Outcome(
                entry={**entry, "state": "Failed", "lastError": why}, gave_up=False
            )
        else:
            outcome = await notify_action.attempt(
                notifier=self.notifier,
                kube=self.kube,
                namespace=record.namespace,
                ref=cfg.secret_ref,
                msg=notify_action.message(kind, _incident(record, state)),
                entry=entry,
                now=now,
                horizon=self.ticket_horizon,
            )
        new = outcome.entry
        logger.info(
            "remediation %s/%s: notification %s %s (attempt %s)%s",
            record.namespace,
            record.name,
            kind,
            new.get("state"),
            new.get("attempts"),
            f": {new['lastError']}" if new.get("lastError") else "",
        )
        if new.get("state") in ("Sent", "Failed"):
            failed = new.get("state") == "Failed"
            self.events.emit_soon(
                namespace=record.namespace,
                involved=[_ref("Remediation", API_VERSION, record.namespace, record.name)],
                reason="NotificationFailed" if failed else "Notified",
                message=(
                    f"{kind} notification not sent: {new.get('lastError')}"
                    if failed
                    else f"{kind} notification sent to {len(new.get('delivered') or ())} target(s)"
                )[:1024],
                type="Warning" if failed else "Normal",
            )
        await self._record_notification(record, new, facts)

    async def _record_notification(
        self, record: _Record, entry: Mapping[str, Any], facts: Facts
    ) -> None:
        def put(state: RemediationState) -> RemediationState:
            others = [n for n in state.notifications if n.get("kind") != entry.get("kind")]
            return dataclasses.replace(state, notifications=(*others, dict(entry)))

        await self._record(record, put, facts)

    async def _record_resolution(
        self, record: _Record, resolution: Mapping[str, Any], facts: Facts
    ) -> None:
        await self._record(
            record, lambda state: dataclasses.replace(state, resolution=dict(resolution)), facts
        )

    async def _record(
        self,
        record: _Record,
        change: Callable[[RemediationState], RemediationState],
        facts: Facts,
    ) -> None:
        """Store what ticket or notification work did, on the freshest state: a fact,
        not a decision, so a conflict re-reads and applies it again."""
        lock = self._locks.setdefault(record.namespace, asyncio.Lock())
        async with lock:
            for _ in range(3):
                current = self._find_named(record.namespace, record.name, facts)
                if current is None:
                    current = await self._fetch(record.namespace, record.name)
                if current is None or current.state is None:
                    return
                try:
                    await self._save(current, change(current.state))
                    return
                except k.NotFound:
                    self.forget(record.namespace, record.name)
                    return
                except k.Conflict:
                    self._written.pop((record.namespace, record.name), None)
                    facts = Facts()  # the index may be stale too: read the API


# --- Events ---------------------------------------------------------------------------------


class EventRecorder:
    """Kubernetes Events, rate-limited so an incident cannot flood the namespace.

    The same (object, reason, message) is posted at most once per ``window`` seconds;
    at most ``burst`` Events per ``window`` per namespace in all.
    """

    def __init__(
        self,
        *,
        kube: k.Kube,
        clock: Callable[[], float] = time.time,
        window: float = 60.0,
        burst: int = 30,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.window = window
        self.burst = burst
        self._seen: dict[tuple[str, str, str], float] = {}
        self._recent: dict[str, list[float]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.suppressed = 0

    def allow(self, *, namespace: str, key: tuple[str, str, str]) -> bool:
        now = self.clock()
        if now - self._seen.get(key, -1e18) < self.window:
            return False
        recent = [t for t in self._recent.get(namespace, []) if now - t < self.window]
        if len(recent) >= self.burst:
            self._recent[namespace] = recent
            return False
        recent.append(now)
        self._recent[namespace] = recent
        self._seen[key] = now
        if len(self._seen) > 4096:  # bounded memory: forget the oldest half
            for old in sorted(self._seen, key=self._seen.__getitem__)[:2048]:
                del self._seen[old]
        return True

    def emit_soon(
        self,
        *,
        namespace: str,
        involved: Sequence[Mapping[str, str]],
        reason: str,
        message: str,
        type: str,
    ) -> None:
        """Post in a background task; ``drain`` waits for the ones in flight."""
        task = asyncio.create_task(
            self.emit(
                namespace=namespace, involved=involved, reason=reason, message=message, type=type
            )
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def emit(
        self,
        *,
        namespace: str,
        involved: Sequence[Mapping[str, str]],
        reason: str,
        message: str,
        type: str,
    ) -> None:
        stamp = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        for obj in involved:
            key = (f"{obj['kind']}/{obj['name']}", reason, message)
            if not self.allow(namespace=namespace, key=key):
                self.suppressed += 1
                continue
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{obj['name'][:200]}.", "namespace": namespace},
                "involvedObject": dict(obj),
                "reason": reason,
                "message": message[:1024],
                "type": type,
                "source": {"component": "selfheal"},
                "reportingComponent": "selfheal.dev/operator",
                "reportingInstance": "selfheal",
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            try:
                await self.kube.create(k.core(namespace, "events"), body)
            except k.KubeError as e:
                # Events are best effort: never let them fail a remediation.
                logger.warning("event %s on %s not posted: %s", reason, obj["name"], e)


# --- helpers ----------------------------------------------------------------------------

_TICKET_KEYS = (
    *ticket_action.PendingTicket(fingerprint="-").to_status(),
    "attached",
    "gaveUp",
    "evidenceSummary",
)
_RESOLUTION_KEYS = (
    "state",
    "message",
    "recovered",
    "attempts",
    "firstAttemptAt",
    "retryAt",
    "lastError",
)


def _revert_wanted(rec: Any, policy: HealingPolicy) -> bool:
    steps = policy.remediation.steps
    spec = steps[rec.index] if rec.index < len(steps) else None
    return (
        isinstance(spec, ScaleStep)
        and spec.revert_after_recovery
        and rec.result is StepResult.SUCCEEDED
        and bool(rec.change.get("target"))
        and not rec.change.get("reverted")
    )


def reverts_due(state: RemediationState | None, policy: HealingPolicy) -> bool:
    """A verified heal has scale steps still to undo."""
    if state is None or state.phase is not Phase.RESOLVED:
        return False
    return any(_revert_wanted(rec, policy) for rec in state.steps)


def _incident(record: _Record, state: RemediationState) -> notify_action.Incident:
    """What a notification tells, from the record's spec and stored status."""
    spec = record.spec
    ticket = state.ticket
    return notify_action.Incident(
        namespace=record.namespace,
        workload=str((spec.get("workload") or {}).get("name") or ""),
        policy=str(spec.get("policy") or ""),
        remediation=record.name,
        trigger=trigger_name(spec),
        cause=state.cause,
        detail=state.detail,
        reason=state.escalation_reason,
        tried=tuple(machine.step_line(s) for s in state.steps),
        ticket_key=str(ticket.get("key") or ""),
        ticket_url=str(ticket.get("url") or ""),
        ticket_state=str(ticket.get("state") or ""),
        ticket_error=str(ticket.get("lastError") or ""),
        evidence=str(ticket.get("evidenceSummary") or ""),
        ending=state.verification.message if state.verification is not None else "",
    )


def _bookkeeping_only(old: RemediationState | None, new: RemediationState) -> bool:
    if old is None:
        return False
    return dataclasses.replace(new, last_signal_at=old.last_signal_at) == old


def _status_change(change: Mapping[str, Any]) -> dict[str, Any]:
    """An action's change as the Remediation status stores it: the patch as JSON text,
    revisions as strings, nothing null."""
    out: dict[str, Any] = {}
    for key, value in change.items():
        if value is None:
            continue
        if key == "patch" and not isinstance(value, str):
            value = json.dumps(value, sort_keys=True)
        elif key in ("fromRevision", "toRevision"):
            value = str(value)
        out[key] = value
    return out


def _ref(kind: str, api: str, namespace: str, name: str, uid: str = "") -> dict[str, str]:
    ref = {"kind": kind, "apiVersion": api, "namespace": namespace, "name": name}
    if uid:
        ref["uid"] = uid
    return ref


def _name_of(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


def _ordinal(body: Mapping[str, Any]) -> int:
    tail = _name_of(body).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _from_body(body: Mapping[str, Any]) -> _Record:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return _Record(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        state=RemediationState.from_status(status) if status.get("phase") else None,
        resource_version=meta.get("resourceVersion"),
        spec=body.get("spec") or {},
    )


def _summaries(bodies: Sequence[Mapping[str, Any]], cached: Any) -> list[RecordSummary]:
    """Guardrail summaries: the index's records, overridden by fresher cached states."""
    fresh: dict[str, RecordSummary] = {}
    for body in bodies:
        try:
            summary = RecordSummary.from_body(body)
        except ValueError:
            continue  # not written by selfheal (or not yet given a status)
        fresh[summary.name] = summary
    for rec in cached:
        if rec.state is None:
            continue
        spec = rec.spec
        fresh[rec.name] = RecordSummary.from_state(
            rec.state,
            namespace=rec.namespace,
            name=rec.name,
            policy=str(spec.get("policy")),
            workload=str((spec.get("workload") or {}).get("name")),
            trigger=trigger_name(spec),
        )
    return list(fresh.values())


def _known_bad(workload: WorkloadRef, facts: Facts, record: _Record) -> frozenset[str]:
    own = (record.spec.get("workload") or {}).get("templateHash")
    return known_bad_hashes(workload, facts.records, own=str(own or ""))


def known_bad_hashes(
    workload: WorkloadRef, records: Sequence[Mapping[str, Any]], *, own: str
) -> frozenset[str]:
    """Pod-template hashes with evidence that the release is bad.

    This incident's own hash (a rollback must be able to move away from it); hashes
    whose pods crash-looped, unless that incident healed without a rollback; hashes a
    rollback healed away from. A metric incident that no rollback healed (a dependency
    outage) says nothing about the release it happened on.
    """
    bad = set()
    if own:
        bad.add(own)
    for body in records:
        spec = body.get("spec") or {}
        wl = spec.get("workload") or {}
        if wl.get("name") != workload.name or not wl.get("templateHash"):
            continue
        trig = spec.get("trigger")
        kind = trig.get("kind") if isinstance(trig, Mapping) else ""
        status = body.get("status") or {}
        rolled_back = any(
            s.get("action") == "rollback" and s.get("result") == "Succeeded"
            for s in status.get("steps") or ()
        )
        resolved = status.get("phase") == Phase.RESOLVED
        if (resolved and rolled_back) or (kind == "crashLoop" and not resolved):
            bad.add(str(wl["templateHash"]))
    return frozenset(bad)
