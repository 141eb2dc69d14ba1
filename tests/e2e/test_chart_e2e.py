"""The chart as shipped, on the real API server: what `helm install` and `helm uninstall` do.

tests/e2e/test_rbac_e2e.py proves the permissions with a running operator; this one
proves the install itself: every object of the default install is accepted by the API
server, the CRDs from the chart's templates are served, NOTES.txt tells how to check
it, and an uninstall keeps the CRDs (and so every policy and record) in place.
"""

from __future__ import annotations

import time

import pytest

from tests.support.cluster import Cluster, ClusterError
from tests.support.crds import CRD_API
from tests.support.fixtures.helm import Helm, InstallRelease

pytestmark = pytest.mark.e2e

CRDS = ("healingpolicies.selfheal.dev", "remediations.selfheal.dev")


def test_default_install_serves_the_crds_and_uninstall_keeps_them(
    cluster: Cluster, helm: Helm, helm_release: InstallRelease
) -> None:
    # --take-ownership: the session's CRDs may already exist (the `crds` fixture applies
    # them); a user moving from the plain manifests to the chart does the same.
    release = helm_release(values={}, flags=["--take-ownership"])
    kinds = sorted({o["kind"] for o in release.manifest})
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment",
        "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount",
    ]  # fmt: skip
    for name in CRDS:
        crd = cluster.api("GET", f"{CRD_API}/{name}")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", conditions
    # `kubectl get selfheal` (the CRDs' category) answers once kubectl's discovery
    # cache has caught up with the new CRDs (bounded: 15 tries, 1 s apart).
    for _ in range(15):
        got = cluster.kubectl("get", "selfheal", "--all-namespaces", check=False)
        if got.returncode == 0:
            break
        time.sleep(1)
    assert got.returncode == 0, got.stderr
    # NOTES.txt tells the user how to check it works.
    for hint in ("kubectl get selfheal --all-namespaces", "/readyz", "/metrics", "rollout status"):
        assert hint in release.notes, f"NOTES.txt lacks {hint!r}:\n{release.notes}"
    dep = cluster.api(
        "GET", f"/apis/apps/v1/namespaces/{release.namespace}/deployments/{release.name}-selfheal"
    )
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True  # not dropped by the API server
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    kube = ["--kubeconfig", str(cluster.kubeconfig)]
    helm.run("uninstall", release.name, "--namespace", release.namespace, *kube)
    for name in CRDS:  # kept: deleting a CRD would delete every policy and record
        assert cluster.api("GET", f"{CRD_API}/{name}")["metadata"]["name"] == name
    with pytest.raises(ClusterError, match="HTTP 404"):
        cluster.api(
            "GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{release.name}-selfheal"
        )
