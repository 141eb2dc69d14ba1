"""Build the frozen ``HealingPolicy`` model from a whole object (metadata + spec).

The CRD schema and its CEL rules reject most mistakes at ``kubectl apply`` time.
``parse`` repeats those rules (an object stored before a CRD upgrade, or built by
hand in a test, must not slip through) and adds the ones CEL cannot express:
regular expressions compile, durations are compared with each other, label
selector keys are valid, PromQL is not blank and its brackets balance, a history
range query stays under Prometheus' point limit. Every failure is a
``PolicyError`` whose ``field`` is the path an SRE edits, e.g.
``spec.triggers[1].prometheus.above``, and whose message says the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from selfheal.policy import ownership
from selfheal.policy.model import (
    AlertTrigger,
    AnomalySpec,
    CrashLoopTrigger,
    DependencyRule,
    Guardrails,
    HealingPolicy,
    JiraEscalation,
    LabelSelectorRequirement,
    Mode,
    NotifyEscalation,
    OnDependencyUnhealthy,
    PolicyError,
    PrometheusTrigger,
    Remediation,
    RestartStep,
    RollbackStep,
    RollbackTo,
    ScaleStep,
    SecretKeyRef,
    Sensitivity,
    Step,
    StormBrake,
    Target,
    Trigger,
)

__all__ = ["DURATION_PATTERN", "PolicyError", "parse", "parse_duration"]

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
"""The pattern the CRD puts on every duration field."""

_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_PROM_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_JIRA_PROJECT = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
_JIRA_CUSTOM_FIELD = re.compile(r"^customfield_[0-9]+$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MIN_AVAILABLE = re.compile(r"^(100|[1-9]?[0-9])%$")

_E = TypeVar("_E", Mode, Sensitivity, RollbackTo, OnDependencyUnhealthy)

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_MAX_TRIGGERS = 16
TARGET_KINDS = ("Deployment", *ownership.KINDS)
_MAX_STEPS = 8
_PROMETHEUS_MAX_POINTS = 11_000
"""Prometheus refuses a range query with more points per series than this."""


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``30s``, ``10m``, ``1h30m``, ``7d`` or ``250ms``.

    Raises ``ValueError`` saying what a valid duration looks like.
    """
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (ms, s, m, h, d), "
            "e.g. 30s, 10m, 1h30m or 7d"
        )
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def parse(body: Mapping[str, Any]) -> HealingPolicy:
    """The typed policy of a HealingPolicy object, or ``PolicyError`` naming the field."""
    metadata = _mapping(body.get("metadata"), "metadata", required=True)
    name = _string(metadata.get("name"), "metadata.name", required=True)
    namespace = _string(metadata.get("namespace"), "metadata.namespace", required=True)
    generation = metadata.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise PolicyError("metadata.generation", "must be an integer")

    spec = _mapping(body.get("spec"), "spec", required=True)
    mode = _enum(spec.get("mode", Mode.ENFORCE.value), "spec.mode", Mode)
    target = _target(_mapping(spec.get("target"), "spec.target", required=True), "spec.target")

    raw_triggers = _list(spec.get("triggers"), "spec.triggers", max_items=_MAX_TRIGGERS)
    triggers = tuple(
        _trigger(_mapping(t, f"spec.triggers[{i}]", required=True), f"spec.triggers[{i}]")
        for i, t in enumerate(raw_triggers)
    )
    seen: dict[str, int] = {}
    for i, trigger in enumerate(triggers):
        if trigger.name in seen:
            raise PolicyError(
                f"spec.triggers[{i}].name",
                f"{trigger.name!r} is already the name of spec.triggers[{seen[trigger.name]}]; "
                "give every trigger a unique name",
            )
        seen[trigger.name] = i
    if mode is not Mode.PAUSED and not triggers:
        raise PolicyError(
            "spec.triggers",
            f"a policy in mode {mode.value} needs at least one trigger; add a crashLoop or "
            "prometheus trigger, or set mode: Paused",
        )

    remediation = _remediation(
        _mapping(spec.get("remediation"), "spec.remediation"), "spec.remediation"
    )
    if (
        mode is Mode.ENFORCE
        and not remediation.steps
        and remediation.jira is None
        and remediation.notify is None
    ):
        raise PolicyError(
            "spec.remediation",
            "a policy in mode Enforce needs at least one entry in steps or an escalate block; "
            "add a step (rollback, scale, restart) or escalate.jira, or set mode: DryRun",
        )

    for i, step in enumerate(remediation.steps):
        if isinstance(step, ScaleStep) and target.kind == ownership.DAEMONSET:
            raise PolicyError(
                f"spec.remediation.steps[{i}].scale",
                "a DaemonSet runs one pod per node and has no replicas to scale; use rollback "
                "or restart, or target a Deployment or StatefulSet",
            )

    guardrails = _guardrails(_mapping(spec.get("guardrails"), "spec.guardrails"), "spec.guardrails")
    redaction = _mapping(spec.get("redaction"), "spec.redaction")
    patterns = tuple(
        _regex(p, f"spec.redaction.patterns[{i}]")
        for i, p in enumerate(_list(redaction.get("patterns"), "spec.redaction.patterns"))
    )
    return HealingPolicy(
        namespace=namespace,
        name=name,
        generation=generation,
        mode=mode,
        target=target,
        triggers=triggers,
        remediation=remediation,
        guardrails=guardrails,
        redact_patterns=patterns,
    )


