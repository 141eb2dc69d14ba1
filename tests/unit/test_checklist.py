"""What to check first: each cause gets its own checks, with the facts looked up."""

from __future__ import annotations

import dataclasses

import pytest

from selfheal.detect.signal import WorkloadRef
from selfheal.evidence.checklist import Check, checklist, exit_meaning
from selfheal.evidence.collect import (
    Bundle,
    ContainerResources,
    EventRecord,
    Revision,
    Termination,
    Waiting,
)
from selfheal.evidence.render import render_description
from selfheal.policy.model import HealingPolicy, Mode

NOW = 1_764_316_800.0


def rev(n: int, image: str, memory: str | None = None) -> Revision:
    return Revision(
        revision=n,
        replicaset=f"checkout-{n}",
        images=(image,),
        change_cause="",
        created="2025-11-28T07:00:00Z",
        replicas=0,
        limits={"app": {"memory": memory}} if memory else {"app": {}},
    )


def base(**kw: object) -> Bundle:
    b = Bundle(
        namespace="shop",
        deployment="checkout",
        pod="checkout-7d9f8-abcde",
        container="app",
        collected_at=NOW,
        revision="5",
        images=("registry.local/shop/checkout:1.5.0",),
        rollout_history=[
            rev(3, "registry.local/shop/checkout:1.4.1", "512Mi"),
            rev(4, "registry.local/shop/checkout:1.4.2", "512Mi"),
            rev(5, "registry.local/shop/checkout:1.5.0", "256Mi"),
        ],
        resources=[
            ContainerResources(
                container="app",
                requests={"memory": "128Mi"},
                limits={"memory": "256Mi"},
                usage={"memory": "250Mi", "memory_peak": "256Mi"},
            )
        ],
    )
    for k, v in kw.items():
        setattr(b, k, v)
    return b


def titles(checks: list[Check]) -> list[str]:
    return [c.title for c in checks]


def test_oomkilled_compares_the_peak_with_the_limit_and_the_last_healthy_limit() -> None:
    b = base(
        termination=Termination(container="app", exit_code=137, reason="OOMKilled", message="")
    )
    checks = checklist(b, cause="CrashLoopBackOff")
    assert checks[0] == Check(
        title="Peak memory against the limit",
        detail="container app peaked at 256Mi against a limit of 256Mi",
    )
    assert checks[1].title == "Last healthy revision 4"
    assert checks[1].detail == (
        "registry.local/shop/checkout:1.4.2; limit was 512Mi there, 256Mi now: the limit changed"
    )
    # The exit code's generic meaning adds nothing to OOMKilled.
    assert not any(t.startswith("Exit code") for t in titles(checks))


def test_the_callers_last_healthy_revision_wins() -> None:
    b = base(
        termination=Termination(container="app", exit_code=137, reason="OOMKilled", message="")
    )
    checks = checklist(b, last_healthy=3)
    assert checks[1].title == "Last healthy revision 3"


def test_image_pull_backoff_names_the_image_whether_it_ran_and_the_pull_secrets() -> None:
    msg = (
        'Back-off pulling image "registry.local/shop/checkout:1.5.0": ErrImagePull: '
        "manifest unknown"
    )
    b = base(
        waiting=Waiting(container="app", reason="ImagePullBackOff", message=msg),
        pull_secrets=("regcred",),
        events=[
            EventRecord(
                time="2025-11-28T07:59:00Z",
                type="Warning",
                reason="Failed",
                object="Pod/checkout-7d9f8-abcde",
                count=4,
                message='Failed to pull image "registry.local/shop/checkout:1.5.0": not found',
            )
        ],
    )
    checks = checklist(b, cause="ImagePullBackOff")
    assert titles(checks) == ["The image reference", "Did this tag run before?", "Pull secrets"]
    assert checks[0].detail.startswith("registry.local/shop/checkout:1.5.0: Failed to pull")
    assert checks[1].detail.startswith("no earlier revision ran it")
    assert "earlier revisions ran registry.local/shop/checkout:1.4.1, " in checks[1].detail
    assert checks[2].detail.startswith("the pod uses regcred: check they exist in shop")


