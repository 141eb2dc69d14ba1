"""Ticket and notification work: filing the ticket, telling it the incident ended,
and sending notifications, each one attempt at a time in the background.

What is due is derived from the record's status by the machine (``due_work``); each
attempt's outcome is written back to that status through the driver, so a restart
resumes exactly the work still due. Nothing here is remembered across attempts
except a per-(record, kind) backoff after an unexpected failure, and the rendered
evidence of a ticket being filed (a cache: it is rebuilt when missing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from selfheal import API_VERSION, metrics
from selfheal.actions import notify as notify_action
from selfheal.actions import ticket as ticket_action
from selfheal.clients import kube as k
from selfheal.clients.jira import Jira
from selfheal.clients.notify import Notifier
from selfheal.detect.signal import WorkloadRef
from selfheal.policy.model import HealingPolicy
from selfheal.remediation import machine
from selfheal.remediation.events import EventRecorder, obj_ref
from selfheal.remediation.facts import Facts
from selfheal.remediation.records import Record
from selfheal.remediation.state import RemediationState

logger = logging.getLogger(__name__)

EvidenceFn = Callable[..., Awaitable[tuple[str, str, Mapping[str, bytes], str]]]
"""``(policy, workload, trigger, state, facts) -> (summary, description, attachments,
short evidence summary)``: gathers and renders redacted evidence for a ticket."""

BACKOFF_FIRST, BACKOFF_MAX = 5.0, 300.0
"""Seconds a record's work waits after an unexpected failure: doubling, capped."""


class Ledger(Protocol):
    """What the work needs of the driver: the record's freshest state, and a way to
    store outcomes on it."""

    def current(self, record: Record) -> RemediationState | None: ...

    async def handle(
        self,
        *,
        event: machine.Event,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
        name: str | None = None,
    ) -> RemediationState | None: ...

    async def record(
        self,
        record: Record,
        change: Callable[[RemediationState], RemediationState],
        facts: Facts,
    ) -> None: ...


class Work:
    def __init__(
        self,
        *,
        ledger: Ledger,
        kube: k.Kube,
        events: EventRecorder,
        clock: Callable[[], float],
        horizon: float,
        jira: Jira | None = None,
        notifier: Notifier | None = None,
        evidence: EvidenceFn | None = None,
    ) -> None:
        self.ledger = ledger
        self.kube = kube
        self.events = events
        self.clock = clock
        self.horizon = horizon
        self.jira = jira
        self.notifier = notifier
        self.evidence = evidence
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self._evidence: dict[tuple[str, str], tuple[str, str, Mapping[str, bytes], str]] = {}

    # --- scheduling ----------------------------------------------------------------------

    def run(
        self,
        eff: machine.Escalate | machine.Resolve | machine.Notify,
        record: Record,
        *,
        policy: HealingPolicy | None,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
    ) -> None:
        """Start one attempt of the work ``eff`` asks for, unless one is running."""
        if isinstance(eff, machine.Resolve):
            self._spawn(record, "resolve", lambda: self._resolve(eff, record, policy, facts))
        elif policy is None:
            return  # filing and notifying need the policy; telling a ticket does not
        elif isinstance(eff, machine.Notify):
            self._spawn(
                record, f"notify-{eff.kind}", lambda: self._notify(eff, record, policy, facts)
            )
        else:
            self._spawn(
                record,
                "ticket",
                lambda: self._ticket(eff, record, policy, workload, trigger, facts),
            )

    def forget(self, namespace: str, name: str) -> None:
        self._evidence.pop((namespace, name), None)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self.notifier is not None:
            self.notifier.close()

    def _spawn(
        self, record: Record, kind: str, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Run one attempt of a record's work in the background, one at a time per
        (record, kind): passes re-derive the work from status until it is done."""
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
                delay = min(BACKOFF_FIRST * 2.0**failures, BACKOFF_MAX)
                self._failures[key] = (failures + 1, self.clock() + delay)
                metrics.RECONCILE_ERRORS.labels(kind).inc()
                logger.exception("%s for remediation %s failed; retried in %.0fs", kind, key, delay)
                self.events.emit_soon(
                    namespace=record.namespace,
                    involved=[obj_ref("Remediation", API_VERSION, record.namespace, record.name)],
                    reason="ReconcileError",
                    message=f"{kind}: {type(e).__name__}: {e}; retried in {delay:.0f}s"[:1024],
                    type="Warning",
                )
            finally:
                self._tasks.pop(key, None)

        self._tasks[key] = asyncio.create_task(guarded(), name=key)

    # --- the ticket ----------------------------------------------------------------------

    async def _ticket(
        self,
        eff: machine.Escalate,
        record: Record,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        facts: Facts,
    ) -> None:
        """One attempt to file the incident's ticket; the result goes into its status."""
        escalation = policy.remediation.jira
        state = self.ledger.current(record)
        if state is None:
            return
        key = (record.namespace, record.name)

        async def report(ticket: Mapping[str, object]) -> RemediationState | None:
            return await self.ledger.handle(
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
            fingerprint=record.fingerprint,
            summary=summary,
            description=description,
            attachments=attachments,
            pending=pending,
            now=self.clock(),
            record_intent=record_intent,
            horizon=self.horizon,
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

    async def _resolve(
        self,
        eff: machine.Resolve,
        record: Record,
        policy: HealingPolicy | None,
        facts: Facts,
    ) -> None:
        """One attempt to tell the ticket the incident ended (comment, transition)."""
        state = self.ledger.current(record)
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
                out, before=before, now=now, horizon=self.horizon
            )
        await self.ledger.record(
            record, lambda st: dataclasses.replace(st, resolution=dict(status)), facts
        )

    # --- notifications -------------------------------------------------------------------

    async def _notify(
        self, eff: machine.Notify, record: Record, policy: HealingPolicy, facts: Facts
    ) -> None:
        """One attempt at one notification; the outcome goes into status.notifications."""
        state = self.ledger.current(record)
        if state is None:
            return
        kind = notify_action.Kind(eff.kind)
        entry = machine.notification(state, eff.kind) or notify_action.pending(kind)
        cfg = policy.remediation.notify
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
                msg=notify_action.message(kind, incident(record, state)),
                entry=entry,
                now=self.clock(),
                horizon=self.horizon,
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
                involved=[obj_ref("Remediation", API_VERSION, record.namespace, record.name)],
                reason="NotificationFailed" if failed else "Notified",
                message=(
                    f"{kind} notification not sent: {new.get('lastError')}"
                    if failed
                    else f"{kind} notification sent to {len(new.get('delivered') or ())} target(s)"
                )[:1024],
                type="Warning" if failed else "Normal",
            )

        def put(st: RemediationState) -> RemediationState:
            others = [n for n in st.notifications if n.get("kind") != new.get("kind")]
            return dataclasses.replace(st, notifications=(*others, dict(new)))

        await self.ledger.record(record, put, facts)


def incident(record: Record, state: RemediationState) -> notify_action.Incident:
    """What a notification tells, from the record's spec and stored status."""
    ticket = state.ticket
    return notify_action.Incident(
        namespace=record.namespace,
        workload=record.workload,
        policy=record.policy,
        remediation=record.name,
        trigger=record.trigger,
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
        approval=dict(state.approval),
    )


__all__ = ["EvidenceFn", "Ledger", "Work", "incident"]