# --- sections ------------------------------------------------------------------------


def _target(raw: Mapping[str, Any], field: str) -> Target:
    kind = _string(raw.get("kind", "Deployment"), f"{field}.kind")
    if kind not in TARGET_KINDS:
        raise PolicyError(
            f"{field}.kind", f"{kind!r} is not supported; use one of {', '.join(TARGET_KINDS)}"
        )
    selector = _mapping(raw.get("selector"), f"{field}.selector", required=True)
    sel = f"{field}.selector"
    labels = _mapping(selector.get("matchLabels"), f"{sel}.matchLabels")
    match_labels: dict[str, str] = {}
    for key, value in labels.items():
        _label_key(key, f"{sel}.matchLabels")
        text = _string(value, f"{sel}.matchLabels.{key}", required=True)
        if len(text) > 63 or not _LABEL_VALUE.fullmatch(text):
            raise PolicyError(
                f"{sel}.matchLabels.{key}",
                f"{text!r} is not a valid label value (at most 63 letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit)",
            )
        match_labels[key] = text
    expressions = []
    for i, item in enumerate(_list(selector.get("matchExpressions"), f"{sel}.matchExpressions")):
        where = f"{sel}.matchExpressions[{i}]"
        expr = _mapping(item, where, required=True)
        key = _string(expr.get("key"), f"{where}.key", required=True)
        _label_key(key, f"{where}.key")
        operator = _string(expr.get("operator"), f"{where}.operator", required=True)
        if operator not in _OPERATORS:
            raise PolicyError(
                f"{where}.operator", f"{operator!r} is not one of {', '.join(_OPERATORS)}"
            )
        values = tuple(
            _string(v, f"{where}.values[{j}]", required=True)
            for j, v in enumerate(_list(expr.get("values"), f"{where}.values"))
        )
        if operator in ("In", "NotIn") and not values:
            raise PolicyError(
                f"{where}.values", f"operator {operator} needs at least one value in values"
            )
        if operator in ("Exists", "DoesNotExist") and values:
            raise PolicyError(
                f"{where}.values", f"operator {operator} takes no values; remove values"
            )
        expressions.append(LabelSelectorRequirement(key=key, operator=operator, values=values))
    if not match_labels and not expressions:
        raise PolicyError(
            sel,
            "must not be empty (it would match every workload in the namespace); "
            "add matchLabels or matchExpressions",
        )
    return Target(kind=kind, match_labels=match_labels, match_expressions=tuple(expressions))


