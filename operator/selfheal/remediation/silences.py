"""Alertmanager silences while selfheal heals: due work in ``status.silence``.

While a Remediation is Acting or Verifying (or between two of its steps) the workload's
alerts are silenced, so the on-call is not paged for what selfheal is already doing;
when the incident resolves or escalates the silence is expired, because an escalation
must page. Level-triggered, like ticket work:

- :func:`due` (pure) reads the stored status and says what is due: ``create``,
  ``adopt`` (a create was sent and its answer may be lost), ``expire`` or nothing;
- :class:`Silencer` does it. Before a create is sent, the intent is written to
  ``status.silence`` (``state: Creating`` and a ``marker`` that the silence's comment
  carries), so a crash at any instant is resumed by finding the silence by its marker:
  a restart never leaks a silence and never makes a second one. Every silence also
  ends by itself (``endsAt``: the steps' verify timeouts left plus a margin), so even a
  lost record cannot silence forever.

Alertmanager down is recorded (``lastError``, ``attempts``, ``retryAt``) and retried.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k
from selfheal.clients.alertmanager import Alertmanager, AlertmanagerError
from selfheal.policy.model import HealingPolicy
from selfheal.remediation.state import Phase, format_time, parse_time

logger = logging.getLogger(__name__)

CREATING = "Creating"
"""The create is about to be sent, or was sent and its answer not stored yet."""
ACTIVE = "Active"
EXPIRED = "Expired"
"""Expired by selfheal (or never made: the incident ended before the create)."""

MARGIN = 300.0
"""Seconds a silence outlives the verify timeouts still ahead (its ``endsAt`` bound)."""
CREATED_BY = "selfheal"
RETRY_MIN, RETRY_MAX = 5.0, 300.0
"""Backoff (seconds) after an Alertmanager error: doubled per attempt, capped."""
PLURAL = "remediations"


def wanted(status: Mapping[str, Any]) -> bool:
    """The workload's alerts should be silenced now: a step is running or being verified,
    or the incident is between two steps (one was taken; the next comes)."""
    phase = status.get("phase")
    if phase in (str(Phase.ACTING), str(Phase.VERIFYING)):
        return True
    return phase == str(Phase.DETECTED) and bool(status.get("steps"))


def due(status: Mapping[str, Any], *, now: float) -> str | None:
    """``create``, ``adopt``, ``expire`` or ``None`` (nothing due now)."""
    silence = status.get("silence") or {}
    retry_at = parse_time(silence.get("retryAt"), field="status.silence.retryAt")
    if retry_at is not None and now < retry_at:
        return None
    state = silence.get("state")
    if wanted(status):
        if not state:
            return "create"
        return "adopt" if state == CREATING else None
    return "expire" if state in (CREATING, ACTIVE) else None


def pending(status: Mapping[str, Any]) -> bool:
    """Silence work is owed (a cheap look: also when its retry is not due yet)."""
    state = (status.get("silence") or {}).get("state")
    return state in (CREATING, ACTIVE) or (wanted(status) and not state)


def matchers(
    policy: HealingPolicy, *, trigger: str, namespace: str, workload: str
) -> dict[str, str]:
    """The workload's alerts (``namespace``, ``deployment``); for an alert trigger only
    that alert (its name and matchers too)."""
    out = {"namespace": namespace, "deployment": workload}
    trig = policy.trigger(trigger)
    if trig is not None and trig.alert is not None:
        out = {**trig.alert.matchers, **out, "alertname": trig.alert.alertname}
    return out


def ends_at(policy: HealingPolicy, status: Mapping[str, Any], *, now: float) -> float:
    """Every verify timeout still ahead, plus ``MARGIN``: a crash cannot silence forever."""
    remediation = policy.remediation
    timeout = remediation.verify_timeout or 2 * remediation.verify_for
    left = max(1, len(remediation.steps) - int(status.get("currentStep") or 0))
    return now + left * timeout + MARGIN


def comment(namespace: str, name: str, workload: str, marker: str) -> str:
    return (
        f"selfheal is remediating {namespace}/{workload}: Remediation {namespace}/{name} "
        f"(kubectl -n {namespace} get remediation {name}). Expired when it resolves or "
        f"escalates. marker {marker}"
    )


def backoff(attempts: int) -> float:
    return float(min(RETRY_MAX, RETRY_MIN * 2 ** max(0, attempts - 1)))


@dataclasses.dataclass
class Silencer:
    kube: k.Kube
    alertmanager: Alertmanager

    async def _write(self, namespace: str, name: str, silence: Mapping[str, Any]) -> None:
        # A merge patch of status.silence alone: the driver's keys are left as they are.
        await self.kube.patch(
            k.group(API_VERSION, namespace, PLURAL, name),
            {"status": {"silence": dict(silence)}},
            subresource="status",
        )

    async def reconcile(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        policy: HealingPolicy,
        now: float,
    ) -> None:
        """Do the silence work due for one record. ``status`` (e.g. kopf's index) only
        says whether to look: what is done is decided on a fresh GET of the record."""
        if due(status, now=now) is None:
            return
        body = await self.kube.get(k.group(API_VERSION, namespace, PLURAL, name))
        fresh: Mapping[str, Any] = body.get("status") or {}
        what = due(fresh, now=now)
        if what is None:
            return
        silence = dict(fresh.get("silence") or {})
        spec = body.get("spec") or {}
        workload = str((spec.get("workload") or {}).get("name", ""))
        trigger = str((spec.get("trigger") or {}).get("name", ""))
        try:
            if what == "create":
                marker = secrets.token_hex(8)
                silence = {
                    "state": CREATING,
                    "marker": marker,
                    "requestedAt": format_time(now),
                    "endsAt": format_time(ends_at(policy, fresh, now=now)),
                }
                # The intent first: a crash after the POST finds the silence by its marker.
                await self._write(namespace, name, silence)
                silence = await self._create(namespace, name, workload, trigger, policy, silence)
            elif what == "adopt":
                found = await self.alertmanager.find_silence(marker=str(silence.get("marker")))
                state = (found or {}).get("status", {}).get("state")
                if found is not None and state != "expired":
                    silence = {**silence, "state": ACTIVE, "id": str(found.get("id"))}
                    logger.info("%s/%s: adopted silence %s", namespace, name, silence["id"])
                else:
                    silence = await self._create(
                        namespace, name, workload, trigger, policy, silence
                    )
            else:
                silence = await self._expire(namespace, name, silence)
        except AlertmanagerError as e:
            attempts = int(silence.get("attempts") or 0) + 1
            silence = {
                **silence,
                "attempts": attempts,
                "lastError": str(e)[:512],
                "retryAt": format_time(now + backoff(attempts)),
            }
            logger.warning("%s/%s: silence work (%s) failed, retried: %s", namespace, name, what, e)
        else:
            silence = {**silence, "lastError": None, "retryAt": None}
        await self._write(namespace, name, silence)

    async def _create(
        self,
        namespace: str,
        name: str,
        workload: str,
        trigger: str,
        policy: HealingPolicy,
        silence: dict[str, Any],
    ) -> dict[str, Any]:
        end = parse_time(silence.get("endsAt"), field="status.silence.endsAt")
        assert end is not None  # written with the intent
        silence_id = await self.alertmanager.create_silence(
            matchers=matchers(policy, trigger=trigger, namespace=namespace, workload=workload),
            ends_at=end,
            comment=comment(namespace, name, workload, str(silence.get("marker"))),
            created_by=CREATED_BY,
        )
        logger.info(
            "%s/%s: silenced the alerts of %s until %s (silence %s)",
            namespace,
            name,
            workload,
            silence.get("endsAt"),
            silence_id,
        )
        return {**silence, "state": ACTIVE, "id": silence_id}

    async def _expire(self, namespace: str, name: str, silence: dict[str, Any]) -> dict[str, Any]:
        silence_id = silence.get("id")
        if not silence_id:
            # The answer to a create was never stored: it may exist all the same.
            found = await self.alertmanager.find_silence(marker=str(silence.get("marker")))
            silence_id = None if found is None else str(found.get("id"))
        if silence_id:
            await self.alertmanager.expire_silence(str(silence_id))
            logger.info("%s/%s: expired silence %s", namespace, name, silence_id)
        now = datetime.datetime.now(datetime.UTC).timestamp()
        return {**silence, "state": EXPIRED, "id": silence_id, "expiredAt": format_time(now)}
