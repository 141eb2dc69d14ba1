"""A ``Bundle`` as a Jira issue: the summary line and a description in Jira wiki markup.

The description is what the on-call reads first: a facts table, the stack trace in a
``{code}`` block, the log tail in a ``{noformat}`` block, resources beside usage, the
steps tried and how to look further. Every value from the cluster is escaped for
wiki markup, and block content is neutralised so a hostile log line such as
``{noformat}`` cannot close the block and inject markup. Jira limits a description
to 32,767 characters; this one stays under ``max_chars`` (the full texts are
attachments).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selfheal.evidence import humanize as hz
from selfheal.evidence.checklist import Check, checklist, exit_meaning
from selfheal.evidence.collect import Bundle
from selfheal.policy.model import HealingPolicy

MAX_DESCRIPTION = 30_000
MAX_SUMMARY = 255
STACK_CHARS = 8_000
LOG_LINES = 60
LOG_CHARS = 6_000
EVENT_ROWS = 15
CHANGE_ROWS = 25

_LANGUAGE = {"python": "python", "java": "java", "go": "go", "node": "javascript", "dotnet": "c#"}


class WorkloadLike(Protocol):
    """``selfheal.detect.signal.WorkloadRef`` or anything shaped like it."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


def render_summary(
    *,
    workload: WorkloadLike,
    trigger: str,
    cause: str,
    outcome: str,
    bundle: Bundle | None = None,
) -> str:
    """``[selfheal] shop/checkout: CrashLoopBackOff (OOMKilled) — rollback did not heal``.

    One line of at most 255 characters (Jira's limit for a summary).
    """
    what = cause or trigger or "unhealthy"
    t = bundle.termination if bundle is not None else None
    w = bundle.waiting if bundle is not None else None
    if t is not None and t.reason and t.reason != what:
        what += f" ({t.reason})"
    elif w is not None and w.reason and w.reason != what:
        what += f" ({w.reason})"
    text = f"[selfheal] {workload.namespace}/{workload.name}: {what}"
    if outcome:
        text += f" — {outcome}"
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_SUMMARY else flat[: MAX_SUMMARY - 1] + "…"