def _trigger(raw: Mapping[str, Any], field: str) -> Trigger:
    name = _string(raw.get("name"), f"{field}.name", required=True)
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise PolicyError(
            f"{field}.name",
            f"{name!r} is not a DNS label; use at most 63 lowercase letters, digits and '-', "
            "e.g. error-ratio",
        )
    if sum(k in raw for k in ("crashLoop", "prometheus", "alert")) != 1:
        raise PolicyError(
            field,
            "each trigger needs exactly one of crashLoop, prometheus or alert; split it into "
            "triggers with different names if you want more than one",
        )
    if "alert" in raw:
        return Trigger(name=name, alert=_alert(raw.get("alert"), f"{field}.alert"))
    if "crashLoop" in raw:
        where = f"{field}.crashLoop"
        crash = _mapping(raw.get("crashLoop"), where)
        return Trigger(
            name=name,
            crash_loop=CrashLoopTrigger(
                restarts=_int(crash.get("restarts", 3), f"{where}.restarts", minimum=1),
                within=_duration(crash.get("within", "10m"), f"{where}.within", positive=True),
            ),
        )
    return Trigger(name=name, prometheus=_prometheus(raw.get("prometheus"), f"{field}.prometheus"))


def _alert(value: object, field: str) -> AlertTrigger:
    raw = _mapping(value, field, required=True)
    alertname = _string(raw.get("name"), f"{field}.name", required=True)
    if len(alertname) > 256:
        raise PolicyError(f"{field}.name", "is longer than 256 characters; use the rule's name")
    matchers: dict[str, str] = {}
    for key, want in _mapping(raw.get("matchers"), f"{field}.matchers").items():
        where = f"{field}.matchers.{key}"
        if not isinstance(key, str) or not _PROM_LABEL.fullmatch(key):
            raise PolicyError(
                where, f"{key!r} is not a Prometheus label name (letters, digits and '_')"
            )
        if key == "alertname":
            raise PolicyError(where, f"the alert's name is {field}.name; remove this matcher")
        text = _string(want, where, required=True)
        if len(text) > 1024:
            raise PolicyError(where, "is longer than 1024 characters")
        matchers[key] = text
    return AlertTrigger(alertname=alertname, matchers=matchers)


def _prometheus(value: object, field: str) -> PrometheusTrigger:
    raw = _mapping(value, field, required=True)
    query = _string(raw.get("query"), f"{field}.query", required=True)
    if not query.strip():
        raise PolicyError(f"{field}.query", "is empty; write a PromQL expression")
    problem = _bracket_problem(query)
    if problem:
        raise PolicyError(f"{field}.query", f"is not valid PromQL: {problem}")

    labels_raw = _mapping(raw.get("workloadLabels"), f"{field}.workloadLabels")
    workload_labels = {"namespace": "namespace", "name": "deployment"}
    for key, label in labels_raw.items():
        where = f"{field}.workloadLabels.{key}"
        if key not in workload_labels:
            raise PolicyError(where, "unknown key; workloadLabels has only namespace and name")
        text = _string(label, where, required=True)
        if not _PROM_LABEL.fullmatch(text):
            raise PolicyError(
                where, f"{text!r} is not a Prometheus label name (letters, digits and '_')"
            )
        workload_labels[key] = text

    above = _number(raw.get("above"), f"{field}.above")
    below = _number(raw.get("below"), f"{field}.below")
    anomaly = None
    if "anomaly" in raw:
        if above is not None or below is not None:
            raise PolicyError(
                f"{field}.anomaly",
                "anomaly learns its own band and cannot be combined with above or below; "
                "remove anomaly or remove the thresholds",
            )
        anomaly = _anomaly(_mapping(raw.get("anomaly"), f"{field}.anomaly"), f"{field}.anomaly")
    elif above is None and below is None:
        raise PolicyError(
            field,
            "a prometheus trigger needs a condition: set above and/or below (static "
            "thresholds) or anomaly (a learned baseline)",
        )
    if above is not None and below is not None and above <= below:
        raise PolicyError(
            f"{field}.above",
            f"must be greater than below ({below:g}): the workload is unhealthy when the value "
            "leaves the band [below, above]",
        )
    return PrometheusTrigger(
        query=query,
        workload_labels=workload_labels,
        above=above,
        below=below,
        anomaly=anomaly,
        for_=_duration(raw.get("for", "2m"), f"{field}.for"),
        interval=_duration(raw.get("interval", "30s"), f"{field}.interval", positive=True),
    )


