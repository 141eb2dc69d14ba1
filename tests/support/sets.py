"""Helpers for tests that drive StatefulSets and DaemonSets on the real API server, with
the real controller-manager's statefulset and daemonset controllers and the kubelet
stand-in running their pods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfheal.clients import kube as k
from selfheal.policy import ownership
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.workloads import policy, remediations

PLURAL = {ownership.STATEFULSET: "statefulsets", ownership.DAEMONSET: "daemonsets"}


def _template(name: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "containers": [{"name": "app", "image": image}],
            # The stand-in confirms termination at once; no grace to wait out.
            "terminationGracePeriodSeconds": 0,
        },
    }


def statefulset(
    name: str,
    image: str,
    *,
    replicas: int = 2,
    strategy: Mapping[str, Any] | None = None,
    parallel: bool = False,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "revisionHistoryLimit": 10,
            "podManagementPolicy": "Parallel" if parallel else "OrderedReady",
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": dict(strategy or {"type": "RollingUpdate"}),
            "template": _template(name, image),
        },
    }


def daemonset(
    name: str, image: str, *, strategy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": dict(
                strategy or {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
            ),
            "template": _template(name, image),
        },
    }


def set_policy(
    kind: str, name: str, *, spec: Mapping[str, Any], selector: Mapping[str, str] | None = None
) -> dict[str, Any]:
    body = policy(name, selector=selector or {"app": name}, spec=spec)
    body["spec"]["target"]["kind"] = kind
    return body


async def get(kube: k.Kube, kind: str, ns: str, name: str) -> dict[str, Any]:
    return await kube.get(k.apps(ns, PLURAL[kind], name))


async def set_image(kube: k.Kube, kind: str, ns: str, name: str, image: str) -> None:
    await kube.patch(
        k.apps(ns, PLURAL[kind], name),
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}],
        content_type=k.JSON_PATCH,
    )


def image_of(obj: Mapping[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def pods(kube: k.Kube, ns: str, name: str) -> list[dict[str, Any]]:
    got = await kube.get(k.core(ns, "pods"), labelSelector=f"app={name}")
    return [p for p in got.get("items", []) if not p["metadata"].get("deletionTimestamp")]


def pod_ready(p: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (p.get("status") or {}).get("conditions") or ()
    )


def pod_hash(name: str, p: Mapping[str, Any]) -> str:
    return ownership.revision_hash(name, p["metadata"]["labels"].get(ownership.REVISION_LABEL, ""))


async def revision_hashes(kube: k.Kube, ns: str, name: str) -> dict[str, str]:
    """Image -> revision hash of each ControllerRevision of ``name``."""
    got = await kube.get(k.apps(ns, "controllerrevisions"), labelSelector=f"app={name}")
    out: dict[str, str] = {}
    for cr in got.get("items", []):
        image = cr["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
        out[image] = ownership.revision_hash(name, cr["metadata"]["name"])
    return out


async def settled(
    kube: k.Kube, kind: str, ns: str, name: str, image: str, *, count: int
) -> list[dict[str, Any]] | None:
    """``count`` live pods, every one Ready and made from the revision whose image is
    ``image`` (the template says ``image`` too); else ``None``."""
    obj = await get(kube, kind, ns, name)
    if image_of(obj) != image:
        return None
    hashes = await revision_hashes(kube, ns, name)
    live = await pods(kube, ns, name)
    if len(live) != count or image not in hashes:
        return None
    good = all(pod_ready(p) and pod_hash(name, p) == hashes[image] for p in live)
    return live if good else None


async def resolved(kube: k.Kube, ns: str, count: int) -> list[dict[str, Any]] | None:
    """The Resolved Remediations of ``ns`` once there are ``count`` of them."""
    items = await remediations(kube, ns)
    done = [r for r in items if r.get("status", {}).get("phase") == "Resolved"]
    return done if len(done) >= count else None


async def first_step(kube: k.Kube, ns: str) -> dict[str, Any] | None:
    """The first step of ``ns``'s Remediations once its outcome is stored."""
    steps = [
        s for r in await remediations(kube, ns) for s in (r.get("status") or {}).get("steps") or ()
    ]
    return steps[0] if steps and steps[0].get("result") else None


def releases(kubelet: Kubelet, ns: str, name: str, *tags: str, bad: tuple[str, ...]) -> list[str]:
    """Images ``registry.local/<ns>/<name>:<tag>``; those whose tag is in ``bad`` crash-loop
    (a restart a second) on the kubelet stand-in."""
    images = [f"registry.local/{ns}/{name}:{tag}" for tag in tags]
    for tag, image in zip(tags, images, strict=True):
        if tag in bad:
            kubelet.behave(image, Behaviour(kind="crashloop", restart_every=1.0))
    return images
