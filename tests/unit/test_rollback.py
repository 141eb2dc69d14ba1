"""Rollback's pure parts: revisions, the choice of target, the patch, GitOps detection."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from selfheal.actions import rollback as rb
from selfheal.actions.result import Reason
from selfheal.policy.model import RollbackTo

UID = "d-uid-1"


def template(image: str, *, hash_: str | None = None) -> dict[str, Any]:
    labels = {"app": "shop"}
    if hash_:
        labels["pod-template-hash"] = hash_
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def deployment(image: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "shop",
            "namespace": "ns",
            "uid": UID,
            "generation": 3,
            "resourceVersion": "4711",
            "annotations": {"deployment.kubernetes.io/revision": "9", **annotations},
        },
        "spec": {"selector": {"matchLabels": {"app": "shop"}}, "template": template(image)},
    }


def replicaset(
    image: str,
    hash_: str,
    revision: int | str | None,
    *,
    owner: str = UID,
    controller: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    ann = dict(annotations or {})
    if revision is not None:
        ann["deployment.kubernetes.io/revision"] = str(revision)
    return {
        "metadata": {
            "name": f"shop-{hash_}",
            "labels": {"app": "shop", "pod-template-hash": hash_},
            "annotations": ann,
            "ownerReferences": [
                {"kind": "Deployment", "name": "shop", "uid": owner, "controller": controller}
            ],
        },
        "spec": {"template": template(image, hash_=hash_)},
    }


def split(patch: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the lock's test ops, the writes)."""
    return [op for op in patch if op["op"] == "test"], [op for op in patch if op["op"] != "test"]


def history(current: str, *rs: tuple[str, str, int]) -> list[rb.Revision]:
    """Revisions from (image, hash, number) triples; the Deployment runs ``current``."""
    return rb.revisions(deployment(current), [replicaset(i, h, n) for i, h, n in rs])


# --- revisions ---------------------------------------------------------------------------


def test_revisions_are_ordered_numerically_not_as_strings() -> None:
    revs = history("app:v10", ("app:v10", "h10", 10), ("app:v2", "h2", 2), ("app:v9", "h9", 9))
    assert [r.number for r in revs] == [2, 9, 10]
    assert [r.template_hash for r in revs] == ["h2", "h9", "h10"]


def test_revisions_keep_only_replicasets_the_deployment_controls() -> None:
    items = [
        replicaset("app:v1", "h1", 1),
        replicaset("app:v2", "h2", 2, owner="someone-else"),
        replicaset("app:v3", "h3", 3, controller=False),
        replicaset("app:v4", "h4", None),
        replicaset("app:v5", "h5", "not-a-number"),
    ]
    assert [r.template_hash for r in rb.revisions(deployment("app:v1"), items)] == ["h1"]


def test_the_running_revision_is_found_by_template_ignoring_the_hash_label() -> None:
    revs = history("app:v2", ("app:v1", "h1", 1), ("app:v2", "h2", 2))
    assert [(r.number, r.current) for r in revs] == [(1, False), (2, True)]


def test_revision_history_annotation_is_read() -> None:
    rs = replicaset(
        "app:v1", "h1", 5, annotations={"deployment.kubernetes.io/revision-history": "1,3"}
    )
    (rev,) = rb.revisions(deployment("app:v1"), [rs])
    assert rev.history == (1, 3)


# --- choose_target -----------------------------------------------------------------------


def choose(
    revs: list[rb.Revision], bad: set[str], to: RollbackTo = RollbackTo.LAST_HEALTHY
) -> rb.Choice:
    return rb.choose_target(revisions=revs, to=to, known_bad=frozenset(bad))


def test_a_bad_rollout_rolls_back_to_the_revision_before_it() -> None:
    revs = history("app:v2", ("app:v1", "h1", 1), ("app:v2", "h2", 2))
    choice = choose(revs, {"h2"})
    assert choice.reason is Reason.ROLLED_BACK
    assert choice.target is not None
    assert choice.target.template_hash == "h1"
    assert choice.current is not None
    assert choice.current.number == 2


def test_last_healthy_skips_every_known_bad_revision() -> None:
    revs = history("app:v3", ("app:v1", "h1", 1), ("app:v2", "h2", 2), ("app:v3", "h3", 3))
    choice = choose(revs, {"h2", "h3"})
    assert choice.target is not None
    assert choice.target.template_hash == "h1"


def test_last_healthy_takes_the_newest_revision_not_known_bad() -> None:
    revs = history("app:v3", ("app:v1", "h1", 1), ("app:v2", "h2", 2), ("app:v3", "h3", 3))
    choice = choose(revs, {"h3"})
    assert choice.target is not None
    assert choice.target.number == 2


