"""StatefulSets and DaemonSets, pure parts: which workload owns a pod, the revisions a
rollback chooses from, which pods selfheal replaces per strategy, availability per kind,
and where the kubelet stand-in places pinned pods."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.actions import revisions as rv
from selfheal.actions import rollback as rb
from selfheal.actions.result import Reason
from selfheal.detect import crashloop
from selfheal.policy import ownership
from selfheal.policy.model import PolicyError, RollbackTo
from selfheal.policy.parse import parse
from selfheal.remediation.guardrails import Availability
from tests.support.kubelet import pinned_node, placement

UID = "sts-uid"


def pod(kind: str, owner: str, label: str, *, name: str = "web-0") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"app": "web", ownership.REVISION_LABEL: label},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": kind, "name": owner, "controller": True}
            ],
        },
        "status": {"phase": "Running"},
    }


def test_a_statefulset_pod_names_its_owner_and_revision_hash() -> None:
    got = ownership.owner_of(pod("StatefulSet", "web", "web-6d4b9c8f7"))
    assert got == ownership.Owner(kind="StatefulSet", name="web", revision_hash="6d4b9c8f7")


def test_a_daemonset_pod_carries_the_bare_hash() -> None:
    got = ownership.owner_of(pod("DaemonSet", "agent", "5d8f7b9c6"))
    assert got == ownership.Owner(kind="DaemonSet", name="agent", revision_hash="5d8f7b9c6")


def test_a_replicaset_pod_has_no_direct_owner() -> None:
    assert ownership.owner_of(pod("ReplicaSet", "shop-abc", "")) is None
    assert ownership.owner_of({"metadata": {"name": "bare"}}) is None


def test_the_pod_summary_carries_the_owner() -> None:
    s = crashloop.summarize(pod("StatefulSet", "web", "web-6d4b9c8f7"))
    assert (s.owner_kind, s.owner, s.revision_hash, s.replicaset) == (
        "StatefulSet",
        "web",
        "6d4b9c8f7",
        "",
    )


def template(image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def statefulset(image: str, **strategy: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": UID, "generation": 4},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(image),
            "updateStrategy": strategy or {"type": "RollingUpdate"},
        },
        "status": {"availableReplicas": 2, "observedGeneration": 4},
    }


def revision(image: str, hash_: str, number: int, *, owner: str = UID) -> dict[str, Any]:
    t = {**template(image), "$patch": "replace"}
    return {
        "metadata": {
            "name": f"web-{hash_}",
            "ownerReferences": [{"kind": "StatefulSet", "uid": owner, "controller": True}],
        },
        "revision": number,
        "data": {"spec": {"template": t}},
    }


def test_revisions_are_the_owned_controllerrevisions_by_number() -> None:
    got = rv.controlled_revisions(
        statefulset("web:v2"),
        [
            revision("web:v2", "h2", 2),
            revision("web:v1", "h1", 1),
            revision("web:v9", "h9", 9, owner="someone-else"),
        ],
    )
    assert [(r.number, r.template_hash, r.current) for r in got] == [
        (1, "h1", False),
        (2, "h2", True),
    ]
    assert "$patch" not in got[0].template


def test_v2_bad_then_v3_bad_lands_on_v1_never_v2() -> None:
    revs = rv.controlled_revisions(
        statefulset("web:v3"),
        [revision("web:v1", "h1", 1), revision("web:v2", "h2", 2), revision("web:v3", "h3", 3)],
    )
    choice = rb.choose_target(
        revisions=revs,
        to=RollbackTo.LAST_HEALTHY,
        known_bad=frozenset({"h2", "h3"}),
        kind="StatefulSet",
    )
    assert choice.target is not None
    assert choice.target.template_hash == "h1"


def test_no_healthy_revision_is_refused_naming_the_kind() -> None:
    revs = rv.controlled_revisions(
        statefulset("web:v2"), [revision("web:v1", "h1", 1), revision("web:v2", "h2", 2)]
    )
    choice = rb.choose_target(
        revisions=revs,
        to=RollbackTo.LAST_HEALTHY,
        known_bad=frozenset({"h1", "h2"}),
        kind="StatefulSet",
    )
    assert choice.target is None
    assert choice.reason is Reason.NO_HEALTHY_REVISION
    first = rb.choose_target(
        revisions=revs[1:],
        to=RollbackTo.LAST_HEALTHY,
        known_bad=frozenset({"h2"}),
        kind="DaemonSet",
    )
    assert first.reason is Reason.NO_ROLLOUT_HISTORY
    assert "DaemonSet" in first.message


def view(name: str, hash_: str, *, ready: bool, ordinal: int = -1, node: str = "") -> rv.PodView:
    return rv.PodView(
        name=name,
        uid=f"u-{name}-{hash_}",
        revision_hash=hash_,
        ready=ready,
        deleting=False,
        node=node,
        ordinal=ordinal,
    )


STS_PODS = [
    view("web-0", "h1", ready=True, ordinal=0),
    view("web-1", "h2", ready=True, ordinal=1),
    view("web-2", "h2", ready=False, ordinal=2),
]


def test_rolling_update_statefulset_replaces_only_the_stuck_pods() -> None:
    s = rv.Strategy(kind="StatefulSet", type="RollingUpdate")
    assert [p.name for p in rv.pods_to_replace(s, STS_PODS, target_hash="h1")] == ["web-2"]


def test_a_partition_keeps_the_pods_below_it() -> None:
    s = rv.Strategy(kind="StatefulSet", type="OnDelete")
    pods = [*STS_PODS, view("web-3", "h0", ready=False, ordinal=3)]
    part = rv.strategy_of(
        "StatefulSet",
        statefulset("web:v2", type="RollingUpdate", rollingUpdate={"partition": 3}),
    )
    assert part.partition == 3
    assert part.describe() == "RollingUpdate with partition 3"
    assert [p.name for p in rv.pods_to_replace(part, pods, target_hash="h1")] == ["web-3"]
    # OnDelete: every pod of another revision, unready first, then by ordinal.
    assert [p.name for p in rv.pods_to_replace(s, pods, target_hash="h1")] == [
        "web-2",
        "web-3",
        "web-1",
    ]


def test_a_rolling_update_daemonset_is_left_to_its_controller() -> None:
    pods = [view("a-x", "h2", ready=False, node="n1"), view("a-y", "h1", ready=True, node="n2")]
    rolling = rv.strategy_of("DaemonSet", {"spec": {"updateStrategy": {"type": "RollingUpdate"}}})
    assert rv.pods_to_replace(rolling, pods, target_hash="h1") == []
    on_delete = rv.Strategy(kind="DaemonSet", type="OnDelete")
    assert [p.name for p in rv.pods_to_replace(on_delete, pods, target_hash="h1")] == ["a-x"]


def test_a_ready_pod_goes_only_within_min_available() -> None:
    ready, stuck = view("web-1", "h2", ready=True), view("web-2", "h2", ready=False)
    assert rv.may_delete(stuck, available=0, desired=3, min_available=1.0)
    assert rv.may_delete(ready, available=3, desired=3, min_available=0.6)
    assert not rv.may_delete(ready, available=2, desired=3, min_available=0.6)


def test_a_replacement_is_a_new_ready_pod_at_the_target_in_the_same_slot() -> None:
    old = view("web-2", "h2", ready=False, ordinal=2)
    assert not rv.replaced(old, [old], target_hash="h1")
    assert not rv.replaced(old, [view("web-2", "h1", ready=False, ordinal=2)], target_hash="h1")
    assert rv.replaced(old, [view("web-2", "h1", ready=True, ordinal=2)], target_hash="h1")
    ds_old = view("a-x", "h2", ready=False, node="n1")
    assert rv.replaced(ds_old, [view("a-z", "h1", ready=True, node="n1")], target_hash="h1")
    assert not rv.replaced(ds_old, [view("a-z", "h1", ready=True, node="n2")], target_hash="h1")


def test_the_controller_observed_the_restored_template() -> None:
    sts = statefulset("web:v1")
    sts["status"] |= {"observedGeneration": 5, "updateRevision": "web-h1"}
    assert rv.observed("StatefulSet", sts, generation=5, target_hash="h1")
    assert not rv.observed("StatefulSet", sts, generation=6, target_hash="h1")
    assert not rv.observed("StatefulSet", sts, generation=5, target_hash="h2")


def test_availability_per_kind() -> None:
    sts = Availability.of("StatefulSet", spec={"replicas": 3}, status={"availableReplicas": 2})
    assert (sts.available, sts.desired) == (2, 3)
    ds = Availability.of(
        "DaemonSet",
        spec={},
        status={"numberAvailable": 1, "desiredNumberScheduled": 3, "currentNumberScheduled": 3},
    )
    assert (ds.available, ds.desired) == (1, 3)


def policy_body(kind: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "generation": 1},
        "spec": {
            "target": {"kind": kind, "selector": {"matchLabels": {"app": "web"}}},
            "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
            "remediation": {"steps": steps},
        },
    }


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_a_policy_targets_statefulsets_and_daemonsets(kind: str) -> None:
    assert parse(policy_body(kind, [{"rollback": {}}, {"restart": {}}])).target.kind == kind


def test_a_daemonset_cannot_be_scaled_and_the_error_names_the_step() -> None:
    with pytest.raises(PolicyError) as err:
        parse(policy_body("DaemonSet", [{"rollback": {}}, {"scale": {"by": 1, "max": 3}}]))
    assert err.value.field == "spec.remediation.steps[1].scale"
    assert parse(policy_body("StatefulSet", [{"scale": {"by": 1, "max": 3}}]))
    with pytest.raises(PolicyError) as bad:
        parse(policy_body("CronJob", [{"rollback": {}}]))
    assert bad.value.field == "spec.target.kind"
    assert "StatefulSet" in str(bad.value)


def test_the_stand_in_binds_a_daemonset_pod_to_its_node() -> None:
    spec = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["n2"]}
                            ]
                        }
                    ]
                }
            }
        }
    }
    assert pinned_node(spec) == "n2"
    assert placement(pinned_node(spec), ["n1", "n2"]) == "n2"
    assert placement(pinned_node(spec), ["n1"]) is None
    assert placement(pinned_node({}), ["n1", "n2"]) == "n1"
