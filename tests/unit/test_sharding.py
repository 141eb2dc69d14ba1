"""Sharding by namespace hash: the shard function, the flags, and the filters that keep a
shard to its share (the light watcher, kopf's ``when=``, alerts). Pure, no cluster."""

from __future__ import annotations

import collections
import subprocess
import sys
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from selfheal.__main__ import parse_args
from selfheal.detect import alerts
from selfheal.handlers import alert_webhook, watch
from selfheal.handlers.boot import check
from selfheal.handlers.runtime import Runtime
from selfheal.settings import Settings, from_env
from selfheal.sharding import Shard, fnv1a_64, shard_of

# --- the shard function -----------------------------------------------------------------------


def test_fnv1a_64_matches_the_published_test_vectors() -> None:
    # From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv): any language's
    # FNV-1a gives the same shard, so an SRE can compute it anywhere.
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_a_namespace_always_lands_in_the_same_shard() -> None:
    # Pinned: a change of the function would move namespaces between running shards.
    assert [shard_of(ns, 2) for ns in ("default", "shop", "payments", "bench-1")] == [0, 1, 0, 1]
    assert [shard_of(ns, 3) for ns in ("default", "shop", "payments", "bench-1")] == [0, 2, 1, 2]


def test_the_shard_does_not_depend_on_pythons_randomised_hash() -> None:
    # A fresh interpreter gets another PYTHONHASHSEED; the shard stays.
    code = "from selfheal.sharding import shard_of; print(shard_of('shop', 7))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": "operator"},
        )
        assert out.stdout.strip() == str(shard_of("shop", 7))


@pytest.mark.parametrize("total", [2, 3, 5])
def test_namespaces_spread_evenly_over_the_shards(total: int) -> None:
    counts = collections.Counter(shard_of(f"team-{i}", total) for i in range(3000))
    assert sorted(counts) == list(range(total))
    expected = 3000 / total
    assert all(abs(n - expected) < 0.1 * expected for n in counts.values()), counts


def test_every_namespace_belongs_to_exactly_one_shard() -> None:
    shards = [Shard(index=i, total=3) for i in range(3)]
    for i in range(200):
        ns = f"ns-{i}"
        assert sum(s.owns(ns) for s in shards) == 1


def test_unsharded_owns_everything_and_keeps_its_lease_name() -> None:
    one = Shard()
    assert not one.sharded
    assert all(one.owns(ns) for ns in ("shop", "", None))
    assert one.lease_name("selfheal") == "selfheal"  # back-compatible: the same Lease


def test_each_shard_has_its_own_lease() -> None:
    assert Shard(index=0, total=2).lease_name("selfheal") == "selfheal-shard-0-of-2"
    assert Shard(index=1, total=2).lease_name("selfheal") == "selfheal-shard-1-of-2"
    assert str(Shard(index=1, total=2)) == "1-of-2"
    # A cluster-scoped object (no namespace) is every shard's.
    assert all(Shard(index=i, total=2).owns(ns) for i in (0, 1) for ns in ("", None))


@pytest.mark.parametrize(
    ("index", "total", "says"),
    [(2, 2, "--shard must be between 0 and"), (-1, 2, "--shard"), (0, 0, "at least 1")],
)
def test_a_shard_outside_the_total_is_refused(index: int, total: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Shard(index=index, total=total)
    assert says in check(Settings(shard=index, total_shards=total))


def test_flags_and_environment_set_the_shard() -> None:
    args = parse_args(["--shard", "1", "--total-shards", "4"])
    assert (args.shard, args.total_shards) == (1, 4)
    cfg = from_env({"SELFHEAL_SHARD": "2", "SELFHEAL_TOTAL_SHARDS": "3"})
    assert cfg.sharding == Shard(index=2, total=3)
    assert Settings().sharding == Shard()
    assert check(Settings(shard=1, total_shards=2)) == ""


def test_the_cli_names_each_namespaces_shard() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "selfheal.sharding", "--total-shards", "2", "shop", "payments"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": "operator"},
    )
    assert out.stdout == "shop\t1\npayments\t0\n"


