"""Install selfheal's CRDs on a cluster and wait until they serve; read Table output.

``install(kubeconfig)`` is synchronous (fixtures, CLIs); ``install_async(kube)`` is the
same for code already in an event loop. Both server-side apply every ``crds/*.yaml``
(so re-running is a no-op and an edited CRD is updated in place) and return once each
CRD reports ``Established`` and ``NamesAccepted``, or raise ``CrdError`` saying which
CRD is stuck and why (a CEL cost error, a names conflict).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from selfheal.clients.kube import Kube, KubeError

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
SAMPLES_DIR = ROOT / "manifests" / "samples"
CRD_PATHS: tuple[Path, ...] = tuple(sorted(CRD_DIR.glob("*.yaml")))
GROUP_VERSION = "selfheal.dev/v1alpha1"
FIELD_MANAGER = "selfheal-tests"
CRD_API = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


class CrdError(RuntimeError):
    """A CRD was refused or did not become Established in time."""


def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every non-empty YAML document in these files, in order."""
    docs: list[dict[str, Any]] = []
    for path in paths:
        with path.open(encoding="utf-8") as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def load_crds(paths: Iterable[Path] = CRD_PATHS) -> list[dict[str, Any]]:
    """The CustomResourceDefinition documents in these files."""
    return [d for d in load_documents(paths) if d.get("kind") == "CustomResourceDefinition"]


def install(
    kubeconfig: str | os.PathLike[str], *, paths: Sequence[Path] = CRD_PATHS, within: float = 60.0
) -> list[str]:
    """Apply the CRDs with the credentials of ``kubeconfig``; returns their names.

    Synchronous: runs its own event loop, so never call it from async code (use
    ``install_async`` there).
    """
    if isinstance(kubeconfig, Kube):
        raise TypeError("install() takes a kubeconfig path; with a Kube, await install_async()")

    async def run() -> list[str]:
        kube = await Kube.connect(kubeconfig=os.fspath(kubeconfig))
        try:
            return await install_async(kube, paths=paths, within=within)
        finally:
            await kube.close()

    return asyncio.run(run())


async def install_async(
    kube: Kube, *, paths: Sequence[Path] = CRD_PATHS, within: float = 60.0
) -> list[str]:
    """Server-side apply each CRD, then wait (bounded) until all are Established."""
    crds = load_crds(paths)
    if not crds:
        raise CrdError(f"no CustomResourceDefinition in {', '.join(map(str, paths))}")
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            await kube.request(
                "PATCH",
                f"{CRD_API}/{name}",
                body=crd,
                content_type="application/apply-patch+yaml",
                query={"fieldManager": FIELD_MANAGER, "force": True, "fieldValidation": "Strict"},
            )
        except KubeError as e:
            raise CrdError(f"the API server refused CRD {name}: {e.message}") from None
        names.append(name)
    deadline = time.monotonic() + within
    pending = list(names)
    last: dict[str, str] = {}
    while pending:
        for name in list(pending):
            conditions = (await kube.get(f"{CRD_API}/{name}")).get("status", {}).get("conditions")
            state = {c["type"]: c for c in conditions or ()}
            established = state.get("Established", {}).get("status") == "True"
            accepted = state.get("NamesAccepted", {}).get("status") == "True"
            if established and accepted:
                pending.remove(name)
            else:
                last[name] = "; ".join(
                    f"{t}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
                    for t, c in state.items()
                )
        if not pending:
            break
        if time.monotonic() > deadline:
            detail = ", ".join(f"{n}: {last.get(n) or 'no conditions'}" for n in pending)
            raise CrdError(f"CRDs not Established within {within:.0f}s: {detail}")
        await asyncio.sleep(0.2)
    return names


class _Cluster(Protocol):
    server: str

    def ssl_context(self) -> ssl.SSLContext: ...


