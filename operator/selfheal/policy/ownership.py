"""The workload kinds a policy can target beyond Deployments, and which of them owns a Pod: pure.

A StatefulSet's or DaemonSet's pods carry a ``controller: true`` ownerReference to
the workload itself and the ``controller-revision-hash`` label naming the
ControllerRevision they were made from. The label differs by kind: a StatefulSet
writes the revision's name (``web-7d9f8c6b5``), a DaemonSet only its hash
(``7d9f8c6b5``); the revision's name is ``<owner>-<hash>`` for both. :func:`revision_hash`
makes them one thing, the hash, which stays the same when the controller reuses a
revision (a rollback renumbers it but keeps its name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

STATEFULSET = "StatefulSet"
DAEMONSET = "DaemonSet"
KINDS = (STATEFULSET, DAEMONSET)
"""Kinds that own their pods directly and keep their history in ControllerRevisions."""

PLURALS = {"Deployment": "deployments", STATEFULSET: "statefulsets", DAEMONSET: "daemonsets"}

REVISION_LABEL = "controller-revision-hash"


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    kind: str
    name: str
    revision_hash: str
    """The hash of the ControllerRevision the pod runs ("" when the label is missing)."""


def revision_hash(owner: str, label: str) -> str:
    """The hash part of a ``controller-revision-hash`` value or a ControllerRevision name."""
    return label[len(owner) + 1 :] if label.startswith(owner + "-") else label


def owner_of(pod: Mapping[str, Any]) -> Owner | None:
    """The StatefulSet or DaemonSet that controls ``pod`` (a Pod body); ``None``: another
    controller or none."""
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    for ref in meta.get("ownerReferences") or ():
        if not isinstance(ref, Mapping) or not ref.get("controller"):
            continue
        kind = ref.get("kind")
        if kind not in KINDS or not str(ref.get("apiVersion", "")).startswith("apps/"):
            return None
        name = str(ref.get("name", ""))
        label = str((meta.get("labels") or {}).get(REVISION_LABEL, ""))
        return Owner(kind=str(kind), name=name, revision_hash=revision_hash(name, label))
    return None


def availability(
    kind: str, *, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> tuple[int, int]:
    """(available, desired) from the workload's own fields: ``availableReplicas`` of
    ``spec.replicas`` for a Deployment or StatefulSet, ``numberAvailable`` of
    ``desiredNumberScheduled`` (one pod per eligible node) for a DaemonSet."""
    if kind == DAEMONSET:
        return int(status.get("numberAvailable") or 0), int(
            status.get("desiredNumberScheduled") or 0
        )
    return int(status.get("availableReplicas") or 0), int(spec.get("replicas", 1) or 0)
