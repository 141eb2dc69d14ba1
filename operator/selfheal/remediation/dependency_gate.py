"""Should a step wait, or be skipped, because the workload is a failing dependency's victim?

Restarting or rolling back ``checkout`` cannot help while ``payments``, which it calls,
has no ready endpoint: the new pods crash the same way, and the rollback marks a good
release bad. The policy says what to do (``remediation.dependencies.onUnhealthy``, or a
step's own ``dependencies``): ``Ignore`` (act as if nothing was checked), ``Escalate``
(skip the step, recorded ``Refused`` with reason ``DependencyUnhealthy``) or ``Wait``
(hold the step until the dependency is healthy, at most ``waitFor``).

Pure: ``gate()`` decides from ``DependencyFacts``, which the driver gathers before a
step (``selfheal.remediation.dependency_probe``) and passes in the machine's
``Context``. Missing or old facts never mean "healthy":

- no facts yet, or facts from before the incident opened or the last action (the world
  they describe may be gone), or older than ``MAX_AGE``: ``Check``; the step waits for
  them (the driver gathers them off the decision path, the next pass decides);
- a dependency named but its health unreadable (a 403, a timeout): under ``Wait`` the
  step keeps waiting (the SRE asked not to act while a dependency may be down, and the
  wait is bounded, ending in an escalation, never in a blind action); under
  ``Escalate`` the step runs, its Event saying what could not be read: skipping on
  missing data would turn every RBAC gap or API hiccup into "never remediate";
- no dependency named at all (nothing in the logs, or no logs): the step runs.
"""

from __future__ import annotations

import dataclasses
import enum

from selfheal.evidence.dependencies import DependencyReport
from selfheal.policy.model import DependencyRule, HealingPolicy, OnDependencyUnhealthy
from selfheal.remediation.state import RemediationState

DEPENDENCY_UNHEALTHY = "DependencyUnhealthy"
"""``status.steps[].reason`` of a step skipped for a failing dependency."""
MAX_AGE = 30.0
"""Seconds facts are good for a decision; older ones are gathered again first."""
WAITING = "waiting for a dependency: "
"""Prefix of ``status.waitingFor`` while a step waits for a failing dependency."""
CHECKING = "checking the dependencies named in the logs, stack trace and env"
"""``status.waitingFor`` while the facts for a step are being gathered."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DependencyFacts:
    """What the driver found about the workload's dependencies, at ``at``."""

    at: float
    failing: tuple[str, ...] = ()
    """One line per failing dependency: ``payments.shop: 0 of 3 endpoints ready``."""
    unknown: tuple[str, ...] = ()
    """What could not be read: ``endpointslices of payments.shop: 403 Forbidden``."""


def facts_from(report: DependencyReport, *, at: float) -> DependencyFacts:
    """The facts of a ``dependency_report`` (or ``dependency_health``) answer."""
    return DependencyFacts(
        at=at,
        failing=tuple(d.line() for d in report.dependencies if d.failing),
        unknown=tuple(f"{what}: {why}" for what, why in sorted(report.unavailable.items())),
    )


class Verdict(enum.StrEnum):
    RUN = "Run"
    """Run the step (possibly with a note that some health could not be read)."""
    SKIP = "Skip"
    """Record the step Refused (``DependencyUnhealthy``) and go on to the next."""
    WAIT = "Wait"
    """Hold the step: a dependency is failing (or unreadable, under ``Wait``)."""
    CHECK = "Check"
    """Hold the step until the facts are gathered."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gate:
    verdict: Verdict
    message: str = ""
    """SKIP/WAIT: names the dependency; RUN: what could not be read, if anything."""


def wanted(policy: HealingPolicy) -> bool:
    """Some step of ``policy`` looks at dependencies (the driver gathers facts only then)."""
    r = policy.remediation
    return any(
        r.dependency_rule(i).on_unhealthy is not OnDependencyUnhealthy.IGNORE
        for i in range(len(r.steps))
    )


def fresh_since(state: RemediationState | None, *, now: float) -> float:
    """Facts for ``state``'s next step must be gathered after this: after the incident
    opened (``now`` for one not opened yet) and after its last action."""
    if state is None:
        return now
    return max(state.detected_at, state.last_acted_at or state.detected_at)


def gate(rule: DependencyRule, facts: DependencyFacts | None, *, now: float, since: float) -> Gate:
    """What a step under ``rule`` does, given ``facts`` (``None``: none gathered yet),
    which must have been gathered after ``since`` (``fresh_since``)."""
    if rule.on_unhealthy is OnDependencyUnhealthy.IGNORE:
        return Gate(verdict=Verdict.RUN)
    if facts is None or facts.at < since or now - facts.at > MAX_AGE:
        return Gate(verdict=Verdict.CHECK, message=CHECKING)
    if facts.failing:
        what = "; ".join(facts.failing)
        if rule.on_unhealthy is OnDependencyUnhealthy.ESCALATE:
            return Gate(verdict=Verdict.SKIP, message=f"dependency unhealthy: {what}")
        return Gate(verdict=Verdict.WAIT, message=f"{WAITING}{what}")
    if facts.unknown:
        what = "; ".join(facts.unknown)
        if rule.on_unhealthy is OnDependencyUnhealthy.WAIT:
            return Gate(verdict=Verdict.WAIT, message=f"{WAITING}health unknown ({what})")
        return Gate(verdict=Verdict.RUN, message=f"dependency health unknown ({what})")
    return Gate(verdict=Verdict.RUN)


__all__ = [
    "CHECKING",
    "DEPENDENCY_UNHEALTHY",
    "MAX_AGE",
    "WAITING",
    "DependencyFacts",
    "Gate",
    "Verdict",
    "facts_from",
    "fresh_since",
    "gate",
    "wanted",
]