def _anomaly(raw: Mapping[str, Any], field: str) -> AnomalySpec:
    sensitivity = _enum(raw.get("sensitivity", "medium"), f"{field}.sensitivity", Sensitivity)
    baseline = _duration(raw.get("baseline", "7d"), f"{field}.baseline", positive=True)
    step = _duration(raw.get("step", "1m"), f"{field}.step", positive=True)
    seasonality = None
    if raw.get("seasonality") is not None:
        seasonality = _duration(raw["seasonality"], f"{field}.seasonality", positive=True)
        if seasonality * 2 > baseline:
            raise PolicyError(
                f"{field}.seasonality",
                f"is longer than half of baseline ({raw.get('baseline', '7d')}); the baseline "
                "must hold at least two seasons: lengthen baseline or shorten seasonality",
            )
        if seasonality < 2 * step:
            raise PolicyError(
                f"{field}.seasonality",
                "must be at least two steps long; shorten step or lengthen seasonality",
            )
    if step >= baseline:
        raise PolicyError(f"{field}.step", "must be shorter than baseline")
    points = baseline / step
    if points > _PROMETHEUS_MAX_POINTS:
        raise PolicyError(
            f"{field}.step",
            f"baseline / step is {points:.0f} points, over Prometheus' limit of "
            f"{_PROMETHEUS_MAX_POINTS} per range query; raise step to at least "
            f"{_format_seconds(baseline / _PROMETHEUS_MAX_POINTS)} or shorten baseline",
        )
    return AnomalySpec(
        sensitivity=sensitivity, baseline=baseline, seasonality=seasonality, step=step
    )


def _remediation(raw: Mapping[str, Any], field: str) -> Remediation:
    steps: list[Step] = []
    raw_steps = _list(raw.get("steps"), f"{field}.steps", max_items=_MAX_STEPS)
    dependencies = _dependency_rule(
        raw.get("dependencies"), f"{field}.dependencies", inherit=DependencyRule()
    )
    step_dependencies: list[DependencyRule | None] = []
    for i, item in enumerate(raw_steps):
        body = _mapping(item, f"{field}.steps[{i}]", required=True)
        steps.append(_step(body, f"{field}.steps[{i}]"))
        own = body.get("dependencies")
        step_dependencies.append(
            None
            if own is None
            else _dependency_rule(own, f"{field}.steps[{i}].dependencies", inherit=dependencies)
        )

    verify = _mapping(raw.get("verify"), f"{field}.verify")
    verify_for = _duration(verify.get("for", "5m"), f"{field}.verify.for", positive=True)
    verify_timeout = None
    if verify.get("timeout") is not None:
        verify_timeout = _duration(verify["timeout"], f"{field}.verify.timeout", positive=True)
        if verify_timeout < verify_for:
            raise PolicyError(
                f"{field}.verify.timeout",
                f"is shorter than verify.for ({verify.get('for', '5m')}), so no step could "
                "ever pass; make timeout at least as long as for",
            )

    jira = notify = None
    if raw.get("escalate") is not None:
        escalate = _mapping(raw.get("escalate"), f"{field}.escalate")
        if escalate.get("jira") is None and escalate.get("notify") is None:
            raise PolicyError(
                f"{field}.escalate", "needs jira, notify or both; add one or remove escalate"
            )
        if escalate.get("jira") is not None:
            jira = _jira(escalate.get("jira"), f"{field}.escalate.jira")
        if escalate.get("notify") is not None:
            notify = _notify(escalate.get("notify"), f"{field}.escalate.notify")
    approval_steps = []
    for i, item in enumerate(raw_steps):
        if "approval" in item:
            where = f"{field}.steps[{i}].approval"
            if item["approval"] != "required":
                raise PolicyError(
                    where,
                    f"{item['approval']!r} is not required; write approval: required or remove it",
                )
            approval_steps.append(i)
    return Remediation(
        steps=tuple(steps),
        verify_for=verify_for,
        verify_timeout=verify_timeout,
        jira=jira,
        notify=notify,
        approval_steps=tuple(approval_steps),
        verify_alert_resolved=_bool(
            verify.get("alertResolved", False), f"{field}.verify.alertResolved"
        ),
        approval_timeout=_duration(
            raw.get("approvalTimeout", "1h"), f"{field}.approvalTimeout", positive=True
        ),
        dependencies=dependencies,
        step_dependencies=tuple(step_dependencies) if any(step_dependencies) else (),
    )


