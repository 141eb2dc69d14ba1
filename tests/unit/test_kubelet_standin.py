"""The kubelet stand-in's pure parts, on a fake clock: what Pod status it reports when,
and how it cuts logs. (tests/integration/test_bed.py checks the same through the API.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kubelet import (
    Behaviour,
    PodRun,
    adopt,
    default_behaviour,
    image_tag,
    parse_ts,
    pod_status,
    select_log,
)

T0 = 1_800_000_000.0  # the fake clock's start, whole seconds


def fresh_pod(image: str = "example.com/app:1") -> PodRun:
    return PodRun(
        uid="u-1",
        namespace="ns",
        name="app-1",
        node="selfheal-node-1",
        containers=[("app", image)],
        init_containers=[],
        deleting=False,
        phase="Pending",
        bound_at=T0,
        ip="10.244.0.1",
    )


def only(status: dict[str, Any]) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = status["containerStatuses"]
    assert len(statuses) == 1
    return statuses[0]


def test_crash_loop_restarts_on_schedule_and_stops_at_the_bound() -> None:
    b = Behaviour(kind="crashloop", restart_every=10, max_restarts=3, exit_code=2)
    pod = fresh_pod()
    seen = []
    for now in (T0, T0 + 9, T0 + 10, T0 + 25, T0 + 1000):
        status, due = pod_status(pod, lambda _: b, now)
        seen.append((only(status)["restartCount"], due))
    assert seen == [(1, T0 + 10), (1, T0 + 10), (2, T0 + 20), (3, None), (3, None)]


def test_crash_loop_status_reads_like_a_kubelets() -> None:
    b = Behaviour(kind="crashloop", restart_every=10, reason="OOMKilled", exit_code=137)
    pod = fresh_pod()
    pod_status(pod, lambda _: b, T0)
    status, _ = pod_status(pod, lambda _: b, T0 + 21)
    c = only(status)
    assert list(c["state"]) == ["waiting"]
    assert c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "restarting failed container=app pod=app-1_ns" in c["state"]["waiting"]["message"]
    assert (c["ready"], c["started"]) == (False, False)
    terminated = c["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")
    assert parse_ts(terminated["finishedAt"]) == T0 + 20  # the third crash
    assert status["phase"] == "Running"
    ready = [x for x in status["conditions"] if x["type"] == "Ready"]
    assert ready[0]["status"] == "False"


def test_a_fixed_image_comes_back_ready_keeping_its_restarts_and_last_crash() -> None:
    behaviours = {"example.com/app:1": Behaviour(kind="crashloop", restart_every=10)}
    pod = fresh_pod()
    pod_status(pod, behaviours.__getitem__, T0)
    crashed, _ = pod_status(pod, behaviours.__getitem__, T0 + 15)
    assert only(crashed)["restartCount"] == 2
    behaviours["example.com/app:1"] = Behaviour()
    healed, due = pod_status(pod, behaviours.__getitem__, T0 + 17)
    c = only(healed)
    assert due is None
    assert c["restartCount"] == 3
    assert c["ready"] is True
    assert c["state"] == {"running": {"startedAt": "2027-01-15T08:00:17Z"}}
    assert c["lastState"]["terminated"]["finishedAt"] == "2027-01-15T08:00:10Z"


@pytest.mark.parametrize(
    "behaviour",
    [Behaviour(), Behaviour(kind="crashloop", restart_every=10), Behaviour(kind="imagepull")],
)
def test_a_restarted_stand_in_adopts_the_status_it_wrote(behaviour: Behaviour) -> None:
    before = fresh_pod()
    pod_status(before, lambda _: behaviour, T0)
    written, _ = pod_status(before, lambda _: behaviour, T0 + 25)

    after = fresh_pod()
    after.ip, after.bound_at = "10.244.9.9", T0 + 100  # what a new process would pick
    adopt(after, written)
    again, _ = pod_status(after, lambda _: behaviour, T0 + 25)
    assert again == written  # nothing to write, no restart count reset


def test_unpullable_and_misconfigured_containers_wait_in_pending() -> None:
    for b, reason in [
        (Behaviour(kind="imagepull"), "ImagePullBackOff"),
        (Behaviour(kind="imagepull", reason="ErrImagePull"), "ErrImagePull"),
        (Behaviour(kind="configerror"), "CreateContainerConfigError"),
    ]:
        status, due = pod_status(fresh_pod(), {"example.com/app:1": b}.__getitem__, T0)
        assert status["phase"] == "Pending"
        assert only(status)["state"]["waiting"]["reason"] == reason
        assert due is None


@pytest.mark.parametrize(
    ("image", "kind", "reason", "exit_code"),
    [
        ("example.com/shop/api:1.2", "running", "", 1),
        ("localhost:5000/api", "running", "", 1),
        ("example.com/api:v2-crash", "crashloop", "Error", 1),
        ("example.com/api:oom", "crashloop", "OOMKilled", 137),
        ("example.com/api:badpull@sha256:abc", "imagepull", "", 1),
        ("example.com/api:configerror", "configerror", "", 1),
    ],
)
def test_the_image_tag_alone_chooses_a_behaviour(
    image: str, kind: str, reason: str, exit_code: int
) -> None:
    b = default_behaviour(image)
    assert (b.kind, b.reason, b.exit_code) == (kind, reason, exit_code)


def test_image_tag_ignores_a_registry_port_and_a_digest() -> None:
    assert image_tag("localhost:5000/team/api") == "latest"
    assert image_tag("localhost:5000/team/api:crash@sha256:0f") == "crash"


def test_a_bad_behaviour_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"Behaviour\.kind='crash'"):
        Behaviour(kind="crash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Behaviour\.restart_every=0"):
        Behaviour(restart_every=0)


def test_log_options_tail_limit_and_timestamps() -> None:
    text = "a\nbb\nccc\n"
    assert select_log(text, started=T0) == b"a\nbb\nccc\n"
    assert select_log(text, started=T0, tail_lines=2) == b"bb\nccc\n"
    assert select_log(text, started=T0, tail_lines=0) == b""
    assert select_log(text, started=T0, limit_bytes=3) == b"a\nb"
    stamped = select_log(text, started=T0, tail_lines=1, timestamps=True)
    assert stamped == b"2027-01-15T08:00:00.002000000Z ccc\n"
