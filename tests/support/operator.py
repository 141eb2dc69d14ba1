"""Run the operator as a real separate process, as it runs in a cluster.

``OperatorProcess`` starts ``python -m selfheal`` with a kubeconfig for a given
identity (a ServiceAccount token, so the API server's audit log and RBAC see the
operator as its own user), waits for ``/readyz``, and can be stopped gracefully or
killed (SIGKILL) to test resumption.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import Cluster, free_port
from tests.support.cluster import _die_with_parent as die_with_parent

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_NAMESPACE = "selfheal-system"


PLAIN_INSTALL = ROOT / "manifests" / "selfheal.yaml"
TEST_ACCOUNT = "selfheal-test"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _post(cluster: Cluster, path: str, body: Mapping[str, Any]) -> None:
    try:
        cluster.api("POST", path, dict(body))
    except Exception as e:  # already exists
        if "409" not in str(e) and "AlreadyExists" not in str(e):
            raise


def _bind(kind: str, role: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"{name}-{role}"}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": f"{kind}Binding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NAMESPACE}],
    }


def ensure_operator_identity(
    cluster: Cluster, *, name: str = TEST_ACCOUNT, cluster_role: str | None = None
) -> Path:
    """A ServiceAccount in selfheal-system with the chart's least-privilege RBAC (the
    ClusterRole and Roles of manifests/selfheal.yaml, rendered from the chart), or bound
    to ``cluster_role`` when given; its kubeconfig. A permission the chart lacks shows
    as a 403 in the test."""
    _post(
        cluster,
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
    )
    _post(
        cluster,
        f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    if cluster_role is not None:
        _post(cluster, f"{RBAC}/clusterrolebindings", _bind("ClusterRole", cluster_role, name))
    else:
        for doc in yaml.safe_load_all(PLAIN_INSTALL.read_text()):
            if not doc:
                continue
            meta = doc.get("metadata") or {}
            if doc.get("kind") == "ClusterRole":
                _post(cluster, f"{RBAC}/clusterroles", doc)
                _post(
                    cluster,
                    f"{RBAC}/clusterrolebindings",
                    _bind("ClusterRole", meta["name"], name),
                )
            elif doc.get("kind") == "Role":
                ns = meta.get("namespace") or SYSTEM_NAMESPACE
                _post(cluster, f"{RBAC}/namespaces/{ns}/roles", doc)
                _post(
                    cluster,
                    f"{RBAC}/namespaces/{ns}/rolebindings",
                    _bind("Role", meta["name"], name, ns),
                )
    token = cluster.token_for(SYSTEM_NAMESPACE, name, seconds=24 * 3600)
    return cluster.kubeconfig_for_token(token)


def grant_leases(cluster: Cluster, names: Sequence[str], *, account: str = TEST_ACCOUNT) -> None:
    """Let ``account`` campaign for these Leases in selfheal-system: the rules of the
    chart's leader election Role (create; get and update by name), for the Lease names
    the plain install (one shard) does not grant, e.g. each shard's."""
    role = f"{account}-leases"
    _post(
        cluster,
        f"{RBAC}/namespaces/{SYSTEM_NAMESPACE}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "resourceNames": list(names),
                    "verbs": ["get", "update"],
                },
            ],
        },
    )
    _post(
        cluster,
        f"{RBAC}/namespaces/{SYSTEM_NAMESPACE}/rolebindings",
        _bind("Role", role, account, SYSTEM_NAMESPACE),
    )


class OperatorProcess:
    def __init__(
        self,
        *,
        kubeconfig: Path,
        log_dir: Path,
        namespaces: Sequence[str] = (),
        prometheus_url: str | None = None,
        jira_url: str | None = None,
        jira_secret: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.namespaces = tuple(namespaces)
        self.prometheus_url = prometheus_url
        self.jira_url = jira_url
        self.jira_secret = jira_secret
        self.extra_env = dict(extra_env or {})
        self.extra_args = tuple(extra_args)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self, *, wait: float = 60.0) -> None:
        self.starts += 1
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "selfheal",
            "--kubeconfig",
            str(self.kubeconfig),
            "--metrics-port",
            str(self.port),
            "--log-level",
            "DEBUG",
        ]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        if self.prometheus_url:
            argv += ["--prometheus-url", self.prometheus_url]
        if self.jira_url:
            argv += ["--jira-url", self.jira_url]
        if self.jira_secret:
            argv += ["--jira-secret", self.jira_secret]
        argv += self.extra_args
        env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), **self.extra_env}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=die_with_parent,  # a killed test run leaves no operator behind
        )
        out.close()
        self.wait_ready(timeout=wait)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not healthy within {timeout}s:\n{self.tail()}")

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
                continue
            if head == name or head.startswith(name + "{"):
                total += float(value)
        return total

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a node dies or the OOM killer strikes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
