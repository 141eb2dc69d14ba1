"""selfheal.evidence: what a ticket carries, gathered and redacted at collection.

- ``stacks``: stack traces in container logs (Python, JVM, Go, Node.js);
- ``redact``: the ``Redactor`` (text and Kubernetes objects);
- ``collect``: ``collect(...) -> Bundle`` from the API server, never raising for it;
- ``render``: the Jira summary line and the wiki-markup description.
"""

from __future__ import annotations

from selfheal.evidence.collect import Bundle, collect
from selfheal.evidence.redact import REDACTED, Redactor
from selfheal.evidence.render import render_description, render_summary
from selfheal.evidence.stacks import StackTrace, extract_stack, extract_stacks

__all__ = [
    "REDACTED",
    "Bundle",
    "Redactor",
    "StackTrace",
    "collect",
    "extract_stack",
    "extract_stacks",
    "render_description",
    "render_summary",
]
