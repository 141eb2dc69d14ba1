"""Evidence for a ticket: collect (redacted at collection), then render.

The driver calls ``Evidence.gather`` once per escalation attempt loop; the bundle
is collected once and reused for retries of the same ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from selfheal.clients import kube as k
from selfheal.clients.prometheus import Prometheus
from selfheal.detect.signal import WorkloadRef
from selfheal.evidence import render
from selfheal.evidence.collect import collect as collect_bundle
from selfheal.evidence.redact import Redactor
from selfheal.evidence.usage import collect_usage
from selfheal.policy.model import HealingPolicy
from selfheal.remediation.dependency_gate import DEPENDENCY_UNHEALTHY
from selfheal.remediation.facts import Facts
from selfheal.remediation.state import RemediationState

logger = logging.getLogger(__name__)


class Evidence:
    def __init__(self, *, kube: k.Kube, prometheus: Prometheus | None) -> None:
        self.kube = kube
        self.prometheus = prometheus
        self._redactors: dict[tuple[str, ...], Redactor] = {}

    def redactor(self, policy: HealingPolicy) -> Redactor:
        key = tuple(policy.redact_patterns)
        if key not in self._redactors:
            self._redactors[key] = Redactor.for_policy(policy.redact_patterns)
        return self._redactors[key]

    async def gather(
        self,
        *,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        state: RemediationState,
        facts: Facts,
        reason: str,
        related: Sequence[str] = (),
    ) -> tuple[str, str, Mapping[str, bytes], str]:
        steps = [
            {
                "action": s.action,
                "result": str(s.result) if s.result else "InFlight",
                "startedAt": s.started_at,
                "detail": s.message,
            }
            for s in state.steps
        ]
        usage = (
            await collect_usage(
                self.prometheus,
                namespace=workload.namespace,
                deployment=workload.name,
                pod=facts.pod,
                start=state.detected_at,
            )
            if self.prometheus is not None
            else None
        )
        last_healthy = _last_healthy(state)
        bundle = await collect_bundle(
            kube=self.kube,
            namespace=workload.namespace,
            deployment=workload.name,
            pod=facts.pod,
            container=facts.container,
            redactor=self.redactor(policy),
            prometheus_usage=usage.by_container if usage else None,
            usage_note=usage.note if usage else "",
            trigger_evidence=dict(state.evidence),
            steps=steps,
            last_healthy=last_healthy,
            known_bad=facts.records.known_bad_hashes(workload.name, own=facts.template_hash),
            dependencies=True,
            config_changes=True,
            kind=workload.kind,
        )
        outcome = reason
        if related:
            outcome += f" (storm: {len(related)} workloads: {', '.join(related[:10])})"
        summary = render.render_summary(
            workload=workload,
            trigger=trigger,
            cause=state.cause,
            outcome=_outcome(state, related),
            bundle=bundle,
        )
        description = render.render_description(
            bundle,
            policy=policy,
            workload=workload,
            trigger=trigger,
            cause=state.cause,
            steps=steps,
            last_healthy=last_healthy,
        )
        if related:
            description = (
                f"h3. Storm brake\nThese workloads of {workload.namespace} turned unhealthy "
                f"together; selfheal stopped acting and files this one summary: "
                f"{', '.join(related)}\n\n" + description
            )
        return summary, description, bundle.attachments(), bundle.summary()


def _last_healthy(state: RemediationState) -> int | None:
    """The revision a successful rollback went to (the diff is against it); ``None``:
    the collector's own choice, the newest revision before the current one."""
    for step in reversed(state.steps):
        to = step.change.get("toRevision")
        if step.action == "rollback" and str(step.result) == "Succeeded" and str(to).isdigit():
            return int(str(to))
    return None


def _outcome(state: RemediationState, related: Sequence[str]) -> str:
    """A few words for the ticket's summary line; the reason itself is in the description."""
    if related:
        return f"storm: {len(related)} workloads unhealthy at once"
    skipped = [s for s in state.steps if s.reason == DEPENDENCY_UNHEALTHY]
    if skipped:
        # The cause is elsewhere: say which dependency, not only that nothing ran.
        why = skipped[-1].message.removeprefix("skipped: ")
        return f"{' and '.join(s.action for s in skipped)} skipped: {why}"
    tried = [s.action for s in state.steps if str(s.result) != "Refused"]
    if tried:
        return f"{' then '.join(tried)} did not heal it"
    if state.steps:
        return "every step was refused"
    return "not acted on (guardrail)"