def render_description(
    bundle: Bundle,
    *,
    policy: HealingPolicy,
    workload: WorkloadLike,
    trigger: str,
    cause: str,
    steps: Sequence[Mapping[str, object]] | None = None,
    remediation: str = "",
    max_chars: int = MAX_DESCRIPTION,
    last_healthy: int | None = None,
    checks: Sequence[Check] | None = None,
) -> str:
    """The issue description in Jira wiki markup.

    ``steps``: the steps tried (``action``, ``result``, ``startedAt``, ``detail``...);
    ``None``: the bundle's. ``remediation``: the Remediation object's name, for the
    commands section. ``last_healthy``: the last healthy revision number when known
    (for the checklist); ``checks``: the checklist, ``None``: ``checklist(bundle)``.
    """
    # Text that did not come through collect() is redacted here, with the same redactor.
    steps = bundle.steps if steps is None else [_redact_step(bundle, s) for s in steps]
    trigger, cause = bundle.redact(trigger), bundle.redact(cause)
    ns, name = workload.namespace, workload.name
    out: list[str] = []
    now = bundle.collected_at
    out.append(f"h2. {esc(workload.kind)} {esc(ns)}/{esc(name)} was not healed")
    out.append("*" + esc(headline(bundle, trigger=trigger, cause=cause, steps=steps)) + "*")
    out.append("")

    if checks is None:
        checks = checklist(bundle, cause=cause, last_healthy=last_healthy)
    if checks:
        out.append("h3. What to check first")
        out.extend(f"# *{esc(c.title)}*: {esc(c.detail)}" for c in checks)
        out.append("")

    out.append("h3. Facts")
    t = bundle.termination
    facts: list[tuple[str, str]] = [
        ("Workload", f"{workload.kind} {ns}/{name}"),
        ("Namespace", ns),
        ("Policy", f"{policy.namespace}/{policy.name} (mode {policy.mode.value})"),
        ("Trigger", trigger),
        ("Cause", cause or "unknown"),
    ]
    if bundle.pod:
        facts.append(
            ("Pod", bundle.pod + (f" (container {bundle.container})" if bundle.container else ""))
        )
    if t is not None:
        code = "unknown" if t.exit_code is None else str(t.exit_code)
        facts.append(("Exit code", f"{code} ({t.reason or 'no reason'})"))
        meaning = exit_meaning(t.exit_code)
        if meaning:
            facts.append(("Exit code means", meaning))
        facts.append(("Restarts", str(t.restart_count)))
        if t.finished_at:
            facts.append(("Last termination", _span(t.started_at, t.finished_at, now)))
        if t.message and bundle.stack is None:
            # The end of the message: with FallbackToLogsOnError it is the log's tail.
            facts.append(("Termination message", _last_chars(t.message, 500)))
    w = bundle.waiting
    if w is not None:
        facts.append(
            ("Waiting", f"{w.reason or 'unknown'}: {w.message}" if w.message else w.reason)
        )
    facts.append(("Revision", bundle.revision or "unknown"))
    if bundle.images:
        facts.append(("Images", ", ".join(bundle.images)))
    facts.append(("Collected", hz.when(now)))
    facts.append(("Secrets redacted", str(bundle.redaction_count)))
    out.extend(f"||{esc(k)}|{cell(v)}|" for k, v in facts)
    out.append("")

    signal = _signal_facts(bundle.trigger_evidence, now=now)
    if signal:
        out.append("h3. What the trigger saw")
        out.extend(f"||{esc(k)}|{cell(v)}|" for k, v in signal)
        out.append("")

    if bundle.dependencies:
        out.append("h3. Dependencies")
        out.extend(
            f"* {'(x)' if d.failing else '(/)'} {esc(d.line())} (named as {esc(d.seen_as)})"
            for d in bundle.dependencies
        )
        out.append("")

    if bundle.changes:
        since = bundle.changes_since
        out.append(f"h3. What changed since revision {since} (the last healthy)")
        out.append(f"||Container||Field||Revision {since}||Revision {esc(bundle.revision)}||")
        for ch in bundle.changes[:CHANGE_ROWS]:
            out.append(
                "|"
                + "|".join(
                    cell(v) for v in (ch.container or "(pod)", ch.field, ch.before, ch.after)
                )
                + "|"
            )
        if len(bundle.changes) > CHANGE_ROWS:
            out.append(f"… and {len(bundle.changes) - CHANGE_ROWS} more (evidence.json).")
        out.append("")
    if bundle.config_changes:
        out.append(f"h3. Referenced ConfigMaps and Secrets (since revision {bundle.changes_since})")
        out.extend(f"* {esc(cc.line())}" for cc in bundle.config_changes)
        out.append("")

    out.append("h3. Stack trace")
    if bundle.stack is not None:
        st = bundle.stack
        out.append(
            f"{esc(st.runtime)}: *{esc(st.exception_type or 'error')}* {esc(st.message[:300])}"
        )
        if st.root_cause:
            out.append(f"Root cause: {esc(st.root_cause[:300])}")
        lang = _LANGUAGE.get(st.runtime, "none")
        out.append(block(_head_tail(st.text, STACK_CHARS), macro=f"code:{lang}", end="code"))
    else:
        out.append(f"No stack trace found in the {esc(bundle.logs_source)} logs.")
    out.append("")

    out.append(f"h3. Log tail ({esc(_log_source(bundle))})")
    if bundle.logs_source != "unavailable":
        out.append(block(_tail(bundle.logs, LOG_LINES, LOG_CHARS) or "(empty)"))
    else:
        why = bundle.unavailable.get("previous logs") or bundle.unavailable.get("pod") or ""
        out.append("Logs unavailable" + (f": {esc(why)}" if why else "."))
    out.append("")

    out.append("h3. Resources")
    if bundle.resources:
        out.append(
            "||Container||CPU request||CPU limit||CPU used"
            "||Memory request||Memory limit||Memory used||"
        )
        for r in bundle.resources:
            row = [
                r.container,
                r.requests.get("cpu", "-"),
                r.limits.get("cpu", "-"),
                _used(r.usage, "cpu"),
                r.requests.get("memory", "-"),
                r.limits.get("memory", "-"),
                _used(r.usage, "memory"),
            ]
            out.append("|" + "|".join(cell(v) for v in row) + "|")
    else:
        out.append("No container resources known.")
    if bundle.usage_source != "prometheus":
        out.append(f"Usage: {esc(bundle.usage_source)}.")
    elif bundle.usage_note:
        out.append(f"Usage: now, and {esc(bundle.usage_note)}.")
    out.append("")

    out.append("h3. Steps tried")
    if steps:
        out.append("||#||Action||Result||Started||Detail||")
        for i, s in enumerate(steps, 1):
            row = [
                str(i),
                _field(s, "action", "step", "name"),
                _field(s, "result", "outcome", "phase"),
                _field(s, "startedAt", "started", "at"),
                _field(s, "detail", "message", "reason"),
            ]
            out.append("|" + "|".join(cell(v) for v in row) + "|")
    else:
        out.append("None: no step was allowed or configured (see the Remediation).")
    out.append("")

    if bundle.rollout_history:
        out.append("h3. Rollout history")
        holder = "ReplicaSet" if bundle.kind == "Deployment" else "ControllerRevision"
        out.append(f"||Revision||{holder}||Images||Change cause||Created||")
        for h in bundle.rollout_history:
            rev = (
                f"{h.revision} (current)" if str(h.revision) == bundle.revision else str(h.revision)
            )
            row = [
                rev,
                h.replicaset,
                ", ".join(h.images),
                h.change_cause or "-",
                hz.when(h.created),
            ]
            out.append("|" + "|".join(cell(v) for v in row) + "|")
        out.append("")

    if bundle.events:
        out.append("h3. Recent events")
        out.append("||Time||Type||Reason||Object||Message||")
        for e in bundle.events[-EVENT_ROWS:]:
            msg = e.message + (f" (x{e.count})" if e.count > 1 else "")
            row = [hz.when(e.time), e.type, e.reason, e.object, msg[:400]]
            out.append("|" + "|".join(cell(v) for v in row) + "|")
        out.append("")

    if bundle.unavailable:
        out.append("h3. Not collected")
        out.extend(f"* {esc(k)}: {esc(v)}" for k, v in sorted(bundle.unavailable.items()))
        out.append("")

    out.append("h3. For the on-call")
    rem = remediation or ""
    cmds = [
        f"kubectl -n {ns} get remediation {rem} -o yaml"
        if rem
        else f"kubectl -n {ns} get remediations",
        f"kubectl -n {policy.namespace} get healingpolicy {policy.name} -o yaml",
        f"kubectl -n {ns} rollout history {bundle.kind.lower()}/{name}",
        f"kubectl -n {ns} get events --field-selector involvedObject.name={name}",
    ]
    if bundle.pod:
        c = f" -c {bundle.container}" if bundle.container else ""
        cmds.append(f"kubectl -n {ns} logs {bundle.pod}{c} --previous")
        cmds.append(f"kubectl -n {ns} describe pod {bundle.pod}")
    out.append(block("\n".join(cmds)))
    names = ", ".join(bundle.attachments())
    out.append(f"Attached (redacted): {esc(names)}.")
    if bundle.truncated:
        out.append(f"Truncated to fit: {esc(', '.join(bundle.truncated))}.")

    text = "\n".join(out)
    if len(text) > max_chars:
        cut = text[: max_chars - 80]
        # Never leave a block open: close it if the cut fell inside one.
        if _open_block(cut):
            cut += "\n{" + _open_block(cut) + "}"
        text = cut + "\n\n_Description truncated; see the attachments._"
    return text


