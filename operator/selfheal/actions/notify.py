"""Notifications to the on-duty expert: what a message says, and one attempt to send it.

Three kinds per incident, each sent once (the Remediation's ``status.notifications``
records them, so a restart never sends one twice):

- ``Escalation``: the incident was escalated; carries the ticket's link (or why there
  is none), the cause, what was tried and why it did not heal the workload.
- ``GiveUp``: the ticket could not be filed within its horizon; nobody has a ticket.
- ``Recovery``: an escalated, notified incident recovered.

The content comes from the record's status only: the cause and detail, the steps'
one-line outcomes and the evidence summary, which the evidence layer redacted when it
collected it. Raw logs never go into a message.

``attempt`` is one attempt: it reads the target URLs from the policy's Secret, sends
to each target that has not taken the message yet, and returns the new status entry
(Sent, Pending with ``retryAt``, or Failed). Failures never raise.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import enum
import random
from collections.abc import Mapping, Sequence
from typing import Any

from selfheal import metrics
from selfheal.actions.ticket import backoff
from selfheal.clients import kube as k
from selfheal.clients.notify import (
    Notifier,
    NotifyError,
    NotifyRejected,
    NotifyUnavailable,
    parse_urls,
    target_id,
)
from selfheal.policy.model import SecretKeyRef

BODY_LIMIT = 4000
"""Characters of a message body; chat targets cut long bodies, some refuse them."""


class Kind(enum.StrEnum):
    ESCALATION = "Escalation"
    GIVE_UP = "GiveUp"
    RECOVERY = "Recovery"
    APPROVAL = "Approval"


class State(enum.StrEnum):
    PENDING = "Pending"
    """Due now, or at ``retryAt``."""
    SENT = "Sent"
    """Every target took the message."""
    FAILED = "Failed"
    """A target refused it for good, or the horizon passed."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Incident:
    """What a message tells, read from the Remediation's status."""

    namespace: str
    workload: str
    policy: str
    remediation: str
    trigger: str
    cause: str = ""
    detail: str = ""
    reason: str = ""
    """Why it was escalated (``status.escalation.reason``)."""
    tried: tuple[str, ...] = ()
    """One line per step: ``step 1 (restart) Succeeded: ...``."""
    ticket_key: str = ""
    ticket_url: str = ""
    ticket_state: str = ""
    """``status.ticket.state``; empty: no ticket was wanted (no Jira in the policy)."""
    ticket_error: str = ""
    evidence: str = ""
    """The redacted evidence summary (``status.ticket.evidenceSummary``)."""
    ending: str = ""
    """Recovery only: how it ended (``status.verification.message``)."""
    approval: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """Approval only: ``status.approval`` (the step, its change, the kubectl commands)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Message:
    title: str
    body: str


def _ticket_line(incident: Incident) -> str:
    if incident.ticket_key:
        url = f" {incident.ticket_url}" if incident.ticket_url else ""
        return f"Ticket: {incident.ticket_key}{url}"
    if not incident.ticket_state:
        return "Ticket: none (the policy files no Jira ticket)"
    if incident.ticket_state == "Pending":
        why = f": {incident.ticket_error}" if incident.ticket_error else ""
        return f"Ticket: not filed yet, still retrying{why}"
    why = incident.ticket_error or incident.ticket_state
    return f"Ticket: not filed ({why})"


def message(kind: Kind, incident: Incident) -> Message:
    """The title and plain-text body of one notification."""
    where = f"{incident.namespace}/{incident.workload}"
    cause = f" ({incident.cause})" if incident.cause else ""
    what = f"{incident.cause}: {incident.detail}" if incident.cause else incident.detail
    record = (
        f"Policy {incident.policy}, trigger {incident.trigger}; record: kubectl -n "
        f"{incident.namespace} get remediation {incident.remediation} -o yaml"
    )
    if kind is Kind.ESCALATION:
        title = f"[selfheal] escalated: {where}{cause}"
        lines = [
            f"selfheal could not heal {where} by itself: a human is needed.",
            _ticket_line(incident),
            f"Cause: {what or 'unknown'}",
            f"Why it was escalated: {incident.reason or 'unknown'}",
        ]
        if incident.tried:
            lines.append("Tried:")
            lines.extend(f"- {line}" for line in incident.tried)
        else:
            lines.append("Tried: nothing (no step was allowed or configured)")
        if incident.evidence:
            lines.append(f"Evidence: {incident.evidence}")
    elif kind is Kind.APPROVAL:
        proposal = incident.approval
        step = int(str(proposal.get("step", 0))) + 1
        title = f"[selfheal] approval needed: {where}{cause}"
        lines = [
            f"selfheal wants to run step {step} ({proposal.get('action')}) on {where} and "
            f"waits for a person until {proposal.get('expiresAt')} (then it escalates).",
            f"Cause: {what or 'unknown'}",
            f"Change: {proposal.get('message') or 'computing (a dry run)'}",
            f"Approve: {proposal.get('approve')}",
            f"Reject:  {proposal.get('reject')}",
        ]
    elif kind is Kind.GIVE_UP:
        title = f"[selfheal] no ticket could be filed: {where}{cause}"
        lines = [
            f"selfheal gave up filing the Jira ticket for the escalated incident of {where}; "
            "nobody has a ticket for it.",
            f"Last error: {incident.ticket_error or 'unknown'}",
            f"Cause: {what or 'unknown'}",
            f"Why it was escalated: {incident.reason or 'unknown'}",
        ]
    else:
        title = f"[selfheal] recovered: {where}{cause}"
        lines = [
            f"{where} recovered after it was escalated"
            + (f": {incident.ending}" if incident.ending else "."),
        ]
        if incident.ticket_key:
            lines.append(_ticket_line(incident) + " (told of the recovery)")
        lines.append(f"Cause was: {what or 'unknown'}")
    lines.append(record)
    body = "\n".join(lines)
    if len(body) > BODY_LIMIT:
        body = body[: BODY_LIMIT - 12] + "\n(truncated)"
    return Message(title=" ".join(title.split())[:250], body=body)


# --- status entries ------------------------------------------------------------------


def _ts(t: float) -> str:
    d = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _from_ts(raw: object) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pending(kind: Kind) -> dict[str, Any]:
    """A new ``status.notifications`` entry: due now."""
    return {"kind": kind.value, "state": State.PENDING.value, "attempts": 0}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    entry: dict[str, Any]
    """The new ``status.notifications`` entry."""
    gave_up: bool = False
    """Failed because the horizon passed (the caller says so loudly)."""


async def read_targets(*, kube: k.Kube, namespace: str, ref: SecretKeyRef) -> list[str]:
    """The URLs in the Secret; raises ``NotifyUnavailable`` naming the Secret and key
    when they cannot be read (a missing Secret or permission can be fixed in time)."""
    what = f"Secret {namespace}/{ref.name} key {ref.key}"
    target = f"Secret {ref.name}"
    try:
        body = await kube.get(k.core(namespace, "secrets", ref.name))
    except k.NotFound:
        raise NotifyUnavailable(f"{what}: the Secret does not exist", target=target) from None
    except k.Forbidden:
        raise NotifyUnavailable(
            f"{what}: the operator may not get it; grant get on it with a Role "
            "(the chart's notify.secrets value)",
            target=target,
        ) from None
    except k.KubeError as e:
        raise NotifyUnavailable(f"{what}: {e}", target=target) from None
    raw = (body.get("data") or {}).get(ref.key)
    if raw is None:
        raise NotifyUnavailable(f"{what}: the Secret has no such key", target=target)
    try:
        text = base64.b64decode(str(raw), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise NotifyUnavailable(f"{what}: the value is not UTF-8 text", target=target) from None
    urls = parse_urls(text)
    if not urls:
        raise NotifyUnavailable(f"{what}: no URL in it (one a line)", target=target)
    return urls


async def attempt(
    *,
    notifier: Notifier,
    kube: k.Kube,
    namespace: str,
    ref: SecretKeyRef,
    msg: Message,
    entry: Mapping[str, Any],
    now: float,
    horizon: float,
    rng: random.Random | None = None,
) -> Outcome:
    """One attempt at one notification; see the module docstring."""
    rng = rng or random.Random()
    kind = str(entry.get("kind") or "")
    raw_attempts = entry.get("attempts")
    attempts = (raw_attempts if isinstance(raw_attempts, int) else 0) + 1
    first = _from_ts(entry.get("firstAttemptAt")) or now
    delivered = [str(d) for d in entry.get("delivered") or ()]
    base: dict[str, Any] = {"kind": kind, "attempts": attempts, "firstAttemptAt": _ts(first)}
    errors: list[NotifyError] = []
    try:
        urls = await read_targets(kube=kube, namespace=namespace, ref=ref)
    except NotifyError as e:
        errors.append(e)
        urls = []
    for position, url in enumerate(urls, start=1):
        tid = target_id(url)
        if tid in delivered:
            continue  # took it on an earlier attempt
        try:
            await notifier.send(url=url, position=position, title=msg.title, body=msg.body)
        except NotifyError as e:
            errors.append(e)
            continue
        delivered.append(tid)
    base["delivered"] = delivered
    if not errors:
        metrics.NOTIFICATIONS.labels(kind, "sent").inc()
        return Outcome(entry={**base, "state": State.SENT.value, "sentAt": _ts(now)})
    error = "; ".join(str(e) for e in errors)[:4000]
    if any(isinstance(e, NotifyRejected) for e in errors):
        metrics.NOTIFICATIONS.labels(kind, "failed").inc()
        return Outcome(entry={**base, "state": State.FAILED.value, "lastError": error})
    delay = backoff(attempt=attempts, retry_after=None, rng=rng)
    if now + delay - first > horizon:
        metrics.NOTIFICATIONS.labels(kind, "failed").inc()
        metrics.GAVE_UP.labels("notification").inc()
        why = f"gave up after {attempts} attempts over {now - first:.0f}s: {error}"
        return Outcome(
            entry={**base, "state": State.FAILED.value, "lastError": why[:4000]}, gave_up=True
        )
    metrics.NOTIFICATIONS.labels(kind, "pending").inc()
    return Outcome(
        entry={
            **base,
            "state": State.PENDING.value,
            "retryAt": _ts(now + delay),
            "lastError": error,
        }
    )


def find(entries: Sequence[Mapping[str, Any]], kind: Kind) -> Mapping[str, Any] | None:
    """The entry of ``kind`` in ``status.notifications``; ``None``: none yet."""
    return next((e for e in entries if e.get("kind") == kind.value), None)