# --- the filters ------------------------------------------------------------------------------


def test_kopf_sees_only_the_shards_namespaces() -> None:
    memo: dict[str, Any] = {"shard": Shard(index=1, total=2)}
    assert watch.in_shard(namespace="shop", memo=memo)  # type: ignore[arg-type]
    assert not watch.in_shard(namespace="payments", memo=memo)  # type: ignore[arg-type]
    assert watch.in_shard(namespace="payments", memo={})  # type: ignore[arg-type]


def _alert(fp: str, **labels: str) -> alerts.Alert:
    return alerts.Alert(fingerprint=fp, status="firing", labels={"alertname": "Down", **labels})


def test_alerts_about_other_shards_namespaces_are_theirs() -> None:
    got = [_alert("1", namespace="shop"), _alert("2", namespace="payments"), _alert("3")]
    mine, others = alerts.split_by_shard(got, Shard(index=1, total=2).owns)
    assert [a.fingerprint for a in mine] == ["1", "3"]  # no namespace: names no workload
    assert [a.fingerprint for a in others] == ["2"]
    mine, others = alerts.split_by_shard(got, Shard().owns)
    assert (len(mine), others) == (3, [])


async def test_the_webhook_answers_200_and_ignores_another_shards_alerts(tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret")
    rt = Runtime(
        settings=Settings(),
        driver=None,  # type: ignore[arg-type]
        prometheus=None,  # type: ignore[arg-type]
        health=None,  # type: ignore[arg-type]
        shard=Shard(index=1, total=2),
    )
    app = alert_webhook.make_app(rt, alert_webhook.TokenFile(str(token)))

    def item(fp: str, ns: str) -> dict[str, Any]:
        labels = {"alertname": "Down", "namespace": ns, "deployment": "web"}
        return {"status": "firing", "fingerprint": fp, "labels": labels}

    async with TestClient(TestServer(app)) as client:
        auth = {"Authorization": "Bearer s3cret"}
        body = {"version": "4", "alerts": [item("1", "payments")]}
        r = await client.post(alert_webhook.PATH, json=body, headers=auth)
        assert r.status == 200  # not a failure: Alertmanager must not retry it
        assert await r.json() == {"received": 0, "changed": 0, "ignored": 1}
        assert len(rt.alerts) == 0
        body = {"version": "4", "alerts": [item("1", "payments"), item("2", "shop")]}
        r = await client.post(alert_webhook.PATH, json=body, headers=auth)
        assert await r.json() == {"received": 1, "changed": 1, "ignored": 1}
        assert [a.fingerprint for a in rt.alerts.alerts()] == ["2"]


def test_each_shard_has_its_own_finalizer_and_drops_other_shard_counts() -> None:
    # kopf strips a finalizer of its name that none of its handlers needs on an object:
    # with one name, the shard that does not own a policy removed the owner's, endlessly.
    assert watch.finalizer(Shard()) == "selfheal.dev/finalizer"  # unchanged unsharded
    assert watch.finalizer(Shard(index=1, total=2)) == "selfheal.dev/finalizer-shard-1-of-2"
    body = {
        "metadata": {
            "finalizers": [
                "selfheal.dev/finalizer",
                "selfheal.dev/finalizer-shard-1-of-2",
                "example.com/keep-me",
            ]
        }
    }
    own = watch.finalizer(Shard(index=1, total=2))
    assert watch.stale_finalizers(body, own) == ["selfheal.dev/finalizer"]
    assert watch.stale_finalizers(body, "selfheal.dev/finalizer") == [
        "selfheal.dev/finalizer-shard-1-of-2"
    ]
    assert watch.stale_finalizers({"metadata": {}}, own) == []
