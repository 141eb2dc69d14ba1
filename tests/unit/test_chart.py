"""The Helm chart as a user meets it: what `helm template` renders for each set of values.

No cluster: the real ``helm`` binary renders helm/selfheal (tests/e2e/test_rbac_e2e.py
installs it and proves the permissions on the real API server).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram

from selfheal import metrics
from tests.support.fixtures.helm import CHART, ROOT, Helm, HelmError

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RBAC_KINDS = ("Role", "ClusterRole")


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = of_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


def rules(docs: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind/name, namespace, rule) for every rule of every Role and ClusterRole."""
    out = []
    for d in docs:
        if d.get("kind") in RBAC_KINDS:
            meta = d["metadata"]
            for r in d.get("rules") or ():
                out.append((f"{d['kind']}/{meta['name']}", meta.get("namespace", ""), r))
    return out


def named(docs: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]


def grants(docs: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    """Verbs granted on ``group/resource`` by any rule."""
    verbs: set[str] = set()
    for _, _, r in rules(docs):
        if group in r.get("apiGroups", ()) and resource in r.get("resources", ()):
            verbs.update(r["verbs"])
    return verbs


# --- every scenario ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_scenario_passes_helm_lint_strict(helm: Helm, values: Path) -> None:
    helm.run("lint", str(CHART), "--strict", "--namespace", "selfheal-system", "-f", str(values))


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_no_rule_of_any_scenario_uses_a_wildcard(helm: Helm, values: Path) -> None:
    docs = helm.template(values_files=[values])
    found = rules(docs)
    assert found, "the chart renders no RBAC rule"
    for where, _, r in found:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in v for v in r.get(field, ())), f"{where}: {field} {r}"
        assert "nonResourceURLs" not in r, f"{where}: {r}"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_secrets_are_read_by_name_only_and_only_in_the_release_namespace(
    helm: Helm, values: Path
) -> None:
    docs = helm.template(values_files=[values], namespace="ops")
    for where, namespace, r in rules(docs):
        if "secrets" not in r.get("resources", ()):
            continue
        assert where.startswith("Role/"), where
        assert namespace == "ops", where
        assert r["verbs"] == ["get"], r
        assert r.get("resourceNames"), f"{where}: secrets without resourceNames: {r}"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_scenario_runs_hardened(helm: Helm, values: Path) -> None:
    docs = helm.template(values_files=[values])
    (dep,) = of_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(docs)
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # writable scratch only
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]["memory"]


# --- defaults -----------------------------------------------------------------------------------


def test_defaults_install_cluster_wide_with_the_crds_kept(helm: Helm) -> None:
    docs = helm.template()
    assert [d["metadata"]["name"] for d in of_kind(docs, "ClusterRole")] == ["selfheal"]
    # No Jira, no Secret to read: the only Role is the leader election Lease's.
    assert [d["metadata"]["name"] for d in of_kind(docs, "Role")] == ["selfheal-leader-election"]
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "selfheal", "namespace": "selfheal-system"}
    ]
    crds = of_kind(docs, "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "healingpolicies.selfheal.dev",
        "remediations.selfheal.dev",
    ]
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    args = container(docs)["args"]
    assert not any(a.startswith("--namespace") for a in args)
    assert "--metrics-port=8080" in args
    assert "--log-format=json" in args
    assert not any(a.startswith(("--jira", "--prometheus")) for a in args)
    # Two replicas, one acting: the Lease holder; a drain keeps one of them up.
    (dep,) = of_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert "--leader-election" in args
    assert "--leader-election-name=selfheal" in args
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert of_kind(docs, "ServiceMonitor") == []
    assert of_kind(docs, "ConfigMap") == []


POD_DELETE = {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}
"""The one rule that deletes a workload's object: a rollback replacing pods, one at a time."""


