"""What the caches keep of a ReplicaSet, a Deployment (or StatefulSet, DaemonSet) and a
ControllerRevision: small frozen summaries taken from a body at once, the body dropped.

Free of kopf, so the light watchers can start summarising before kopf is imported
(``handlers.boot``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from selfheal.detect.crashloop import POD_TEMPLATE_HASH
from selfheal.remediation.guardrails import Availability


@dataclasses.dataclass(frozen=True, slots=True)
class RsInfo:
    name: str
    deployment: str
    revision: int
    template_hash: str
    namespace: str = ""
    owner_uid: str = ""
    """uid of the Deployment that controls it (a re-created Deployment's differs)."""
    annotations: tuple[tuple[str, str], ...] = ()
    template: str = ""
    """``spec.template`` as JSON: a rollback reads it from here instead of listing."""

    def body(self) -> dict[str, Any]:
        """The parts of the ReplicaSet a rollback reads, in the API's shape."""
        return {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {POD_TEMPLATE_HASH: self.template_hash} if self.template_hash else {},
                "annotations": dict(self.annotations),
                "ownerReferences": [
                    {
                        "kind": "Deployment",
                        "name": self.deployment,
                        "uid": self.owner_uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {"template": json.loads(self.template) if self.template else {}},
        }


@dataclasses.dataclass(frozen=True, slots=True)
class DeploymentInfo:
    """A watched workload: a Deployment, or a StatefulSet or DaemonSet (``kind``)."""

    name: str
    uid: str
    labels: tuple[tuple[str, str], ...]
    desired: int
    available: int
    kind: str = "Deployment"
    namespace: str = ""
    view: str = ""
    """A Deployment's parts a rollback reads (uid, generation, labels, annotations,
    selector, paused, template) as JSON, so its decision needs no GET; empty: not kept
    (StatefulSets and DaemonSets, from kopf's indexes)."""

    def availability(self) -> Availability:
        return Availability(available=self.available, desired=self.desired)

    def body(self) -> dict[str, Any] | None:
        """The parts of the object a rollback reads, in the API's shape; ``None``: not kept."""
        return json.loads(self.view) if self.view else None


@dataclasses.dataclass(frozen=True, slots=True)
class RevInfo:
    """A ControllerRevision of a StatefulSet or DaemonSet."""

    name: str
    revision: int
    revision_hash: str


def workload_info(
    kind: str, name: str, uid: str, body: Mapping[str, Any], spec: Mapping[str, Any]
) -> DeploymentInfo:
    avail = Availability.of(kind, spec=spec, status=body.get("status") or {})
    return DeploymentInfo(
        name=name,
        uid=uid,
        labels=tuple(sorted((body.get("metadata", {}).get("labels") or {}).items())),
        desired=avail.desired,
        available=avail.available,
        kind=kind,
        namespace=str(body.get("metadata", {}).get("namespace", "")),
    )


def _controller(body: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == kind:
            return ref  # type: ignore[no-any-return]
    return None


def rs_info(body: Mapping[str, Any]) -> RsInfo | None:
    """A ReplicaSet's summary, ``None`` when no Deployment controls it."""
    owner = _controller(body, "Deployment")
    if owner is None:
        return None
    meta = body.get("metadata", {})
    annotations = meta.get("annotations") or {}
    rev = annotations.get("deployment.kubernetes.io/revision", "0")
    return RsInfo(
        name=str(meta.get("name")),
        deployment=str(owner.get("name")),
        revision=int(rev) if str(rev).isdigit() else 0,
        template_hash=str((meta.get("labels") or {}).get(POD_TEMPLATE_HASH, "")),
        namespace=str(meta.get("namespace", "")),
        owner_uid=str(owner.get("uid", "")),
        annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items())),
        template=json.dumps((body.get("spec") or {}).get("template") or {}, separators=(",", ":")),
    )


def deployment_info(body: Mapping[str, Any]) -> DeploymentInfo:
    """A Deployment's summary, taken from its body at once (the body is not kept)."""
    meta = body.get("metadata") or {}
    spec, status = body.get("spec") or {}, body.get("status") or {}
    view = {
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "generation", "labels", "annotations")
            if key in meta
        },
        "spec": {key: spec[key] for key in ("selector", "paused", "template") if key in spec},
    }
    return DeploymentInfo(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        desired=int(spec.get("replicas", 1) or 0),
        available=int(status.get("availableReplicas", 0) or 0),
        namespace=str(meta.get("namespace", "")),
        view=json.dumps(view, separators=(",", ":")),
    )