def _dependency_rule(value: object, field: str, *, inherit: DependencyRule) -> DependencyRule:
    """``{onUnhealthy, waitFor}``; an unset field is ``inherit``'s (a step's own rule
    inherits from ``remediation.dependencies``)."""
    raw = _mapping(value, field)
    unknown = sorted(set(raw) - {"onUnhealthy", "waitFor"})
    if unknown:
        raise PolicyError(
            f"{field}.{unknown[0]}", "is not a field of dependencies; use onUnhealthy or waitFor"
        )
    on = inherit.on_unhealthy
    if raw.get("onUnhealthy") is not None:
        on = _enum(raw["onUnhealthy"], f"{field}.onUnhealthy", OnDependencyUnhealthy)
    wait_for = inherit.wait_for
    if raw.get("waitFor") is not None:
        wait_for = _duration(raw["waitFor"], f"{field}.waitFor", positive=True)
    return DependencyRule(on_unhealthy=on, wait_for=wait_for)


def _step(raw: Mapping[str, Any], field: str) -> Step:
    actions = [a for a in ("rollback", "scale", "restart") if a in raw]
    if len(actions) != 1:
        raise PolicyError(
            field,
            "each step needs exactly one action: rollback, scale or restart; put several "
            "actions in separate steps",
        )
    action = actions[0]
    body = _mapping(raw.get(action), f"{field}.{action}")
    if action == "rollback":
        return RollbackStep(
            to=_enum(body.get("to", "LastHealthy"), f"{field}.rollback.to", RollbackTo)
        )
    if action == "restart":
        if body:
            raise PolicyError(
                f"{field}.restart", f"takes no options (got {', '.join(body)}); write restart: {{}}"
            )
        return RestartStep()
    by = _int(body.get("by", 1), f"{field}.scale.by", minimum=1)
    top = _int(body.get("max", 10), f"{field}.scale.max", minimum=1)
    if top < by:
        raise PolicyError(
            f"{field}.scale.max",
            f"must be at least by ({by}): a scale step can never add more replicas than its "
            "upper bound allows",
        )
    return ScaleStep(
        by=by,
        max=top,
        revert_after_recovery=_bool(
            body.get("revertAfterRecovery", False), f"{field}.scale.revertAfterRecovery"
        ),
    )