def test_the_default_rules_are_exactly_what_the_code_needs(helm: Helm) -> None:
    # The list each rule's comment in templates/_rbac.tpl justifies; a new permission
    # must be added here on purpose (and proven by tests/e2e/test_rbac_e2e.py).
    docs = helm.template()
    got: dict[tuple[str, str], list[str]] = {}
    for _, _, r in rules(docs):
        for g in r["apiGroups"]:
            for res in r["resources"]:
                got[(g, res)] = sorted({*got.get((g, res), []), *r["verbs"]})
    assert got == {
        ("", "pods"): ["delete", "get", "list", "watch"],
        ("", "pods/log"): ["get"],
        ("", "services"): ["list"],
        ("discovery.k8s.io", "endpointslices"): ["list"],
        ("", "configmaps"): ["get"],
        ("", "events"): ["create", "list"],
        ("apps", "deployments"): ["get", "list", "patch", "watch"],
        ("apps", "deployments/scale"): ["get", "patch"],
        ("autoscaling", "horizontalpodautoscalers"): ["get", "list", "patch"],
        ("apps", "replicasets"): ["get", "list", "watch"],
        ("apps", "statefulsets"): ["get", "list", "patch", "watch"],
        ("apps", "daemonsets"): ["get", "list", "patch", "watch"],
        ("apps", "statefulsets/scale"): ["get", "patch"],
        ("apps", "controllerrevisions"): ["list", "watch"],
        ("selfheal.dev", "healingpolicies"): ["get", "list", "patch", "watch"],
        ("selfheal.dev", "healingpolicies/status"): ["patch"],
        ("selfheal.dev", "remediations"): ["create", "delete", "get", "list", "watch"],
        ("selfheal.dev", "remediations/status"): ["patch"],
        ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
        ("coordination.k8s.io", "leases"): ["create", "get", "update"],
    }
    # Never: deleting anything but its own expired Remediations and the pods a rollback
    # of a StatefulSet or DaemonSet replaces, reading Secrets cluster-wide, touching nodes
    # or RBAC. The one update is the Lease's (a PUT with resourceVersion is the election's
    # lock).
    for _, _, r in rules(docs):
        forbidden = {"delete", "deletecollection", "escalate", "bind"}
        if r["resources"] == ["remediations"] or (r == POD_DELETE):
            forbidden.discard("delete")
        if r["resources"] != ["leases"]:
            forbidden.add("update")
        assert not forbidden & set(r["verbs"]), r


# --- RBAC follows the features -------------------------------------------------------------------


def test_switching_actions_off_drops_their_permissions(helm: Helm) -> None:
    docs = helm.template({"rbac": {"actions": {"scale": False}}})
    assert grants(docs, "apps", "deployments/scale") == set()
    assert grants(docs, "autoscaling", "horizontalpodautoscalers") == set()
    assert "patch" in grants(docs, "apps", "deployments")  # rollback and restart still may

    assert grants(docs, "apps", "statefulsets/scale") == set()
    assert "patch" in grants(docs, "apps", "statefulsets")

    docs = helm.template({"rbac": {"actions": {"rollback": False}}})
    assert grants(docs, "", "pods") == {"get", "list", "watch"}  # no pod is ever deleted
    assert "patch" in grants(docs, "apps", "daemonsets")  # restart still may

    off = {"rollback": False, "restart": False, "scale": False}
    docs = helm.template({"rbac": {"actions": off, "evidence": {"logs": False}}})
    assert grants(docs, "apps", "deployments") == {"get", "list", "watch"}
    assert grants(docs, "apps", "statefulsets") == {"get", "list", "watch"}
    assert grants(docs, "apps", "daemonsets") == {"get", "list", "watch"}
    assert grants(docs, "", "pods/log") == set()
    writes = {"patch", "create", "update", "delete"}
    written = {res for _, _, r in rules(docs) if writes & set(r["verbs"]) for res in r["resources"]}
    # Detect-and-escalate only: it writes its own records and Events, nothing else.
    assert written == {"events", "healingpolicies", "healingpolicies/status", "remediations",
                       "remediations/status", "leases"}  # fmt: skip


def test_namespaced_mode_grants_one_role_per_watched_namespace_and_watches_only_them(
    helm: Helm,
) -> None:
    docs = helm.template({"rbac": {"namespaced": True}, "watchNamespaces": ["shop", "payments"]})
    roles = named(docs, "Role", "selfheal")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["payments", "shop"]
    bindings = named(docs, "RoleBinding", "selfheal")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["payments", "shop"]
    # Cluster-wide, only kopf's reads of CRDs and Namespaces: no workload, no Secret.
    (cluster_role,) = of_kind(docs, "ClusterRole")
    resources = {res for r in cluster_role["rules"] for res in r["resources"]}
    assert resources == {"customresourcedefinitions", "namespaces"}
    assert {v for r in cluster_role["rules"] for v in r["verbs"]} == {"list", "watch"}
    assert [a for a in container(docs)["args"] if a.startswith("--namespace")] == [
        "--namespace=shop",
        "--namespace=payments",
    ]

    docs = helm.template(
        {"rbac": {"namespaced": True, "clusterScopedReads": False}, "watchNamespaces": ["shop"]}
    )
    assert of_kind(docs, "ClusterRole") == []
    assert of_kind(docs, "ClusterRoleBinding") == []


