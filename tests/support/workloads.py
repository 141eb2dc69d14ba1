"""Helpers for tests that drive Deployments and HealingPolicies on the real API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.cluster import Cluster

T = TypeVar("T")


def deployment(
    name: str, image: str, *, replicas: int = 2, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    labels = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": name}},
            # Fast rollouts: the stand-in reports Ready at once.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def policy(name: str, *, selector: Mapping[str, str], spec: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "HealingPolicy",
        "metadata": {"name": name},
        "spec": {"target": {"kind": "Deployment", "selector": {"matchLabels": dict(selector)}}},
    }
    body["spec"].update(spec)
    return body


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something truthy; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
        except k.KubeError as e:
            if not e.temporary:  # e.g. 429 while a new CRD's storage initialises
                raise
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def set_image(kube: k.Kube, namespace: str, name: str, image: str) -> None:
    await kube.patch(
        k.apps(namespace, "deployments", name),
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}],
        content_type=k.JSON_PATCH,
    )


async def available(kube: k.Kube, namespace: str, name: str) -> dict[str, Any] | None:
    d = await kube.get(k.apps(namespace, "deployments", name))
    st, spec = d.get("status", {}), d["spec"]
    done = (
        st.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and st.get("updatedReplicas", 0) == spec["replicas"]
        and st.get("availableReplicas", 0) == spec["replicas"]
        and st.get("replicas", 0) == spec["replicas"]
    )
    return d if done else None


async def remediations(kube: k.Kube, namespace: str) -> list[dict[str, Any]]:
    out = await kube.get(k.group(API_VERSION, namespace, "remediations"))
    return list(out.get("items", []))


async def first_remediation(
    kube: k.Kube, namespace: str, *, phase: str | None = None
) -> dict[str, Any] | None:
    """The namespace's first Remediation once its status is written (and in `phase`, if given).

    The operator creates a record and writes its status in a second request, so a
    reader can see the record between the two: that is not yet an incident to assert on.
    """
    items = await remediations(kube, namespace)
    if not items or "status" not in items[0]:
        return None
    if phase is not None and items[0]["status"].get("phase") != phase:
        return None
    return items[0]


def image_of(d: Mapping[str, Any]) -> str:
    return str(d["spec"]["template"]["spec"]["containers"][0]["image"])


async def deploy(kube: k.Kube, namespace: str, name: str, image: str, *, replicas: int = 2) -> None:
    """Create a Deployment and wait until it is available."""
    await kube.create(k.apps(namespace, "deployments"), deployment(name, image, replicas=replicas))
    await eventually(lambda: available(kube, namespace, name), timeout=60, what=f"{name} available")


async def jira_secret(kube: k.Kube, namespace: str, *, password: str) -> str:
    """The Secret with the operator's Jira credentials; returns ``namespace/name``."""
    await kube.create(
        k.core(namespace, "secrets"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "jira"},
            "stringData": {"username": "selfheal", "token": password},
        },
    )
    # As the chart does for its Jira Secret: get on that one Secret, by name, for the
    # operator's test identity (it has the chart's RBAC, not cluster-admin).
    await grant_secret(kube, namespace, secret="jira", role="selfheal-jira-secret")
    return f"{namespace}/jira"


async def notify_secret(kube: k.Kube, namespace: str, *, urls: list[str]) -> None:
    """The Secret ``oncall`` (key ``urls``, one apprise URL a line) that a policy's
    ``escalate.notify`` names, and, as a user must, a Role granting the operator's test
    identity get on it by name."""
    await kube.create(
        k.core(namespace, "secrets"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "oncall"},
            "stringData": {"urls": "\n".join(urls) + "\n"},
        },
    )
    await grant_secret(kube, namespace, secret="oncall", role="selfheal-notify-secret")


async def grant_secret(kube: k.Kube, namespace: str, *, secret: str, role: str) -> None:
    """A Role granting the operator's test identity get on one Secret, by name, and its
    RoleBinding: what the chart (or a user) grants for a Secret a policy names."""
    rbac = "rbac.authorization.k8s.io"
    meta = {"name": role, "namespace": namespace}
    await kube.create(
        k.group(f"{rbac}/v1", namespace, "roles"),
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [secret],
                    "verbs": ["get"],
                }
            ],
        },
    )
    await kube.create(
        k.group(f"{rbac}/v1", namespace, "rolebindings"),
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": role},
            "subjects": [
                {"kind": "ServiceAccount", "name": "selfheal-test", "namespace": "selfheal-system"}
            ],
        },
    )


async def blind_client(cluster: Cluster, kube: k.Kube, namespace: str) -> k.Kube:
    """A client as a new ServiceAccount of ``namespace`` that may read nothing (close it)."""
    await kube.create(
        k.core(namespace, "serviceaccounts"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "blind"}},
    )
    token = await asyncio.to_thread(cluster.token_for, namespace, "blind")
    return k.Kube.from_token(host=cluster.server, token=token, ca_file=str(cluster.ca_file))
