"""selector_matches and label_selector: Kubernetes label selector semantics."""

from __future__ import annotations

import pytest

from selfheal.policy.model import LabelSelectorRequirement, Target
from selfheal.policy.parse import parse
from selfheal.policy.selector import label_selector, selector_matches


def req(key: str, operator: str, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=operator, values=values)


SHOP = Target(
    match_labels={"app": "shop"},
    match_expressions=(
        req("tier", "In", "api", "web"),
        req("track", "NotIn", "canary"),
        req("team", "Exists"),
        req("selfheal.dev/opt-out", "DoesNotExist"),
    ),
)


@pytest.mark.parametrize(
    ("labels", "matches"),
    [
        ({"app": "shop", "tier": "api", "team": "a"}, True),
        ({"app": "shop", "tier": "web", "team": "a", "track": "stable"}, True),
        ({"app": "shop", "tier": "api", "team": "a", "track": "canary"}, False),
        ({"app": "shop", "tier": "db", "team": "a"}, False),
        ({"app": "shop", "team": "a"}, False),  # In needs the label
        ({"app": "shop", "tier": "api"}, False),  # Exists
        ({"app": "shop", "tier": "api", "team": "a", "selfheal.dev/opt-out": ""}, False),
        ({"app": "shops", "tier": "api", "team": "a"}, False),
        ({"tier": "api", "team": "a"}, False),
        ({}, False),
    ],
)
def test_selector_matches(labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(SHOP, labels) is matches


def test_match_labels_alone() -> None:
    target = Target(match_labels={"app": "shop", "env": "prod"})
    assert selector_matches(target, {"app": "shop", "env": "prod", "x": "y"})
    assert not selector_matches(target, {"app": "shop"})


def test_an_empty_selector_matches_nothing() -> None:
    assert not selector_matches(Target(), {"app": "shop"})
    assert label_selector(Target()) == ""


def test_unknown_operator_is_an_error_not_a_match() -> None:
    with pytest.raises(ValueError, match="Equals"):
        selector_matches(Target(match_expressions=(req("a", "Equals", "b"),)), {"a": "b"})


def test_label_selector_string_for_list_calls() -> None:
    assert label_selector(SHOP) == (
        "app=shop,tier in (api,web),track notin (canary),team,!selfheal.dev/opt-out"
    )


def test_a_parsed_policy_selects_like_its_yaml_says() -> None:
    policy = parse(
        {
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {
                "mode": "Paused",
                "target": {
                    "selector": {
                        "matchLabels": {"app.kubernetes.io/part-of": "checkout"},
                        "matchExpressions": [
                            {"key": "track", "operator": "NotIn", "values": ["canary"]}
                        ],
                    }
                },
            },
        }
    )
    assert selector_matches(policy.target, {"app.kubernetes.io/part-of": "checkout"})
    assert not selector_matches(
        policy.target, {"app.kubernetes.io/part-of": "checkout", "track": "canary"}
    )