def test_namespaced_mode_without_namespaces_is_refused_with_the_fix(helm: Helm) -> None:
    with pytest.raises(HelmError, match="needs watchNamespaces"):
        helm.template({"rbac": {"namespaced": True}})


# --- Jira, Prometheus, logs ----------------------------------------------------------------------


def test_jira_with_an_existing_secret_reads_that_secret_only(helm: Helm) -> None:
    docs = helm.template(
        {"jira": {"url": "https://jira.example.com", "existingSecret": "team-jira"}},
        namespace="ops",
    )
    assert of_kind(docs, "Secret") == []
    args = container(docs)["args"]
    assert "--jira-url=https://jira.example.com" in args
    assert "--jira-secret=ops/team-jira" in args
    (role,) = named(docs, "Role", "-jira-secret")
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["team-jira"],
         "verbs": ["get"]}
    ]  # fmt: skip


def test_notify_secrets_are_readable_by_name_in_their_namespace_only(helm: Helm) -> None:
    docs = helm.template({"notify": {"secrets": [{"namespace": "shop", "name": "oncall"}]}})
    (role,) = named(docs, "Role", "-notify-oncall")
    assert role["metadata"]["namespace"] == "shop"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["oncall"],
         "verbs": ["get"]}
    ]  # fmt: skip
    (binding,) = named(docs, "RoleBinding", "-notify-oncall")
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["subjects"][0]["namespace"] == "selfheal-system"
    assert not [
        r for r in of_kind(helm.template({}), "Role") if "-notify-" in r["metadata"]["name"]
    ]
    with pytest.raises(HelmError):
        helm.template({"notify": {"secrets": [{"name": "oncall"}]}})  # no namespace


def test_jira_credentials_from_values_become_the_secret_the_operator_reads(helm: Helm) -> None:
    docs = helm.template(
        {"jira": {"url": "https://jira.example.com", "username": "bot", "token": "t0k"}}
    )
    (secret,) = of_kind(docs, "Secret")
    assert secret["stringData"] == {"username": "bot", "token": "t0k"}
    name = secret["metadata"]["name"]
    assert f"--jira-secret=selfheal-system/{name}" in container(docs)["args"]
    (role,) = named(docs, "Role", "-jira-secret")
    assert role["rules"][0]["resourceNames"] == [name]
    # The token is in the Secret only: not in the Deployment (args, env, annotations).
    assert "t0k" not in json.dumps(of_kind(docs, "Deployment"))


def test_prometheus_url_and_logging_reach_the_operator(helm: Helm) -> None:
    docs = helm.template(
        {"prometheus": {"url": "http://prom:9090"}, "log": {"level": "DEBUG", "format": "text"}}
    )
    args = container(docs)["args"]
    assert {"--prometheus-url=http://prom:9090", "--log-level=DEBUG", "--log-format=text"} <= set(
        args
    )


def test_the_operator_accepts_every_flag_the_chart_passes(helm: Helm) -> None:
    from selfheal.__main__ import parse_args

    ci = CHART / "ci"
    docs = helm.template(
        values_files=[ci / "jira-with-secret-values.yaml", ci / "namespaced-values.yaml"]
    )
    args = parse_args(container(docs)["args"])
    assert args.namespaces == ["shop", "payments"]
    assert args.jira_secret == "selfheal-system/selfheal-jira"
    assert args.prometheus_url == "http://prometheus-operated.monitoring:9090"
    assert args.metrics_port == 8080
    assert args.leader_election is True
    assert args.leader_election_name == "selfheal"
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (15.0, 10.0, 2.0)
    args = parse_args(container(helm.template(values_files=[ci / "ha-values.yaml"]))["args"])
    assert (args.leader_election_name, args.lease_duration, args.retry_period) == (
        "selfheal-leader",
        30.0,
        4.0,
    )
    args = parse_args(container(helm.template({"replicaCount": 1, "leaderElection":
                                               {"enabled": False}}))["args"])  # fmt: skip
    assert args.leader_election is False