def _jira(value: object, field: str) -> JiraEscalation:
    raw = _mapping(value, field, required=True)
    project = _string(raw.get("project"), f"{field}.project", required=True)
    if not _JIRA_PROJECT.fullmatch(project):
        raise PolicyError(
            f"{field}.project",
            f"{project!r} is not a Jira project key; use the key (uppercase letters and digits, "
            "starting with a letter), e.g. OPS, not the project's name",
        )
    labels = tuple(
        _string(v, f"{field}.labels[{i}]", required=True)
        for i, v in enumerate(_list(raw.get("labels"), f"{field}.labels"))
    )
    for i, label in enumerate(labels):
        if not label or any(c.isspace() for c in label):
            raise PolicyError(
                f"{field}.labels[{i}]",
                f"{label!r}: Jira labels cannot contain spaces; use '-' or '_' instead",
            )
    components = tuple(
        _string(v, f"{field}.components[{i}]", required=True)
        for i, v in enumerate(_list(raw.get("components"), f"{field}.components"))
    )
    custom = _mapping(raw.get("customFields"), f"{field}.customFields")
    for key in custom:
        if not _JIRA_CUSTOM_FIELD.fullmatch(str(key)):
            raise PolicyError(
                f"{field}.customFields.{key}",
                "is not a Jira field id; use the id, e.g. customfield_10042",
            )
    priority = raw.get("priority")
    resolve = raw.get("resolveTransition")
    assignee = raw.get("assignee")
    watchers = tuple(
        _jira_user(v, f"{field}.watchers[{i}]")
        for i, v in enumerate(_list(raw.get("watchers"), f"{field}.watchers", max_items=20))
    )
    for i, w in enumerate(watchers):
        if w in watchers[:i]:
            raise PolicyError(f"{field}.watchers[{i}]", f"{w!r} is listed twice")
    return JiraEscalation(
        project=project,
        issue_type=_string(raw.get("issueType", "Bug"), f"{field}.issueType", required=True),
        priority=None
        if priority is None
        else _string(priority, f"{field}.priority", required=True),
        labels=labels,
        components=components,
        custom_fields=dict(custom),
        resolve_transition=(
            None
            if resolve is None
            else _string(resolve, f"{field}.resolveTransition", required=True)
        ),
        assignee=None if assignee is None else _jira_user(assignee, f"{field}.assignee"),
        watchers=watchers,
    )


def _jira_user(value: object, field: str) -> str:
    user = _string(value, field, required=True)
    if len(user) > 255 or user != user.strip():
        raise PolicyError(
            field,
            f"{user!r} is not a Jira user: give the user name (Server, Data Center) or the "
            "account id (Cloud), at most 255 characters, no surrounding spaces",
        )
    return user


def _notify(value: object, field: str) -> NotifyEscalation:
    if isinstance(value, str):
        raise PolicyError(
            field,
            "must be an object naming a Secret, not a string: a notification URL carries "
            "credentials, so put the URLs (one a line) in a Secret and write "
            "notify: {secretRef: {name: oncall, key: urls}}",
        )
    raw = _mapping(value, field, required=True)
    extra = sorted(set(raw) - {"secretRef"})
    if extra:
        raise PolicyError(
            f"{field}.{extra[0]}",
            "is not a field of notify; notification URLs go in a Secret named by secretRef",
        )
    ref = _mapping(raw.get("secretRef"), f"{field}.secretRef", required=True)
    name = _string(ref.get("name"), f"{field}.secretRef.name", required=True)
    if not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        raise PolicyError(
            f"{field}.secretRef.name",
            f"{name!r} is not a Secret name; use lowercase letters, digits, '-' and '.', "
            "e.g. oncall",
        )
    key = _string(ref.get("key", "urls"), f"{field}.secretRef.key", required=True)
    if not _SECRET_KEY.fullmatch(key) or len(key) > 253:
        raise PolicyError(
            f"{field}.secretRef.key",
            f"{key!r} is not a Secret key; use letters, digits, '-', '_' and '.', e.g. urls",
        )
    return NotifyEscalation(secret_ref=SecretKeyRef(name=name, key=key))


def _guardrails(raw: Mapping[str, Any], field: str) -> Guardrails:
    min_available = _string(raw.get("minAvailable", "0%"), f"{field}.minAvailable", required=True)
    if not _MIN_AVAILABLE.fullmatch(min_available):
        raise PolicyError(
            f"{field}.minAvailable",
            f"{min_available!r} is not a percentage; write a whole percentage from 0% to 100%, "
            'e.g. "50%"',
        )
    storm = _mapping(raw.get("storm"), f"{field}.storm")
    return Guardrails(
        cooldown=_duration(raw.get("cooldown", "30m"), f"{field}.cooldown"),
        max_remediations=_int(raw.get("maxRemediations", 3), f"{field}.maxRemediations", minimum=1),
        window=_duration(raw.get("window", "1h"), f"{field}.window", positive=True),
        max_concurrent=_int(raw.get("maxConcurrent", 1), f"{field}.maxConcurrent", minimum=1),
        max_concurrent_per_namespace=_int(
            raw.get("maxConcurrentPerNamespace", 3), f"{field}.maxConcurrentPerNamespace", minimum=1
        ),
        min_available=int(min_available[:-1]) / 100.0,
        storm=StormBrake(
            max_unhealthy=_int(
                storm.get("maxUnhealthy", 5), f"{field}.storm.maxUnhealthy", minimum=1
            ),
            within=_duration(storm.get("within", "5m"), f"{field}.storm.within", positive=True),
        ),
        allow_gitops=_bool(raw.get("allowGitOps", False), f"{field}.allowGitOps"),
    )


