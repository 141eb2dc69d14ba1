"""Remediation records: one typed model, and the one place that looks them up.

A ``Record`` is what selfheal knows of one Remediation object: its identity, the spec
it was created with, and its status parsed once into a ``RemediationState`` when the
watch delivers it (a status that does not parse is kept as a ``problem``, never
raised: a malformed record must not stop the others). ``Records`` is the view of one
namespace's records that every decision reads: the open record of an incident, a
policy's records, guardrail summaries, known-bad releases, records due for pruning.
Nothing else scans Remediation objects.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from selfheal.detect.signal import WorkloadRef
from selfheal.remediation import machine, naming
from selfheal.remediation.guardrails import RecordSummary, trigger_name
from selfheal.remediation.state import Phase, RemediationState, parse_time

INITIAL_STATUS = "selfheal.dev/initial-status"
"""Annotation a record is created with: the status the driver decided on, as JSON.

The API server drops ``.status`` on a create (the status subresource), and the record's
first action goes out right after the create, before any status write: this annotation
is the intent stored before the action, so a restart that finds it finds "step started,
outcome unknown" and never runs the step again. It is read only while the stored status
has no phase; the first status write (the action's outcome) supersedes it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    namespace: str
    name: str
    resource_version: str | None = None
    fingerprint: str = ""
    spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    status: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The stored status as read (what ``state`` was parsed from); before the first status
    write, the status the record was created with (``INITIAL_STATUS``)."""
    state: RemediationState | None = None
    """``None``: created without a status (by an older selfheal, and a crash came before
    its status write), or malformed (see ``problem``)."""
    problem: str = ""
    """Why the status does not parse; such a record is not ours to decide on."""
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Only the approval decisions (``selfheal.io/approve``, ``selfheal.io/reject``):
    a person's word on a step awaiting approval."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Record:
        """From a Remediation object as the API returns it. Never raises."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = dict(body.get("status") or {})
        labels = meta.get("labels") or {}
        state, problem = None, ""
        if not status.get("phase"):
            try:
                status = {**initial_status(meta), **status}
            except ValueError as e:
                problem = str(e)
        if status.get("phase") and not problem:
            try:
                state = RemediationState.from_status(status)
            except ValueError as e:
                problem = str(e)
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            resource_version=meta.get("resourceVersion"),
            fingerprint=str(labels.get(naming.LABEL_FINGERPRINT) or spec.get("fingerprint") or ""),
            spec=dict(spec),
            status=status,
            state=state,
            problem=problem,
            annotations={
                str(k): str(v)
                for k, v in (meta.get("annotations") or {}).items()
                if k in (machine.APPROVE_ANNOTATION, machine.REJECT_ANNOTATION)
            },
        )

    def saved(self, state: RemediationState, resource_version: str | None) -> Record:
        """This record after ``state`` was written and answered with ``resource_version``."""
        return dataclasses.replace(
            self, state=state, resource_version=resource_version, status=state.to_status()
        )

    @property
    def policy(self) -> str:
        return str(self.spec.get("policy") or "")

    @property
    def workload(self) -> str:
        return str((self.spec.get("workload") or {}).get("name") or "")

    @property
    def workload_kind(self) -> str:
        return str((self.spec.get("workload") or {}).get("kind") or "Deployment")

    @property
    def workload_uid(self) -> str:
        return str((self.spec.get("workload") or {}).get("uid") or "")

    @property
    def template_hash(self) -> str:
        return str((self.spec.get("workload") or {}).get("templateHash") or "")

    @property
    def trigger(self) -> str:
        return trigger_name(self.spec)

    @property
    def trigger_kind(self) -> str:
        trig = self.spec.get("trigger")
        return str(trig.get("kind") or "") if isinstance(trig, Mapping) else ""

    @property
    def ordinal(self) -> int:
        tail = self.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    @property
    def phase(self) -> Phase | None:
        return self.state.phase if self.state is not None else None

    @property
    def final(self) -> bool:
        return self.state is not None and self.state.phase.final

    @property
    def is_open(self) -> bool:
        """Has a state and is not finished (Resolved or Closed)."""
        return self.state is not None and not self.state.phase.final

    def approval_decision(self) -> machine.Approval | None:
        """A person's annotation on a record awaiting approval (reject wins)."""
        if self.phase is not Phase.AWAITING_APPROVAL:
            return None
        if value := self.annotations.get(machine.REJECT_ANNOTATION):
            return machine.Approval(approved=False, value=value, by="annotation")
        if value := self.annotations.get(machine.APPROVE_ANNOTATION):
            return machine.Approval(approved=True, value=value, by="annotation")
        return None

    def ref(self) -> WorkloadRef:
        return WorkloadRef(
            namespace=self.namespace,
            name=self.workload,
            uid=self.workload_uid,
            kind=self.workload_kind,
        )

    def work_pending(self) -> bool:
        """Its ticket or notification work is not done (a cheap look at the stored
        status, for passes that skip finished records; the machine decides what is due)."""
        st = self.status
        ticket = st.get("ticket") or {}
        resolution = st.get("resolution") or {}
        requested = (st.get("escalation") or {}).get("ticketRequestedAt")
        return (
            ticket.get("state") == "Pending"
            or resolution.get("state") == "Pending"
            or bool(requested and not ticket)
            or machine.notification_work_pending(st)
        )

    def summary(self) -> RecordSummary | None:
        """What guardrails count; ``None`` for a record without a (valid) state."""
        if self.state is None or not self.policy or not self.workload or not self.trigger:
            return None
        return RecordSummary.from_state(
            self.state,
            namespace=self.namespace,
            name=self.name,
            policy=self.policy,
            workload=self.workload,
            trigger=self.trigger,
        )