def esc(text: str) -> str:
    """``text`` with wiki-markup characters escaped, on one line."""
    flat = " ".join(str(text).split())
    flat = _ESCAPE.sub(lambda m: "\\" + m.group(0), flat)
    # "-x-" strikes through, "??x??" cites, a leading "#"/"*" makes a list: escape those too.
    flat = _WORD_START_DASH.sub("\\\\-", flat)
    return flat.replace("??", "?\\?")


def cell(text: str) -> str:
    """A table cell: escaped, never empty (an empty cell breaks the row)."""
    return esc(text) or " "


def block(content: str, *, macro: str = "noformat", end: str = "noformat") -> str:
    """A ``{noformat}`` (or ``{code:...}``) block whose content cannot close it."""
    return f"{{{macro}}}\n{neutralise(content)}\n{{{end}}}"


def neutralise(content: str) -> str:
    """Break every macro tag in block content (``{noformat}``, ``{code}``, ``{panel}``...).

    A zero-width space after the brace keeps the text readable and the tag inert.
    """
    return _MACRO.sub("{\u200b", content)


_ESCAPE = re.compile(r"[\\|{}\[\]*_^~+!]")
_WORD_START_DASH = re.compile(r"(?<![^\s-])-(?=[\w-])")
_MACRO = re.compile(r"\{(?=\s*/?\s*(?:noformat|code|panel|quote|color|html)\b)", re.IGNORECASE)
_OPEN = re.compile(r"\{(noformat|code)(?::[^}]*)?\}")