def test_the_alert_webhook_gets_a_service_its_token_file_and_tls(helm: Helm) -> None:
    from selfheal.__main__ import parse_args

    docs = helm.template(values_files=[CHART / "ci" / "alert-webhook-values.yaml"])
    args = parse_args(container(docs)["args"])
    assert args.alert_webhook_port == 9095
    assert args.alert_webhook_token_file == "/etc/selfheal/alert-webhook/token"
    assert args.alert_webhook_cert_file == "/etc/selfheal/alert-webhook-tls/tls.crt"
    assert args.alert_webhook_key_file == "/etc/selfheal/alert-webhook-tls/tls.key"
    assert args.alertmanager_url == "http://alertmanager-operated.monitoring:9093"
    assert args.alertmanager_token_file == "/etc/selfheal/alertmanager/token"
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert mounts["alert-webhook-token"] == "/etc/selfheal/alert-webhook"
    assert mounts["alertmanager-token"] == "/etc/selfheal/alertmanager"
    (dep,) = of_kind(docs, "Deployment")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["alert-webhook-token"]["secret"] == {
        "secretName": "selfheal-alert-webhook",
        "items": [{"key": "token", "path": "token"}],
    }
    assert volumes["alert-webhook-tls"]["secret"]["secretName"] == "selfheal-alert-webhook-tls"
    (svc,) = named(docs, "Service", "-alerts")
    assert svc["spec"]["ports"] == [
        {"name": "alerts", "port": 9095, "targetPort": "alerts", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # The token is mounted, never read through the API: no Secret permission for it.
    assert "selfheal-alert-webhook" not in json.dumps(of_kind(docs, "Role"))
    # Off by default: no receiver, no Service.
    defaults = helm.template({})
    assert not named(defaults, "Service", "-alerts")
    assert parse_args(container(defaults)["args"]).alert_webhook_port is None
    with pytest.raises(HelmError, match=r"needs alertWebhook\.tokenSecret"):
        helm.template({"alertWebhook": {"enabled": True}})


# --- leader election -----------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_scenario_may_campaign_for_its_lease_in_the_release_namespace_only(
    helm: Helm, values: Path
) -> None:
    docs = helm.template(values_files=[values], namespace="ops")
    args = container(docs)["args"]
    lease_rules = [(w, ns, r) for w, ns, r in rules(docs) if "leases" in r["resources"]]
    if "--no-leader-election" in args:
        assert lease_rules == []
        return
    (name,) = [a.split("=", 1)[1] for a in args if a.startswith("--leader-election-name=")]
    # A namespaced Role in the release namespace, in cluster-wide and namespaced mode alike.
    assert {(w, ns) for w, ns, _ in lease_rules} == {("Role/selfheal-leader-election", "ops")}
    by_verbs = {tuple(r["verbs"]): r for _, _, r in lease_rules}
    assert set(by_verbs) == {("create",), ("get", "update")}
    assert by_verbs[("create",)]["apiGroups"] == ["coordination.k8s.io"]
    assert by_verbs[("get", "update")]["resourceNames"] == [name]  # this Lease only
    (binding,) = named(docs, "RoleBinding", "-leader-election")
    (sa,) = of_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ops"}
    ]
    # The Lease lives in the pod's namespace; its identity starts with the pod's name.
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           for e in container(docs)["env"]}  # fmt: skip
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    assert env["POD_NAME"] == "metadata.name"