def test_a_second_incident_never_rolls_forward_to_a_known_bad_revision() -> None:
    # v0, v1, v2 (bad) -> rolled back to v1, which the controller renumbered to 4;
    # now v1 fails too: v2 (revision 3, newer than v0) must stay excluded.
    revs = history("app:v1", ("app:v0", "h0", 1), ("app:v2", "h2", 3), ("app:v1", "h1", 4))
    choice = choose(revs, {"h2", "h1"})
    assert choice.target is not None
    assert choice.target.template_hash == "h0"


def test_no_healthy_earlier_revision_is_refused_with_the_revisions_named() -> None:
    # v1 ok, v2 bad -> back to v1 (revision 3); v1 turns bad: only v2 is older.
    revs = history("app:v1", ("app:v2", "h2", 2), ("app:v1", "h1", 3))
    choice = choose(revs, {"h2", "h1"})
    assert choice.target is None
    assert choice.reason is Reason.NO_HEALTHY_REVISION
    assert "revision 2" in choice.message
    assert "h2" in choice.message


def test_a_repeated_rollback_after_success_is_a_no_op() -> None:
    # After rolling back from v2 to v1, v1 runs as revision 3 and only h2 is known bad.
    revs = history("app:v1", ("app:v2", "h2", 2), ("app:v1", "h1", 3))
    choice = choose(revs, {"h2"})
    assert choice.target is None
    assert choice.reason is Reason.CURRENT_NOT_KNOWN_BAD
    assert choice.current is not None
    assert choice.current.template_hash == "h1"


def test_a_fix_rolled_out_after_the_incident_is_left_running() -> None:
    revs = history("app:v3", ("app:v1", "h1", 1), ("app:v2", "h2", 2), ("app:v3", "h3", 3))
    assert choose(revs, {"h2"}).reason is Reason.CURRENT_NOT_KNOWN_BAD


def test_previous_takes_the_revision_just_before_like_kubectl() -> None:
    revs = history("app:v3", ("app:v1", "h1", 1), ("app:v2", "h2", 2), ("app:v3", "h3", 3))
    choice = choose(revs, {"h3"}, RollbackTo.PREVIOUS)
    assert choice.target is not None
    assert choice.target.number == 2


def test_previous_refuses_a_known_bad_previous_revision_instead_of_skipping_it() -> None:
    revs = history("app:v3", ("app:v1", "h1", 1), ("app:v2", "h2", 2), ("app:v3", "h3", 3))
    choice = choose(revs, {"h2", "h3"}, RollbackTo.PREVIOUS)
    assert choice.target is None
    assert choice.reason is Reason.PREVIOUS_KNOWN_BAD
    assert "LastHealthy" in choice.message


def test_a_single_revision_has_no_history_to_roll_back_to() -> None:
    revs = history("app:v1", ("app:v1", "h1", 1))
    assert choose(revs, {"h1"}).reason is Reason.NO_ROLLOUT_HISTORY


def test_a_template_without_its_replicaset_yet_is_not_acted_on() -> None:
    revs = history("app:v3", ("app:v1", "h1", 1), ("app:v2", "h2", 2))
    choice = choose(revs, {"h2"})
    assert choice.reason is Reason.ROLLOUT_NOT_OBSERVED
    assert choice.target is None


def test_revisions_newer_than_the_running_one_are_never_targets() -> None:
    # The controller renumbers on its next sync; until then a newer number may exist.
    revs = history("app:v1", ("app:v0", "h0", 1), ("app:v1", "h1", 2), ("app:v2", "h2", 3))
    choice = choose(revs, {"h1"})
    assert choice.target is not None
    assert choice.target.template_hash == "h0"


# --- rollback_patch ----------------------------------------------------------------------


def test_patch_restores_the_template_without_the_hash_label() -> None:
    dep = deployment("app:v2")
    (v1,) = rb.revisions(dep, [replicaset("app:v1", "h1", 1)])
    _, writes = split(rb.rollback_patch(deployment=dep, target=v1, change_cause=""))
    assert writes[0]["op"] == "replace"
    assert writes[0]["path"] == "/spec/template"
    assert writes[0]["value"]["metadata"]["labels"] == {"app": "shop"}
    assert writes[0]["value"]["spec"]["containers"][0]["image"] == "app:v1"
    # The ReplicaSet's own record keeps its label: the patch works on a copy.
    assert v1.template["metadata"]["labels"]["pod-template-hash"] == "h1"


def test_patch_is_locked_on_what_the_decision_read_not_on_status() -> None:
    dep = deployment("app:v2")
    (v1,) = rb.revisions(dep, [replicaset("app:v1", "h1", 1)])
    patch = rb.rollback_patch(deployment=dep, target=v1, change_cause="")
    tests, _ = split(patch)
    assert patch[: len(tests)] == tests  # every test comes before any write
    assert tests == [
        {"op": "test", "path": "/metadata/uid", "value": UID},
        {"op": "test", "path": "/metadata/generation", "value": 3},
        {"op": "test", "path": "/metadata/annotations", "value": dep["metadata"]["annotations"]},
    ]


