"""What the API server's audit log says an identity did: the ground truth for "acted
once", independent of the operator's own records and metrics."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator

from tests.support.cluster import Cluster

OPERATOR_USER = "system:serviceaccount:selfheal-system:selfheal-test"
"""The identity integration tests run the operator as (tests/support/operator.py)."""
WORKLOAD_WRITES = frozenset({"deployments", "deployments/scale", "horizontalpodautoscalers"})


def workload_writes(
    cluster: Cluster,
    namespace: str,
    *,
    user: str = OPERATOR_USER,
    resources: Collection[str] = WORKLOAD_WRITES,
) -> list[tuple[str, str, str]]:
    """(verb, resource, name) of every successful write ``user`` made to workloads in
    ``namespace``, in order: each remediation action is exactly one such write."""
    out: list[tuple[str, str, str]] = []
    for line in _lines(cluster):
        if user not in line or namespace not in line:  # cheap filter before parsing
            continue
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] != user:
            continue
        if ref.get("namespace") != namespace or event.get("verb") not in (
            "patch",
            "update",
            "create",
            "delete",
        ):
            continue
        resource = ref.get("resource", "") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        code = int((event.get("responseStatus") or {}).get("code", 0))
        if resource in resources and 200 <= code < 300:
            out.append((str(event["verb"]), resource, str(ref.get("name", ""))))
    return out


def _lines(cluster: Cluster) -> Iterator[str]:
    """Every line of the audit log, oldest first, including rotated files
    (``audit-<time>.log`` beside it)."""
    log = cluster.audit_log
    for path in (*sorted(log.parent.glob(f"{log.stem}-*{log.suffix}")), log):
        with path.open(encoding="utf-8") as f:
            yield from f
