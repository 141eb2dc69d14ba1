"""The actions against the real API server, deployment controller and kubelet stand-in.

Images whose tag contains ``crash`` crash-loop (the stand-in's default); anything
else runs and turns Ready, so a Deployment's rollout really completes or stalls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from selfheal.actions import restart as rs
from selfheal.actions import rollback as rb
from selfheal.actions import scale as sc
from selfheal.actions.result import ActionResult, Outcome, Reason
from selfheal.clients import kube as k
from selfheal.handlers import summaries
from selfheal.policy.model import RollbackTo
from tests.support.cluster import Cluster
from tests.support.fixtures.cluster import Kubectl

pytestmark = pytest.mark.integration

NAME = "shop"
CAUSE = "selfheal: Remediation shop-crashloop rolled back the failing revision"


def deployment_body(image: str, *, replicas: int = 2, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, **metadata},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


async def eventually(
    what: str, check: Callable[[], Awaitable[bool]], *, within: float = 60.0
) -> None:
    """Polls ``check`` every 0.1 s until it is true; fails naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(0.1)


class Shop:
    """One Deployment under test and the reads a test needs about it."""

    def __init__(self, kube: k.Kube, namespace: str) -> None:
        self.kube, self.ns = kube, namespace
        self.path = k.apps(namespace, "deployments", NAME)

    async def create(self, image: str, **kw: Any) -> None:
        await self.kube.create(k.apps(self.ns, "deployments"), deployment_body(image, **kw))

    async def get(self) -> dict[str, Any]:
        return await self.kube.get(self.path)

    async def revisions(self) -> list[rb.Revision]:
        listing = await self.kube.get(k.apps(self.ns, "replicasets"), labelSelector=f"app={NAME}")
        return rb.revisions(await self.get(), listing["items"])

    @staticmethod
    def writable(d: dict[str, Any]) -> tuple[object, ...]:
        """What an action could write. Not resourceVersion: the controller's status
        updates bump it all the time; generation moves with every spec change."""
        meta = d["metadata"]
        return (meta["generation"], meta.get("annotations"), meta.get("labels"), d["spec"])

    async def written(self) -> tuple[object, ...]:
        return self.writable(await self.get())

    async def image(self) -> str:
        return str((await self.get())["spec"]["template"]["spec"]["containers"][0]["image"])

    async def roll_out(self, image: str) -> str:
        """Sets the image and waits for its ReplicaSet; returns that revision's hash."""
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        await self.kube.patch(self.path, patch, content_type=k.STRATEGIC)
        return await self.running_hash()

    async def running_hash(self) -> str:
        found: list[str] = []

        async def has_current() -> bool:
            found[:] = [r.template_hash for r in await self.revisions() if r.current]
            return bool(found)

        await eventually("the ReplicaSet of the Deployment's template", has_current)
        return found[0]

    async def settled(self) -> None:
        """The controller has taken in the latest spec: its ReplicaSet exists and the
        Deployment's revision annotation names it (it writes both after each change)."""

        async def taken_in() -> bool:
            d = await self.get()
            observed = d.get("status", {}).get("observedGeneration", 0)
            revision = d["metadata"].get("annotations", {}).get(rb.REVISION)
            current = [r for r in await self.revisions() if r.current]
            return bool(
                observed >= d["metadata"]["generation"]
                and current
                and str(current[0].number) == revision
            )

        await eventually(f"the controller takes in the spec of {NAME}", taken_in)

    async def wait_complete(self) -> None:
        """The rollout finished: every replica updated and available, no old pods left."""

        async def complete() -> bool:
            d = await self.get()
            want, st = d["spec"]["replicas"], d.get("status", {})
            return bool(
                st.get("observedGeneration", 0) >= d["metadata"]["generation"]
                and st.get("updatedReplicas", 0) == want
                and st.get("availableReplicas", 0) == want
                and st.get("replicas", 0) == want
            )

        await eventually(f"the rollout of {NAME} completes", complete)

    async def ready_pods(self, template_hash: str) -> int:
        pods = await self.kube.get(
            k.core(self.ns, "pods"), labelSelector=f"pod-template-hash={template_hash}"
        )
        return sum(
            1
            for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        )


@pytest.fixture
async def shop(kube: k.Kube, namespace: str) -> Shop:
    return Shop(kube, namespace)