def test_leader_election_can_be_off_with_one_replica_only(helm: Helm) -> None:
    docs = helm.template({"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert "--no-leader-election" in container(docs)["args"]
    assert grants(docs, "coordination.k8s.io", "leases") == set()
    assert of_kind(docs, "PodDisruptionBudget") == []  # one replica: a PDB would block drains
    with pytest.raises(HelmError, match="would act side by side"):
        helm.template({"replicaCount": 2, "leaderElection": {"enabled": False}})


def test_each_release_has_its_own_lease(helm: Helm) -> None:
    docs = helm.template(release="shop-ops")
    assert "--leader-election-name=shop-ops-selfheal" in container(docs)["args"]
    docs = helm.template({"leaderElection": {"leaseName": "mine"}})
    assert "--leader-election-name=mine" in container(docs)["args"]


@pytest.mark.parametrize(
    ("timings", "says"),
    [
        ({"leaseDuration": 10, "renewDeadline": 10}, "greater than leaderElection.renewDeadline"),
        ({"renewDeadline": 2, "retryPeriod": 2}, "1.2 x leaderElection.retryPeriod"),
    ],
)
def test_timings_the_operator_would_refuse_fail_the_render(
    helm: Helm, timings: dict[str, float], says: str
) -> None:
    with pytest.raises(HelmError, match=re.escape(says)):
        helm.template({"leaderElection": timings})


# --- shards -------------------------------------------------------------------------------------


def test_one_shard_renders_as_before_without_shard_flags_or_labels(helm: Helm) -> None:
    docs = helm.template()
    (dep,) = of_kind(docs, "Deployment")
    assert dep["metadata"]["name"] == "selfheal"
    assert "selfheal.dev/shard" not in dep["spec"]["selector"]["matchLabels"]
    assert not any(a.startswith(("--shard", "--total-shards")) for a in container(docs)["args"])


def test_each_shard_gets_its_deployment_pdb_lease_and_alerts_service(helm: Helm) -> None:
    from selfheal.__main__ import parse_args
    from selfheal.sharding import Shard

    values: dict[str, Any] = {
        "shards": 3,
        "alertWebhook": {"enabled": True, "tokenSecret": "am-token"},
    }
    helm.run("lint", str(CHART), "--strict", "--set", "shards=3")
    docs = helm.template(values)
    deps = of_kind(docs, "Deployment")
    assert [d["metadata"]["name"] for d in deps] == [f"selfheal-shard-{i}" for i in range(3)]
    pdbs = {p["metadata"]["name"]: p for p in of_kind(docs, "PodDisruptionBudget")}
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for i, dep in enumerate(deps):
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector["selfheal.dev/shard"] == str(i)  # no two shards select each other
        assert dep["spec"]["template"]["metadata"]["labels"]["selfheal.dev/shard"] == str(i)
        assert dep["spec"]["replicas"] == 2  # a leader and a standby per shard
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        args = parse_args(c["args"])
        assert (args.shard, args.total_shards, args.leader_election_name) == (i, 3, "selfheal")
        assert pdbs[f"selfheal-shard-{i}"]["spec"]["selector"]["matchLabels"] == selector
        alerts = services[f"selfheal-alerts-shard-{i}"]
        assert alerts["spec"]["selector"] == selector  # Alertmanager's entry i reaches shard i
    # One metrics Service over every shard's pods (Prometheus scrapes each pod).
    assert "selfheal.dev/shard" not in services["selfheal-metrics"]["spec"]["selector"]
    # RBAC by name: exactly the Leases the operator campaigns for, one per shard.
    (rule,) = [r for _, _, r in rules(docs) if "leases" in r["resources"] and "get" in r["verbs"]]
    assert rule["resourceNames"] == [
        Shard(index=i, total=3).lease_name("selfheal") for i in range(3)
    ]
    # The other RBAC is the same as with one shard.
    one = helm.template({"alertWebhook": values["alertWebhook"]})
    assert [r for w, _, r in rules(docs) if "leases" not in r["resources"]] == [
        r for w, _, r in rules(one) if "leases" not in r["resources"]
    ]


def test_a_long_release_name_keeps_the_shard_suffix(helm: Helm) -> None:
    docs = helm.template({"shards": 2, "fullnameOverride": "a" * 63})
    names = [d["metadata"]["name"] for d in of_kind(docs, "Deployment")]
    assert [n[-8:] for n in names] == ["-shard-0", "-shard-1"]
    assert all(len(n) <= 63 for n in names)


# --- availability, monitoring -------------------------------------------------------------------


def test_a_pdb_only_with_more_than_one_replica(helm: Helm) -> None:
    docs = helm.template({"replicaCount": 2})
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (dep,) = of_kind(docs, "Deployment")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert of_kind(helm.template({"replicaCount": 1}), "PodDisruptionBudget") == []
    assert of_kind(helm.template(), "PodDisruptionBudget")  # the default: two replicas
    # A minimum as large as the replica count would block every node drain.
    with pytest.raises(HelmError, match="would block every node drain"):
        helm.template({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2}})
    (pdb,) = of_kind(
        helm.template({"replicaCount": 3, "podDisruptionBudget": {"minAvailable": "50%"}}),
        "PodDisruptionBudget",
    )
    assert pdb["spec"]["minAvailable"] == "50%"


def test_servicemonitor_scrapes_the_metrics_service(helm: Helm) -> None:
    docs = helm.template(values_files=[CHART / "ci" / "servicemonitor-values.yaml"])
    (sm,) = of_kind(docs, "ServiceMonitor")
    (svc,) = of_kind(docs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"][k] == v
    assert (
        svc["spec"]["selector"] == of_kind(docs, "Deployment")[0]["spec"]["selector"]["matchLabels"]
    )
    with pytest.raises(HelmError, match=r"needs service\.enabled"):
        helm.template({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}})


def test_the_dashboard_shows_every_operator_metric_and_no_other(helm: Helm) -> None:
    docs = helm.template({"dashboard": {"enabled": True}})
    (cm,) = of_kind(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["selfheal.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"selfheal_\w+", exprs)}
    defined = {
        m._name + ("_total" if isinstance(m, Counter) else "")
        for m in vars(metrics).values()
        if isinstance(m, Counter | Gauge | Histogram)
    }
    assert len(defined) >= 9
    assert used == defined


# --- CRDs ---------------------------------------------------------------------------------------


def test_the_charts_crd_files_are_byte_identical_to_crds_dir() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copy = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    stale = sorted(n for n in source.keys() | copy.keys() if source.get(n) != copy.get(n))
    assert not stale, (
        f"helm/selfheal/files/crds differs from crds/ in {stale}: run hack/render-manifests.sh"
    )


def test_crds_can_be_left_out_or_left_unkept(helm: Helm) -> None:
    assert of_kind(helm.template({"crds": {"install": False}}), "CustomResourceDefinition") == []
    for crd in of_kind(helm.template({"crds": {"keep": False}}), "CustomResourceDefinition"):
        assert "annotations" not in crd["metadata"]


# --- schema, generated files --------------------------------------------------------------------


def _object_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        if "properties" in node:
            out.append((path or "(root)", node))
        for key, child in (node.get("properties") or {}).items():
            out.extend(_object_nodes(child, f"{path}.{key}".lstrip(".")))
    return out


def test_the_schema_is_strict_at_every_level_it_defines() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = _object_nodes(schema)
    assert len(nodes) > 10
    for path, node in nodes:
        assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"rbac": {"namespace": True}}, "'namespace' not allowed"),  # typo of namespaced
        ({"jira": {"url": "jira.example.com"}}, "jira"),
        ({"log": {"level": "verbose"}}, "level"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"watchNamespaces": ["Shop"]}, "watchNamespaces"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"leaderElection": {"enable": False}}, "'enable' not allowed"),
        ({"leaderElection": {"leaseDuration": "15s"}}, "leaseDuration"),
        ({"shards": 0}, "shards"),
    ],
    ids=[
        "typo",
        "url-without-scheme",
        "log-level",
        "zero-replicas",
        "namespace-case",
        "digest",
        "leader-election-typo",
        "lease-duration-unit",
        "zero-shards",
    ],
)
def test_the_schema_refuses_mistakes(helm: Helm, values: dict[str, Any], says: str) -> None:
    with pytest.raises(HelmError, match=re.escape(says)):
        helm.template(values)


def test_the_readme_values_table_is_current() -> None:
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "hack" / "helm-docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_value_is_documented_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text()
    values = (CHART / "values.yaml").read_text()
    top = re.findall(r"^([A-Za-z]\w*):", values, flags=re.MULTILINE)
    for key in top:
        assert f"| `{key}" in readme, f"values.yaml key {key} has no row in the README table"


def test_manifests_are_the_chart_rendered(helm: Helm) -> None:
    proc = subprocess.run(
        [str(ROOT / "hack" / "render-manifests.sh"), "--stdout"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HELM": str(helm.binary), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "manifests" / "selfheal.yaml").read_text(), (
        "manifests/selfheal.yaml is stale: run hack/render-manifests.sh"
    )
