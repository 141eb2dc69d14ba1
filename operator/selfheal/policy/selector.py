"""Label selectors of ``spec.target``: matching in memory and as an API query string."""

from __future__ import annotations

from collections.abc import Mapping

from selfheal.policy.model import Target

__all__ = ["label_selector", "selector_matches"]


def selector_matches(target: Target, labels: Mapping[str, str]) -> bool:
    """Whether a workload with these labels is one of the target's.

    Kubernetes semantics (every matchLabels entry and every requirement must hold;
    ``NotIn`` and ``DoesNotExist`` hold when the label is absent), except that an empty
    selector matches nothing: ``parse`` rejects it, and healing every workload in a
    namespace by accident is the worse failure.
    """
    if not target.match_labels and not target.match_expressions:
        return False
    if any(labels.get(k) != v for k, v in target.match_labels.items()):
        return False
    for req in target.match_expressions:
        present = req.key in labels
        if req.operator == "In":
            ok = present and labels[req.key] in req.values
        elif req.operator == "NotIn":
            ok = not present or labels[req.key] not in req.values
        elif req.operator == "Exists":
            ok = present
        elif req.operator == "DoesNotExist":
            ok = not present
        else:
            raise ValueError(f"unknown label selector operator {req.operator!r}")
        if not ok:
            return False
    return True


def label_selector(target: Target) -> str:
    """The ``labelSelector`` query parameter that lists the target's workloads, e.g.
    ``app=shop,tier in (api,web),!canary``. Empty for an empty selector; callers must
    not list with it (see ``selector_matches``)."""
    parts = [f"{k}={v}" for k, v in sorted(target.match_labels.items())]
    for req in target.match_expressions:
        if req.operator == "In":
            parts.append(f"{req.key} in ({','.join(req.values)})")
        elif req.operator == "NotIn":
            parts.append(f"{req.key} notin ({','.join(req.values)})")
        elif req.operator == "Exists":
            parts.append(req.key)
        elif req.operator == "DoesNotExist":
            parts.append(f"!{req.key}")
        else:
            raise ValueError(f"unknown label selector operator {req.operator!r}")
    return ",".join(parts)
