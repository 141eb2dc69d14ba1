"""The pure parts of scale and restart, and the ActionResult record."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from selfheal.actions import restart, scale
from selfheal.actions.result import (
    ActionResult,
    Outcome,
    Reason,
    failed,
    guard,
    guard_holds,
    pointer,
)
from selfheal.clients import kube as k

# --- plan_scale --------------------------------------------------------------------------


def test_scale_adds_the_step_to_the_replicas() -> None:
    plan = scale.plan_scale(current=3, by=2, max_replicas=10)
    assert (plan.from_replicas, plan.to_replicas, plan.reason) == (3, 5, Reason.SCALED)


def test_scale_stops_at_the_policy_max() -> None:
    plan = scale.plan_scale(current=9, by=4, max_replicas=10)
    assert plan.to_replicas == 10


def test_scale_at_the_max_is_refused_with_the_fix_named() -> None:
    plan = scale.plan_scale(current=10, by=1, max_replicas=10)
    assert plan.to_replicas is None
    assert plan.reason is Reason.AT_MAX
    assert "scale.max" in plan.message


def test_scale_above_the_max_already_is_refused_not_scaled_down() -> None:
    plan = scale.plan_scale(current=14, by=1, max_replicas=10)
    assert plan.to_replicas is None


def test_hpa_min_is_raised_within_the_hpa_max() -> None:
    plan = scale.plan_scale(current=2, by=5, max_replicas=10, hpa_max=4)
    assert (plan.to_replicas, plan.reason) == (4, Reason.HPA_MIN_RAISED)


def test_hpa_without_room_is_refused() -> None:
    plan = scale.plan_scale(current=4, by=1, max_replicas=10, hpa_max=4)
    assert plan.to_replicas is None
    assert plan.reason is Reason.HPA_AT_MAX
    assert "maxReplicas" in plan.message


@pytest.mark.parametrize(("by", "max_replicas", "field"), [(0, 5, "by"), (1, 0, "max")])
def test_a_nonsense_step_is_an_error_naming_the_field(
    by: int, max_replicas: int, field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        scale.plan_scale(current=1, by=by, max_replicas=max_replicas)


def test_targeting_hpa_matches_the_scale_target_ref() -> None:
    def hpa(name: str, kind: str, target: str, api: str = "apps/v1") -> dict[str, object]:
        ref = {"apiVersion": api, "kind": kind, "name": target}
        return {"metadata": {"name": name}, "spec": {"scaleTargetRef": ref, "maxReplicas": 5}}

    hpas = [
        hpa("other", "Deployment", "cart"),
        hpa("sts", "StatefulSet", "shop"),
        hpa("argo", "Deployment", "shop", api="argoproj.io/v1alpha1"),
        hpa("z-shop", "Deployment", "shop"),
        hpa("a-shop", "Deployment", "shop"),
    ]
    found = scale.targeting_hpa(hpas, name="shop")
    assert found is not None
    assert found["metadata"]["name"] == "a-shop"
    assert scale.targeting_hpa(hpas[:3], name="shop") is None
    for_sts = scale.targeting_hpa(hpas, name="shop", kind="StatefulSet")
    assert for_sts is not None
    assert for_sts["metadata"]["name"] == "sts"  # a StatefulSet's HPA, not the Deployment's


# --- restart -----------------------------------------------------------------------------

AT = dt.datetime(2026, 11, 28, 8, 9, 51, 123456, tzinfo=dt.UTC)


def test_restarted_at_is_rfc3339_in_utc_to_the_second() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert restart.rfc3339(AT) == "2026-11-28T08:09:51Z"
    assert restart.rfc3339(AT.astimezone(cet)) == "2026-11-28T08:09:51Z"
    with pytest.raises(ValueError, match=r"^requested_at:"):
        restart.rfc3339(AT.replace(tzinfo=None))


def _template(annotations: dict[str, str] | None) -> dict[str, object]:
    meta: dict[str, object] = {"labels": {"app": "shop"}}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {}}


def test_a_restart_at_or_after_the_request_counts_as_done() -> None:
    key = restart.RESTARTED_AT
    assert restart.restarted_since(_template({key: "2026-11-28T08:09:51Z"}), AT) is not None
    # kubectl writes local time with an offset: 09:10 at +01:00 is after 08:09:51Z.
    later = _template({key: "2026-11-28T09:10:00+01:00"})
    assert restart.restarted_since(later, AT) == "2026-11-28T09:10:00+01:00"
    assert restart.restarted_since(_template({key: "2026-11-28T08:09:50Z"}), AT) is None
    assert restart.restarted_since(_template({key: "yesterday"}), AT) is None
    assert restart.restarted_since(_template(None), AT) is None


def _deployment(annotations: dict[str, str] | None) -> dict[str, object]:
    meta = {"uid": "u1", "generation": 4, "resourceVersion": "7"}
    return {"metadata": meta, "spec": {"template": _template(annotations)}}


def test_restart_patch_adds_the_annotation_beside_existing_ones() -> None:
    patch = restart.restart_patch(deployment=_deployment({"a": "b"}), at="T")
    assert patch == [
        {"op": "test", "path": "/metadata/uid", "value": "u1"},
        {"op": "test", "path": "/metadata/generation", "value": 4},
        {
            "op": "add",
            "path": "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
            "value": "T",
        },
    ]


def test_restart_patch_creates_the_annotations_when_there_are_none() -> None:
    patch = restart.restart_patch(deployment=_deployment(None), at="T")
    assert patch[-1] == {
        "op": "add",
        "path": "/spec/template/metadata/annotations",
        "value": {"kubectl.kubernetes.io/restartedAt": "T"},
    }


# --- ActionResult ------------------------------------------------------------------------


def test_the_recorded_change_cannot_be_altered_through_the_callers_dict() -> None:
    patch = [{"op": "add", "path": "/spec/replicas", "value": 3}]
    change: dict[str, object] = {"fromReplicas": 2, "toReplicas": 3, "patch": patch}
    result = ActionResult(
        action="scale", result=Outcome.SUCCEEDED, reason=Reason.SCALED, message="m", change=change
    )
    patch[0]["value"] = 99
    change["toReplicas"] = 99
    assert result.change["toReplicas"] == 3
    assert result.change["patch"][0]["value"] == 3
    with pytest.raises(TypeError):
        result.change["toReplicas"] = 4  # type: ignore[index]


def test_as_dict_is_json_ready() -> None:
    result = ActionResult(
        action="rollback",
        result=Outcome.REFUSED,
        reason=Reason.GITOPS_MANAGED,
        message="managed by Argo CD",
        change={"fromRevision": 2, "patch": None},
    )
    assert json.loads(json.dumps(result.as_dict())) == {
        "action": "rollback",
        "result": "Refused",
        "reason": "GitOpsManaged",
        "message": "managed by Argo CD",
        "change": {"fromRevision": 2, "patch": None},
        "retryable": False,
    }
    assert not result.ok


def test_api_errors_become_failed_results_that_name_the_fix() -> None:
    forbidden = k.Forbidden(403, "Forbidden", "cannot patch", method="PATCH", path="/x")
    result = failed("scale", forbidden, doing="scaling x", change={})
    assert (result.result, result.reason, result.retryable) == (
        Outcome.FAILED,
        Reason.FORBIDDEN,
        False,
    )
    assert "RBAC" in result.message
    outage = k.KubeError(503, "ServiceUnavailable", "etcd", method="GET", path="/x")
    assert failed("scale", outage, doing="reading x", change={}).retryable


def test_a_guard_pins_present_values_and_detects_a_change() -> None:
    obj = {"metadata": {"uid": "u", "annotations": {"a/b": "1"}}, "spec": {"replicas": 2}}
    lock = guard(obj, ("/metadata/uid", "/metadata/generation", "/spec/replicas"))
    assert lock == [
        {"op": "test", "path": "/metadata/uid", "value": "u"},
        {"op": "test", "path": "/spec/replicas", "value": 2},
    ]
    assert guard_holds(obj, lock)
    assert not guard_holds({**obj, "spec": {"replicas": 3}}, lock)
    assert not guard_holds({"spec": {"replicas": 2}}, lock)  # re-created: no such uid
    assert pointer(obj, "/metadata/annotations/a~1b") == "1"
