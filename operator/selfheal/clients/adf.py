"""Jira wiki markup (what selfheal renders) to Atlassian Document Format, and back to text.

Jira Cloud's REST API v3 takes descriptions and comments as ADF documents only. The
converter knows the markup ``selfheal.evidence.render`` writes: headings (``h1.``..
``h6.``), ``{code[:lang]}`` and ``{noformat}`` blocks (ADF ``codeBlock``), tables
(``||header||`` and ``|cell|`` rows, mixed too), bullet and numbered lists (``*``,
``-``, ``#``), a ``----`` rule, ``*bold*``, ``_italic_``, ``{{monospace}}`` and
backslash escapes. Anything else is kept as text in paragraphs: the conversion never
drops text, it may only drop formatting. Pure; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

Node = dict[str, Any]

_BLOCK_OPEN = re.compile(r"^\s*\{(code|noformat)(?::([^}]*))?\}(.*)$")
_HEADING = re.compile(r"^\s*h([1-6])\.\s?(.*)$")
_LIST = re.compile(r"^\s*([*#-]+)\s+(.*)$")
_RULE = re.compile(r"^\s*-{4,}\s*$")
# Inline marks: *strong*, _em_, {{code}}; an opening mark follows a non-word character
# and precedes a non-space, the closing one the reverse, neither escaped.
_INLINE = re.compile(
    r"\{\{(?P<code>.+?)\}\}"
    r"|(?<![\w\\])\*(?P<strong>(?=\S)(?:\\.|[^*\\])+?(?<=\S))\*(?!\w)"
    r"|(?<![\w\\])_(?P<em>(?=\S)(?:\\.|[^_\\])+?(?<=\S))_(?!\w)"
)
_ESCAPED = re.compile(r"\\(.)")


def _unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text)


def _text(text: str, marks: Iterable[str] = ()) -> list[Node]:
    if not text:
        return []  # ADF refuses empty text nodes
    node: Node = {"type": "text", "text": text}
    marks = list(marks)
    if marks:
        node["marks"] = [{"type": m} for m in marks]
    return [node]


def inline(text: str) -> list[Node]:
    """One line of wiki text as ADF inline nodes."""
    out: list[Node] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out += _text(_unescape(text[pos : m.start()]))
        if m.group("code") is not None:
            out += _text(m.group("code"), ["code"])
        elif m.group("strong") is not None:
            out += _text(_unescape(m.group("strong")), ["strong"])
        else:
            out += _text(_unescape(m.group("em")), ["em"])
        pos = m.end()
    out += _text(_unescape(text[pos:]))
    return out


def _paragraph(lines: list[str]) -> Node:
    content: list[Node] = []
    for i, line in enumerate(lines):
        if i:
            content.append({"type": "hardBreak"})
        content += inline(line)
    return {"type": "paragraph", "content": content}


def _cells(row: str) -> list[tuple[bool, str]]:
    """``||a||b|c|`` -> ``[(True, "a"), (True, "b"), (False, "c")]`` (escapes kept)."""
    cells: list[tuple[bool, str]] = []
    header: bool | None = None
    buf: list[str] = []
    i, s = 0, row.strip()
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            buf.append(s[i : i + 2])
            i += 2
            continue
        if ch == "|":
            if header is not None:
                cells.append((header, "".join(buf)))
            buf = []
            header = s.startswith("||", i)
            i += 2 if header else 1
            continue
        buf.append(ch)
        i += 1
    if header is not None and "".join(buf).strip():
        cells.append((header, "".join(buf)))  # a row missing its closing bar
    return cells


def _table(rows: list[str]) -> Node:
    out: list[Node] = []
    for row in rows:
        cells = [
            {
                "type": "tableHeader" if header else "tableCell",
                "content": [{"type": "paragraph", "content": inline(text.strip())}],
            }
            for header, text in _cells(row)
        ]
        if cells:
            out.append({"type": "tableRow", "content": cells})
    return {"type": "table", "content": out}


def _list(items: list[tuple[str, str]]) -> list[Node]:
    """Consecutive list lines, grouped by kind (nesting is flattened: text is kept)."""
    out: list[Node] = []
    for marker, text in items:
        kind = "orderedList" if marker.endswith("#") else "bulletList"
        item = {"type": "listItem", "content": [{"type": "paragraph", "content": inline(text)}]}
        if out and out[-1]["type"] == kind:
            out[-1]["content"].append(item)
        else:
            out.append({"type": kind, "content": [item]})
    return out


def wiki_to_adf(text: str) -> Node:
    """A wiki-markup string as an ADF document (``{"type": "doc", "version": 1, ...}``)."""
    blocks: list[Node] = []
    para: list[str] = []
    table: list[str] = []
    items: list[tuple[str, str]] = []

    def flush() -> None:
        if para:
            blocks.append(_paragraph(para))
            para.clear()
        if table:
            blocks.append(_table(table))
            table.clear()
        if items:
            blocks.extend(_list(items))
            items.clear()

    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if m := _BLOCK_OPEN.match(line):
            flush()
            name, lang, rest = m.group(1), (m.group(2) or "").strip(), m.group(3)
            end = "{" + name + "}"
            body: list[str] = []
            if rest.strip():
                if rest.rstrip().endswith(end):  # {code}x{code} on one line
                    body.append(rest.rstrip()[: -len(end)])
                    blocks.append(_code(body, name, lang))
                    continue
                body.append(rest)
            while i < len(lines) and lines[i].strip() != end:
                body.append(lines[i])
                i += 1
            i += 1  # the closing tag (or the end of the text)
            blocks.append(_code(body, name, lang))
            continue
        if table and not line.strip().startswith("|"):
            flush()
        if items and not _LIST.match(line):
            flush()
        if not line.strip():
            flush()
        elif m := _HEADING.match(line):
            flush()
            blocks.append(
                {
                    "type": "heading",
                    "attrs": {"level": int(m.group(1))},
                    "content": inline(m.group(2)),
                }
            )
        elif _RULE.match(line):
            flush()
            blocks.append({"type": "rule"})
        elif line.strip().startswith("|"):
            if para or items:
                flush()
            table.append(line)
        elif m := _LIST.match(line):
            if para:
                flush()
            items.append((m.group(1), m.group(2)))
        else:
            para.append(line)
    flush()
    return {"type": "doc", "version": 1, "content": blocks}


def _code(body: list[str], name: str, lang: str) -> Node:
    node: Node = {"type": "codeBlock", "content": _text("\n".join(body))}
    if name == "code" and lang and lang != "none":
        node["attrs"] = {"language": lang}
    return node


def adf_to_text(node: Any) -> str:
    """The text of an ADF document (or any node): blocks on their own lines, table
    cells separated by `` | ``. Not wiki markup: for reading and searching."""
    if isinstance(node, str):
        return node
    if not isinstance(node, Mapping):
        return ""
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "hardBreak":
        return "\n"
    if kind in ("mention", "emoji", "status", "date"):
        attrs = node.get("attrs") or {}
        return str(attrs.get("text") or attrs.get("shortName") or "")
    if kind == "inlineCard":
        return str((node.get("attrs") or {}).get("url", ""))
    children = [c for c in node.get("content") or () if isinstance(c, Mapping)]
    if kind == "tableRow":
        return " | ".join(adf_to_text(c) for c in children)
    if kind in ("paragraph", "heading", "codeBlock"):
        return "".join(adf_to_text(c) for c in children)
    return "\n".join(adf_to_text(c) for c in children)
