"""selfheal.evidence: what a ticket carries, gathered and redacted at collection.

- ``stacks``: stack traces in container logs (Python, JVM, Go, Node.js);
- ``redact``: the ``Redactor`` (text and Kubernetes objects); ``detectors``: the
  detect-secrets plugins and the entropy rule it uses;
- ``collect``: ``collect(...) -> Bundle`` from the API server, never raising for it;
- ``usage``: ``collect_usage(...)``: working set and CPU, now and peak over the
  incident window, from Prometheus;
- ``changes``: what changed since the last healthy revision (pod template diff,
  referenced ConfigMaps and Secrets);
- ``dependencies``: ``dependency_health(...)``: the Services the workload names and
  their ready endpoints;
- ``checklist``: what to check first, per cause;
- ``humanize``: times, durations and numbers as the on-call reads them;
- ``render``: the Jira summary line and the wiki-markup description.
"""

from __future__ import annotations

from selfheal.evidence.checklist import Check, checklist
from selfheal.evidence.collect import Bundle, collect
from selfheal.evidence.dependencies import Dependency, DependencyReport, dependency_health
from selfheal.evidence.redact import REDACTED, Redactor
from selfheal.evidence.render import render_description, render_summary
from selfheal.evidence.stacks import StackTrace, extract_stack, extract_stacks
from selfheal.evidence.usage import Usage, collect_usage

__all__ = [
    "REDACTED",
    "Bundle",
    "Check",
    "Dependency",
    "DependencyReport",
    "Redactor",
    "StackTrace",
    "Usage",
    "checklist",
    "collect",
    "collect_usage",
    "dependency_health",
    "extract_stack",
    "extract_stacks",
    "render_description",
    "render_summary",
]