def _open_block(text: str) -> str:
    """The macro left open at the end of ``text`` (``noformat``/``code``), or ``""``."""
    depth: str = ""
    for m in _OPEN.finditer(text):
        name = m.group(1)
        if not depth:
            depth = name
        elif name == depth and m.group(0) == "{" + name + "}":
            depth = ""
    return depth


def _redact_step(bundle: Bundle, step: Mapping[str, object]) -> dict[str, object]:
    return {k: bundle.redact(v) if isinstance(v, str) else v for k, v in step.items()}


def headline(
    bundle: Bundle,
    *,
    trigger: str,
    cause: str,
    steps: Sequence[Mapping[str, object]] = (),
) -> str:
    """The line an on-call reads first: what broke, how, since when, what was tried.

    ``CrashLoopBackOff: OOMKilled, exit 137 after 5 restarts · python ConnectionError:
    connection refused · revision 4 (shop/checkout:1.4.2) · tried rollback: NotHealed``
    """
    parts: list[str] = []
    what = cause or trigger or "unhealthy"
    t, w = bundle.termination, bundle.waiting
    if t is not None:
        code = "?" if t.exit_code is None else str(t.exit_code)
        how = f"{t.reason}, exit {code}" if t.reason and t.reason != what else f"exit {code}"
        parts.append(f"{what}: {how} after {t.restart_count} restarts")
    elif w is not None and w.reason:
        parts.append(f"{what}: {w.reason}" if w.reason != what else what)
    else:
        ev = bundle.trigger_evidence
        if "value" in ev and ("above" in ev or "below" in ev):
            side = "above" if ev.get("above") is not None else "below"
            limit = ev.get(side)
            parts.append(f"{what}: {hz.number(ev['value'])} ({side} {hz.number(limit)})")
        else:
            parts.append(what)
    if bundle.stack is not None:
        parts.append(f"{bundle.stack.runtime} {' '.join(bundle.stack.headline.split())[:120]}")
    if bundle.revision:
        img = f" ({', '.join(bundle.images)[:100]})" if bundle.images else ""
        parts.append(f"revision {bundle.revision}{img}")
    tried = [
        f"{_field(s, 'action', 'step', 'name')}: {_field(s, 'result', 'outcome', 'phase')}"
        for s in steps
    ]
    parts.append("tried " + ", ".join(tried) if tried else "no step tried")
    return " · ".join(parts)


