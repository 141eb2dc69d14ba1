"""Readiness of a fresh install: Ready once kopf's caches are filled, also when the
watched namespace holds no policy and no pod (so `helm install --wait` finishes)."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.operator import OperatorProcess
from tests.support.workloads import eventually


async def test_an_operator_watching_an_empty_namespace_turns_ready(
    namespace: str, operator: Callable[..., OperatorProcess]
) -> None:
    op = operator(namespaces=[namespace])

    async def ready() -> str | None:
        code, text = op.get("/readyz")
        return text if code == 200 else None

    reason = await eventually(ready, timeout=60, what="/readyz 200")
    assert "caches synced" in reason