def initial_status(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The status a record was created with (``INITIAL_STATUS``); empty: none.

    Raises ``ValueError`` naming the annotation when it is not a JSON object.
    """
    raw = (meta.get("annotations") or {}).get(INITIAL_STATUS)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise ValueError(
            f"metadata.annotations[{INITIAL_STATUS}]: not a JSON object; "
            "the object was not written by selfheal"
        )
    return value


class Records:
    """The records of one namespace, as one consistent view for one decision.

    Built from the watch's cache (kopf's index) and, where the driver wrote a record a
    moment ago, overlaid with that fresher copy.
    """

    def __init__(self, records: Iterable[Record] = (), *, fresher: Iterable[Record] = ()) -> None:
        by_name = {r.name: r for r in records}
        for r in fresher:
            by_name[r.name] = r
        self._by_name = by_name

    def __iter__(self) -> Iterator[Record]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def named(self, name: str) -> Record | None:
        return self._by_name.get(name)

    def overlaid(self, fresher: Iterable[Record]) -> Records:
        return Records(self, fresher=fresher)

    @functools.cached_property
    def _by_fingerprint(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for r in self._by_name.values():
            out.setdefault(r.fingerprint, []).append(r)
        return out

    def current(self, fingerprint: str) -> Record | None:
        """The newest unfinished record of an incident, including one created but not
        yet given a status (a crash between the two writes); ``None``: none is open."""
        candidates = [
            r for r in self._by_fingerprint.get(fingerprint, ()) if not r.final and not r.problem
        ]
        return max(candidates, key=lambda r: r.ordinal, default=None)

    def has_open(self, fingerprint: str) -> bool:
        return any(r.is_open for r in self._by_fingerprint.get(fingerprint, ()))

    def next_name(
        self, *, namespace: str, policy: str, workload: str, trigger: str, fingerprint: str
    ) -> str:
        return naming.remediation_name(
            namespace=namespace,
            policy=policy,
            workload=workload,
            trigger=trigger,
            ordinal=naming.next_ordinal(existing=self.names(), fingerprint=fingerprint),
        )

    def of_policy(self, policy: str) -> list[Record]:
        return [r for r in self._by_name.values() if r.policy == policy]

    def open_workloads(self, policy: str) -> set[str]:
        return {r.workload for r in self.of_policy(policy) if not r.final}

    def summaries(self) -> list[RecordSummary]:
        return [s for r in self._by_name.values() if (s := r.summary()) is not None]

    def known_bad_hashes(self, workload: str, *, own: str) -> frozenset[str]:
        """Pod-template hashes with evidence that the release is bad.

        This incident's own hash (a rollback must be able to move away from it); hashes
        whose pods crash-looped, unless that incident healed without a rollback; hashes
        a rollback healed away from. A metric incident that no rollback healed (a
        dependency outage) says nothing about the release it happened on.
        """
        bad = {own} if own else set()
        for r in self._by_name.values():
            if r.workload != workload or not r.template_hash:
                continue
            rolled_back = any(
                s.get("action") == "rollback" and s.get("result") == "Succeeded"
                for s in r.status.get("steps") or ()
            )
            resolved = r.status.get("phase") == Phase.RESOLVED
            if (resolved and rolled_back) or (r.trigger_kind == "crashLoop" and not resolved):
                bad.add(r.template_hash)
        return frozenset(bad)

    def prunable(self, *, now: float, retention: float) -> list[Record]:
        """Finished records older than ``retention`` seconds whose ticket work is done.

        A record selfheal did not write (no valid state) is never ours to delete.
        """
        out = []
        for r in self._by_name.values():
            if r.state is None or not r.state.phase.final:
                continue
            closed = parse_time(r.status.get("closedAt"), field="status.closedAt")
            if closed is None or now - closed < retention:
                continue
            if machine.work_wakeup(r.state, now=now) is None:
                out.append(r)
        return out

    def active(self, policy: str) -> int:
        return sum(1 for r in self.of_policy(policy) if r.is_open)

    def last_outcome(self, policy: str) -> str:
        mine = [r for r in self.of_policy(policy) if r.state is not None]
        last = max(mine, key=lambda r: str(r.status.get("detectedAt") or ""), default=None)
        return str(last.status.get("phase") or "") if last else ""


__all__ = ["INITIAL_STATUS", "Record", "Records", "initial_status"]
