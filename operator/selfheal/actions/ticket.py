"""Escalation to Jira: one ticket per incident fingerprint, idempotent and restart-safe.

An incident is identified by a fingerprint of (namespace, policy, workload, trigger),
carried by the ticket as the label ``selfheal-<fingerprint>``. ``escalate`` searches
open tickets by that label first: an open one gets a comment (a recurrence), otherwise
a ticket is created and the evidence attached.

Each call of ``escalate`` is one attempt. It never raises for Jira's sake: it returns
a ``TicketOutcome`` (Filed, Commented, Pending or Failed). A Pending outcome carries a
``PendingTicket`` with the progress made so far (created? which attachments? comment
sent?) and ``retry_at``; the caller stores ``outcome.to_status()`` in the
Remediation's ``status.ticket`` and calls again at ``retry_at`` with
``PendingTicket.from_status(status.ticket)``, so a restart resumes where it stopped.

Never twice: a create whose answer was lost (timeout, reset) may have happened, so
the next attempt searches before creating again, and adopts what it finds; a comment
or an attachment whose answer was lost is looked up on the issue before it is resent
(comments carry an occurrence marker for that).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfheal import metrics
from selfheal.clients.jira import IssueRef, Jira, JiraRejected, JiraUnavailable
from selfheal.policy.model import JiraEscalation

LABEL_PREFIX = "selfheal-"
SUMMARY_LIMIT = 255
"""Jira refuses longer summaries."""
TEXT_LIMIT = 32000
"""Jira refuses descriptions and comments over 32,767 characters (its default limit);
we cut a little earlier to leave room for the truncation note and the marker."""
BACKOFF_FIRST = 5.0
"""Seconds before the first retry when Jira gave no ``Retry-After``."""
BACKOFF_MAX = 600.0
"""Upper bound (seconds) of the exponential backoff."""
RETRY_AFTER_MIN = 1.0
"""A ``Retry-After: 0`` still waits this long (seconds), so a caller never spins."""
RETRY_AFTER_MAX = 3600.0
"""A longer ``Retry-After`` (seconds) is cut to this."""
GIVE_UP_AFTER = 24 * 3600.0
"""Default horizon: seconds after the first attempt when a ticket still not filed
becomes Failed (the operator's ``ticket_horizon`` setting)."""
CONSISTENCY_WINDOW = 60.0
"""Seconds after a create was sent during which Jira's search may not show the issue
yet (Jira Cloud's search is eventually consistent): no second create inside it."""
ATTEMPT_LABEL_PREFIX = "selfheal-attempt-"
REFUSED_UNPROCESSED = (429, 503)
"""Answers that say Jira did not process the request (a create that got one made no
issue). A timeout, a reset or a 502/504 from a proxy may hide a create that happened."""

_POLICY_FIELD = "spec.remediation.escalate.jira"
# Jira's field ids -> the policy field that sets them, for errors that name the fix.
_FIELD_NAMES = {
    "project": "project",
    "issuetype": "issueType",
    "priority": "priority",
    "labels": "labels",
    "components": "components",
    "assignee": "assignee",
}


class TicketState(enum.StrEnum):
    FILED = "Filed"
    """A new ticket was created and all evidence attached."""
    COMMENTED = "Commented"
    """An open ticket for the same fingerprint existed: the recurrence was commented."""
    PENDING = "Pending"
    """Not done yet (Jira unavailable); call again at ``retry_at``."""
    FAILED = "Failed"
    """Jira refused the request (bad policy field, credentials, permissions) or the
    ticket could not be filed within ``GIVE_UP_AFTER``: retrying is useless."""


class TicketMode(enum.StrEnum):
    FILE = "File"
    """Our own ticket: it needs the attachments."""
    COMMENT = "Comment"
    """Someone's open ticket for the same fingerprint: it needs a recurrence comment."""


def fingerprint(*, namespace: str, policy: str, workload: str, trigger: str) -> str:
    """A stable 12-hex-digit hash of the incident's identity: it names the Remediation
    records (label ``selfheal.dev/fingerprint``) and the Jira label ``selfheal-<fp>``."""
    raw = "\x1f".join((namespace, policy, workload, trigger)).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


def fingerprint_label(fp: str) -> str:
    return f"{LABEL_PREFIX}{fp}"


def _ts(t: float | None) -> str | None:
    if t is None:
        return None
    d = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _from_ts(field: str, raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, int | float):
        return float(raw)
    try:
        return datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"status.ticket.{field}: {raw!r} is not an RFC 3339 time") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PendingTicket:
    """Progress of one escalation, stored in ``status.ticket`` between attempts."""

    fingerprint: str
    key: str | None = None
    """The ticket, once created or found."""
    url: str | None = None
    mode: TicketMode = TicketMode.FILE
    create_sent: bool = False
    """A create was sent; if its answer was lost, the ticket may exist."""
    create_marker: str | None = None
    """The sent create's unique label (``selfheal-attempt-…``): tells our issue apart."""
    create_sent_at: float | None = None
    """When that create was sent (start of the consistency window)."""
    attached: tuple[str, ...] = ()
    """Attachment names known to be on the ticket."""
    watched: tuple[str, ...] = ()
    """Watchers known to be on the ticket (``escalate.jira.watchers``)."""
    comment_sent: bool = False
    attempts: int = 0
    first_attempt_at: float | None = None
    """Wall-clock seconds (epoch) of the first attempt."""
    last_error: str | None = None
    retry_at: float | None = None
    """Wall-clock seconds (epoch) when the next attempt is due."""

    @property
    def marker(self) -> str:
        """Identifies this occurrence's comment, so a resent comment is recognised."""
        raw = f"{self.fingerprint}/{self.first_attempt_at!r}".encode()
        return f"selfheal-occurrence-{hashlib.sha256(raw).hexdigest()[:10]}"

    def to_status(self) -> dict[str, Any]:
        return {
            "state": TicketState.PENDING.value,
            "key": self.key,
            "url": self.url,
            "attempts": self.attempts,
            "lastError": self.last_error,
            "retryAt": _ts(self.retry_at),
            "fingerprint": self.fingerprint,
            "mode": self.mode.value,
            "createSent": self.create_sent,
            "createMarker": self.create_marker,
            "createSentAt": _ts(self.create_sent_at),
            "attached": list(self.attached),
            "watched": list(self.watched),
            "commentSent": self.comment_sent,
            "firstAttemptAt": _ts(self.first_attempt_at),
        }

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> PendingTicket | None:
        """The pending escalation in ``status.ticket``; ``None`` when there is none
        (absent, or already Filed, Commented or Failed)."""
        if not status or status.get("state") != TicketState.PENDING.value:
            return None
        fp = status.get("fingerprint")
        if not isinstance(fp, str) or not fp:
            raise ValueError("status.ticket.fingerprint: missing; the pending ticket is lost")
        try:
            mode = TicketMode(status.get("mode") or TicketMode.FILE.value)
        except ValueError:
            raise ValueError(
                f"status.ticket.mode: {status.get('mode')!r} is not File or Comment"
            ) from None
        attempts = status.get("attempts") or 0
        if not isinstance(attempts, int):
            raise ValueError(f"status.ticket.attempts: {attempts!r} is not an integer")
        return cls(
            fingerprint=fp,
            key=status.get("key") or None,
            url=status.get("url") or None,
            mode=mode,
            create_sent=bool(status.get("createSent")),
            create_marker=status.get("createMarker") or None,
            create_sent_at=_from_ts("createSentAt", status.get("createSentAt")),
            attached=tuple(str(a) for a in status.get("attached") or ()),
            watched=tuple(str(w) for w in status.get("watched") or ()),
            comment_sent=bool(status.get("commentSent")),
            attempts=attempts,
            first_attempt_at=_from_ts("firstAttemptAt", status.get("firstAttemptAt")),
            last_error=status.get("lastError") or None,
            retry_at=_from_ts("retryAt", status.get("retryAt")),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TicketOutcome:
    state: TicketState
    key: str | None = None
    url: str | None = None
    attempts: int = 0
    last_error: str | None = None
    retry_at: float | None = None
    """When to call ``escalate`` again (Pending only)."""
    pending: PendingTicket | None = None
    """What to pass back as ``pending`` at ``retry_at`` (Pending only)."""
    attached: tuple[str, ...] = ()
    """Attachments on the issue (Filed)."""
    gave_up: bool = False
    """Failed because the horizon passed (not because Jira refused)."""

    def to_status(self) -> dict[str, Any]:
        """The Remediation's ``status.ticket``: a finished ticket keeps only what is
        true of it (no ``retryAt`` or ``createSent`` once it is filed)."""
        if self.pending is not None:
            return self.pending.to_status()
        out: dict[str, Any] = {
            "state": self.state.value,
            "key": self.key,
            "url": self.url,
            "attempts": self.attempts,
            "lastError": self.last_error,
        }
        if self.attached:
            out["attached"] = list(self.attached)
        if self.gave_up:
            out["gaveUp"] = True
        return out


def backoff(*, attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1``: Jira's ``Retry-After`` when it gave one
    (bounded to [1 s, 1 h]), else exponential from 5 s to 10 min with ±20 % jitter."""
    if retry_after is not None:
        return min(max(retry_after, RETRY_AFTER_MIN), RETRY_AFTER_MAX)
    base = min(BACKOFF_FIRST * 2.0 ** max(attempt - 1, 0), BACKOFF_MAX)
    return min(max(base * rng.uniform(0.8, 1.2), BACKOFF_FIRST), BACKOFF_MAX)


def _clip(text: str, limit: int, note: str) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(note)] + note


def issue_fields(
    *, escalation: JiraEscalation, fingerprint: str, summary: str, description: str
) -> dict[str, Any]:
    """The REST ``fields`` of the new ticket."""
    one_line = " ".join(summary.split())
    if len(one_line) > SUMMARY_LIMIT:
        one_line = one_line[: SUMMARY_LIMIT - 1] + "…"
    labels = list(dict.fromkeys((fingerprint_label(fingerprint), *escalation.labels)))
    fields: dict[str, Any] = {
        "project": {"key": escalation.project},
        "issuetype": {"name": escalation.issue_type},
        "summary": one_line or "selfheal escalation",
        "description": _clip(
            description, TEXT_LIMIT, "\n\n_(truncated by selfheal; see the attachments)_"
        ),
        "labels": labels,
    }
    if escalation.priority:
        fields["priority"] = {"name": escalation.priority}
    if escalation.assignee:
        # A user name on Server; the Jira client sends it as the account id on Cloud.
        fields["assignee"] = {"name": escalation.assignee}
    if escalation.components:
        fields["components"] = [{"name": c} for c in escalation.components]
    for name, value in escalation.custom_fields.items():
        fields[name] = value
    return fields


def _recurrence_comment(*, summary: str, description: str, now: float, marker: str) -> str:
    head = f"h3. The incident recurred ({_ts(now)})\n{summary}\n\n"
    tail = f"\n\n{{color:#97a0af}}{marker}{{color}}"
    body = _clip(description, TEXT_LIMIT - len(head) - len(tail), "\n\n_(truncated)_")
    return head + body + tail


def _rejection(e: JiraRejected) -> str:
    """Jira's refusal as a message naming the policy field to fix, when there is one."""
    if not e.field_errors:
        return str(e)
    parts = []
    for field, msg in e.field_errors.items():
        if field in _FIELD_NAMES:
            parts.append(f"{_POLICY_FIELD}.{_FIELD_NAMES[field]}: {msg}")
        elif field.startswith("customfield_"):
            parts.append(f"{_POLICY_FIELD}.customFields.{field}: {msg}")
        else:
            parts.append(f"Jira field {field}: {msg}")
    return f"Jira refused the {e.operation} (HTTP {e.status}): " + "; ".join(parts)


async def escalate(
    *,
    jira: Jira,
    escalation: JiraEscalation,
    fingerprint: str,
    summary: str,
    description: str,
    attachments: Mapping[str, bytes],
    pending: PendingTicket | None,
    now: float,
    record_intent: Callable[[PendingTicket], Awaitable[None]] | None = None,
    horizon: float = GIVE_UP_AFTER,
    window: float = CONSISTENCY_WINDOW,
    rng: random.Random | None = None,
) -> TicketOutcome:
    """One attempt to file (or comment) the ticket for ``fingerprint``. ``now`` is
    wall-clock epoch seconds; ``pending`` is the previous attempt's progress.

    ``record_intent`` is awaited with the progress just before a create is sent, and
    must store it (``status.ticket``): if the process dies before the create's answer
    is stored, the next attempt knows a create may exist, finds it by its marker, and
    sends no second create inside the consistency ``window``. When it raises, nothing
    is sent. ``horizon``: seconds after the first attempt when the ticket is given up.
    """
    rng = rng or random.Random()
    if not fingerprint or any(c.isspace() for c in fingerprint):
        # Every incident would share (or break) the label: refuse rather than merge them.
        metrics.TICKETS.labels("escalate", "failed").inc()
        return TicketOutcome(
            state=TicketState.FAILED,
            last_error=f"fingerprint {fingerprint!r} is empty or has spaces (a selfheal bug)",
        )
    p = pending if pending is not None and pending.fingerprint == fingerprint else None
    if p is None:
        p = PendingTicket(fingerprint=fingerprint, first_attempt_at=now)
    p = dataclasses.replace(p, attempts=p.attempts + 1, retry_at=None)
    label = fingerprint_label(fingerprint)
    first = p.first_attempt_at if p.first_attempt_at is not None else now
    if p.key is None and now - first > horizon:
        return _give_up(p, p.last_error or "no answer", now, first)
    try:
        if p.key is None:
            ref: IssueRef | None = None
            if p.create_sent and p.create_marker:
                # A create whose answer was lost: its own marker finds it, in any status.
                ours = await jira.find_by_label(
                    project=escalation.project, label=_attempt_label(p.create_marker)
                )
                if ours:
                    ref, mode = ours[0], TicketMode.FILE
                elif p.create_sent_at is not None and now < p.create_sent_at + window:
                    # Search may not show it yet: wait out the window, never create twice.
                    return _retry(
                        p,
                        "a create was sent and its issue is not searchable yet",
                        # Look again soon: the issue usually shows in seconds.
                        min(max(p.create_sent_at + window - now, RETRY_AFTER_MIN), BACKOFF_FIRST),
                        now,
                        rng,
                        horizon=horizon,
                    )
            elif not p.create_sent:
                found = await jira.search_open(project=escalation.project, label=label)
                if found:
                    ref, mode = found[0], TicketMode.COMMENT  # someone's open one: a recurrence
            if ref is None:
                token = secrets.token_hex(6)
                p = dataclasses.replace(
                    p, create_sent=True, create_marker=token, create_sent_at=now
                )
                if record_intent is not None:
                    # Stored before sending: a crash after this is adopted, not repeated.
                    await record_intent(dataclasses.replace(p, retry_at=now + BACKOFF_FIRST))
                fields = issue_fields(
                    escalation=escalation,
                    fingerprint=fingerprint,
                    summary=summary,
                    description=description,
                )
                fields["labels"] = [*fields["labels"], _attempt_label(token)]
                ref = await jira.create(fields=fields)
                mode = TicketMode.FILE
            p = dataclasses.replace(p, key=ref.key, url=ref.url, mode=mode)
            key = ref.key
        else:
            key = p.key
        if p.mode is TicketMode.FILE:
            refused: list[str] = []
            for user in [w for w in escalation.watchers if w not in p.watched]:
                try:  # adding a watcher twice changes nothing: no need to look first
                    await jira.add_watcher(key=key, user=user)
                except JiraRejected as e:
                    if e.status == 401:
                        raise
                    # An unknown user or no permission: the ticket stands without them.
                    refused.append(f"watcher {user}: {e}")
                    continue
                p = dataclasses.replace(p, watched=(*p.watched, user))
            wanted = [n for n, data in attachments.items() if data and n not in p.attached]
            if wanted and p.attempts > 1:
                # An upload whose answer was lost may be there already.
                on_issue = set((await jira.issue(key=key)).attachments)
                p = dataclasses.replace(
                    p, attached=p.attached + tuple(n for n in wanted if n in on_issue)
                )
            for name in [n for n in wanted if n not in p.attached]:
                try:
                    await jira.attach(key=key, filename=name, data=attachments[name])
                except JiraRejected as e:
                    if e.status in (401, 404):
                        raise
                    # Too large, a forbidden type, no attach permission: the ticket stands,
                    # with the evidence that Jira took.
                    refused.append(f"{name}: {e}")
                    continue
                p = dataclasses.replace(p, attached=(*p.attached, name))
            return _done(TicketState.FILED, p, "; ".join(refused) or None)
        body = _recurrence_comment(
            summary=summary, description=description, now=now, marker=p.marker
        )
        if p.comment_sent and any(p.marker in c for c in (await jira.issue(key=key)).comments):
            return _done(TicketState.COMMENTED, p)
        p = dataclasses.replace(p, comment_sent=True)
        await jira.comment(key=key, body=body)
        return _done(TicketState.COMMENTED, p)
    except JiraUnavailable as e:
        if e.operation == "create" and e.status in REFUSED_UNPROCESSED:
            # Jira answered that it did not take the request: no issue can exist.
            p = dataclasses.replace(p, create_sent=False, create_marker=None, create_sent_at=None)
        return _retry(p, str(e), e.retry_after, now, rng, horizon=horizon)
    except JiraRejected as e:
        if e.status == 404 and p.key is not None and e.operation != "create":
            # The ticket was deleted or moved between attempts: start over.
            fresh = PendingTicket(
                fingerprint=fingerprint, attempts=p.attempts, first_attempt_at=p.first_attempt_at
            )
            return _retry(fresh, f"{p.key} vanished: {e}", None, now, rng, horizon=horizon)
        metrics.TICKETS.labels("escalate", "failed").inc()
        return TicketOutcome(
            state=TicketState.FAILED,
            key=p.key,
            url=p.url,
            attempts=p.attempts,
            last_error=_rejection(e),
        )


def _attempt_label(marker: str) -> str:
    return f"{ATTEMPT_LABEL_PREFIX}{marker}"


def _done(state: TicketState, p: PendingTicket, error: str | None = None) -> TicketOutcome:
    metrics.TICKETS.labels("escalate", state.value.lower()).inc()
    return TicketOutcome(
        state=state,
        key=p.key,
        url=p.url,
        attempts=p.attempts,
        last_error=error,
        attached=p.attached if state is TicketState.FILED else (),
    )


def _give_up(p: PendingTicket, error: str, now: float, first: float) -> TicketOutcome:
    metrics.TICKETS.labels("escalate", "failed").inc()
    metrics.GAVE_UP.labels("ticket").inc()
    return TicketOutcome(
        state=TicketState.FAILED,
        key=p.key,
        url=p.url,
        attempts=p.attempts,
        last_error=f"gave up after {p.attempts} attempts over {now - first:.0f}s: {error}",
        gave_up=True,
    )


def _retry(
    p: PendingTicket,
    error: str,
    retry_after: float | None,
    now: float,
    rng: random.Random,
    *,
    horizon: float = GIVE_UP_AFTER,
) -> TicketOutcome:
    delay = backoff(attempt=p.attempts, retry_after=retry_after, rng=rng)
    first = p.first_attempt_at if p.first_attempt_at is not None else now
    if now + delay - first > horizon:
        return _give_up(p, error, now, first)
    p = dataclasses.replace(p, last_error=error, retry_at=now + delay)
    metrics.TICKETS.labels("escalate", "pending").inc()
    return TicketOutcome(
        state=TicketState.PENDING,
        key=p.key,
        url=p.url,
        attempts=p.attempts,
        last_error=error,
        retry_at=p.retry_at,
        pending=p,
    )


class ResolveState(enum.StrEnum):
    RESOLVED = "Resolved"
    PENDING = "Pending"
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResolveOutcome:
    state: ResolveState
    attempts: int
    transitioned: bool = False
    """The transition was applied (``False``: none asked, or the ticket was Done already)."""
    last_error: str | None = None
    retry_at: float | None = None


async def resolve(
    *,
    jira: Jira,
    key: str,
    comment: str,
    transition: str | None,
    now: float,
    attempts: int = 0,
    rng: random.Random | None = None,
) -> ResolveOutcome:
    """After a verified recovery: comment on the ticket, then apply ``transition`` (if
    any). ``attempts``: how many were made before (a retry looks for its own comment
    first, so it is never posted twice)."""
    rng = rng or random.Random()
    attempts += 1
    marker = f"selfheal-resolved-{hashlib.sha256(f'{key}/{comment}'.encode()).hexdigest()[:10]}"
    body = _clip(comment, TEXT_LIMIT, "\n\n_(truncated)_") + (
        f"\n\n{{color:#97a0af}}{marker}{{color}}"
    )
    try:
        # Always looked for: a crash may have lost the record of an earlier attempt.
        already = any(marker in c for c in (await jira.issue(key=key)).comments)
        if not already:
            await jira.comment(key=key, body=body)
        moved = await jira.transition(key=key, name=transition) if transition else False
    except JiraUnavailable as e:
        delay = backoff(attempt=attempts, retry_after=e.retry_after, rng=rng)
        metrics.TICKETS.labels("resolve", "pending").inc()
        return ResolveOutcome(
            state=ResolveState.PENDING, attempts=attempts, last_error=str(e), retry_at=now + delay
        )
    except JiraRejected as e:
        metrics.TICKETS.labels("resolve", "failed").inc()
        return ResolveOutcome(state=ResolveState.FAILED, attempts=attempts, last_error=str(e))
    metrics.TICKETS.labels("resolve", "resolved").inc()
    return ResolveOutcome(state=ResolveState.RESOLVED, attempts=attempts, transitioned=moved)


def resolution_status(
    outcome: ResolveOutcome, *, before: Mapping[str, Any], now: float, horizon: float
) -> dict[str, Any]:
    """``status.resolution`` after one attempt: Done, Failed, or Pending with its
    ``retryAt``; Pending past ``horizon`` (from the first attempt) gives up."""
    first = _from_ts("firstAttemptAt", before.get("firstAttemptAt")) or now
    out: dict[str, Any] = {
        "message": before.get("message") or "",
        "recovered": bool(before.get("recovered")),
        "attempts": outcome.attempts,
        "firstAttemptAt": _ts(first),
    }
    if outcome.state is ResolveState.RESOLVED:
        return {**out, "state": "Done"}
    if outcome.state is ResolveState.FAILED:
        return {**out, "state": "Failed", "lastError": outcome.last_error}
    if outcome.retry_at is not None and outcome.retry_at - first > horizon:
        metrics.GAVE_UP.labels("resolution").inc()
        why = f"gave up after {outcome.attempts} attempts over {now - first:.0f}s"
        return {**out, "state": "Failed", "lastError": f"{why}: {outcome.last_error}"}
    return {
        **out,
        "state": "Pending",
        "retryAt": _ts(outcome.retry_at),
        "lastError": outcome.last_error,
    }