async def do_rollback(
    kube: k.Kube,
    namespace: str,
    known_bad: set[str],
    *,
    to: RollbackTo = RollbackTo.LAST_HEALTHY,
    allow_gitops: bool = False,
    dry_run: bool = False,
) -> ActionResult:
    return await rb.rollback(
        kube=kube,
        namespace=namespace,
        name=NAME,
        to=to,
        known_bad=frozenset(known_bad),
        allow_gitops=allow_gitops,
        dry_run=dry_run,
        change_cause=CAUSE,
    )


# --- rollback ----------------------------------------------------------------------------


async def test_a_crashing_rollout_is_rolled_back_and_v1_pods_return(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.wait_complete()
    h1 = await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")

    result = await do_rollback(kube, namespace, {h2})

    assert result.result is Outcome.SUCCEEDED, result.message
    assert result.reason is Reason.ROLLED_BACK
    assert result.change["fromRevision"] == 2
    assert result.change["toRevision"] == 1
    assert (result.change["fromTemplateHash"], result.change["toTemplateHash"]) == (h2, h1)
    assert await shop.image() == "shop:v1"
    await shop.wait_complete()
    assert await shop.ready_pods(h1) == 2
    # As kubectl rollout undo: v1's ReplicaSet is reused and becomes revision 3.
    by_hash = {r.template_hash: r for r in await shop.revisions()}
    assert by_hash[h1].number == 3
    assert by_hash[h1].history == (1,)
    assert by_hash[h1].current
    assert (await shop.get())["metadata"]["annotations"]["kubernetes.io/change-cause"] == CAUSE


async def test_the_rollback_writes_what_kubectl_rollout_undo_writes(
    kube: k.Kube, namespace: str, shop: Shop, kubectl: Kubectl
) -> None:
    """The same history in two namespaces; kubectl undoes one, the action the other."""
    other_ns = f"{namespace}-kubectl"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": other_ns}})
    try:
        theirs = Shop(kube, other_ns)
        for s in (shop, theirs):
            await s.create("shop:v1", annotations={"kubernetes.io/change-cause": "deploy v1"})
            await s.settled()
            # As `kubectl apply` does: the new image and its change-cause in one write (the
            # controller copies the Deployment's annotations onto its current ReplicaSet).
            v2 = {
                "metadata": {"annotations": {"kubernetes.io/change-cause": "deploy v2"}},
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "app", "image": "shop:v2-crash"}]}
                    }
                },
            }
            await kube.patch(s.path, v2, content_type=k.STRATEGIC)
            await s.settled()
        h2 = await shop.running_hash()

        result = await rb.rollback(
            kube=kube,
            namespace=namespace,
            name=NAME,
            to=RollbackTo.PREVIOUS,
            known_bad=frozenset({h2}),
            allow_gitops=False,
            dry_run=False,
            change_cause="",
        )
        kubectl("rollout", "undo", f"deployment/{NAME}", "-n", other_ns)

        assert result.result is Outcome.SUCCEEDED, result.message
        await shop.settled()
        await theirs.settled()
        ours, kubectls = await shop.get(), await theirs.get()
        assert ours["spec"]["template"] == kubectls["spec"]["template"]
        assert ours["metadata"]["annotations"] == kubectls["metadata"]["annotations"]
        assert ours["metadata"]["annotations"]["kubernetes.io/change-cause"] == "deploy v1"
    finally:
        await kube.delete(f"/api/v1/namespaces/{other_ns}")


