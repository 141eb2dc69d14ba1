"""Silences as due work read from a Remediation's status, as pure functions: when one
is made, adopted after a lost answer, expired, and how long it may last at most."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.clients.alertmanager import silence_body
from selfheal.policy.parse import parse
from selfheal.remediation import silences

NOW = 1_780_000_000.0


def _policy(trigger: dict[str, Any]) -> Any:
    return parse(
        {
            "metadata": {"name": "p", "namespace": "shop", "generation": 1},
            "spec": {
                "target": {"selector": {"matchLabels": {"app": "shop"}}},
                "triggers": [{"name": "t", **trigger}],
                "remediation": {
                    "steps": [{"restart": {}}, {"scale": {"by": 1}}],
                    "verify": {"for": "1m", "timeout": "5m"},
                },
            },
        }
    )


def status(phase: str, *, steps: int = 1, **silence: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"phase": phase, "steps": [{}] * steps, "currentStep": 0}
    if silence:
        out["silence"] = silence
    return out


@pytest.mark.parametrize(
    ("st", "want"),
    [
        (status("Acting"), "create"),
        (status("Verifying"), "create"),
        (status("Detected", steps=0), None),  # nothing done yet: the alert pages as usual
        (status("Detected", steps=1), "create"),  # between two steps
        (status("Verifying", state="Creating", marker="m"), "adopt"),
        (status("Verifying", state="Active", id="s1"), None),
        (status("Resolved", state="Active", id="s1"), "expire"),
        (status("Escalated", state="Active", id="s1"), "expire"),  # an escalation must page
        (status("Closed", state="Creating", marker="m"), "expire"),
        (status("Resolved", state="Expired", id="s1"), None),  # exactly once
        (status("Resolved"), None),
    ],
)
def test_what_is_due(st: dict[str, Any], want: str | None) -> None:
    assert silences.due(st, now=NOW) == want


def test_a_failed_attempt_waits_for_its_retry() -> None:
    st = status("Resolved", state="Active", id="s1", retryAt="2026-05-28T20:27:00Z")
    assert silences.due(st, now=NOW) is None  # 20:26:40
    assert silences.due(st, now=NOW + 30) == "expire"
    assert silences.pending(st)  # still owed: the pass looks again
    assert silences.backoff(1) == 5.0
    assert silences.backoff(20) == silences.RETRY_MAX


def test_an_alert_trigger_silences_that_alert_only() -> None:
    policy = _policy({"alert": {"name": "ShopDown", "matchers": {"severity": "page"}}})
    assert silences.matchers(policy, trigger="t", namespace="shop", workload="web") == {
        "alertname": "ShopDown",
        "severity": "page",
        "namespace": "shop",
        "deployment": "web",
    }
    crash = _policy({"crashLoop": {}})
    assert silences.matchers(crash, trigger="t", namespace="shop", workload="web") == {
        "namespace": "shop",
        "deployment": "web",
    }


def test_a_silence_ends_by_itself_after_the_verify_timeouts_ahead() -> None:
    policy = _policy({"crashLoop": {}})
    first = silences.ends_at(policy, {"currentStep": 0}, now=NOW)
    assert first == NOW + 2 * 300 + silences.MARGIN
    assert silences.ends_at(policy, {"currentStep": 1}, now=NOW) == NOW + 300 + silences.MARGIN


def test_the_comment_links_the_remediation_and_carries_the_marker() -> None:
    text = silences.comment("shop", "web-t-abc-1", "web", "m1")
    assert "Remediation shop/web-t-abc-1" in text
    assert text.endswith("marker m1")
    body = silence_body(
        matchers={"namespace": "shop"}, starts_at=NOW, ends_at=NOW + 60, comment=text,
        created_by="selfheal",
    )  # fmt: skip
    assert body["matchers"] == [
        {"name": "namespace", "value": "shop", "isRegex": False, "isEqual": True}
    ]
    assert body["createdBy"] == "selfheal"
    assert body["endsAt"].startswith("2026-05-28T20:27:40")
