"""Wiki markup as selfheal renders it, converted to Atlassian Document Format: the
structure Jira Cloud shows (headings, code blocks, tables, lists, bold) and every
piece of text kept."""

from __future__ import annotations

from typing import Any

from selfheal.clients.adf import adf_to_text, wiki_to_adf
from tests.support.jira_server import adf_valid

WIKI = """h2. Deployment shop/api was not healed
Crash loop \\| exit 137 \\[x\\]

h3. Facts
||Workload|Deployment shop/api|
||Exit code|137 (OOMKilled)|
||#||Action||
|1|rollback|

python: *ValueError* bad _input_ {{x = 1}}
{code:python}
Traceback (most recent call last):
  *not bold* {\u200bnoformat}
{code}
{noformat}
log | line
{noformat}
* metrics: unavailable
# first
----
selfheal-occurrence-1a2b"""


def _types(doc: dict[str, Any]) -> list[str]:
    return [n["type"] for n in doc["content"]]


def test_blocks_map_to_adf_nodes() -> None:
    doc = wiki_to_adf(WIKI)
    assert adf_valid(doc)
    assert _types(doc) == [
        "heading", "paragraph", "heading", "table", "paragraph", "codeBlock", "codeBlock",
        "bulletList", "orderedList", "rule", "paragraph",
    ]  # fmt: skip
    assert doc["content"][0]["attrs"] == {"level": 2}
    code, noformat = doc["content"][5], doc["content"][6]
    assert code["attrs"] == {"language": "python"}
    assert "attrs" not in noformat
    # Code is verbatim: no marks, no unescaping, the neutralised tag stays inert.
    assert code["content"] == [
        {
            "type": "text",
            "text": "Traceback (most recent call last):\n  *not bold* {\u200bnoformat}",
        }
    ]
    rows = doc["content"][3]["content"]
    assert [[c["type"] for c in r["content"]] for r in rows] == [
        ["tableHeader", "tableCell"],
        ["tableHeader", "tableCell"],
        ["tableHeader", "tableHeader"],
        ["tableCell", "tableCell"],
    ]


def test_inline_marks_and_escapes() -> None:
    [para] = wiki_to_adf("python: *ValueError* bad _input_ {{x = 1}} a\\*b")["content"]
    assert [(n["text"], [m["type"] for m in n.get("marks", [])]) for n in para["content"]] == [
        ("python: ", []),
        ("ValueError", ["strong"]),
        (" bad ", []),
        ("input", ["em"]),
        (" ", []),
        ("x = 1", ["code"]),
        (" a*b", []),
    ]


def test_no_text_is_lost() -> None:
    text = adf_to_text(wiki_to_adf(WIKI))
    for piece in (
        "Deployment shop/api was not healed",
        "Crash loop | exit 137 [x]",
        "Exit code | 137 (OOMKilled)",
        "# | Action",
        "1 | rollback",
        "python: ValueError bad input x = 1",
        "  *not bold* {\u200bnoformat}",
        "log | line",
        "metrics: unavailable",
        "first",
        "selfheal-occurrence-1a2b",
    ):
        assert piece in text


def test_empty_and_unclosed_input_still_make_valid_documents() -> None:
    assert wiki_to_adf("") == {"type": "doc", "version": 1, "content": []}
    doc = wiki_to_adf("{code}\nleft open")
    assert adf_valid(doc)
    assert adf_to_text(doc) == "left open"
    assert adf_valid(wiki_to_adf("||\n|\n{code}{code}\n* \nh3."))
