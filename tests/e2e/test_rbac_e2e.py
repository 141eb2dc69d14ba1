"""Least privilege, proven on the real API server: the chart's RBAC is enough, and no more.

The chart is installed with the real ``helm`` into the local control plane. The
operator then runs as a process (no kubelet runs images here) with exactly the chart's
identity: a token of the chart's ServiceAccount from the TokenRequest API, and the
flags the chart put in the Deployment. It must go through whole remediations (crash
loop -> rollback -> verified; crash loop -> restart -> scale -> Jira ticket with
evidence) without one ``403`` in its log. In namespaced mode the real authorizer must
refuse that identity in any namespace it was not granted.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.cluster import BIN_DIR, Cluster
from tests.support.fixtures.helm import InstallRelease, Release
from tests.support.fixtures.jira import JIRA_PASSWORD, JIRA_USER
from tests.support.jira_server import JiraServer
from tests.support.operator import OperatorProcess
from tests.support.workloads import (
    available,
    deployment,
    eventually,
    image_of,
    policy,
    remediations,
    set_image,
)

pytestmark = pytest.mark.e2e

ROLLBACK_POLICY = {
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {"steps": [{"rollback": {"to": "LastHealthy"}}], "verify": {"for": "6s"}},
}
# A crash loop from the first revision: neither a restart nor more replicas heal it,
# so every step runs, fails to verify, and the incident is escalated to Jira.
ESCALATE_POLICY = {
    "triggers": [{"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}}],
    "remediation": {
        "steps": [{"restart": {}}, {"scale": {"by": 1, "max": 4}}],
        "verify": {"for": "4s", "timeout": "8s"},
        "escalate": {"jira": {"project": "OPS", "issueType": "Bug", "priority": "High"}},
    },
}

# What an authorization failure looks like in the operator's log: the API server's 403
# (kopf, the kube client, the evidence's "unavailable" notes) or kopf's fallback warnings.
# Not the milliseconds of a log line's timestamp (``03:14:33,403``).
_DENIED = re.compile(r"(?<![,.:])\b403\b|forbidden|not enough permissions", re.IGNORECASE)


# Not an authorization failure: the NamespaceLifecycle admission plugin answers 403 to
# writes into a namespace being deleted (another test's, seen by a cluster-wide operator).
_TERMINATING = "because it is being terminated"


def denials(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if _DENIED.search(line) and _TERMINATING not in line]


Permission = tuple[str, str, str]
"""(API group, resource[/subresource], verb) as RBAC sees a request."""


def requests_by(cluster: Cluster, user: str) -> dict[Permission, set[int]]:
    """Every request ``user`` made, from the API server's audit log, with its status codes."""
    out: dict[Permission, set[int]] = {}
    with cluster.audit_log.open(encoding="utf-8") as f:
        for line in f:
            if user not in line:  # cheap filter before parsing
                continue
            event = json.loads(line)
            ref = event.get("objectRef")
            if event["user"]["username"] != user or ref is None:
                continue
            resource = ref["resource"] + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            status = event.get("responseStatus", {})
            if _TERMINATING in status.get("message", ""):
                continue  # authorized; refused by admission (see _TERMINATING)
            key = (ref.get("apiGroup", ""), resource, event["verb"])
            out.setdefault(key, set()).add(int(status.get("code", 0)))
    return out


