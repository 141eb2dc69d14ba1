"""The HealingPolicy and Remediation APIs on a real kube-apiserver.

What an SRE sees: samples apply; mistakes are refused at apply time with the field
named; ``kubectl explain`` documents the whole tree; ``kubectl get`` shows the columns
an on-call engineer wants first.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from selfheal.clients.kube import Invalid, Kube, group
from selfheal.policy.model import PolicyError
from selfheal.policy.parse import parse
from tests.support.cluster import Cluster, ClusterError
from tests.support.crds import (
    CRD_PATHS,
    GROUP_VERSION,
    INVALID_POLICIES,
    SAMPLES_DIR,
    BadPolicy,
    load_crds,
    load_documents,
    table,
    table_rows,
    valid_policy,
)

pytestmark = pytest.mark.integration

SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))
API_CASES = [c for c in INVALID_POLICIES if c.api]
PARSE_ONLY_CASES = [c for c in INVALID_POLICIES if not c.api]
NOW = "2026-11-28T08:00:00Z"


def hp_path(namespace: str, name: str = "") -> str:
    return group(GROUP_VERSION, namespace, "healingpolicies", name)


def rem_path(namespace: str, name: str = "") -> str:
    return group(GROUP_VERSION, namespace, "remediations", name)


def remediation(name: str = "shop-web-crashloop-1a2b3c") -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Remediation",
        "metadata": {"name": name},
        "spec": {
            "policy": "shop",
            "workload": {"kind": "Deployment", "name": "web", "uid": "0d6f-42"},
            "trigger": {"name": "crashloop", "kind": "crashLoop"},
            "fingerprint": "1a2b3c",
        },
    }


# --- samples -------------------------------------------------------------------------


def test_at_least_25_mistakes_are_checked_by_the_api_server() -> None:
    assert len(API_CASES) >= 25


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_applies_and_the_operator_reads_it_back(
    crds: list[str], cluster: Cluster, namespace: str, path: Any
) -> None:
    out = cluster.kubectl("apply", "-n", namespace, "-f", str(path)).stdout
    (doc,) = load_documents([path])
    name = doc["metadata"]["name"]
    assert f"healingpolicy.selfheal.dev/{name} created" in out

    stored = cluster.api("GET", hp_path(namespace, name))
    # The server filled in the CRD's defaults; the operator must read the same policy
    # the SRE wrote (model defaults == CRD defaults), from the stored object.
    as_written = copy.deepcopy(doc)
    as_written["metadata"].update(namespace=namespace, generation=stored["metadata"]["generation"])
    assert parse(stored) == parse(as_written)
    assert stored["spec"]["guardrails"]["storm"]["within"]  # defaulted: the block was absent


# --- mistakes, refused at apply time ------------------------------------------------


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
async def test_invalid_policy_is_refused_naming_the_field(
    crds: list[str], kube: Kube, namespace: str, case: BadPolicy
) -> None:
    body = valid_policy(case.id)
    case.edit(body["spec"])
    with pytest.raises(Invalid) as err:
        await kube.create(hp_path(namespace), body)
    assert err.value.status == 422
    message = err.value.message
    # "HealingPolicy.selfheal.dev "x" is invalid: spec.a.b: Invalid value: ...: <what to do>"
    assert f"{case.field}: " in message, message
    assert case.says in message, message


async def test_the_base_of_the_invalid_cases_is_accepted(
    crds: list[str], kube: Kube, namespace: str
) -> None:
    created = await kube.create(hp_path(namespace), valid_policy())
    assert created["spec"]["triggers"][1]["prometheus"]["interval"] == "30s"  # defaulted
    parse(created)


@pytest.mark.parametrize("case", PARSE_ONLY_CASES, ids=lambda c: c.id)
async def test_mistakes_cel_cannot_see_are_stored_and_refused_by_parse(
    crds: list[str], kube: Kube, namespace: str, case: BadPolicy
) -> None:
    body = valid_policy(case.id)
    case.edit(body["spec"])
    stored = await kube.create(hp_path(namespace), body)
    with pytest.raises(PolicyError) as err:
        parse(stored)
    assert err.value.field == (case.parse_field or case.field)
    assert case.says in err.value.message


def test_kubectl_apply_tells_the_sre_which_field_and_what_to_do(
    crds: list[str], cluster: Cluster, namespace: str
) -> None:
    body = valid_policy("band")
    body["spec"]["triggers"][1]["prometheus"]["below"] = 0.5
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False
    )
    assert proc.returncode != 0
    assert 'The HealingPolicy "band" is invalid' in proc.stderr
    assert "spec.triggers[1].prometheus.above" in proc.stderr
    assert "above must be greater than below" in proc.stderr


def test_kubectl_apply_refuses_a_misspelt_field(
    crds: list[str], cluster: Cluster, namespace: str
) -> None:
    body = valid_policy("typo")
    body["spec"]["gaurdrails"] = body["spec"].pop("guardrails")
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False
    )
    assert proc.returncode != 0
    assert 'unknown field "spec.gaurdrails"' in proc.stderr


def test_paused_policy_needs_only_a_target(
    crds: list[str], cluster: Cluster, namespace: str
) -> None:
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": "HealingPolicy",
        "metadata": {"name": "quiet"},
        "spec": {"mode": "Paused", "target": {"selector": {"matchLabels": {"app": "x"}}}},
    }
    stored = cluster.api("POST", hp_path(namespace), body)
    assert parse(stored).triggers == ()


def test_editing_a_valid_policy_into_an_invalid_one_is_refused(
    crds: list[str], cluster: Cluster, namespace: str
) -> None:
    cluster.api("POST", hp_path(namespace), valid_policy("edit"))
    with pytest.raises(ClusterError, match=r"HTTP 422.*spec\.remediation\.steps\[1\]\.scale\.max"):
        cluster.api(
            "PATCH",
            hp_path(namespace, "edit"),
            {"spec": {"remediation": {"steps": [{"restart": {}}, {"scale": {"by": 5, "max": 2}}]}}},
        )


# --- kubectl explain ------------------------------------------------------------------


def _leaf_names(schema: dict[str, Any], out: set[str]) -> set[str]:
    for name, sub in schema.get("properties", {}).items():
        out.add(name)
        _leaf_names(sub, out)
    if isinstance(schema.get("items"), dict):
        _leaf_names(schema["items"], out)
    return out


def _schema(kind: str) -> dict[str, Any]:
    (crd,) = [c for c in load_crds(CRD_PATHS) if c["spec"]["names"]["kind"] == kind]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_explain_shows_the_whole_spec_tree(crds: list[str], cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "healingpolicy.spec", "--recursive").stdout
    shown = {line.split()[0] for line in out.splitlines() if line.startswith(" ") and line.strip()}
    expected = _leaf_names(_schema("HealingPolicy")["properties"]["spec"], set())
    assert expected - shown == set()
    for deep in ("seasonality", "revertAfterRecovery", "resolveTransition", "maxUnhealthy"):
        assert deep in shown


def test_explain_documents_a_field_with_its_constraints(crds: list[str], cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "hp.spec.guardrails.minAvailable").stdout
    assert "Percentage of desired replicas" in out
    assert '"50%"' in out
    out = cluster.kubectl("explain", "remediation.status.phase").stdout
    assert "Escalated" in out
    assert "Detected" in out


def test_explain_documents_notifications(crds: list[str], cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "hp.spec.remediation.escalate.notify").stdout
    assert "never written here" in out
    assert "secretRef" in out
    out = cluster.kubectl("explain", "hp.spec.remediation.escalate.jira.assignee").stdout
    assert "account id on Jira" in out
    out = cluster.kubectl("explain", "remediation.status.notifications").stdout
    assert "Escalation" in out
    assert "retryAt" in out


def test_explain_shows_the_remediation_tree(crds: list[str], cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "remediation", "--recursive").stdout
    shown = {line.split()[0] for line in out.splitlines() if line.startswith(" ") and line.strip()}
    expected = _leaf_names(_schema("Remediation"), set()) - {"metadata"}
    assert expected - shown == set()


# --- kubectl get: printer columns through the API's Table output ----------------------


def test_healingpolicy_columns(crds: list[str], cluster: Cluster, namespace: str) -> None:
    cluster.api("POST", hp_path(namespace), valid_policy("shop"))
    paused = valid_policy("later")
    paused["spec"]["mode"] = "Paused"
    cluster.api("POST", hp_path(namespace), paused)
    cluster.api(
        "PATCH",
        hp_path(namespace, "shop") + "/status",
        {
            "status": {
                "observedGeneration": 1,
                "workloads": 3,
                "activeRemediations": 1,
                "lastOutcome": "Resolved",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "BackendUnavailable",
                        "message": "Prometheus at http://127.0.0.1:9 did not answer",
                        "observedGeneration": 1,
                        "lastTransitionTime": NOW,
                    }
                ],
            }
        },
    )
    body = table(cluster, hp_path(namespace))
    columns = [c["name"] for c in body["columnDefinitions"]]
    assert columns == [
        "Name",
        "Mode",
        "Ready",
        "Reason",
        "Workloads",
        "Active",
        "Last Outcome",
        "Age",
    ]
    wide_only = {c["name"] for c in body["columnDefinitions"] if c["priority"] > 0}
    assert wide_only == {"Reason"}
    rows = {r["_name"]: r for r in table_rows(body)}
    shop = rows["shop"]
    assert (shop["Mode"], shop["Ready"], shop["Reason"]) == (
        "Enforce",
        "False",
        "BackendUnavailable",
    )
    assert (shop["Workloads"], shop["Active"], shop["Last Outcome"]) == (3, 1, "Resolved")
    assert rows["later"]["Mode"] == "Paused"
    assert rows["later"]["Ready"] in (None, "")


def test_remediation_columns(crds: list[str], cluster: Cluster, namespace: str) -> None:
    name = "shop-web-crashloop-1a2b3c"
    cluster.api("POST", rem_path(namespace), remediation(name))
    cluster.api(
        "PATCH",
        rem_path(namespace, name) + "/status",
        {
            "status": {
                "phase": "Escalated",
                "detectedAt": NOW,
                "cause": "OOMKilled",
                "detail": "web restarted 4 times in 10m (OOMKilled, exit 137)",
                "currentStep": 1,
                "steps": [
                    {
                        "index": 0,
                        "action": "rollback",
                        "startedAt": NOW,
                        "finishedAt": NOW,
                        "result": "Failed",
                        "message": "still crash-looping after 15m",
                        "change": {"fromRevision": "7", "toRevision": "8"},
                    },
                    {
                        "index": 1,
                        "action": "scale",
                        "startedAt": NOW,
                        "result": "Refused",
                        "message": "guardrails.maxConcurrent reached",
                    },
                ],
                "ticket": {
                    "key": "OPS-7",
                    "url": "http://127.0.0.1/browse/OPS-7",
                    "state": "Filed",
                    "attempts": 1,
                },
                "evidence": {
                    "summary": "OOMKilled at 512Mi",
                    "bytes": 18432,
                    "facts": {"exitCode": 137, "restarts": [1, 2, 4]},
                },
            }
        },
    )
    body = table(cluster, rem_path(namespace))
    columns = [c["name"] for c in body["columnDefinitions"]]
    assert columns == [
        "Name",
        "Phase",
        "Workload",
        "Trigger",
        "Step",
        "Ticket",
        "Cause",
        "Policy",
        "Age",
    ]
    (row,) = table_rows(body)
    assert row["_name"] == name
    assert (row["Phase"], row["Workload"], row["Trigger"]) == ("Escalated", "web", "crashloop")
    assert (row["Step"], row["Ticket"], row["Cause"], row["Policy"]) == (
        1,
        "OPS-7",
        "OOMKilled",
        "shop",
    )
    stored = cluster.api("GET", rem_path(namespace, name))
    assert stored["status"]["evidence"]["facts"] == {"exitCode": 137, "restarts": [1, 2, 4]}


def test_kubectl_get_selfheal_lists_both_kinds(
    crds: list[str], cluster: Cluster, namespace: str
) -> None:
    cluster.api("POST", hp_path(namespace), valid_policy("shop"))
    cluster.api("POST", rem_path(namespace), remediation("shop-web-1"))
    out = cluster.kubectl("get", "selfheal", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == [
        "healingpolicy.selfheal.dev/shop",
        "remediation.selfheal.dev/shop-web-1",
    ]
    short = cluster.kubectl("get", "hp,hpol,rem", "-n", namespace, "-o", "name").stdout.split()
    assert set(short) == set(out)


# --- status subresource and Remediation rules ----------------------------------------


def test_status_is_a_subresource(crds: list[str], cluster: Cluster, namespace: str) -> None:
    cluster.api("POST", hp_path(namespace), valid_policy("shop"))
    # Status through the main resource is ignored; spec through /status is ignored.
    cluster.api("PATCH", hp_path(namespace, "shop"), {"status": {"workloads": 9}})
    after = cluster.api(
        "PATCH",
        hp_path(namespace, "shop") + "/status",
        {"spec": {"mode": "Paused"}, "status": {"workloads": 2}},
    )
    assert after["spec"]["mode"] == "Enforce"
    assert after["status"]["workloads"] == 2
    assert after["metadata"]["generation"] == 1


@pytest.mark.parametrize(
    ("status", "field", "says"),
    [
        ({"phase": "Done"}, "status.phase", "supported values"),
        (
            {"steps": [{"index": 0, "action": "rollback", "result": "Ok"}]},
            "status.steps[0].result",
            "supported values",
        ),
        ({"ticket": {"state": "Open"}}, "status.ticket.state", "supported values"),
        ({"steps": [{"index": 0, "action": "rollback"}] * 17}, "status.steps", "at most 16 items"),
        (
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "Yes",
                        "reason": "Fine",
                        "message": "",
                        "lastTransitionTime": NOW,
                    }
                ]
            },
            "status.conditions[0].status",
            "supported values",
        ),
        (
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "not camel",
                        "message": "",
                        "lastTransitionTime": NOW,
                    }
                ]
            },
            "status.conditions[0].reason",
            "should match",
        ),
    ],
)
def test_remediation_status_is_validated(
    crds: list[str], cluster: Cluster, namespace: str, status: dict[str, Any], field: str, says: str
) -> None:
    cluster.api("POST", rem_path(namespace), remediation("r"))
    with pytest.raises(ClusterError) as err:
        cluster.api("PATCH", rem_path(namespace, "r") + "/status", {"status": status})
    text = str(err.value)
    assert "HTTP 422" in text
    assert f"{field}: " in text
    assert says in text


def test_healingpolicy_recent_signals_are_bounded(
    crds: list[str], cluster: Cluster, namespace: str
) -> None:
    cluster.api("POST", hp_path(namespace), valid_policy("shop"))
    signal = {"at": NOW, "trigger": "crashloop", "workload": "web", "health": "unhealthy"}
    cluster.api(
        "PATCH",
        hp_path(namespace, "shop") + "/status",
        {"status": {"recentSignals": [signal] * 10}},
    )
    with pytest.raises(ClusterError, match=r"HTTP 422.*status\.recentSignals: Too many"):
        cluster.api(
            "PATCH",
            hp_path(namespace, "shop") + "/status",
            {"status": {"recentSignals": [signal] * 11}},
        )


def test_remediation_spec_is_immutable(crds: list[str], cluster: Cluster, namespace: str) -> None:
    cluster.api("POST", rem_path(namespace), remediation("r"))
    with pytest.raises(ClusterError, match=r"HTTP 422.*spec is immutable"):
        cluster.api("PATCH", rem_path(namespace, "r"), {"spec": {"fingerprint": "other"}})


def test_discovery_lists_both_kinds_namespaced_with_short_names(
    crds: list[str], cluster: Cluster
) -> None:
    out = cluster.kubectl("api-resources", "--api-group=selfheal.dev", "--no-headers").stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    # NAME SHORTNAMES APIVERSION NAMESPACED KIND
    assert rows["healingpolicies"] == ["hp,hpol", GROUP_VERSION, "true", "HealingPolicy"]
    assert rows["remediations"] == ["rem", GROUP_VERSION, "true", "Remediation"]


async def test_integer_thresholds_are_compared_as_numbers(
    crds: list[str], kube: Kube, namespace: str
) -> None:
    # YAML `above: 10` arrives as a JSON integer; the CEL rule must still compare it.
    band = valid_policy("band")
    band["spec"]["triggers"][1]["prometheus"].update(above=10, below=2)
    stored = await kube.create(hp_path(namespace), band)
    prom = parse(stored).triggers[1].prometheus
    assert prom is not None
    assert (prom.above, prom.below) == (10.0, 2.0)
    inverted = valid_policy("inverted")
    inverted["spec"]["triggers"][1]["prometheus"].update(above=2, below=10)
    with pytest.raises(Invalid, match=r"prometheus\.above: .*greater than below"):
        await kube.create(hp_path(namespace), inverted)
