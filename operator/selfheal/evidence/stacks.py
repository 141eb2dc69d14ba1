"""Find stack traces in container logs: Python, JVM, Go, Node.js (and .NET frames, labelled).

Pure functions, one linear pass over the lines. Each recognised trace becomes a
``StackTrace`` with the runtime, the exception that ended it, its innermost cause
and the trace's own text, bounded in size. ``extract_stack`` returns the last one:
in a crashed container's previous logs that is the fatal one.

Log prefixes are tolerated: RFC 3339 / ``YYYY-MM-DD hh:mm:ss`` timestamps (as
``kubectl logs --timestamps`` or most loggers print them), CRI ``stdout F`` markers,
``kubectl logs --prefix`` markers,
and JSON log lines whose ``exc_info`` / ``stack_trace`` / ``stack`` / ``exception``
field holds the trace (structlog, logstash-logback-encoder, pino, bunyan).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence

PYTHON = "python"
JAVA = "java"
GO = "go"
NODE = "node"
DOTNET = "dotnet"

DEFAULT_MAX_CHARS = 16 * 1024
"""Default bound on one trace's text; longer ones keep their head and tail."""

_MAX_MESSAGE = 2000
_MAX_LINES = 20_000
"""Lines one trace may span while parsing: a runaway dump stops here."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StackTrace:
    runtime: str
    """``python``, ``java``, ``go``, ``node`` or ``dotnet``."""
    exception_type: str
    """The exception that ended the program or request, e.g. ``KeyError``,
    ``org.springframework.beans.factory.BeanCreationException``, ``panic``, ``TypeError``."""
    message: str
    """Its message (first lines, bounded)."""
    root_cause: str = ""
    """``Type: message`` of the innermost cause when the trace is chained, else empty."""
    text: str
    """The trace as it appeared (prefixes removed), bounded by ``max_chars``."""
    line: int = 0
    """0-based index of the trace's first line in the log."""
    truncated: bool = False

    @property
    def headline(self) -> str:
        """``Type: message`` on one line, for summaries."""
        first = self.message.split("\n", 1)[0]
        if not self.exception_type:
            return first
        return f"{self.exception_type}: {first}" if first else self.exception_type