def table(cluster: _Cluster, path: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """GET ``path`` as a server-side ``Table`` (what ``kubectl get`` prints).

    Synchronous, admin credentials of the ``cluster`` fixture; call it from sync tests
    or through ``asyncio.to_thread``.
    """
    req = urllib.request.Request(cluster.server + path, headers={"Accept": TABLE})
    try:
        with urllib.request.urlopen(req, context=cluster.ssl_context(), timeout=timeout) as r:
            body: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise CrdError(f"GET {path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None
    if body.get("kind") != "Table":
        raise CrdError(f"GET {path}: expected a Table, got {body.get('kind')!r}")
    return body


def table_rows(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each row of a Table as ``{column name: cell}``, plus ``_name`` (metadata.name)."""
    columns = [c["name"] for c in body["columnDefinitions"]]
    rows = []
    for row in body.get("rows", ()):
        cells = dict(zip(columns, row["cells"], strict=True))
        cells["_name"] = row.get("object", {}).get("metadata", {}).get("name")
        rows.append(cells)
    return rows


# --- policies for tests: one valid, many invalid ---------------------------------------


def valid_policy(name: str = "shop") -> dict[str, Any]:
    """A fresh HealingPolicy using every section, accepted by the API server and ``parse``.

    ``spec.triggers[1]`` is a prometheus trigger and ``spec.remediation.steps[1]`` a scale
    step, so the cases below can break them by index.
    """
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "HealingPolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": "Enforce",
            "target": {
                "kind": "Deployment",
                "selector": {
                    "matchLabels": {"app.kubernetes.io/part-of": "shop"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}],
                },
            },
            "triggers": [
                {"name": "crashloop", "crashLoop": {"restarts": 3, "within": "10m"}},
                {
                    "name": "error-ratio",
                    "prometheus": {
                        "query": "sum by (namespace, deployment) (rate(errors_total[5m]))",
                        "above": 0.05,
                        "for": "2m",
                    },
                },
            ],
            "remediation": {
                "steps": [{"rollback": {"to": "LastHealthy"}}, {"scale": {"by": 2, "max": 6}}],
                "verify": {"for": "5m", "timeout": "15m"},
                "escalate": {"jira": {"project": "OPS", "labels": ["selfheal"]}},
            },
            "guardrails": {"cooldown": "30m", "minAvailable": "50%"},
            "redaction": {"patterns": ["token=[A-Za-z0-9]+"]},
        },
    }


Edit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BadPolicy:
    """A mistake an SRE makes, applied to ``valid_policy()``'s spec by ``edit``."""

    id: str
    edit: Edit
    field: str
    """The field path both the API server's message and ``PolicyError.field`` name."""
    says: str
    """A fragment of the API server's message (schema wording or our CEL message)."""
    parse_field: str = ""
    """When ``parse`` names a different path ("" means ``field``)."""
    api: bool = True
    """False: only ``parse`` catches it (CEL cannot express the rule); the API server
    stores it and the operator reports Ready=False with reason InvalidSpec."""


def _set(path: str, value: object) -> Edit:
    """Set ``spec.<dotted path>`` (list indexes as numbers), creating objects on the way."""

    def edit(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys: list[str | int] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key] if isinstance(key, int) else node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys: list[str | int] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return edit


def _both(*edits: Edit) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        for e in edits:
            e(spec)

    return edit


_PROM = "triggers.1.prometheus"
_JIRA = "remediation.escalate.jira"

# Each is refused by ``parse`` and (unless ``api`` is False) by the API server with a
# 422 naming ``field``.
INVALID_POLICIES: tuple[BadPolicy, ...] = (
    BadPolicy("mode-typo", _set("mode", "Enforcing"), "spec.mode", "supported values"),
    BadPolicy("target-missing", _drop("target"), "spec.target", "Required value"),
    BadPolicy(
        "target-kind-cronjob",
        _set("target.kind", "CronJob"),
        "spec.target.kind",
        "supported values",
    ),
    BadPolicy(
        "daemonset-scale",
        _set("target.kind", "DaemonSet"),
        "spec.remediation.steps",
        "no replicas to scale",
        parse_field="spec.remediation.steps[1].scale",
    ),
    BadPolicy(
        "selector-empty",
        _set("target.selector", {}),
        "spec.target.selector",
        "must not be empty",
    ),
    BadPolicy(
        "selector-operator",
        _set("target.selector.matchExpressions.0.operator", "Equals"),
        "spec.target.selector.matchExpressions[0].operator",
        "supported values",
    ),
    BadPolicy(
        "selector-in-without-values",
        _drop("target.selector.matchExpressions.0.values"),
        "spec.target.selector.matchExpressions[0].values",
        "at least one value",
    ),
    BadPolicy(
        "selector-exists-with-values",
        _set("target.selector.matchExpressions.0.operator", "Exists"),
        "spec.target.selector.matchExpressions[0].values",
        "must be empty for Exists",
        parse_field="spec.target.selector.matchExpressions[0].values",
    ),
    BadPolicy(
        "selector-label-value",
        _set("target.selector.matchLabels", {"app": "my shop"}),
        "spec.target.selector.matchLabels.app",
        "should match",
    ),
    BadPolicy(
        "selector-label-key",
        _set("target.selector.matchLabels", {"-app": "shop"}),
        "spec.target.selector.matchLabels",
        "not a valid label key",
    ),
    BadPolicy(
        "trigger-name-not-dns",
        _set("triggers.0.name", "Crash_Loop"),
        "spec.triggers[0].name",
        "should match",
    ),
    BadPolicy(
        "trigger-name-duplicate",
        _set("triggers.1.name", "crashloop"),
        "spec.triggers[1]",
        "Duplicate value",
        parse_field="spec.triggers[1].name",
    ),
    BadPolicy(
        "trigger-both-kinds",
        _set("triggers.0.prometheus", {"query": "up", "below": 1}),
        "spec.triggers[0]",
        "exactly one of crashLoop, prometheus or alert",
    ),
    BadPolicy(
        "trigger-no-kind",
        _set("triggers.0", {"name": "crashloop"}),
        "spec.triggers[0]",
        "exactly one of crashLoop, prometheus or alert",
    ),
    BadPolicy(
        "trigger-alert-and-crashloop",
        _set("triggers.0.alert", {"name": "KubePodCrashLooping"}),
        "spec.triggers[0]",
        "exactly one of crashLoop, prometheus or alert",
    ),
    BadPolicy(
        "alert-name-missing",
        _set("triggers.0", {"name": "crashloop", "alert": {"matchers": {"severity": "page"}}}),
        "spec.triggers[0].alert.name",
        "Required value",
    ),
    BadPolicy(
        "alert-matcher-alertname",
        _set(
            "triggers.0",
            {"name": "crashloop", "alert": {"name": "A", "matchers": {"alertname": "B"}}},
        ),
        "spec.triggers[0].alert.matchers",
        "remove the alertname matcher",
        parse_field="spec.triggers[0].alert.matchers.alertname",
    ),
    BadPolicy(
        "crashloop-restarts-zero",
        _set("triggers.0.crashLoop.restarts", 0),
        "spec.triggers[0].crashLoop.restarts",
        "greater than or equal to 1",
    ),
    BadPolicy(
        "crashloop-within-words",
        _set("triggers.0.crashLoop.within", "10 minutes"),
        "spec.triggers[0].crashLoop.within",
        "should match",
    ),
    BadPolicy(
        "prometheus-no-condition",
        _drop(f"{_PROM}.above"),
        "spec.triggers[1].prometheus",
        "needs a condition",
    ),
    BadPolicy(
        "prometheus-anomaly-and-threshold",
        _set(f"{_PROM}.anomaly", {"sensitivity": "high"}),
        "spec.triggers[1].prometheus.anomaly",
        "cannot be combined with above",
    ),
    BadPolicy(
        "prometheus-above-not-over-below",
        _set(f"{_PROM}.below", 0.5),
        "spec.triggers[1].prometheus.above",
        "above must be greater than below",
        parse_field="spec.triggers[1].prometheus.above",
    ),
    BadPolicy(
        "prometheus-query-empty",
        _set(f"{_PROM}.query", ""),
        "spec.triggers[1].prometheus.query",
        "at least 1 chars long",
    ),
    BadPolicy(
        "prometheus-above-percent-string",
        _set(f"{_PROM}.above", "5%"),
        "spec.triggers[1].prometheus.above",
        "must be of type number",
    ),
    BadPolicy(
        "prometheus-workload-label",
        _set(f"{_PROM}.workloadLabels", {"name": "deployment-name"}),
        "spec.triggers[1].prometheus.workloadLabels.name",
        "should match",
    ),
    BadPolicy(
        "prometheus-for-unitless",
        _set(f"{_PROM}.for", "120"),
        "spec.triggers[1].prometheus.for",
        "should match",
    ),
    BadPolicy(
        "anomaly-sensitivity",
        _both(_drop(f"{_PROM}.above"), _set(f"{_PROM}.anomaly", {"sensitivity": "extreme"})),
        "spec.triggers[1].prometheus.anomaly.sensitivity",
        "supported values",
    ),
    BadPolicy(
        "enforce-without-triggers",
        _drop("triggers"),
        "spec.triggers",
        "at least one trigger",
    ),
    BadPolicy(
        "dryrun-with-empty-triggers",
        _both(_set("mode", "DryRun"), _set("triggers", [])),
        "spec.triggers",
        "at least one trigger",
    ),
    BadPolicy(
        "enforce-with-nothing-to-do",
        _set("remediation", {"verify": {"for": "5m"}}),
        "spec.remediation",
        "at least one entry in steps or an escalate block",
    ),
    BadPolicy(
        "step-two-actions",
        _set("remediation.steps.0.restart", {}),
        "spec.remediation.steps[0]",
        "exactly one action",
    ),
    BadPolicy(
        "step-no-action",
        _set("remediation.steps.0", {}),
        "spec.remediation.steps[0]",
        "exactly one action",
    ),
    BadPolicy(
        "scale-max-below-by",
        _set("remediation.steps.1.scale", {"by": 4, "max": 3}),
        "spec.remediation.steps[1].scale.max",
        "max must be at least by",
    ),
    BadPolicy(
        "scale-by-zero",
        _set("remediation.steps.1.scale.by", 0),
        "spec.remediation.steps[1].scale.by",
        "greater than or equal to 1",
    ),
    BadPolicy(
        "rollback-to-typo",
        _set("remediation.steps.0.rollback.to", "LastGood"),
        "spec.remediation.steps[0].rollback.to",
        "supported values",
    ),
    BadPolicy(
        "verify-for-unitless",
        _set("remediation.verify.for", "300"),
        "spec.remediation.verify.for",
        "should match",
    ),
    BadPolicy(
        "escalate-without-jira",
        _set("remediation.escalate", {}),
        "spec.remediation.escalate",
        "needs jira, notify or both",
    ),
    BadPolicy(
        "notify-url-written-in-the-policy",
        _set("remediation.escalate.notify", "json://hooks.example.com/oncall"),
        "spec.remediation.escalate.notify",
        "must be of type object",
        parse_field="spec.remediation.escalate.notify",
    ),
    BadPolicy(
        "notify-without-secret-ref",
        _set("remediation.escalate.notify", {}),
        "spec.remediation.escalate.notify.secretRef",
        "Required value",
    ),
    BadPolicy(
        "notify-secret-name-invalid",
        _set("remediation.escalate.notify.secretRef", {"name": "On Call"}),
        "spec.remediation.escalate.notify.secretRef.name",
        "should match",
    ),
    BadPolicy(
        "jira-project-name-not-key",
        _set(f"{_JIRA}.project", "Operations"),
        "spec.remediation.escalate.jira.project",
        "should match",
    ),
    BadPolicy(
        "jira-label-with-space",
        _set(f"{_JIRA}.labels", ["self heal"]),
        "spec.remediation.escalate.jira.labels[0]",
        "should match",
    ),
    BadPolicy(
        "jira-custom-field-by-name",
        _set(f"{_JIRA}.customFields", {"Team": "payments"}),
        "spec.remediation.escalate.jira.customFields",
        "not a Jira field id",
        parse_field="spec.remediation.escalate.jira.customFields.Team",
        api=False,
    ),
    BadPolicy(
        "min-available-fraction",
        _set("guardrails.minAvailable", "0.5"),
        "spec.guardrails.minAvailable",
        "should match",
    ),
    BadPolicy(
        "max-concurrent-zero",
        _set("guardrails.maxConcurrent", 0),
        "spec.guardrails.maxConcurrent",
        "greater than or equal to 1",
    ),
    BadPolicy(
        "cooldown-unitless",
        _set("guardrails.cooldown", "30"),
        "spec.guardrails.cooldown",
        "should match",
    ),
    BadPolicy(
        "storm-max-unhealthy-zero",
        _set("guardrails.storm", {"maxUnhealthy": 0}),
        "spec.guardrails.storm.maxUnhealthy",
        "greater than or equal to 1",
    ),
    BadPolicy(
        "too-many-triggers",
        _set("triggers", [{"name": f"t{i}", "crashLoop": {}} for i in range(17)]),
        "spec.triggers",
        "must have at most 16 items",
    ),
    BadPolicy(
        "dependencies-on-unhealthy-typo",
        _set("remediation.dependencies", {"onUnhealthy": "Skip"}),
        "spec.remediation.dependencies.onUnhealthy",
        "supported values",
    ),
    BadPolicy(
        "dependencies-wait-for-unitless",
        _set("remediation.dependencies", {"onUnhealthy": "Wait", "waitFor": "300"}),
        "spec.remediation.dependencies.waitFor",
        "should match",
    ),
    BadPolicy(
        "step-dependencies-typo",
        _set("remediation.steps.0.dependencies", {"onUnhealthy": "Later"}),
        "spec.remediation.steps[0].dependencies.onUnhealthy",
        "supported values",
    ),
)