_SIGNAL_FIELDS = (
    ("query", "Query"),
    ("value", "Value"),
    ("threshold", "Threshold"),
    ("above", "Above"),
    ("below", "Below"),
    ("band", "Expected band"),
    ("for", "For"),
    ("since", "Since"),
    ("sensitivity", "Sensitivity"),
    ("score", "Anomaly score"),
)


def _signal_facts(
    evidence: Mapping[str, Any], *, now: float | None = None
) -> list[tuple[str, str]]:
    """A metric trigger's evidence as rows: the query, the value, the threshold or band,
    and the recent samples (crash-loop evidence is in the Facts table already). Fields
    the trigger did not set (``below: None`` for an ``above`` rule) are left out."""
    rows: list[tuple[str, str]] = []
    for key, label in _SIGNAL_FIELDS:
        v = evidence.get(key)
        if v is None or v == "":
            continue
        if key == "since":
            rows.append((label, hz.when(v, now=now)))
        elif key == "for":
            rows.append((label, hz.duration(v)))
        elif key == "query":
            rows.append((label, str(v)))
        else:
            rows.append((label, hz.number(v)))
    samples = evidence.get("samples")
    if isinstance(samples, list) and samples:
        values = [
            f"{hz.number(s[1])} at {hz.when(s[0], date=False)}"
            if isinstance(s, list) and len(s) == 2 and hz.parse_time(s[0]) is not None
            else hz.number(s[1])
            if isinstance(s, list) and len(s) == 2
            else hz.number(s)
            for s in samples[-10:]
        ]
        rows.append(("Recent samples", ", ".join(values)))
    return rows


def _field(step: Mapping[str, object], *keys: str, now: float | None = None) -> str:
    for k in keys:
        v = step.get(k)
        if v in (None, "", "None"):
            continue
        # Times (Unix numbers or RFC 3339 in the Remediation's step records) read in UTC.
        if hz.parse_time(v) is not None and (
            isinstance(v, int | float) or k in ("startedAt", "started", "at")
        ):
            return hz.when(v, now=now)
        return str(v)
    return "-"


def _used(usage: Mapping[str, str], resource: str) -> str:
    """``250Mi (peak 256Mi)``; ``n/a`` when Prometheus had nothing."""
    now, peak = usage.get(resource), usage.get(f"{resource}_peak")
    if now and peak and peak != now:
        return f"{now} (peak {peak})"
    return now or (f"peak {peak}" if peak else "n/a")


def _span(started: str, finished: str, now: float) -> str:
    a, b = hz.parse_time(started), hz.parse_time(finished)
    if a is None or b is None:
        return f"{started or '-'} → {finished or '-'}"
    ran, ago = hz.duration(b - a), hz.duration(now - b)
    return f"{hz.when(a)} → {hz.when(b, date=False)} (ran {ran}; ended {ago} before collection)"


def _last_chars(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[len(text) - n + 1 :]


def _tail(text: str, lines: int, chars: int) -> str:
    kept = text.rstrip("\n").split("\n")[-lines:]
    out = "\n".join(kept)
    return out if len(out) <= chars else out[len(out) - chars :].split("\n", 1)[-1]


def _head_tail(text: str, chars: int) -> str:
    if len(text) <= chars:
        return text
    head = text[: chars * 3 // 5]
    tail = text[len(text) - chars * 2 // 5 :]
    return f"{head}\n... [truncated, see stack.txt] ...\n{tail}"


def _log_source(bundle: Bundle) -> str:
    return {
        "previous": "previous container, the one that crashed",
        "current": "current container: the previous one's logs were unavailable",
    }.get(bundle.logs_source, "unavailable")


__all__ = [
    "WorkloadLike",
    "block",
    "cell",
    "esc",
    "headline",
    "render_description",
    "render_summary",
]
