"""The driver: runs the pure machine for every incident and executes its effects.

One incident is one (policy, workload, trigger), identified by its fingerprint. For
each event the driver, under a per-namespace lock (guardrails count across workloads):

1. finds the open Remediation record (its own last writes first, then the records
   the handlers pass in from the watch cache, so a restarted operator resumes from
   the API);
2. calls ``machine.step`` with the facts the handlers gathered;
3. persists the new state *before* executing any ``Act``: a new record is created
   carrying it (the name is the lock: a 409 means another replica owns the incident;
   the state rides in the ``INITIAL_STATUS`` annotation, as the API server drops
   ``.status`` on a create, and for a Deployment's action the status is first written
   with the action's outcome, so the create is the only write before the patch), an
   existing one is patched with its ``resourceVersion`` (a 409 means somebody else
   moved it: the driver reloads and drops the effects of the stale decision);
4. executes the effects: actions (``acting``, reported back as ``ActionDone``),
   Events (``events``), and ticket and notification work (``work``), which runs in
   background tasks so a slow Jira never holds the lock.

Nothing here imports kopf; the handlers own the watches and call ``handle``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from selfheal import API_VERSION, metrics
from selfheal.actions import ticket as ticket_action
from selfheal.clients import kube as k
from selfheal.clients.jira import Jira
from selfheal.clients.notify import Notifier
from selfheal.detect.signal import WorkloadRef
from selfheal.policy.model import HealingPolicy
from selfheal.remediation import acting, dependency_gate, machine, naming
from selfheal.remediation.acting import reverts_due
from selfheal.remediation.dependency_probe import DependencyProbe
from selfheal.remediation.events import EventRecorder, obj_ref
from selfheal.remediation.facts import Facts
from selfheal.remediation.records import INITIAL_STATUS, Record, Records
from selfheal.remediation.state import Phase, RemediationState, remediation_spec
from selfheal.remediation.work import EvidenceFn, Work

logger = logging.getLogger(__name__)

PLURAL = "remediations"


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
        dependencies: DependencyProbe | None = None,
    ) -> None:
        self.kube = kube
        self.dependencies = dependencies
        """Gathers dependency facts for policies with ``remediation.dependencies``."""
        self.jira = jira
        self.events = events or EventRecorder(kube=kube, clock=clock)
        self.clock = clock
        self.ticket_horizon = ticket_horizon
        """Seconds after the first attempt when ticket work is given up (loudly)."""
        self.failpoint = failpoint
        """Tests only (``Settings.failpoint``)."""
        self.background = Work(
            ledger=self,
            kube=kube,
            events=self.events,
            clock=clock,
            horizon=ticket_horizon,
            jira=jira,
            notifier=notifier,
            evidence=evidence,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        # fingerprint -> the open record of the incident, as last read or written.
        self._open: dict[str, Record] = {}
        # Our own last write of each record: fresher than the watch cache for a moment.
        self._written: collections.OrderedDict[tuple[str, str], Record] = collections.OrderedDict()

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
        async with self._lock(workload.namespace):
            return await self._apply(fp, event, policy, workload, trigger, facts, name)

    def forget(self, namespace: str, name: str) -> None:
        """A Remediation was deleted (by hand, or pruned): drop everything held for it."""
        self._written.pop((namespace, name), None)
        self.background.forget(namespace, name)
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
        async with self._lock(namespace):
            record = self._named(namespace, name, facts)
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
        record = self._named(namespace, name, facts)
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
        return {fp: r.state for fp, r in self._open.items() if r.is_open and r.state is not None}

    async def prune(self, *, records: Records, retention: float) -> int:
        """Delete Resolved and Closed records older than ``retention`` seconds whose
        ticket work is done; how many."""
        pruned = 0
        for r in records.prunable(now=self.clock(), retention=retention):
            try:
                await self.kube.delete(k.group(API_VERSION, r.namespace, PLURAL, r.name))
                pruned += 1
            except k.NotFound:
                pass
            except k.KubeError as e:
                logger.warning("pruning remediation %s: %s", r.name, e)
        return pruned

    async def close(self) -> None:
        await self.events.drain()
        await self.background.close()
        if self.dependencies is not None:
            await self.dependencies.close()

    # --- the Ledger the background work writes through -----------------------------------

    def current(self, record: Record) -> RemediationState | None:
        fresh = self._written.get((record.namespace, record.name))
        return (fresh or record).state

    async def record(
        self,
        record: Record,
        change: Callable[[RemediationState], RemediationState],
        facts: Facts,
    ) -> None:
        """Store what ticket or notification work did, on the freshest state: a fact,
        not a decision, so a conflict re-reads and applies it again."""
        async with self._lock(record.namespace):
            for _ in range(3):
                current = self._named(record.namespace, record.name, facts)
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
                    facts = Facts()  # the cache may be stale too: read the API

    # --- the loop ----------------------------------------------------------------------

    def _lock(self, namespace: str) -> asyncio.Lock:
        return self._locks.setdefault(namespace, asyncio.Lock())

    def _dependency_facts(
        self,
        state: RemediationState | None,
        policy: HealingPolicy,
        workload: WorkloadRef,
        facts: Facts,
    ) -> dependency_gate.DependencyFacts | None:
        """Facts for the dependency gate, only where a step may start (never awaited)."""
        if self.dependencies is None or not dependency_gate.wanted(policy):
            return None
        if state is not None and state.phase is not Phase.DETECTED:
            return None
        return self.dependencies.facts(
            workload,
            since=dependency_gate.fresh_since(state, now=self.clock()),
            pod=facts.pod,
            container=facts.container,
        )

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
        record: Record | None
        if target is not None:
            record = self._named(workload.namespace, target, facts)
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
            name = (
                record.name
                if record is not None
                else facts.records.next_name(
                    namespace=workload.namespace,
                    policy=policy.name,
                    workload=workload.name,
                    trigger=trigger,
                    fingerprint=fp,
                )
            )
            context = machine.Context(
                workload=workload,
                trigger=trigger,
                name=name,
                records=self._summaries(workload.namespace, facts),
                unhealthy=facts.unhealthy,
                availability=facts.availability,
                dependencies=self._dependency_facts(old, policy, workload, facts),
            )
            new, effects = machine.step(
                old, event=ev, policy=policy, context=context, now=self.clock()
            )
            if new is None:
                return None
            if new is not old and record is not None and _bookkeeping_only(old, new):
                # Only lastSignalAt moved: keep it in memory and spare the API a write
                # per pod event. After a restart an older value only means a signal is
                # not ignored as out of order, which is harmless.
                record = dataclasses.replace(record, state=new)
                if self._open.get(fp, record).name == record.name:
                    self._open[fp] = record
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
                        status_after=_quick_act(effects, new, workload),
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
                record = await self._revert_scales(record, policy, workload) or record
            # Events after the action they report: nothing but the patch on its way.
            acting_now = any(isinstance(e, machine.Act) for e in effects)
            for eff in sorted(effects, key=lambda e: acting_now and isinstance(e, machine.Emit)):
                done = await self._execute(eff, record, policy, workload, trigger, facts)
                if done is not None:
                    queue.append(done)
        return record.state if record else None

    def _summaries(self, namespace: str, facts: Facts) -> list[Any]:
        """Guardrail summaries: the cache's records, overridden by the fresher open
        records this driver holds."""
        mine = [r for r in self._open.values() if r.namespace == namespace]
        return facts.records.overlaid(mine).summaries()

    def _find(self, fp: str, facts: Facts) -> Record | None:
        if (cached := self._open.get(fp)) is not None:
            return cached
        record = facts.records.current(fp)
        if record is not None:
            self._open[fp] = record
        return record

    def _named(self, namespace: str, name: str, facts: Facts) -> Record | None:
        if (written := self._written.get((namespace, name))) is not None:
            return written
        record = facts.records.named(name)
        return None if record is None or record.problem else record

    async def _fetch(self, namespace: str, name: str) -> Record | None:
        try:
            body = await self.kube.get(k.group(API_VERSION, namespace, PLURAL, name))
        except k.NotFound:
            return None
        record = Record.from_body(body)
        return None if record.problem else record

    async def _reload(self, fp: str, namespace: str, name: str) -> Record | None:
        record = await self._fetch(namespace, name)
        if record is not None and record.is_open:
            self._open[fp] = record
        return record

    def _remember(self, record: Record) -> None:
        key = (record.namespace, record.name)
        self._written[key] = record
        self._written.move_to_end(key)
        while len(self._written) > 4096:
            self._written.popitem(last=False)

    async def _save_or_forget(self, record: Record, new: RemediationState) -> Record | None:
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
        record: Record | None,
        new: RemediationState,
        *,
        name: str,
        fp: str,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
        status_after: bool = False,
    ) -> Record:
        """Store ``new``: a new record is created carrying it (``INITIAL_STATUS``), then
        given it as its status; an existing one is patched.

        ``status_after``: a new record's status write is left to the outcome of the
        action that follows (its ``ActionDone``), so the create is the only write before
        the action; until then the annotation is the stored intent.
        """
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
                    # The API server drops .status on a create: the decided status goes
                    # in with it, read back (Record.from_body) until a status is written.
                    "annotations": {
                        INITIAL_STATUS: json.dumps(new.to_status(), separators=(",", ":"))
                    },
                },
                "spec": spec,
            }
            # Creating the record is the lock: a 409 means another replica has it.
            created = await self.kube.create(k.group(API_VERSION, ns, PLURAL), body)
            record = Record(
                namespace=ns,
                name=name,
                resource_version=created["metadata"]["resourceVersion"],
                fingerprint=fp,
                spec=spec,
            )
            if status_after:
                # Stored as created: the outcome's write is guarded by this version.
                saved = record.saved(new, record.resource_version)
                self._open[fp] = saved
                self._remember(saved)
                return saved
        return await self._save(record, new)

    async def _save(self, record: Record, new: RemediationState) -> Record:
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
        was_final = record.final
        saved = record.saved(new, out["metadata"]["resourceVersion"])
        fp = record.fingerprint
        if new.phase.final:
            if (cached := self._open.get(fp)) is not None and cached.name == record.name:
                del self._open[fp]
            if new.phase is Phase.RESOLVED and not was_final:
                metrics.TIME_TO_RESOLVE.observe(max(0.0, (new.closed_at or 0) - new.detected_at))
        elif fp:
            self._open[fp] = saved
        self._remember(saved)
        return saved

    # --- effects -------------------------------------------------------------------------

    async def _execute(
        self,
        eff: machine.Effect,
        record: Record,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
    ) -> machine.Event | None:
        if isinstance(eff, machine.Emit):
            if eff.guardrail:
                metrics.GUARDRAIL_REFUSALS.labels(eff.guardrail).inc()
            # Off the decision path: an Event must not delay the action it reports.
            self._emit(eff, record, workload)
            return None
        if isinstance(eff, machine.Act):
            result = await acting.act(
                self.kube,
                eff,
                policy=policy,
                workload=workload,
                record_name=record.name,
                known_bad=facts.records.known_bad_hashes(workload.name, own=record.template_hash),
                clock=self.clock,
                replicasets=facts.replicasets() if facts.replicasets else None,
                workload_body=facts.workload,
            )
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
            return acting.action_done(eff, result)
        if isinstance(eff, machine.Escalate | machine.Resolve | machine.Notify):
            self.background.run(
                eff, record, policy=policy, workload=workload, trigger=trigger, facts=facts
            )
            return None
        raise TypeError(f"unknown effect {eff!r}")

    def _emit(self, eff: machine.Emit, record: Record, workload: WorkloadRef | None) -> None:
        involved = [obj_ref("Remediation", API_VERSION, record.namespace, record.name)]
        if workload is not None:
            involved.append(
                obj_ref(workload.kind, "apps/v1", workload.namespace, workload.name, workload.uid)
            )
        self.events.emit_soon(
            namespace=record.namespace,
            involved=involved,
            reason=str(eff.reason),
            message=eff.message,
            type=str(eff.type),
        )

    def _run_effects_soon(
        self,
        effects: Sequence[machine.Effect],
        record: Record,
        *,
        policy: HealingPolicy | None,
        facts: Facts,
    ) -> None:
        """Events and ticket work of a record handled without its policy's machine."""
        for eff in effects:
            if isinstance(eff, machine.Emit):
                self._emit(eff, record, None)
            elif isinstance(eff, machine.Escalate | machine.Resolve | machine.Notify):
                self.background.run(
                    eff,
                    record,
                    policy=policy,
                    workload=record.ref(),
                    trigger=record.trigger,
                    facts=facts,
                )

    async def _revert_scales(
        self, record: Record, policy: HealingPolicy, workload: WorkloadRef
    ) -> Record | None:
        assert record.state is not None
        new = await acting.revert_scales(self.kube, record.state, policy, workload)
        if new == record.state:
            return record
        return await self._save_or_forget(record, new)


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


def _quick_act(
    effects: Sequence[machine.Effect], new: RemediationState, workload: WorkloadRef
) -> bool:
    """The decision starts an action that answers at once: a Deployment's (one read and
    one patch). A StatefulSet's or DaemonSet's rollback or restart replaces pods for
    minutes; its record gets its status first, so people see the phase meanwhile."""
    return (
        workload.kind == "Deployment"
        and not new.phase.final
        and any(isinstance(e, machine.Act) for e in effects)
    )


def _bookkeeping_only(old: RemediationState | None, new: RemediationState) -> bool:
    if old is None:
        return False
    return dataclasses.replace(new, last_signal_at=old.last_signal_at) == old


__all__ = ["PLURAL", "Driver", "EventRecorder", "Facts", "reverts_due"]