def extract_stack(log: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> StackTrace | None:
    """The last stack trace in ``log`` (the fatal one in a crashed container), or ``None``."""
    found = extract_stacks(log, max_chars=max_chars, limit=1)
    return found[-1] if found else None


def extract_stacks(
    log: str, *, max_chars: int = DEFAULT_MAX_CHARS, limit: int = 20
) -> list[StackTrace]:
    """Every stack trace in ``log``, in order; only the last ``limit`` are kept."""
    lines = _normalise(log)
    out: list[StackTrace] = []
    for trace in _scan(lines, max_chars=max_chars):
        out.append(trace)
        if len(out) > limit:
            del out[0]
    return out


# --- normalisation --------------------------------------------------------------------------

_KUBECTL_PREFIX = re.compile(r"^\[pod/[^\]\s]+\] ")
_PREFIX = re.compile(
    r"^\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2}| ?UTC)?\]?"
    r"(?: (?:std(?:out|err) [FP] )?|$)"
)
_JSON_KEYS = ("exc_info", "stack_trace", "stacktrace", "stack", "exception", "traceback", "trace")
_JSON_HINT = re.compile(r'"(?:exc_info|stack_trace|stacktrace|stack|exception|traceback|trace)"')


def _normalise(log: str) -> list[str]:
    out: list[str] = []
    for raw in log.splitlines():
        line = raw
        if line[:5] == "[pod/":
            # kubectl logs --prefix: "[pod/NAME/CONTAINER] ".
            m = _KUBECTL_PREFIX.match(line)
            if m:
                line = line[m.end() :]
        if line[:1].isdigit() or line[:1] == "[":
            m = _PREFIX.match(line)
            if m:
                line = line[m.end() :]
        stripped = line.lstrip()
        if stripped[:1] == "{" and _JSON_HINT.search(stripped):
            expanded = _expand_json(stripped)
            if expanded is not None:
                out.extend(expanded)
                continue
        out.append(line.rstrip("\r"))
    return out


def _expand_json(line: str) -> list[str] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    stack = _json_stack(obj, depth=0)
    if stack is None:
        return None
    # The record's message first, so a trace without a header still has context.
    msg = obj.get("message", obj.get("msg", ""))
    head = [str(msg)] if isinstance(msg, str) and msg and msg not in stack else []
    return head + stack.splitlines()


def _json_stack(obj: dict[str, object], *, depth: int) -> str | None:
    for key in _JSON_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and "\n" in value:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return "\n".join(str(v) for v in value)
    if depth < 2:
        for value in obj.values():
            if isinstance(value, dict):
                found = _json_stack(value, depth=depth + 1)
                if found is not None:
                    return found
    return None


# --- the scan -------------------------------------------------------------------------------

_PY_START = "Traceback (most recent call last):"
_PY_GROUP_START = "Exception Group Traceback (most recent call last):"
_PY_CHAIN = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_PY_FRAME = re.compile(r'^  File "[^"]*", line \d+')
_PY_EXC = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_PY_GROUP_EXC = re.compile(r"^\s*\| ([A-Za-z_][\w.]*Group): ?(.*)$")

_JAVA_FRAME = re.compile(r"^\s+at [^\s(]+\(.*\)")
_NODE_FRAME = re.compile(
    r"^\s+at (?:.+ \((?:.*:\d+(?::\d+)?|<anonymous>|native|index \d+)\)"
    r"|(?:async )?\S+:\d+:\d+|<anonymous>)(?: \{)?\s*$"
)
_FRAME_AT = re.compile(_JAVA_FRAME.pattern + "|" + _NODE_FRAME.pattern)
_DOTNET_FRAME = re.compile(r"\) in .+:line \d+\s*$")
_JAVA_MORE = re.compile(r"^\s+\.\.\. \d+ (?:more|common frames omitted)")
_JAVA_HEADER = re.compile(
    r"^\s*(?:Exception in thread \"[^\"]*\" |Caused by: |Suppressed: |Wrapped by: )?"
    r"((?:[A-Za-z_$][\w$]*\.)+[A-Za-z_$][\w$]*)(?:: ?(.*))?$"
)
_JAVA_CAUSE = re.compile(r"^\s*(?:Caused by|Suppressed|Wrapped by): ")
_JAVA_EXTRA = re.compile(r"^\s+(?:\[CIRCULAR REFERENCE|\.\.\. \d+ )")
_NODE_HEADER = re.compile(r"^(?:Uncaught )?([A-Za-z_$][\w$]*(?: \[[A-Z0-9_]+\])?)(?:: ?(.*))?$")
_NODE_SOURCE = re.compile(r"^(?:/|node:|file://|[A-Za-z]:\\|\.{0,2}/?[\w.-]+/).*:\d+$")
_NODE_VERSION = re.compile(r"^Node\.js v\d+")
_NODE_REJECTION = re.compile(r"^\[?([A-Za-z_$][\w$]*): (.*?)\]?(?: \{)?$")

_GO_START = re.compile(r"^(panic|fatal error): (.*)$")
_GO_GOROUTINE = re.compile(r"^goroutine \d+ .*\[.*\]:\s*$")
_GO_FUNC = re.compile(r"^[^\s(][^\s]*\(.*\)\s*$")
_GO_FILE = re.compile(r"^\t.+:\d+(?: \+0x[0-9a-f]+)?\s*$")
_GO_OTHER = re.compile(
    r"^(?:created by .+|\.\.\.additional frames elided\.\.\.|\[signal .*\]|exit status \d+"
    r"|\t?panic: .*|\[recovered\].*|\s+\|.*|goroutine \d+ gp=.*)$"
)


def _scan(lines: Sequence[str], *, max_chars: int) -> Iterator[StackTrace]:
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        trace: StackTrace | None = None
        end = i + 1
        if line.endswith(_PY_START) or line.endswith(_PY_GROUP_START):
            trace, end = _python(lines, i, max_chars=max_chars)
        elif line.startswith('  File "') and _PY_FRAME.match(line):
            # Frames without their "Traceback" line: the log tail began inside the trace.
            trace, end = _python(lines, i, max_chars=max_chars, partial=True)
        elif line.startswith(("panic: ", "fatal error: ")):
            trace, end = _go(lines, i, max_chars=max_chars)
        elif _FRAME_AT.match(line) and (i == 0 or not _FRAME_AT.match(lines[i - 1])):
            trace, end = _frames(lines, i, max_chars=max_chars)
        if trace is not None:
            yield trace
        i = max(end, i + 1)


def _python(
    lines: Sequence[str], start: int, *, max_chars: int, partial: bool = False
) -> tuple[StackTrace | None, int]:
    n = len(lines)
    i = start
    chain: list[tuple[str, str]] = []
    scanned = start + 1
    if lines[start].endswith(_PY_GROUP_START):
        return _python_group(lines, start, max_chars=max_chars)
    while i < n and i - start < _MAX_LINES:
        # Frames: every indented line after the "Traceback" line.
        j = i if partial else i + 1
        partial = False
        while j < n and (lines[j][:1] in (" ", "\t")):
            j += 1
        if j >= n:
            scanned = j
            break
        exc_line = lines[j]
        m = _PY_EXC.match(exc_line)
        etype, msg = (m.group(1), m.group(2) or "") if m else ("", exc_line)
        j += 1
        # A message may go on over indented lines (psycopg's hints, exception notes).
        extra = 0
        while j < n and lines[j][:1] in (" ", "\t") and lines[j].strip() and extra < 20:
            msg += "\n" + lines[j].strip()
            j += 1
            extra += 1
        chain.append((etype, msg))
        # A chained exception: blank, the chain sentence, blank, another Traceback.
        k = j
        while k < n and not lines[k].strip() and k - j < 3:
            k += 1
        if k < n and lines[k].strip() in _PY_CHAIN:
            k += 1
            while k < n and not lines[k].strip() and k - j < 6:
                k += 1
            if k < n and lines[k].endswith(_PY_START):
                i = k
                continue
        i = j
        break
    if not chain:
        # Frames up to the end and no exception line: skip them all, or every
        # "File" line below would start the same scan again.
        return None, max(scanned, start + 1)
    end = min(i, n)
    etype, msg = chain[-1]
    root = f"{chain[0][0]}: {chain[0][1]}".strip(": ") if len(chain) > 1 else ""
    return _make(PYTHON, etype, msg, root, lines, start, end, max_chars), end


def _python_group(
    lines: Sequence[str], start: int, *, max_chars: int
) -> tuple[StackTrace | None, int]:
    # PEP 654 output: every line is indented and fenced with "|" and "+".
    n = len(lines)
    j = start + 1
    while j < n and lines[j][:1] in (" ", "\t") and j - start < _MAX_LINES:
        j += 1
    etype, msg = "ExceptionGroup", ""
    for k in range(start + 1, j):
        m = _PY_GROUP_EXC.match(lines[k])
        if m:
            etype, msg = m.group(1), m.group(2)
            break
    return _make(PYTHON, etype, msg, "", lines, start, j, max_chars), j


def _go(lines: Sequence[str], start: int, *, max_chars: int) -> tuple[StackTrace | None, int]:
    n = len(lines)
    m = _GO_START.match(lines[start])
    if m is None:
        return None, start + 1
    # A real panic has a goroutine dump close below; a log line that says "panic:" does not.
    first = next(
        (
            k
            for k in range(start + 1, min(n, start + 40))
            if lines[k].startswith("goroutine ") and _GO_GOROUTINE.match(lines[k])
        ),
        None,
    )
    if first is None:
        return None, start + 1
    message = "\n".join(
        [
            m.group(2),
            *(
                ln.strip()
                for ln in lines[start + 1 : first]
                if ln.strip() and not ln.startswith("[signal")
            ),
        ]
    )
    j, last = first, first
    while j < n and j - start < _MAX_LINES:
        ln = lines[j]
        if not ln.strip():
            j += 1
            continue
        if (
            _GO_GOROUTINE.match(ln)
            or _GO_FUNC.match(ln)
            or _GO_FILE.match(ln)
            or _GO_OTHER.match(ln)
        ):
            last = j
            j += 1
            continue
        break
    end = last + 1
    kind = m.group(1)
    return _make(GO, kind, message, "", lines, start, end, max_chars), end


def _frames(lines: Sequence[str], first: int, *, max_chars: int) -> tuple[StackTrace | None, int]:
    """A trace made of ``at`` frames: JVM (``at a.B.c(B.java:1)``) or Node (``at f (x.js:1:2)``)."""
    if not _JAVA_FRAME.match(lines[first]):
        return _node(lines, first, max_chars=max_chars)
    if _DOTNET_FRAME.search(lines[first]):
        return _dotnet(lines, first, max_chars=max_chars)
    return _java(lines, first, max_chars=max_chars)


def _header_above(lines: Sequence[str], first: int, pattern: re.Pattern[str]) -> int | None:
    """The header line of a trace whose first frame is at ``first``; messages may span lines."""
    for k in range(first - 1, max(-1, first - 25), -1):
        if pattern.match(lines[k]):
            return k
        if not lines[k].strip() or _FRAME_AT.match(lines[k]):
            return None
    return None


def _line_above(lines: Sequence[str], first: int) -> int:
    """Without a recognised header, the line above the frames names the error, if any."""
    return first - 1 if first > 0 and lines[first - 1].strip() else first


def _java(lines: Sequence[str], first: int, *, max_chars: int) -> tuple[StackTrace, int]:
    n = len(lines)
    h = _header_above(lines, first, _JAVA_HEADER)
    start = h if h is not None else _line_above(lines, first)
    header = _JAVA_HEADER.match(lines[start]) if start < first else None
    above = lines[start].strip() if start < first else ""
    etype, msg = (header.group(1), header.group(2) or "") if header else ("", above)
    if header and start + 1 < first:
        msg = "\n".join([msg, *(ln.strip() for ln in lines[start + 1 : first])])
    causes: list[tuple[str, str]] = []
    j = first
    while j < n and j - start < _MAX_LINES:
        ln = lines[j]
        if _FRAME_AT.match(ln) or _JAVA_EXTRA.match(ln):
            j += 1
            continue
        if _JAVA_CAUSE.match(ln):
            # Its message may span lines; it belongs here only if frames follow.
            nxt = next(
                (
                    k
                    for k in range(j + 1, min(n, j + 20))
                    if _FRAME_AT.match(lines[k]) or _JAVA_MORE.match(lines[k])
                ),
                None,
            )
            cm = _JAVA_HEADER.match(ln)
            if ln.lstrip().startswith("Caused by:") and cm:
                cmsg = "\n".join(
                    [cm.group(2) or "", *(x.strip() for x in lines[j + 1 : nxt or j + 1])]
                )
                causes.append((cm.group(1), cmsg.strip()))
            if nxt is None:
                j += 1
                break
            j = nxt
            continue
        break
    root = ""
    if causes:
        ctype, cmsg = causes[-1]
        root = f"{ctype}: {cmsg.splitlines()[0]}" if cmsg else ctype
    return _make(JAVA, etype, msg.strip(), root, lines, start, j, max_chars), j


def _dotnet(lines: Sequence[str], first: int, *, max_chars: int) -> tuple[StackTrace, int]:
    n = len(lines)
    start = max(0, first - 1)
    m = re.match(r"^\s*(?:Unhandled exception\. )?([\w.]+): ?(.*)$", lines[start])
    etype, msg = (m.group(1), m.group(2)) if m else ("", lines[start].strip())
    j = first
    while j < n and (_FRAME_AT.match(lines[j]) or lines[j].lstrip().startswith("--- ")):
        j += 1
    return _make(DOTNET, etype, msg, "", lines, start, j, max_chars), j


def _node(lines: Sequence[str], first: int, *, max_chars: int) -> tuple[StackTrace, int]:
    n = len(lines)
    h = _header_above(lines, first, _NODE_HEADER)
    start = h if h is not None else _line_above(lines, first)
    header = _NODE_HEADER.match(lines[start]) if start < first else None
    above = lines[start].strip() if start < first else ""
    etype, msg = (header.group(1), header.group(2) or "") if header else ("", above)
    if header and start + 1 < first:
        msg = "\n".join([msg, *(ln.strip() for ln in lines[start + 1 : first])])
    j = first
    while j < n and _FRAME_AT.match(lines[j]) and j - start < _MAX_LINES:
        j += 1
    # Own properties printed after the frames: "    at ... {\n  code: 'X'\n}".
    if j < n and lines[j - 1].rstrip().endswith("{"):
        k = j
        while k < n and k - j < 40 and lines[k].strip() != "}":
            k += 1
        if k < n and lines[k].strip() == "}":
            j = k + 1
    # The uncaught banner above: "file.js:42", the source line, the caret, a blank line.
    start = _node_banner_above(lines, start)
    j = _node_version_below(lines, j)
    return _make(NODE, etype, msg.strip(), "", lines, start, j, max_chars), j


def _node_banner_above(lines: Sequence[str], start: int) -> int:
    k = start - 1
    if k >= 0 and not lines[k].strip():
        k -= 1
    if k >= 1 and lines[k].strip().endswith("^"):
        for s in range(k - 1, max(-1, k - 4), -1):
            if _NODE_SOURCE.match(lines[s]):
                return s
    return start


def _node_version_below(lines: Sequence[str], j: int) -> int:
    n = len(lines)
    k = j
    while k < n and k - j < 3 and not lines[k].strip():
        k += 1
    if k < n and _NODE_VERSION.match(lines[k]):
        return k + 1
    return j


def _make(
    runtime: str,
    etype: str,
    msg: str,
    root: str,
    lines: Sequence[str],
    start: int,
    end: int,
    max_chars: int,
) -> StackTrace:
    # Trailing blank lines are not part of the trace.
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    text, truncated = bound("\n".join(lines[start:end]), max_chars=max_chars)
    return StackTrace(
        runtime=runtime,
        exception_type=etype,
        message=msg[:_MAX_MESSAGE],
        root_cause=root[:_MAX_MESSAGE],
        text=text,
        line=start,
        truncated=truncated,
    )


def bound(text: str, *, max_chars: int) -> tuple[str, bool]:
    """``text`` cut to ``max_chars``, keeping the head and the tail around a marker.

    Both ends matter: the head names the exception (and Go's panicking goroutine),
    the tail holds the innermost ``Caused by`` (JVM) or the final exception (Python).
    """
    if len(text) <= max_chars:
        return text, False
    head_len = max_chars * 3 // 5
    tail_len = max(0, max_chars - head_len - 64)
    head = text[:head_len].rsplit("\n", 1)[0]
    tail = text[len(text) - tail_len :].split("\n", 1)[-1] if tail_len else ""
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n... [{cut} characters truncated] ...\n{tail}", True