def test_patch_pins_the_labels_the_gitops_check_read() -> None:
    dep = deployment("app:v2")
    dep["metadata"]["labels"] = {"app": "shop"}
    (v1,) = rb.revisions(dep, [replicaset("app:v1", "h1", 1)])
    tests, _ = split(rb.rollback_patch(deployment=dep, target=v1, change_cause=""))
    assert {"op": "test", "path": "/metadata/labels", "value": {"app": "shop"}} in tests


def test_patch_carries_annotations_as_kubectl_does() -> None:
    dep = deployment(
        "app:v2",
        **{
            "kubectl.kubernetes.io/last-applied-configuration": "{v2}",
            "kubernetes.io/change-cause": "deploy v2",
            "team": "payments",  # not on the v1 ReplicaSet: kubectl drops it
        },
    )
    rs = replicaset(
        "app:v1",
        "h1",
        1,
        annotations={
            "kubernetes.io/change-cause": "deploy v1",
            "deployment.kubernetes.io/desired-replicas": "3",
            "deployment.kubernetes.io/max-replicas": "4",
            "kubectl.kubernetes.io/last-applied-configuration": "{v1}",
            "owner": "shop-team",
        },
    )
    (v1,) = rb.revisions(dep, [rs])
    _, writes = split(rb.rollback_patch(deployment=dep, target=v1, change_cause=""))
    assert writes[1] == {
        "op": "replace",
        "path": "/metadata/annotations",
        "value": {
            # kept from the Deployment
            "deployment.kubernetes.io/revision": "9",
            "kubectl.kubernetes.io/last-applied-configuration": "{v2}",
            # carried from the revision
            "kubernetes.io/change-cause": "deploy v1",
            "owner": "shop-team",
        },
    }


def test_change_cause_is_recorded_in_the_rollout_history_annotation() -> None:
    dep = deployment("app:v2")
    rs = replicaset("app:v1", "h1", 1, annotations={"kubernetes.io/change-cause": "deploy v1"})
    (v1,) = rb.revisions(dep, [rs])
    _, writes = split(rb.rollback_patch(deployment=dep, target=v1, change_cause="selfheal: x"))
    assert writes[1]["value"]["kubernetes.io/change-cause"] == "selfheal: x"


def test_patch_adds_annotations_to_a_deployment_without_any() -> None:
    dep = deployment("app:v2")
    del dep["metadata"]["annotations"]
    (v1,) = rb.revisions(dep, [replicaset("app:v1", "h1", 1, annotations={"a": "b"})])
    tests, writes = split(rb.rollback_patch(deployment=dep, target=v1, change_cause=""))
    assert writes[1] == {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}
    # No test of the absent member: it would always fail.
    assert [t["path"] for t in tests] == ["/metadata/uid", "/metadata/generation"]


def test_equal_ignore_hash_ignores_only_the_hash_label() -> None:
    a = template("app:v1", hash_="h1")
    assert rb.equal_ignore_hash(a, template("app:v1"))
    b = copy.deepcopy(a)
    b["metadata"]["labels"]["tier"] = "web"
    assert not rb.equal_ignore_hash(a, b)
    assert not rb.equal_ignore_hash(a, template("app:v2", hash_="h1"))


# --- selector and GitOps -----------------------------------------------------------------


def test_selector_string_covers_labels_and_expressions() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "team", "operator": "Exists"},
        ],
    }
    assert rb.selector_string(selector) == (
        "a=1,b=2,tier in (api,web),env notin (dev),!canary,team"
    )


@pytest.mark.parametrize(
    ("labels", "annotations", "tool"),
    [
        (
            {"app.kubernetes.io/instance": "shop"},
            {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:ns/shop"},
            "Argo CD",
        ),
        ({"argocd.argoproj.io/instance": "shop"}, {}, "Argo CD"),
        ({"kustomize.toolkit.fluxcd.io/name": "apps"}, {}, "Flux"),
        ({"helm.toolkit.fluxcd.io/name": "shop"}, {}, "Flux"),
    ],
)
def test_gitops_managed_deployments_are_recognised(
    labels: dict[str, str], annotations: dict[str, str], tool: str
) -> None:
    obj = {"metadata": {"labels": labels, "annotations": annotations}}
    found = rb.gitops_manager(obj)
    assert found is not None
    assert found.startswith(tool)


def test_a_helm_release_alone_is_not_gitops() -> None:
    obj = {
        "metadata": {
            "labels": {
                "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/managed-by": "Helm",
            },
            "annotations": {"meta.helm.sh/release-name": "shop"},
        }
    }
    assert rb.gitops_manager(obj) is None