async def test_a_repeated_rollback_after_success_writes_nothing(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    first = await do_rollback(kube, namespace, {h2})
    assert first.result is Outcome.SUCCEEDED, first.message
    await shop.settled()
    before = await shop.written()

    again = await do_rollback(kube, namespace, {h2})

    assert again.result is Outcome.SUCCEEDED, again.message
    assert again.reason is Reason.CURRENT_NOT_KNOWN_BAD
    assert again.change["patch"] is None
    assert await shop.written() == before


async def test_two_bad_revisions_in_a_row_roll_back_to_the_last_healthy_one(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    h1 = await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    h3 = await shop.roll_out("shop:v3-crash")

    result = await do_rollback(kube, namespace, {h2, h3})

    assert result.result is Outcome.SUCCEEDED, result.message
    assert (result.change["fromRevision"], result.change["toRevision"]) == (3, 1)
    assert result.change["toTemplateHash"] == h1
    assert await shop.image() == "shop:v1"
    await shop.wait_complete()
    assert await shop.ready_pods(h1) == 2


async def test_a_second_incident_is_refused_rather_than_rolled_forward_to_a_bad_revision(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    h1 = await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    assert (await do_rollback(kube, namespace, {h2})).result is Outcome.SUCCEEDED
    assert await shop.running_hash() == h1

    # Now v1 fails too (say, a dependency broke): the only older revision is v2.
    result = await do_rollback(kube, namespace, {h2, h1})

    assert result.result is Outcome.REFUSED
    assert result.reason is Reason.NO_HEALTHY_REVISION
    assert await shop.image() == "shop:v1"


async def test_a_paused_deployment_is_refused_and_left_alone(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    await kube.patch(shop.path, {"spec": {"paused": True}})

    result = await do_rollback(kube, namespace, {h2})

    assert result.result is Outcome.REFUSED
    assert result.reason is Reason.PAUSED
    assert "kubectl rollout resume" in result.message
    assert await shop.image() == "shop:v2-crash"


async def test_dry_run_changes_nothing_and_records_the_exact_patch(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    await shop.settled()
    before = await shop.get()
    revs = await shop.revisions()

    result = await do_rollback(kube, namespace, {h2}, dry_run=True)

    assert result.result is Outcome.DRY_RUN, result.message
    after = await shop.get()
    assert Shop.writable(after) == Shop.writable(before)
    assert after["spec"]["template"] == before["spec"]["template"]
    expected = rb.rollback_patch(deployment=before, target=revs[0], change_cause=CAUSE)
    assert result.change["patch"] == expected
    # The recorded patch is the real thing: sent for real, it performs the rollback.
    await kube.patch(shop.path, list(result.change["patch"]), content_type=k.JSON_PATCH)
    assert await shop.image() == "shop:v1"


async def test_a_gitops_managed_deployment_is_refused_unless_allowed(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    tracking = {"argocd.argoproj.io/tracking-id": f"shop:apps/Deployment:{namespace}/{NAME}"}
    await shop.create("shop:v1", annotations=tracking)
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")

    refused = await do_rollback(kube, namespace, {h2})
    assert refused.result is Outcome.REFUSED
    assert refused.reason is Reason.GITOPS_MANAGED
    assert "Argo CD" in refused.change["gitOps"]
    assert await shop.image() == "shop:v2-crash"

    allowed = await do_rollback(kube, namespace, {h2}, allow_gitops=True)
    assert allowed.result is Outcome.SUCCEEDED, allowed.message
    assert await shop.image() == "shop:v1"


async def test_a_missing_deployment_fails_with_not_found(kube: k.Kube, namespace: str) -> None:
    result = await do_rollback(kube, namespace, {"abc"})
    assert (result.result, result.reason, result.retryable) == (
        Outcome.FAILED,
        Reason.NOT_FOUND,
        False,
    )


class RacingKube(k.Kube):
    """A real client that, just before each of its first ``races`` PATCHes, lets a second
    writer change the object for real through the cluster's admin API. That puts a
    concurrent change exactly between the action's read and its write."""

    cluster: Cluster
    races: int
    change: Callable[[int], dict[str, Any]]

    async def patch(self, path: str, body: object, **kw: Any) -> dict[str, Any]:
        if self.races > 0:
            self.races -= 1
            await asyncio.to_thread(self.cluster.api, "PATCH", path, self.change(self.races))
        return await super().patch(path, body, **kw)


async def racing(
    cluster: Cluster, races: int, change: Callable[[int], dict[str, Any]]
) -> RacingKube:
    client = await RacingKube.connect(kubeconfig=str(cluster.kubeconfig))
    assert isinstance(client, RacingKube)
    client.cluster, client.races, client.change = cluster, races, change
    return client


async def test_a_concurrent_change_is_re_read_and_the_rollback_re_decided(
    cluster: Cluster, kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    # A spec change the rollback does not undo: it bumps the generation the lock pins.
    client = await racing(cluster, 1, lambda n: {"spec": {"minReadySeconds": 1}})
    try:
        result = await do_rollback(client, namespace, {h2})
    finally:
        await client.close()

    assert result.result is Outcome.SUCCEEDED, result.message
    assert client.races == 0  # the race did happen
    d = await shop.get()
    assert d["spec"]["minReadySeconds"] == 1  # the other writer's change stays
    assert await shop.image() == "shop:v1"


async def test_someone_else_rolling_back_first_makes_the_retry_a_no_op(
    cluster: Cluster, kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    # The concurrent writer is a person rolling forward a fix.
    fix = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:v3"}]}}}}
    client = await racing(cluster, 1, lambda n: fix)
    try:
        # The controller must first record v3's ReplicaSet; a re-decision before that is
        # refused as not observed, so the retry of this call is a fresh one.
        result = await do_rollback(client, namespace, {h2})
        if result.reason is Reason.ROLLOUT_NOT_OBSERVED:
            await shop.running_hash()
            result = await do_rollback(kube, namespace, {h2})
    finally:
        await client.close()

    assert result.result is Outcome.SUCCEEDED, result.message
    assert result.reason is Reason.CURRENT_NOT_KNOWN_BAD
    assert await shop.image() == "shop:v3"


async def test_a_lock_lost_twice_fails_with_conflict_and_changes_nothing(
    cluster: Cluster, kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    # Annotation changes: the rollback replaces the annotations, so the lock pins them.
    client = await racing(cluster, 5, lambda n: {"metadata": {"annotations": {"t": str(n)}}})
    try:
        result = await do_rollback(client, namespace, {h2})
    finally:
        await client.close()

    assert result.result is Outcome.FAILED
    assert result.reason is Reason.CONFLICT
    assert result.retryable
    assert client.races == 3  # one read-decide-write, one retry, then it gave up
    assert await shop.image() == "shop:v2-crash"


class CountingKube(k.Kube):
    """A real client that notes every request it sends (method, path)."""

    sent: list[tuple[str, str]]

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        self.sent.append((method, path))
        return await super().request(method, path, **kw)


async def counting(cluster: Cluster) -> CountingKube:
    client = await CountingKube.connect(kubeconfig=str(cluster.kubeconfig))
    assert isinstance(client, CountingKube)
    client.sent = []
    return client


async def _cached(shop: Shop) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Deployment and its ReplicaSets as the operator's watch caches hold them."""
    d = summaries.deployment_info(await shop.get()).body()
    assert d is not None
    listing = await shop.kube.get(k.apps(shop.ns, "replicasets"), labelSelector=f"app={NAME}")
    rs = [info.body() for item in listing["items"] if (info := summaries.rs_info(item)) is not None]
    return d, rs


async def _rollback_cached(
    kube: k.Kube, namespace: str, known_bad: set[str], cached: tuple[Any, Any]
) -> ActionResult:
    deployment, replicasets = cached
    return await rb.rollback(
        kube=kube,
        namespace=namespace,
        name=NAME,
        to=RollbackTo.LAST_HEALTHY,
        known_bad=frozenset(known_bad),
        allow_gitops=False,
        dry_run=False,
        change_cause=CAUSE,
        replicasets=replicasets,
        deployment=deployment,
    )


async def test_a_rollback_decided_on_the_cached_deployment_sends_only_its_patch(
    cluster: Cluster, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", labels={"team": "shop"})
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    await shop.settled()
    client = await counting(cluster)
    try:
        result = await _rollback_cached(client, namespace, {h2}, await _cached(shop))
    finally:
        await client.close()

    assert result.result is Outcome.SUCCEEDED, result.message
    assert client.sent == [("PATCH", shop.path)]  # no GET, no listing: only the write
    assert await shop.image() == "shop:v1"
    paths = [op["path"] for op in result.change["patch"] if op["op"] == "test"]
    assert "/metadata/labels" in paths  # the GitOps check read them: pinned too


async def test_a_stale_cached_deployment_is_refused_by_the_lock_and_re_decided_fresh(
    cluster: Cluster, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", labels={"team": "shop"})
    await shop.running_hash()
    h2 = await shop.roll_out("shop:v2-crash")
    await shop.settled()
    stale = await _cached(shop)
    # A change the cache has not seen yet: a GitOps tool takes the Deployment over.
    await shop.kube.patch(
        shop.path, {"metadata": {"labels": {"argocd.argoproj.io/instance": "shop"}}}
    )
    client = await counting(cluster)
    try:
        result = await _rollback_cached(client, namespace, {h2}, stale)
    finally:
        await client.close()

    # The patch made on the stale copy was refused; the fresh read saw the marker.
    assert result.result is Outcome.REFUSED, result.message
    assert result.reason is Reason.GITOPS_MANAGED
    assert client.sent[0] == ("PATCH", shop.path)
    assert ("GET", shop.path) in client.sent[1:]
    assert await shop.image() == "shop:v2-crash"


async def test_a_cached_deployment_saying_nothing_to_do_is_checked_on_a_fresh_read(
    cluster: Cluster, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", labels={"team": "shop"})
    await shop.running_hash()
    stale = await _cached(shop)  # from before the bad rollout: v1 runs, not known bad
    h2 = await shop.roll_out("shop:v2-crash")
    await shop.settled()
    client = await counting(cluster)
    try:
        result = await _rollback_cached(client, namespace, {h2}, stale)
    finally:
        await client.close()

    # Never a wrong no-op: only a patch is decided on the cached copy.
    assert result.result is Outcome.SUCCEEDED, result.message
    assert result.reason is Reason.ROLLED_BACK
    assert client.sent[0] == ("GET", shop.path)
    assert await shop.image() == "shop:v1"


# --- scale -------------------------------------------------------------------------------


async def do_scale(
    kube: k.Kube, namespace: str, *, by: int, max_replicas: int, dry_run: bool = False
) -> ActionResult:
    return await sc.scale(
        kube=kube, namespace=namespace, name=NAME, by=by, max_replicas=max_replicas, dry_run=dry_run
    )


async def replicas(shop: Shop) -> int:
    return int((await shop.get())["spec"]["replicas"])


async def test_scale_goes_through_the_subresource_within_max_then_refuses_at_max(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", replicas=2)

    first = await do_scale(kube, namespace, by=2, max_replicas=3)
    assert first.result is Outcome.SUCCEEDED, first.message
    assert dict(first.change) | {"patch": None} == {
        "target": f"Deployment/{NAME}",
        "fromReplicas": 2,
        "toReplicas": 3,
        "patch": None,
    }
    assert await replicas(shop) == 3
    await shop.wait_complete()  # the controller runs the third pod

    at_max = await do_scale(kube, namespace, by=2, max_replicas=3)
    assert at_max.result is Outcome.REFUSED
    assert at_max.reason is Reason.AT_MAX
    assert await replicas(shop) == 3

    reverted = await sc.revert_scale(
        kube=kube, namespace=namespace, name=NAME, change=first.change, dry_run=False
    )
    assert reverted.result is Outcome.SUCCEEDED, reverted.message
    assert reverted.reason is Reason.SCALE_REVERTED
    assert await replicas(shop) == 2
    again = await sc.revert_scale(
        kube=kube, namespace=namespace, name=NAME, change=first.change, dry_run=False
    )
    assert again.reason is Reason.ALREADY_REVERTED


async def test_scale_re_plans_from_a_concurrent_replica_change(
    cluster: Cluster, kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", replicas=2)
    client = await racing(cluster, 1, lambda n: {"spec": {"replicas": 4}})
    try:
        result = await do_scale(client, namespace, by=1, max_replicas=10)
    finally:
        await client.close()

    assert result.result is Outcome.SUCCEEDED, result.message
    assert client.races == 0
    assert (result.change["fromReplicas"], result.change["toReplicas"]) == (4, 5)
    assert await replicas(shop) == 5


async def test_revert_leaves_a_later_human_change_alone(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", replicas=2)
    scaled = await do_scale(kube, namespace, by=1, max_replicas=5)
    assert scaled.result is Outcome.SUCCEEDED
    await kube.patch(shop.path, {"spec": {"replicas": 7}})

    result = await sc.revert_scale(
        kube=kube, namespace=namespace, name=NAME, change=scaled.change, dry_run=False
    )

    assert result.result is Outcome.REFUSED
    assert result.reason is Reason.CHANGED_SINCE
    assert await replicas(shop) == 7


async def test_scale_dry_run_changes_nothing(kube: k.Kube, namespace: str, shop: Shop) -> None:
    await shop.create("shop:v1", replicas=2)
    await shop.settled()
    before = await shop.written()

    result = await do_scale(kube, namespace, by=1, max_replicas=5, dry_run=True)

    assert result.result is Outcome.DRY_RUN, result.message
    assert result.change["toReplicas"] == 3
    assert result.change["patch"][-1] == {"op": "add", "path": "/spec/replicas", "value": 3}
    assert await shop.written() == before
    assert await replicas(shop) == 2


def hpa_body(*, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{NAME}-hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


async def test_with_an_hpa_its_min_replicas_is_raised_instead(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", replicas=2)
    hpas = k.group("autoscaling/v2", namespace, "horizontalpodautoscalers")
    await kube.create(hpas, hpa_body(min_replicas=2, max_replicas=5))

    result = await do_scale(kube, namespace, by=2, max_replicas=10)

    assert result.result is Outcome.SUCCEEDED, result.message
    assert result.reason is Reason.HPA_MIN_RAISED
    assert result.change["target"] == f"HorizontalPodAutoscaler/{NAME}-hpa"
    hpa = await kube.get(f"{hpas}/{NAME}-hpa")
    assert hpa["spec"]["minReplicas"] == 4
    assert hpa["spec"]["maxReplicas"] == 5

    async def hpa_scaled() -> bool:
        return await replicas(shop) == 4

    # The HPA controller itself brings the Deployment up to its new minimum.
    await eventually("the HPA controller scales the Deployment to 4", hpa_scaled, within=90)

    # Up to the HPA's maxReplicas, then no further.
    assert (await do_scale(kube, namespace, by=2, max_replicas=10)).change["toReplicas"] == 5
    full = await do_scale(kube, namespace, by=1, max_replicas=10)
    assert full.result is Outcome.REFUSED
    assert full.reason is Reason.HPA_AT_MAX
    assert (await kube.get(f"{hpas}/{NAME}-hpa"))["spec"]["minReplicas"] == 5


async def test_reverting_an_hpa_step_restores_its_min_replicas(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1", replicas=2)
    hpas = k.group("autoscaling/v2", namespace, "horizontalpodautoscalers")
    await kube.create(hpas, hpa_body(min_replicas=2, max_replicas=6))
    scaled = await do_scale(kube, namespace, by=3, max_replicas=10)
    assert scaled.change["toReplicas"] == 5

    result = await sc.revert_scale(
        kube=kube, namespace=namespace, name=NAME, change=scaled.change, dry_run=False
    )

    assert result.result is Outcome.SUCCEEDED, result.message
    assert (await kube.get(f"{hpas}/{NAME}-hpa"))["spec"]["minReplicas"] == 2


# --- restart -----------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 28, 8, 0, 0, tzinfo=dt.UTC)


async def do_restart(kube: k.Kube, namespace: str, *, dry_run: bool = False) -> ActionResult:
    return await rs.restart(
        kube=kube, namespace=namespace, name=NAME, requested_at=NOW, dry_run=dry_run
    )


async def test_restart_sets_the_annotation_and_rolls_out_a_new_replicaset(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await shop.wait_complete()
    h1 = await shop.running_hash()

    result = await do_restart(kube, namespace)

    assert result.result is Outcome.SUCCEEDED, result.message
    template = (await shop.get())["spec"]["template"]
    assert template["metadata"]["annotations"][rs.RESTARTED_AT] == "2026-11-28T08:00:00Z"
    h2 = await shop.running_hash()
    assert h2 != h1
    await shop.wait_complete()
    assert await shop.ready_pods(h2) == 2
    assert [r.number for r in await shop.revisions()] == [1, 2]

    # The same step again (e.g. after an operator restart) writes nothing.
    before = await shop.written()
    again = await do_restart(kube, namespace)
    assert again.reason is Reason.ALREADY_RESTARTED
    assert await shop.written() == before


async def test_restart_refuses_a_paused_deployment(
    kube: k.Kube, namespace: str, shop: Shop
) -> None:
    await shop.create("shop:v1")
    await kube.patch(shop.path, {"spec": {"paused": True}})

    result = await do_restart(kube, namespace)

    assert result.result is Outcome.REFUSED
    assert result.reason is Reason.PAUSED
    annotations = (await shop.get())["spec"]["template"]["metadata"].get("annotations") or {}
    assert rs.RESTARTED_AT not in annotations


async def test_restart_dry_run_changes_nothing(kube: k.Kube, namespace: str, shop: Shop) -> None:
    await shop.create("shop:v1")
    await shop.settled()
    before = await shop.get()

    result = await do_restart(kube, namespace, dry_run=True)

    assert result.result is Outcome.DRY_RUN, result.message
    assert result.change["patch"] is not None
    after = await shop.get()
    assert Shop.writable(after) == Shop.writable(before)
    assert after["spec"]["template"] == before["spec"]["template"]
