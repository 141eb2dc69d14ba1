"""Crash-loop detection: summaries of real-shaped pod bodies, thresholds on a fake clock."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from selfheal.detect import crashloop
from selfheal.detect.crashloop import PodHistory, observe, summarize
from selfheal.detect.signal import Health, WorkloadRef
from selfheal.policy.model import CrashLoopTrigger

T0 = 1_800_000_000.0
TRIGGER = CrashLoopTrigger(restarts=3, within=600.0)


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_status(
    *,
    name: str = "app",
    restarts: int = 0,
    running_since: float | None = None,
    waiting: str | None = None,
    message: str = "",
    last: tuple[str, int, float, float] | None = None,
    terminated: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """A containerStatuses entry as the kubelet writes it. ``last``: (reason, exit, start, end)."""
    state: dict[str, Any] = {}
    if waiting is not None:
        state["waiting"] = {"reason": waiting, **({"message": message} if message else {})}
    elif terminated is not None:
        state["terminated"] = {"reason": terminated[0], "exitCode": terminated[1]}
    else:
        state["running"] = {"startedAt": iso(running_since or T0)}
    body: dict[str, Any] = {
        "name": name,
        "image": "registry.example/app:1",
        "restartCount": restarts,
        "ready": "running" in state,
        "state": state,
        "lastState": {},
    }
    if last is not None:
        reason, code, started, finished = last
        body["lastState"] = {
            "terminated": {
                "reason": reason,
                "exitCode": code,
                "startedAt": iso(started),
                "finishedAt": iso(finished),
            }
        }
    return body


def pod(
    *containers: dict[str, Any],
    name: str = "web-7d9f-abcde",
    uid: str = "uid-1",
    started: float = T0 - 7200,
    deleting: bool = False,
    phase: str = "Running",
    init: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    ready = all(c["ready"] for c in containers) and bool(containers)
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "shop",
        "uid": uid,
        "creationTimestamp": iso(started - 2),
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d9f",
                "uid": "rs",
                "controller": True,
                "blockOwnerDeletion": True,
            },
        ],
    }
    if deleting:
        meta["deletionTimestamp"] = iso(T0)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": c["name"], "image": c["image"]} for c in containers]},
        "status": {
            "phase": phase,
            "startTime": iso(started),
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
            ],
            "containerStatuses": list(containers),
            **({"initContainerStatuses": list(init)} if init else {}),
        },
    }


def crashing(restarts: int, at: float, *, reason: str = "Error", code: int = 1) -> dict[str, Any]:
    """A container that ran 5 s and died at ``at``, now waiting in CrashLoopBackOff."""
    return container_status(
        restarts=restarts, waiting="CrashLoopBackOff", last=(reason, code, at - 5, at)
    )


def feed(*observations: tuple[float, dict[str, Any]]) -> PodHistory:
    history: PodHistory | None = None
    for now, body in observations:
        history = observe(history, summarize(body), now=now)
    assert history is not None
    return history


# -- summarize -------------------------------------------------------------------------------


def test_summary_keeps_what_detection_needs_from_a_real_shaped_body() -> None:
    body = pod(
        crashing(4, T0 - 20, reason="OOMKilled", code=137),
        container_status(name="sidecar", running_since=T0 - 3600),
        init=(container_status(name="migrate", terminated=("Completed", 0)),),
    )
    s = summarize(body)
    assert (s.namespace, s.name, s.uid, s.replicaset) == (
        "shop",
        "web-7d9f-abcde",
        "uid-1",
        "web-7d9f",
    )
    assert s.phase == "Running"
    assert not s.ready
    assert not s.deleting
    assert s.started == T0 - 7200
    assert [(c.name, c.init) for c in s.containers] == [
        ("migrate", True),
        ("app", False),
        ("sidecar", False),
    ]
    app = s.containers[1]
    assert app.restart_count == 4
    assert app.waiting_reason == "CrashLoopBackOff"
    assert (app.last_reason, app.last_exit_code, app.last_finished_at) == (
        "OOMKilled",
        137,
        T0 - 20,
    )
    assert s.containers[2].running
    assert s.containers[2].ready
    assert s.restarts == 4
    hash(s)  # frozen and hashable: it can sit in a kopf index


def test_summary_of_a_bare_pod_without_status_is_empty_not_an_error() -> None:
    s = summarize({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}})
    assert s.containers == ()
    assert s.phase == ""
    assert not s.ready
    assert s.replicaset == ""


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("ReplicaSet", "pod-template-hash"),
        ("StatefulSet", "controller-revision-hash"),
        ("DaemonSet", "controller-revision-hash"),
    ],
)
def test_summary_names_its_controller_owner_and_revision(kind: str, label: str) -> None:
    body = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u",
            "labels": {"app": "web", label: "abc123"},
            "ownerReferences": [
                {"kind": "Node", "name": "not-the-controller"},
                {"kind": kind, "name": "web", "controller": True},
            ],
        }
    }
    s = summarize(body)
    assert (s.owner_kind, s.owner, s.revision) == (kind, "web", "abc123")
    # Only a ReplicaSet owner is the Deployment path's ``replicaset``.
    assert s.replicaset == ("web" if kind == "ReplicaSet" else "")


def test_waiting_message_is_bounded() -> None:
    body = pod(container_status(waiting="ErrImagePull", message="x" * 5000))
    assert len(summarize(body).containers[0].waiting_message) == crashloop.MESSAGE_LIMIT


# -- thresholds ------------------------------------------------------------------------------


def test_fires_on_the_observation_where_restarts_within_the_window_reach_the_threshold() -> None:
    steps = [
        (T0, pod(container_status(running_since=T0 - 3600))),
        (T0 + 30, pod(crashing(1, T0 + 28))),
        (T0 + 70, pod(crashing(2, T0 + 68))),
        (T0 + 130, pod(crashing(3, T0 + 128))),
    ]
    history: PodHistory | None = None
    verdicts = []
    for now, body in steps:
        history = observe(history, summarize(body), now=now)
        verdicts.append(crashloop.evaluate(TRIGGER, [history], now=now))
    assert [v.health for v in verdicts] == [
        Health.HEALTHY,
        Health.UNKNOWN,
        Health.UNKNOWN,
        Health.UNHEALTHY,
    ]
    assert verdicts[2].cause == "NotReady"
    assert "2 restarts" in verdicts[2].detail
    fired = verdicts[3]
    assert fired.cause == "Error"
    assert fired.evidence["exitCode"] == 1
    assert fired.evidence["restarts"] == 3
    assert fired.evidence["pod"] == "web-7d9f-abcde"
    assert fired.evidence["container"] == "app"
    assert "exited with code 1" in fired.detail
    assert "3 times within 10m" in fired.detail


def test_restarts_spread_wider_than_the_window_do_not_fire() -> None:
    h = feed(
        (T0, pod(container_status(running_since=T0 - 3600))),
        (T0 + 10, pod(crashing(1, T0 + 9))),
        (T0 + 400, pod(crashing(2, T0 + 399))),
        (T0 + 700, pod(crashing(3, T0 + 699))),
    )
    # At T0+700 the window starts at T0+100: only the restarts at +400 and +700 are in it.
    assert crashloop.restarts_within(h, within=600, now=T0 + 700) == 2
    assert crashloop.evaluate(TRIGGER, [h], now=T0 + 700).health is Health.UNKNOWN
    # A tighter trigger sees the same history differently.
    assert (
        crashloop.evaluate(CrashLoopTrigger(restarts=2, within=600), [h], now=T0 + 700).health
        is Health.UNHEALTHY
    )


def test_a_crash_loop_that_stopped_ages_out_of_the_window() -> None:
    h = feed(
        (T0, pod(container_status(running_since=T0 - 3600))),
        (T0 + 10, pod(crashing(1, T0 + 9))),
        (T0 + 20, pod(crashing(2, T0 + 19))),
        (T0 + 40, pod(crashing(3, T0 + 39))),
        (T0 + 60, pod(container_status(restarts=3, running_since=T0 + 55))),
    )
    assert crashloop.evaluate(TRIGGER, [h], now=T0 + 60).health is Health.UNHEALTHY
    # Ten minutes after the last restart the window holds none: ready again, healthy.
    assert crashloop.evaluate(TRIGGER, [h], now=T0 + 40 + 600.5).health is Health.HEALTHY


# -- first sight -----------------------------------------------------------------------------


def test_pod_first_seen_crash_looping_fires_at_once() -> None:
    # The operator starts while a two-hour-old pod is in its fifth back-off; its last run
    # lasted 5 s and ended 20 s ago.
    h = feed((T0, pod(crashing(5, T0 - 20))))
    v = crashloop.evaluate(TRIGGER, [h], now=T0)
    assert v.health is Health.UNHEALTHY
    assert v.cause == "Error"
    assert v.evidence["restarts"] == 5


def test_long_lived_pod_with_old_restarts_and_one_fresh_crash_is_not_an_incident() -> None:
    # Five restarts over its life; it then ran for three days and crashed 20 s ago.
    body = pod(
        container_status(
            restarts=5, waiting="CrashLoopBackOff", last=("Error", 1, T0 - 3 * 86400, T0 - 20)
        ),
        started=T0 - 30 * 86400,
    )
    h = feed((T0, body))
    v = crashloop.evaluate(TRIGGER, [h], now=T0)
    assert v.health is Health.UNKNOWN
    assert v.cause == "NotReady"
    assert v.evidence["restarts"] == 0


def test_pod_started_within_the_window_counts_all_its_restarts() -> None:
    body = pod(container_status(restarts=3, running_since=T0 - 5), started=T0 - 120)
    h = feed((T0, body))
    assert crashloop.evaluate(TRIGGER, [h], now=T0).health is Health.UNHEALTHY


def test_pod_first_seen_running_with_old_restarts_is_healthy() -> None:
    body = pod(container_status(restarts=7, running_since=T0 - 5000), started=T0 - 86400)
    h = feed((T0, body), (T0 + 30, body))
    v = crashloop.evaluate(TRIGGER, [h], now=T0 + 30)
    assert v.health is Health.HEALTHY
    assert v.evidence["restarts"] == 0


# -- causes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "cause", "code", "words"),
    [
        (("OOMKilled", 137), "OOMKilled", 137, "OOMKilled"),
        (("Error", 2), "Error", 2, "exited with code 2"),
        (("Error", 137), "Error", 137, "exited with code 137"),
        (("Completed", 0), "CrashLoopBackOff", 0, "keeps exiting (code 0)"),
    ],
)
def test_cause_is_classified_from_the_last_termination(
    last: tuple[str, int], cause: str, code: int, words: str
) -> None:
    reason, exit_code = last
    h = feed(
        *(
            (T0 + 10 * i, pod(crashing(i, T0 + 10 * i - 1, reason=reason, code=exit_code)))
            for i in range(4)
        )
    )
    v = crashloop.evaluate(TRIGGER, [h], now=T0 + 30)
    assert (v.health, v.cause, v.evidence["exitCode"], v.evidence["reason"]) == (
        Health.UNHEALTHY,
        cause,
        code,
        reason,
    )
    assert words in v.detail


def test_image_pull_errors_are_unhealthy_after_the_grace_without_any_restart() -> None:
    def stuck(reason: str) -> dict[str, Any]:
        return pod(
            container_status(waiting=reason, message='Back-off pulling image "app:nope"'),
            started=T0,
        )

    h = feed((T0 + 1, stuck("ErrImagePull")), (T0 + 15, stuck("ImagePullBackOff")))
    assert crashloop.evaluate(TRIGGER, [h], now=T0 + 15).health is Health.UNKNOWN
    h = observe(h, summarize(stuck("ImagePullBackOff")), now=T0 + 60)
    v = crashloop.evaluate(TRIGGER, [h], now=T0 + 60)
    assert v.health is Health.UNHEALTHY
    assert v.cause == "ImagePullBackOff"
    assert "app:nope" in v.detail
    assert v.evidence["waiting"] == "ImagePullBackOff"
    # The grace is a knob: zero fires on the first sight.
    h0 = feed((T0 + 1, stuck("ErrImagePull")))
    assert crashloop.evaluate(TRIGGER, [h0], now=T0 + 1, stuck_grace=0).cause == "ImagePullBackOff"


def test_a_pull_error_that_clears_resets_the_grace() -> None:
    waiting = pod(container_status(waiting="ErrImagePull"), started=T0)
    running = pod(container_status(running_since=T0 + 40), started=T0)
    h = feed((T0 + 1, waiting), (T0 + 40, running), (T0 + 200, waiting))
    assert h.stuck_since == T0 + 200
    assert crashloop.evaluate(TRIGGER, [h], now=T0 + 230).health is Health.UNKNOWN


def test_config_errors_are_their_own_cause() -> None:
    body = pod(
        container_status(waiting="CreateContainerConfigError", message='secret "db" not found'),
        started=T0 - 300,
    )
    v = crashloop.evaluate(TRIGGER, [feed((T0, body))], now=T0)
    assert v.health is Health.UNHEALTHY
    assert v.cause == "CreateContainerConfigError"
    assert 'secret "db" not found' in v.detail


# -- the workload ----------------------------------------------------------------------------


def test_one_crash_looping_pod_among_healthy_ones_makes_the_workload_unhealthy() -> None:
    healthy = [
        feed((T0, pod(container_status(running_since=T0 - 900), name=f"web-{i}", uid=f"u{i}")))
        for i in range(3)
    ]
    bad = feed(
        *(
            (T0 + 10 * i, pod(crashing(i, T0 + 10 * i - 1), name="web-bad", uid="ub"))
            for i in range(4)
        )
    )
    v = crashloop.evaluate(TRIGGER, [*healthy, bad], now=T0 + 30)
    assert v.health is Health.UNHEALTHY
    assert v.evidence["pod"] == "web-bad"
    assert crashloop.evaluate(TRIGGER, healthy, now=T0 + 30).health is Health.HEALTHY


def test_pods_being_deleted_or_finished_are_not_judged() -> None:
    gone = feed(
        *((T0 + 10 * i, pod(crashing(i, T0 + 10 * i - 1), deleting=True)) for i in range(4))
    )
    v = crashloop.evaluate(TRIGGER, [gone], now=T0 + 30)
    assert v.health is Health.UNKNOWN
    assert v.cause == "NoPods"
    evicted = feed((T0, pod(container_status(terminated=("Error", 1)), phase="Failed", uid="e")))
    fine = feed((T0, pod(container_status(running_since=T0 - 60), uid="f", name="web-f")))
    assert crashloop.evaluate(TRIGGER, [evicted, fine], now=T0).health is Health.HEALTHY


def test_a_new_pod_with_the_same_name_starts_a_new_history() -> None:
    h = feed(*((T0 + 10 * i, pod(crashing(i, T0 + 10 * i - 1))) for i in range(3)))
    h = observe(
        h,
        summarize(pod(container_status(running_since=T0 + 40), uid="uid-2", started=T0 + 35)),
        now=T0 + 40,
    )
    assert h.points == ((T0 + 40, 0),)
    assert h.summary.uid == "uid-2"


def test_history_stays_bounded_and_still_counts_a_long_crash_loop() -> None:
    h = feed(*((T0 + 5 * i, pod(crashing(i, T0 + 5 * i - 1))) for i in range(200)))
    assert len(h.points) <= crashloop.MAX_POINTS
    assert crashloop.restarts_within(h, within=600, now=T0 + 5 * 199) >= 3
    assert crashloop.evaluate(TRIGGER, [h], now=T0 + 5 * 199).health is Health.UNHEALTHY


def test_verdict_becomes_a_signal_with_the_workload_and_trigger() -> None:
    h = feed(*((T0 + 10 * i, pod(crashing(i, T0 + 10 * i - 1))) for i in range(4)))
    ref = WorkloadRef(namespace="shop", name="web")
    s = crashloop.evaluate(TRIGGER, [h], now=T0 + 30).signal(
        policy="checkout", workload=ref, trigger="crashloop", at=T0 + 30
    )
    assert (s.policy, s.workload, s.trigger, s.health, s.at) == (
        "checkout",
        ref,
        "crashloop",
        Health.UNHEALTHY,
        T0 + 30,
    )
    assert s.evidence["finishedAt"] == iso(T0 + 29)
