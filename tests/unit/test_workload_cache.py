"""What the ReplicaSet and Deployment caches keep of a body is enough for a rollback."""

from __future__ import annotations

from selfheal.actions import rollback as rb
from selfheal.handlers import summaries
from selfheal.policy.model import RollbackTo
from tests.unit.test_rollback import UID, deployment, replicaset


def test_a_cached_replicaset_decides_and_patches_as_the_listed_one() -> None:
    d = deployment("app:v2")
    listed = [
        replicaset("app:v1", "aaa", 1, annotations={"team": "shop"}),
        replicaset("app:v2", "bbb", 2, annotations={"kubernetes.io/change-cause": "v2"}),
        replicaset("app:v0", "zzz", 7, owner="someone-else"),
    ]
    for rs in listed:
        rs["metadata"]["namespace"] = "ns"
        rs["spec"]["replicas"] = 3  # what the cache drops
    infos = [summaries.rs_info(rs) for rs in listed]
    cached = [i.body() for i in infos if i is not None]
    assert rb.revisions(d, cached) == rb.revisions(d, listed)
    kw = {"to": RollbackTo.LAST_HEALTHY, "known_bad": frozenset({"bbb"})}
    from_cache = rb.choose_target(revisions=rb.revisions(d, cached), **kw)  # type: ignore[arg-type]
    from_list = rb.choose_target(revisions=rb.revisions(d, listed), **kw)  # type: ignore[arg-type]
    assert from_cache == from_list
    assert from_cache.target is not None
    assert from_cache.target.template_hash == "aaa"
    assert rb.rollback_patch(
        deployment=d, target=from_cache.target, change_cause="c"
    ) == rb.rollback_patch(deployment=d, target=from_list.target, change_cause="c")  # type: ignore[arg-type]


def test_a_replicaset_no_deployment_controls_is_not_cached() -> None:
    rs = replicaset("app:v1", "aaa", 1, controller=False)
    assert summaries.rs_info(rs) is None


def test_deployment_summary() -> None:
    d = deployment("app:v2")
    d["metadata"]["labels"] = {"b": "2", "a": "1"}
    d["spec"]["replicas"] = 4
    d["status"] = {"availableReplicas": 3}
    info = summaries.deployment_info(d)
    assert (info.namespace, info.name, info.uid) == ("ns", "shop", UID)
    assert info.labels == (("a", "1"), ("b", "2"))
    assert (info.availability().available, info.availability().desired) == (3, 4)