# --- scalars -------------------------------------------------------------------------


def _mapping(value: object, field: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None:
        if required:
            raise PolicyError(field, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError(field, f"must be an object, not {_kind(value)}")
    return value


def _list(value: object, field: str, *, max_items: int | None = None) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise PolicyError(field, f"must be a list, not {_kind(value)}")
    if max_items is not None and len(value) > max_items:
        raise PolicyError(field, f"has {len(value)} entries; at most {max_items} are allowed")
    return value


def _string(value: object, field: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise PolicyError(
            field, "is required" if value is None else f"must be a string, not {_kind(value)}"
        )
    if required and not value:
        raise PolicyError(field, "must not be empty")
    return value


def _int(value: object, field: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(field, f"must be an integer, not {_kind(value)}")
    if value < minimum:
        raise PolicyError(field, f"is {value}; it must be at least {minimum}")
    return value


def _number(value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(field, f"must be a number, not {_kind(value)}")
    return float(value)


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(field, f"must be true or false, not {_kind(value)}")
    return value


def _enum(value: object, field: str, kind: type[_E]) -> _E:
    allowed = [m.value for m in kind]
    if isinstance(value, str) and value in allowed:
        return kind(value)
    raise PolicyError(field, f"{value!r} is not one of {', '.join(allowed)}")


def _duration(value: object, field: str, *, positive: bool = False) -> float:
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]  # checked inside
    except ValueError as e:
        raise PolicyError(field, str(e)) from None
    if positive and seconds <= 0:
        raise PolicyError(field, f"{value!r} is zero; it must be longer than that")
    return seconds


def _regex(value: object, field: str) -> str:
    text = _string(value, field, required=True)
    try:
        compiled = re.compile(text)
    except re.error as e:
        raise PolicyError(
            field, f"{text!r} is not a valid regular expression ({e}); fix it or escape it"
        ) from None
    if compiled.search("") is not None:
        raise PolicyError(
            field,
            f"{text!r} matches the empty string, so it would redact between every character; "
            "make it match at least one character (e.g. + instead of *)",
        )
    return text


def _label_key(key: object, field: str) -> None:
    # A qualified name: optional DNS-subdomain prefix and '/', then a name of <= 63.
    text = key if isinstance(key, str) else ""
    prefix, _, name = text.rpartition("/")
    ok = (
        bool(name)
        and len(name) <= 63
        and _LABEL_NAME.fullmatch(name) is not None
        and (not prefix or (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix) is not None))
    )
    if not ok:
        raise PolicyError(
            field,
            f"{key!r} is not a valid label key (an optional DNS prefix and '/', then at most "
            "63 letters, digits, '-', '_' or '.'), e.g. app.kubernetes.io/name",
        )


def _bracket_problem(query: str) -> str:
    """Why the brackets of a PromQL expression do not balance, or ``""``."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote = ""
    escaped = False
    for ch in query:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "`":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in closing and (not stack or stack.pop() != closing[ch]):
            return f"unexpected {ch!r}"
    if quote:
        return f"unterminated string starting with {quote}"
    if stack:
        return f"unclosed {stack[-1]!r}"
    return ""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    return "a list" if isinstance(value, Sequence) else type(value).__name__


def _format_seconds(seconds: float) -> str:
    """A duration at least ``seconds`` long, rounded up to what a person would write."""
    whole = math.ceil(seconds)
    if whole <= 60:
        return f"{whole}s"
    return f"{math.ceil(whole / 60)}m"
