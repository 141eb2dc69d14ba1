"""Leader election's timing rules, on an injected clock (no API server).

The loop against the real kube-apiserver is in tests/integration/test_leader.py.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest

from selfheal.clients.kube import Kube
from selfheal.clients.lease import (
    JITTER_FACTOR,
    LeaderElector,
    Observation,
    Record,
    Timings,
    micro_time,
    new_identity,
)
from selfheal.settings import from_env

ME, OTHER = "op-a_1", "op-b_2"


def held(holder: str = OTHER, *, renew: str = "2026-12-01T20:00:00.000000Z", n: int = 0) -> Record:
    return Record(holder=holder, lease_duration_seconds=15, renew_time=renew, transitions=n)


# --- timings --------------------------------------------------------------------------------


def test_the_defaults_are_client_gos() -> None:
    t = Timings()
    assert (t.lease_duration, t.renew_deadline, t.retry_period) == (15.0, 10.0, 2.0)
    assert t.lease_duration_seconds == 15


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"lease_duration": 10.0, "renew_deadline": 10.0}, "greater than renew_deadline"),
        ({"renew_deadline": 2.4, "retry_period": 2.0}, "1.2 x retry_period"),
        ({"retry_period": 0.0}, "positive"),
        ({"lease_duration": 0.5, "renew_deadline": 0.3, "retry_period": 0.1}, "at least 1 s"),
    ],
)
def test_timings_that_would_let_two_leaders_overlap_are_refused(
    kw: dict[str, float], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        Timings(**kw)


def test_the_lease_never_promises_longer_than_the_configured_duration() -> None:
    # Rounded down: a standby told 15 s for a 15.9 s setting waits less, never more,
    # than what the leader's renew deadline was chosen against.
    assert Timings(lease_duration=15.9).lease_duration_seconds == 15


def test_a_candidates_wait_is_jittered_like_client_gos() -> None:
    t = Timings()
    assert t.jittered(0.0) == pytest.approx(2.0)
    assert t.jittered(0.999999) == pytest.approx(2.0 * (1 + JITTER_FACTOR), rel=1e-5)


# --- expiry by the observed time ------------------------------------------------------------


def test_a_held_lease_expires_lease_duration_after_it_was_last_seen_changing() -> None:
    obs = Observation()
    assert obs.see(held(), now=100.0)
    assert not obs.may_acquire(ME, now=100.0)
    assert not obs.may_acquire(ME, now=114.99)
    assert obs.takeover_due_in(ME, now=110.0) == pytest.approx(5.0)
    assert obs.may_acquire(ME, now=115.0)


def test_seeing_the_same_record_again_does_not_restart_the_clock() -> None:
    obs = Observation()
    obs.see(held(), now=100.0)
    assert not obs.see(held(), now=110.0)  # unchanged: the holder did not renew
    assert obs.may_acquire(ME, now=115.0)


def test_a_renewal_restarts_the_clock_whatever_the_timestamps_say() -> None:
    obs = Observation()
    obs.see(held(renew="2026-12-01T20:00:00.000000Z"), now=100.0)
    # The holder's clock is a year behind ours: only the change counts, not the value.
    assert obs.see(held(renew="2025-12-01T20:00:02.000000Z"), now=112.0)
    assert not obs.may_acquire(ME, now=126.0)
    assert obs.may_acquire(ME, now=127.0)


def test_remote_timestamps_are_never_compared_with_the_local_clock() -> None:
    # A renewTime far in the past (skewed or stopped clock on the holder) does not make
    # the Lease look expired the moment it is first seen; far in the future it does not
    # make it live forever.
    past, future = Observation(), Observation()
    past.see(held(renew="1999-01-01T00:00:00.000000Z"), now=50.0)
    future.see(held(renew="2999-01-01T00:00:00.000000Z"), now=50.0)
    for obs in (past, future):
        assert not obs.may_acquire(ME, now=64.9)
        assert obs.may_acquire(ME, now=65.0)


def test_a_released_or_absent_lease_is_free_at_once_and_our_own_is_ours() -> None:
    obs = Observation()
    assert obs.may_acquire(ME, now=0.0)  # nothing seen yet: try (the GET tells)
    obs.see(Record(holder="", lease_duration_seconds=1, transitions=3), now=10.0)
    assert obs.may_acquire(ME, now=10.0)
    obs.see(held(ME), now=20.0)
    assert obs.may_acquire(ME, now=20.0)
    assert not obs.may_acquire(OTHER, now=20.0)


def test_the_holders_duration_counts_not_ours() -> None:
    obs = Observation()
    obs.see(Record(holder=OTHER, lease_duration_seconds=60), now=0.0)
    assert not obs.may_acquire(ME, now=59.0)
    assert obs.may_acquire(ME, now=60.0)


def test_nothing_seen_expires_at_minus_infinity() -> None:
    assert Observation().expires_at() == -math.inf


# --- the record and the identity ------------------------------------------------------------


def test_the_record_round_trips_through_a_lease_spec() -> None:
    rec = Record(
        holder=ME,
        lease_duration_seconds=15,
        acquire_time="2026-12-01T20:00:00.000000Z",
        renew_time="2026-12-01T20:00:02.000000Z",
        transitions=4,
    )
    assert Record.of({"spec": rec.spec()}) == rec
    assert Record.of({}) == Record()
    assert Record.of({"spec": {"holderIdentity": None}}).holder == ""


def test_micro_time_is_rfc3339_utc_with_microseconds() -> None:
    at = dt.datetime(2026, 12, 1, 21, 2, 3, 4500, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert micro_time(at) == "2026-12-01T20:02:03.004500Z"


def test_identity_is_the_pod_name_and_a_random_suffix() -> None:
    a, b = new_identity("selfheal-7d9f-abcde"), new_identity("selfheal-7d9f-abcde")
    assert a.startswith("selfheal-7d9f-abcde_")
    assert a != b  # a restarted pod is a new candidate
    assert new_identity(None)  # the host name outside a pod


# --- the elector before it ran ------------------------------------------------------------


async def test_a_new_elector_does_not_lead_and_its_deadline_follows_the_clock() -> None:
    now = [0.0]
    kube = Kube.from_token(host="https://127.0.0.1:1", token="unused", ca_file="")
    try:
        el = LeaderElector(
            kube=kube, namespace="ns", name="lock", identity=ME, clock=lambda: now[0]
        )
        assert el.identity == ME
        assert not el.is_leader
        assert el.leader == ""
        assert el.lease_path == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock"
        # As if a renewal sent at t=0 succeeded: leads until t=10 (renew deadline), not 15.
        el._leading, el._valid_until = True, 0.0 + el.timings.renew_deadline
        now[0] = 9.99
        assert el.is_leader
        now[0] = 10.0
        assert not el.is_leader  # even with the loop starved, the flag turns in time
    finally:
        await kube.close()
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(kube=kube, namespace="ns", name="lock", identity="")


# --- settings --------------------------------------------------------------------------------


def test_settings_take_the_downward_apis_names_and_the_timings() -> None:
    cfg = from_env(
        {
            "POD_NAME": "selfheal-abc",
            "POD_NAMESPACE": "ops",
            "SELFHEAL_LEADER_ELECTION": "false",
            "SELFHEAL_LEASE_DURATION": "30",
        }
    )
    assert (cfg.pod_name, cfg.namespace, cfg.leader_election) == ("selfheal-abc", "ops", False)
    assert cfg.lease_duration == 30.0
    assert from_env({"POD_NAMESPACE": "ops", "SELFHEAL_NAMESPACE": "mine"}).namespace == "mine"
    assert from_env({}).leader_election is True
    with pytest.raises(ValueError, match="SELFHEAL_LEADER_ELECTION"):
        from_env({"SELFHEAL_LEADER_ELECTION": "maybe"})


def test_the_flags_turn_election_off_and_set_the_lease() -> None:
    from selfheal.__main__ import parse_args

    args = parse_args(["--no-leader-election"])
    assert args.leader_election is False
    args = parse_args(["--leader-election", "--leader-election-name=sh", "--lease-duration=20"])
    assert (args.leader_election, args.leader_election_name, args.lease_duration) == (
        True,
        "sh",
        20.0,
    )
    assert parse_args([]).leader_election is None  # unset: the settings' default (on)
    with pytest.raises(SystemExit):
        parse_args(["--peering=default"])  # removed: kopf peering paused every replica