def test_a_tag_that_ran_before_points_at_the_registry() -> None:
    b = base(
        revision="6",
        waiting=Waiting(
            container="app",
            reason="ErrImagePull",
            message='rpc error: pulling image "registry.local/shop/checkout:1.4.2": 401',
        ),
    )
    b.rollout_history.append(rev(6, "registry.local/shop/checkout:1.4.2"))
    checks = checklist(b)
    assert checks[1].detail.startswith("yes, in revision 4")
    assert "imagePullSecrets" in checks[2].detail


@pytest.mark.parametrize(
    ("message", "title"),
    [
        (
            "couldn't find key FEATURES in ConfigMap shop/checkout-config",
            "Missing key FEATURES in ConfigMap checkout-config",
        ),
        ('secret "api-token" not found', "Missing Secret api-token"),
        ('configmap "checkout-config" not found', "Missing ConfigMap checkout-config"),
    ],
)
def test_config_errors_name_the_missing_object_and_key(message: str, title: str) -> None:
    b = base(waiting=Waiting(container="app", reason="CreateContainerConfigError", message=message))
    checks = checklist(b, cause="CreateContainerConfigError")
    assert checks[0].title == title
    assert "shop" in checks[0].detail


def test_the_missing_key_is_also_found_in_the_events() -> None:
    b = base(
        waiting=Waiting(container="app", reason="CreateContainerConfigError", message=""),
        events=[
            EventRecord(
                time="t", type="Warning", reason="Failed", object="Pod/x", count=3,
                message="Error: couldn't find key DB_URL in Secret shop/db",
            )
        ],
    )  # fmt: skip
    assert checklist(b)[0].title == "Missing key DB_URL in Secret db"


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (1, "application error"),
        (2, "bad arguments"),
        (126, "not executable"),
        (127, "command not found"),
        (137, "SIGKILL"),
        (143, "SIGTERM"),
        (139, "segmentation fault"),
        (130, "signal 2"),
    ],
)
def test_exit_codes_have_their_usual_meanings(code: int, words: str) -> None:
    assert words in exit_meaning(code)
    b = base(termination=Termination(container="app", exit_code=code, reason="Error", message=""))
    checks = checklist(b)
    assert checks[0].title == f"Exit code {code}"
    assert words in checks[0].detail


def test_a_failing_probe_is_shown_with_its_definition_and_last_failure() -> None:
    b = base(
        termination=Termination(container="app", exit_code=143, reason="Error", message=""),
        probes={"liveness": "HTTP GET :8080/healthz every 10s, timeout 1s, fails after 3"},
        events=[
            EventRecord(
                time="t1", type="Warning", reason="Unhealthy", object="Pod/x", count=3,
                message="Liveness probe failed: HTTP probe failed with statuscode: 500",
            ),
            EventRecord(
                time="t2", type="Warning", reason="Unhealthy", object="Pod/x", count=2,
                message="Liveness probe failed: Get \"http://10.0.0.5:8080/healthz\": "
                "context deadline exceeded",
            ),
        ],
    )  # fmt: skip
    checks = checklist(b)
    probe = next(c for c in checks if c.title.startswith("Liveness"))
    assert probe.title == "Liveness probe failing (5x)"
    assert probe.detail == (
        "HTTP GET :8080/healthz every 10s, timeout 1s, fails after 3; last failure: "
        'Liveness probe failed: Get "http://10.0.0.5:8080/healthz": context deadline exceeded'
    )
    assert titles(checks)[0] == "Exit code 143"


def test_the_checklist_is_rendered_first_as_a_numbered_list() -> None:
    b = base(
        termination=Termination(container="app", exit_code=137, reason="OOMKilled", message="")
    )
    text = render_description(
        b,
        policy=HealingPolicy(namespace="shop", name="checkout", generation=1, mode=Mode.ENFORCE),
        workload=WorkloadRef(namespace="shop", name="checkout"),
        trigger="crashloop",
        cause="CrashLoopBackOff",
    )
    section = text.split("h3. What to check first\n")[1].split("\n\n")[0].split("\n")
    assert section[0] == (
        "# *Peak memory against the limit*: container app peaked at 256Mi against a limit of 256Mi"
    )
    assert section[1].startswith("# *Last healthy revision 4*:")
    assert text.index("What to check first") < text.index("h3. Facts")


def test_no_cause_no_checks() -> None:
    b = dataclasses.replace(base(), termination=None, waiting=None)
    assert checklist(b) == []