def granted(release: Release) -> set[Permission]:
    return {
        (group, resource, verb)
        for role in release.find("ClusterRole") + release.find("Role")
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


ELECTION_FLAGS = ("--leader-election", "--no-leader-election", "--lease-duration",
                  "--renew-deadline", "--retry-period")  # fmt: skip


def run_as_chart(
    cluster: Cluster, release: Release, tmp_path: Path, *, name: str = "op"
) -> OperatorProcess:
    """The operator with the chart's identity and the chart's flags."""
    token = cluster.token_for(release.namespace, release.service_account)
    jira_secret = release.arg("jira-secret")
    jira_url = release.arg("jira-url")
    proc = OperatorProcess(
        kubeconfig=cluster.kubeconfig_for_token(token),
        log_dir=tmp_path / name,
        namespaces=release.arg("namespace"),
        jira_url=jira_url[0] if jira_url else None,
        jira_secret=jira_secret[0] if jira_secret else None,
        extra_env={"SELFHEAL_NAMESPACE": release.namespace},
        # The chart's Lease (its name is what the Role grants get/update on) and timings.
        extra_args=[a for a in release.operator_args if a.startswith(ELECTION_FLAGS)],
    )
    proc.start()
    return proc


def _as_token(
    cluster: Cluster, token: str, method: str, path: str, body: object = None
) -> tuple[int, dict[str, Any]]:
    """One request with ``token`` (not admin): the status and the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(cluster.server + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/merge-patch+json")
    # Trust the CA but present no client certificate: cluster.ssl_context() presents the
    # admin's, and the API server would authenticate that instead of the token.
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


async def _deploy(kube: k.Kube, ns: str, name: str, image: str) -> None:
    await kube.create(k.apps(ns, "deployments"), deployment(name, image))
    await eventually(lambda: available(kube, ns, name), timeout=60, what=f"{name} available")


async def _record(kube: k.Kube, ns: str, policy_name: str, phase: str) -> dict[str, Any] | None:
    for rec in await remediations(kube, ns):
        st = rec.get("status", {})
        if rec["spec"].get("policy") == policy_name and st.get("phase") == phase:
            return rec
    return None


async def test_chart_rbac_carries_a_rollback_and_an_escalation_without_a_403(
    kube: k.Kube,
    namespace: str,
    cluster: Cluster,
    crds: Any,
    helm_release: InstallRelease,
    jira_server: JiraServer,
    tmp_path: Path,
) -> None:
    ns = namespace
    release = helm_release(
        values={
            # The session's CRDs are already installed (by the `crds` fixture, not Helm).
            "crds": {"install": False},
            # The chart creates the credentials Secret and the Role that reads it by name.
            "jira": {"url": jira_server.url, "username": JIRA_USER, "token": JIRA_PASSWORD},
        }
    )
    (secret,) = release.find("Secret")
    assert release.arg("jira-secret") == [f"{release.namespace}/{secret['metadata']['name']}"]
    assert release.arg("namespace") == []  # cluster-wide by default

    await _deploy(kube, ns, "shop", "registry.local/shop:v1")
    await kube.create(k.apps(ns, "deployments"), deployment("cart", "registry.local/cart:v1-crash"))
    for name, spec in (("shop", ROLLBACK_POLICY), ("cart", ESCALATE_POLICY)):
        await kube.create(
            k.group(API_VERSION, ns, "healingpolicies"),
            policy(name, selector={"app": name}, spec=spec),
        )
    op = run_as_chart(cluster, release, tmp_path)
    try:
        await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")
        resolved = await eventually(
            lambda: _record(kube, ns, "shop", "Resolved"), timeout=120, what="shop Resolved"
        )

        async def ticketed() -> dict[str, Any] | None:
            rec = await _record(kube, ns, "cart", "Escalated")
            state = rec["status"].get("ticket", {}).get("state") if rec else None
            return rec if state in ("Filed", "Commented") else None

        escalated = await eventually(ticketed, timeout=150, what="cart escalated with a ticket")
    finally:
        op.stop()

    # The rollback landed and was verified.
    (step,) = resolved["status"]["steps"]
    assert (step["action"], step["result"]) == ("rollback", "Succeeded")
    shop = await kube.get(k.apps(ns, "deployments", "shop"))
    assert image_of(shop) == "registry.local/shop:v1"
    # Restart and scale both ran (patch on the Deployment and on its scale subresource).
    steps = escalated["status"]["steps"]
    assert [(s["action"], s["result"]) for s in steps] == [
        ("restart", "Succeeded"),
        ("scale", "Succeeded"),
    ]
    assert (await kube.get(k.apps(ns, "deployments", "cart")))["spec"]["replicas"] == 3
    # The ticket was filed with the chart's credentials and carries the evidence.
    # (Only this namespace's: a cluster-wide operator may also see other tests' leftovers.)
    issues = [i for i in jira_server.issues() if ns in json.dumps(i["fields"])]
    assert [i["key"] for i in issues] == [escalated["status"]["ticket"]["key"]]
    # The crashed container's log reached the ticket: pods/log was readable.
    attached = b"".join(issues[0]["attachments"].values())
    assert b"connection refused" in attached, sorted(issues[0]["attachments"])
    assert denials(op.log) == [], "the chart's RBAC denied the operator something"

    # The API server's own record: nothing was refused, and every permission was used
    # except those only a path this scenario does not take needs.
    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    made = requests_by(cluster, user)
    refused = {p: codes for p, codes in made.items() if 403 in codes}
    assert refused == {}, "the API server refused the chart's identity"
    not_taken = {
        # An HPA targets the Deployment: scale raises its minReplicas (tests/integration/
        # test_actions.py covers that path); get re-reads it after a conflict.
        ("autoscaling", "horizontalpodautoscalers", "get"),
        ("autoscaling", "horizontalpodautoscalers", "patch"),
        # The driver re-reads a Remediation only when it resumes after a restart or a
        # conflict (tests/integration/test_loop.py kills and restarts the operator).
        ("selfheal.dev", "remediations", "get"),
        # Pruning past the retention (test_metric_loop.py prunes with a short one).
        ("selfheal.dev", "remediations", "delete"),
        # Confirming a policy is gone before closing its incidents (test_faults.py).
        ("selfheal.dev", "healingpolicies", "get"),
        # Only for a pod that references a ConfigMap, and a hostname in the evidence
        # that names a Service (tests/integration/test_evidence.py).
        ("", "configmaps", "get"),
        ("discovery.k8s.io", "endpointslices", "list"),
        # StatefulSets and DaemonSets are only watched here; their rollback, restart and
        # scale (and the pod deletes of an OnDelete or stuck rollout) run with the same
        # rules in tests/integration/test_statefulsets.py and test_daemonsets.py.
        ("apps", "statefulsets", "get"),
        ("apps", "statefulsets", "patch"),
        ("apps", "statefulsets/scale", "get"),
        ("apps", "statefulsets/scale", "patch"),
        ("apps", "daemonsets", "get"),
        ("apps", "daemonsets", "patch"),
        ("", "pods", "delete"),
    }
    unused = granted(release) - set(made) - not_taken
    assert unused == set(), f"granted but never needed: {sorted(unused)}"


async def test_namespaced_mode_heals_its_namespace_and_is_refused_elsewhere(
    kube: k.Kube,
    namespace: str,
    cluster: Cluster,
    crds: Any,
    helm_release: InstallRelease,
    tmp_path: Path,
) -> None:
    ns_a = namespace
    ns_b = f"{ns_a[:50]}-other"
    cluster.api(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_b}},
    )
    try:
        release = helm_release(
            values={"crds": {"install": False}, "rbac": {"namespaced": True},
                    "watchNamespaces": [ns_a]}
        )  # fmt: skip
        assert release.find("ClusterRole")[0]["metadata"]["name"].endswith("-cluster-reads")
        roles = {r["metadata"]["name"]: r["metadata"]["namespace"] for r in release.find("Role")}
        # One Role per watched namespace, and the Lease's in the release namespace.
        assert roles == {f"{release.name}-selfheal": ns_a,
                         f"{release.name}-selfheal-leader-election": release.namespace}  # fmt: skip
        assert release.arg("namespace") == [ns_a]

        await _deploy(kube, ns_a, "shop", "registry.local/shop:v1")
        await _deploy(kube, ns_b, "shop", "registry.local/shop:v1")
        for ns in (ns_a, ns_b):
            await kube.create(
                k.group(API_VERSION, ns, "healingpolicies"),
                policy("shop", selector={"app": "shop"}, spec=ROLLBACK_POLICY),
            )
        op = run_as_chart(cluster, release, tmp_path)
        try:
            # The same bad release in both: only the watched namespace is healed.
            for ns in (ns_a, ns_b):
                await set_image(kube, ns, "shop", "registry.local/shop:v2-crash")
            await eventually(
                lambda: _record(kube, ns_a, "shop", "Resolved"), timeout=120, what="Resolved"
            )
        finally:
            op.stop()
        shop_a = await kube.get(k.apps(ns_a, "deployments", "shop"))
        assert image_of(shop_a) == "registry.local/shop:v1"
        assert denials(op.log) == [], (
            "namespaced RBAC denied the operator something in its namespace"
        )

        user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
        refused = {p: c for p, c in requests_by(cluster, user).items() if 403 in c}
        assert refused == {}, "the API server refused the operator in namespaced mode"

        token = cluster.token_for(release.namespace, release.service_account)
        own = k.apps(ns_a, "deployments", "shop")
        other = k.apps(ns_b, "deployments", "shop")
        # Control: the token works where it was granted ...
        assert _as_token(cluster, token, "GET", own)[0] == 200
        # ... and the real authorizer refuses it anywhere else, for reads and writes.
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}}}
        for method, path, body in (
            ("GET", other, None),
            ("PATCH", other, patch),
            ("GET", k.apps(ns_b, "deployments"), None),
            ("GET", "/apis/apps/v1/deployments", None),
            ("GET", k.group(API_VERSION, ns_b, "remediations"), None),
        ):
            status, answer = _as_token(cluster, token, method, path, body)
            assert status == 403, f"{method} {path}: {status} {answer}"
            assert answer.get("reason") == "Forbidden", answer
        # kubectl agrees (SelfSubjectAccessReview with the token's kubeconfig).
        as_sa = ["--kubeconfig", str(cluster.kubeconfig_for_token(token))]
        for verb, where, expect in (("patch", ns_a, "yes"), ("patch", ns_b, "no"),
                                    ("get", ns_b, "no")):  # fmt: skip
            proc = await asyncio.to_thread(
                subprocess.run,
                [str(BIN_DIR / "kubectl"), *as_sa, "auth", "can-i", verb, "deployments.apps",
                 "-n", where],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert proc.stdout.strip() == expect, (verb, where, proc.stdout, proc.stderr)
        # Nothing was done in the namespace the operator may not see.
        assert await remediations(kube, ns_b) == []
        assert image_of(await kube.get(other)) == "registry.local/shop:v2-crash"
    finally:
        cluster.api("DELETE", f"/api/v1/namespaces/{ns_b}")


async def test_a_permission_the_chart_withholds_shows_up_as_a_denial(
    kube: k.Kube,
    namespace: str,
    cluster: Cluster,
    crds: Any,
    helm_release: InstallRelease,
    tmp_path: Path,
) -> None:
    # The no-403 checks above are only worth something if a missing permission shows in
    # the log: withhold the rollback's patch, then make a rollback necessary.
    release = helm_release(
        values={"crds": {"install": False}, "watchNamespaces": [namespace],
                "rbac": {"namespaced": True, "clusterScopedReads": False,
                         "actions": {"rollback": False, "restart": False}}}
    )  # fmt: skip
    # Namespaced mode needs no cluster-scoped read at all (kopf's scans are off).
    assert release.find("ClusterRole") == []
    await _deploy(kube, namespace, "shop", "registry.local/shop:v1")
    await kube.create(
        k.group(API_VERSION, namespace, "healingpolicies"),
        policy("shop", selector={"app": "shop"}, spec=ROLLBACK_POLICY),
    )
    op = run_as_chart(cluster, release, tmp_path)
    try:
        await set_image(kube, namespace, "shop", "registry.local/shop:v2-crash")
        found = await eventually(
            lambda: _async(denials(op.log)), timeout=60, what="a permission denial in the log"
        )
    finally:
        op.stop()
    assert any("deployments" in line.lower() for line in found), found


async def _async(value: list[str]) -> list[str]:
    return value
