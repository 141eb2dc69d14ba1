"""Evidence for a ticket: collect (redacted at collection), then render.

The driver calls ``Evidence.gather`` once per escalation attempt loop; the bundle
is collected once and reused for retries of the same ticket.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from selfheal.clients import kube as k
from selfheal.clients.prometheus import Prometheus, PrometheusError
from selfheal.detect.signal import WorkloadRef
from selfheal.evidence import render
from selfheal.evidence.collect import collect as collect_bundle
from selfheal.evidence.redact import Redactor
from selfheal.policy.model import HealingPolicy
from selfheal.remediation.state import RemediationState

logger = logging.getLogger(__name__)

# ``max by (container)``: one pod's usage when a pod is named, else the busiest pod's.
USAGE_QUERIES = {
    "cpu": 'max by (container) (rate(container_cpu_usage_seconds_total{{namespace="{ns}",'
    'pod=~"{pod}",container!=""}}[5m]))',
    "memory": 'max by (container) (container_memory_working_set_bytes{{namespace="{ns}",'
    'pod=~"{pod}",container!=""}})',
}


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

    async def usage(
        self, namespace: str, deployment: str, pod: str | None
    ) -> dict[str, dict[str, object]] | None:
        """Container -> {cpu, memory} from cAdvisor metrics; ``None``: not configured."""
        if self.prometheus is None:
            return None
        # No pod blamed (a metric incident): the Deployment's pods, by name pattern.
        pod = re.escape(pod) if pod else f"{re.escape(deployment)}-[a-z0-9]+-[a-z0-9]+"
        out: dict[str, dict[str, object]] = {}
        for resource, template in USAGE_QUERIES.items():
            try:
                series = await self.prometheus.instant(template.format(ns=namespace, pod=pod))
            except PrometheusError as e:
                logger.info("usage query for %s/%s failed: %s", namespace, pod, e)
                continue
            for s in series:
                if s.samples:
                    out.setdefault(s.labels.get("container", "?"), {})[resource] = s.samples[-1][1]
        return out

    async def gather(
        self,
        *,
        policy: HealingPolicy,
        workload: WorkloadRef,
        trigger: str,
        state: RemediationState,
        facts: Any,
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
        usage = await self.usage(workload.namespace, workload.name, facts.pod)
        bundle = await collect_bundle(
            kube=self.kube,
            namespace=workload.namespace,
            deployment=workload.name,
            pod=facts.pod,
            container=facts.container,
            redactor=self.redactor(policy),
            prometheus_usage=usage,
            trigger_evidence=dict(state.evidence),
            steps=steps,
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
        )
        if related:
            description = (
                f"h3. Storm brake\nThese workloads of {workload.namespace} turned unhealthy "
                f"together; selfheal stopped acting and files this one summary: "
                f"{', '.join(related)}\n\n" + description
            )
        return summary, description, bundle.attachments(), bundle.summary()


def _outcome(state: RemediationState, related: Sequence[str]) -> str:
    """A few words for the ticket's summary line; the reason itself is in the description."""
    if related:
        return f"storm: {len(related)} workloads unhealthy at once"
    tried = [s.action for s in state.steps if str(s.result) != "Refused"]
    if tried:
        return f"{' then '.join(tried)} did not heal it"
    if state.steps:
        return "every step was refused"
    return "not acted on (guardrail)"
