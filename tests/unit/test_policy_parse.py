"""parse(): every sample becomes the model an SRE meant; every mistake names its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from selfheal.policy.model import (
    DependencyRule,
    Mode,
    OnDependencyUnhealthy,
    PolicyError,
    RestartStep,
    RollbackStep,
    RollbackTo,
    ScaleStep,
    Sensitivity,
)
from selfheal.policy.parse import parse, parse_duration
from tests.support.crds import (
    CRD_DIR,
    INVALID_POLICIES,
    SAMPLES_DIR,
    BadPolicy,
    load_crds,
    load_documents,
    valid_policy,
)

SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))


def in_namespace(body: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"].setdefault("namespace", namespace)
    body["metadata"].setdefault("generation", 4)
    return body


def sample(name: str) -> dict[str, Any]:
    (doc,) = load_documents([SAMPLES_DIR / name])
    return in_namespace(doc)


def with_spec(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "shop", "generation": 1}, "spec": spec}


SELECT = {"selector": {"matchLabels": {"app": "shop"}}}


# --- the samples ------------------------------------------------------------------------


def test_there_are_samples_for_each_use_case() -> None:
    assert len(SAMPLES) >= 4
    modes = {parse(in_namespace(d)).mode for d in load_documents(SAMPLES)}
    assert {Mode.ENFORCE, Mode.DRY_RUN} <= modes


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_parses(path: Any) -> None:
    (doc,) = load_documents([path])
    policy = parse(in_namespace(doc))
    assert policy.name == doc["metadata"]["name"]
    assert policy.namespace == "shop"
    assert policy.generation == 4


def test_crashloop_sample_rolls_back_then_files_a_jira_incident() -> None:
    policy = parse(sample("01-crashloop-rollback-jira.yaml"))
    (trigger,) = policy.triggers
    assert trigger.kind == "crashLoop"
    assert trigger.crash_loop is not None
    assert (trigger.crash_loop.restarts, trigger.crash_loop.within) == (3, 600.0)
    assert policy.remediation.steps == (RollbackStep(to=RollbackTo.LAST_HEALTHY),)
    assert (policy.remediation.verify_for, policy.remediation.verify_timeout) == (300.0, 900.0)
    jira = policy.remediation.jira
    assert jira is not None
    assert (jira.project, jira.issue_type, jira.priority) == ("OPS", "Incident", "High")
    assert jira.resolve_transition == "Done"
    assert policy.guardrails.min_available == 0.5
    assert policy.target.match_labels == {"app.kubernetes.io/part-of": "checkout"}
    assert len(policy.redact_patterns) == 1
    assert "13,16" in policy.redact_patterns[0]


def test_error_ratio_sample_has_a_static_threshold_and_two_steps() -> None:
    policy = parse(sample("02-error-ratio-rollback.yaml"))
    prom = policy.triggers[0].prometheus
    assert prom is not None
    assert (prom.above, prom.below, prom.anomaly) == (0.05, None, None)
    assert (prom.for_, prom.interval) == (120.0, 30.0)
    assert dict(prom.workload_labels) == {"namespace": "namespace", "name": "deployment"}
    assert policy.remediation.steps == (RollbackStep(to=RollbackTo.PREVIOUS), RestartStep())
    assert policy.remediation.dependency_rule(1) == DependencyRule(
        on_unhealthy=OnDependencyUnhealthy.WAIT, wait_for=900.0
    )
    assert policy.guardrails.cooldown == 3600.0


def test_latency_sample_learns_a_seasonal_baseline_and_scales_out() -> None:
    policy = parse(sample("03-latency-anomaly-scale-out.yaml"))
    prom = policy.triggers[0].prometheus
    assert prom is not None
    assert prom.anomaly is not None
    assert prom.anomaly.sensitivity is Sensitivity.HIGH
    assert (prom.anomaly.baseline, prom.anomaly.seasonality, prom.anomaly.step) == (
        14 * 86400.0,
        86400.0,
        300.0,
    )
    assert prom.workload_labels["name"] == "service"
    assert policy.remediation.steps == (ScaleStep(by=4, max=20, revert_after_recovery=True),)
    assert policy.remediation.jira is not None
    assert policy.remediation.jira.custom_fields == {
        "customfield_10042": {"value": "search-oncall"}
    }
    assert (policy.guardrails.storm.max_unhealthy, policy.guardrails.storm.within) == (3, 300.0)


def test_dry_run_sample_needs_no_escalation() -> None:
    policy = parse(sample("04-dry-run.yaml"))
    assert policy.mode is Mode.DRY_RUN
    assert policy.remediation.jira is None
    assert [t.name for t in policy.triggers] == ["crashloop", "unavailable"]
    assert policy.target.match_expressions[0].operator == "DoesNotExist"


# --- defaults: the model's and the CRD's must agree ---------------------------------


def _schema() -> dict[str, Any]:
    (crd,) = [
        c
        for c in load_crds(sorted(CRD_DIR.glob("*.yaml")))
        if c["spec"]["names"]["kind"] == "HealingPolicy"
    ]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _default(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: fill absent properties that have a
    ``default`` inside objects that exist, then recurse."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(sub, value[key])
    elif isinstance(value, list) and "items" in schema:
        return [_default(schema["items"], v) for v in value]
    return value


def test_crd_defaults_are_the_model_defaults() -> None:
    # A minimal policy using every optional block, parsed as written and as the API
    # server stores it (with the CRD's defaults filled in), must mean the same thing.
    minimal = with_spec(
        target=SELECT,
        triggers=[
            {"name": "a", "crashLoop": {}},
            {"name": "b", "prometheus": {"query": "up", "below": 1}},
            {"name": "c", "prometheus": {"query": "up", "anomaly": {}}},
        ],
        remediation={
            "steps": [{"rollback": {}}, {"scale": {}}, {"restart": {}}],
            "escalate": {"jira": {"project": "OPS"}},
        },
    )
    defaulted = _default(_schema(), copy.deepcopy(minimal))
    assert defaulted["spec"]["guardrails"]["storm"]["within"] == "5m"  # defaults were applied
    assert parse(defaulted) == parse(minimal)


# --- mistakes ------------------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID_POLICIES, ids=lambda c: c.id)
def test_invalid_policy_names_the_field(case: BadPolicy) -> None:
    body = in_namespace(valid_policy())
    case.edit(body["spec"])
    with pytest.raises(PolicyError) as err:
        parse(body)
    assert err.value.field == (case.parse_field or case.field)
    assert str(err.value).startswith(f"{err.value.field}: ")


def test_the_valid_policy_of_the_cases_is_valid() -> None:
    # Guards the table above: each case fails because of its edit, not the base.
    policy = parse(in_namespace(valid_policy()))
    assert policy.triggers[1].prometheus is not None
    assert isinstance(policy.remediation.steps[1], ScaleStep)


def _trigger_spec(prometheus: dict[str, Any]) -> dict[str, Any]:
    return with_spec(
        target=SELECT,
        triggers=[{"name": "t", "prometheus": prometheus}],
        remediation={"steps": [{"restart": {}}]},
    )


@pytest.mark.parametrize(
    ("body", "field", "fix"),
    [
        (
            with_spec(target=SELECT, mode="Paused", redaction={"patterns": ["password=(\\w+"]}),
            "spec.redaction.patterns[0]",
            "not a valid regular expression",
        ),
        (
            with_spec(target=SELECT, mode="Paused", redaction={"patterns": ["ok", "x*"]}),
            "spec.redaction.patterns[1]",
            "matches the empty string",
        ),
        (
            _trigger_spec({"query": "up", "anomaly": {"baseline": "1d", "seasonality": "1d"}}),
            "spec.triggers[0].prometheus.anomaly.seasonality",
            "lengthen baseline or shorten seasonality",
        ),
        (
            _trigger_spec({"query": "up", "anomaly": {"baseline": "30d", "step": "1m"}}),
            "spec.triggers[0].prometheus.anomaly.step",
            "raise step to at least 4m",
        ),
        (
            _trigger_spec({"query": "up", "anomaly": {"baseline": "1h", "step": "1h"}}),
            "spec.triggers[0].prometheus.anomaly.step",
            "shorter than baseline",
        ),
        (
            _trigger_spec({"query": "sum(rate(errors_total[5m])", "above": 1}),
            "spec.triggers[0].prometheus.query",
            "unclosed '('",
        ),
        (
            _trigger_spec({"query": "sum(rate(errors_total[5m]})", "above": 1}),
            "spec.triggers[0].prometheus.query",
            "unexpected '}'",
        ),
        (
            _trigger_spec({"query": "  \n ", "above": 1}),
            "spec.triggers[0].prometheus.query",
            "write a PromQL expression",
        ),
        (
            _trigger_spec({"query": "up", "above": 1, "interval": "0s"}),
            "spec.triggers[0].prometheus.interval",
            "is zero",
        ),
        (
            _trigger_spec({"query": "up", "above": 1, "workloadLabels": {"pod": "pod"}}),
            "spec.triggers[0].prometheus.workloadLabels.pod",
            "only namespace and name",
        ),
        (
            with_spec(
                target=SELECT,
                triggers=[{"name": "t", "crashLoop": {}}],
                remediation={"steps": [{"restart": {}}], "verify": {"for": "10m", "timeout": "5m"}},
            ),
            "spec.remediation.verify.timeout",
            "at least as long as for",
        ),
        (
            with_spec(
                target=SELECT,
                triggers=[{"name": "t", "crashLoop": {}}],
                remediation={"steps": [{"restart": {"force": True}}]},
            ),
            "spec.remediation.steps[0].restart",
            "takes no options",
        ),
        (
            with_spec(
                target=SELECT,
                mode="Paused",
                triggers=[{"name": "t", "crashLoop": {"restarts": "3"}}],
            ),
            "spec.triggers[0].crashLoop.restarts",
            "must be an integer",
        ),
        (
            with_spec(
                target=SELECT,
                mode="Paused",
                triggers=[{"name": "t", "crashLoop": {"restarts": True}}],
            ),
            "spec.triggers[0].crashLoop.restarts",
            "must be an integer",
        ),
        (
            with_spec(target=SELECT, mode="Paused", guardrails={"allowGitOps": "yes"}),
            "spec.guardrails.allowGitOps",
            "true or false",
        ),
        (
            with_spec(target=SELECT, mode="Paused", guardrails={"minAvailable": "150%"}),
            "spec.guardrails.minAvailable",
            '"50%"',
        ),
        (
            with_spec(target={"selector": {"matchLabels": {"example.com/": "x"}}}, mode="Paused"),
            "spec.target.selector.matchLabels",
            "not a valid label key",
        ),
        (
            with_spec(target={"selector": {"matchLabels": {"a" * 64: "x"}}}, mode="Paused"),
            "spec.target.selector.matchLabels",
            "not a valid label key",
        ),
        (
            {"metadata": {"namespace": "shop"}, "spec": {"target": SELECT, "mode": "Paused"}},
            "metadata.name",
            "required",
        ),
        ({"metadata": {"name": "p", "namespace": "shop"}}, "spec", "required"),
        (
            with_spec(target=SELECT, triggers="crashloop"),
            "spec.triggers",
            "must be a list, not a string",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("spec") else None,
)
def test_rules_beyond_the_schema_name_the_field_and_the_fix(
    body: dict[str, Any], field: str, fix: str
) -> None:
    with pytest.raises(PolicyError) as err:
        parse(body)
    assert err.value.field == field
    assert fix in err.value.message


def test_paused_policy_needs_only_a_target() -> None:
    policy = parse(with_spec(target=SELECT, mode="Paused"))
    assert policy.mode is Mode.PAUSED
    assert policy.triggers == ()
    assert policy.remediation.steps == ()


def test_dry_run_policy_may_only_observe() -> None:
    policy = parse(
        with_spec(target=SELECT, mode="DryRun", triggers=[{"name": "t", "crashLoop": {}}])
    )
    assert policy.mode is Mode.DRY_RUN
    assert policy.remediation.steps == ()
    assert policy.remediation.jira is None


def test_enforce_policy_may_only_escalate() -> None:
    policy = parse(
        with_spec(
            target=SELECT,
            triggers=[{"name": "t", "crashLoop": {}}],
            remediation={"escalate": {"jira": {"project": "OPS"}}},
        )
    )
    assert policy.remediation.steps == ()
    assert policy.remediation.jira is not None
    assert policy.remediation.jira.issue_type == "Bug"


def test_threshold_band_keeps_both_bounds() -> None:
    policy = parse(_trigger_spec({"query": "rate(x[1m])", "above": 10, "below": 2}))
    prom = policy.triggers[0].prometheus
    assert prom is not None
    assert (prom.above, prom.below) == (10.0, 2.0)


def test_query_brackets_inside_strings_do_not_count() -> None:
    query = 'sum(rate(x{path=~"/api/(v1|v2)/[a-z]+\\\\)"}[5m]))'
    policy = parse(_trigger_spec({"query": query, "above": 1}))
    assert policy.triggers[0].prometheus is not None
    assert policy.triggers[0].prometheus.query == query


# --- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("7d", 604800.0),
        ("250ms", 0.25),
        ("1d12h", 129600.0),
        ("0s", 0.0),
        ("90m", 5400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10 m", "1.5h", "-5m", "10M", "1w", "m", "10m "])
def test_parse_duration_refuses_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 30s, 10m, 1h30m or 7d"):
        parse_duration(text)
