"""The benchmark's cluster contents, written straight to the API server.

No kubelet and no deployment/replicaset controllers run (the cluster starts with
``--controllers=*,-deployment,-replicaset,-nodelifecycle,-podgc``): this module writes
what they would. Each Deployment has two ReplicaSets it controls, revision 1 (the
healthy template, scaled to 0) and revision 2 (the running one, ``pods`` Pods bound to
a fake Node, Ready). A crash loop is two status writes to one Pod of revision 2, the
second of which reaches the policy's ``restarts`` threshold; the operator's rollback
(to revision 1) is a JSON patch on the Deployment, which the API server accepts and no
controller acts on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp

NODE = "bench-node"
NODE_IP = "10.200.0.1"
COVERED = "bench.selfheal.dev/covered"
CONTROLLERS = ("*", "-deployment", "-replicaset", "-nodelifecycle", "-podgc")
"""kube-controller-manager controllers for the bench: none that fights hand-made pods."""
THRESHOLD = 2
"""The policy's ``crashLoop.restarts``."""

Body = dict[str, Any]


def ts(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def namespace_of(index: int, namespaces: int) -> str:
    return f"bench-{index % namespaces}"


def deployment_name(index: int) -> str:
    return f"d-{index:05d}"


def template_hash(name: str, revision: int) -> str:
    # Deterministic, label-safe, and different per (deployment, revision).
    return hashlib.sha256(f"{name}/{revision}".encode()).hexdigest()[:10]


def image(name: str, revision: int) -> str:
    return f"registry.local/{name}:v{revision}"


def template(name: str, revision: int, *, with_hash: bool) -> Body:
    labels = {"app": name}
    if with_hash:
        labels["pod-template-hash"] = template_hash(name, revision)
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [{"name": "app", "image": image(name, revision)}],
            "terminationGracePeriodSeconds": 5,
        },
    }


def deployment(name: str, *, pods: int, covered: bool) -> Body:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {"app": name, COVERED: "yes" if covered else "no"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {
            "replicas": pods,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, 2, with_hash=False),
        },
    }


def deployment_status(pods: int) -> Body:
    return {
        "status": {
            "observedGeneration": 1,
            "replicas": pods,
            "updatedReplicas": pods,
            "readyReplicas": pods,
            "availableReplicas": pods,
        }
    }


def owner(kind: str, api_version: str, name: str, uid: str) -> Body:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def replicaset_name(name: str, revision: int) -> str:
    return f"{name}-{template_hash(name, revision)}"


def replicaset(name: str, revision: int, *, deployment_uid: str, replicas: int) -> Body:
    h = template_hash(name, revision)
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": replicaset_name(name, revision),
            "labels": {"app": name, "pod-template-hash": h},
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                "deployment.kubernetes.io/desired-replicas": str(replicas),
                "deployment.kubernetes.io/max-replicas": str(replicas + 1),
            },
            "ownerReferences": [owner("Deployment", "apps/v1", name, deployment_uid)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name, "pod-template-hash": h}},
            "template": template(name, revision, with_hash=True),
        },
    }


def pod_name(name: str, i: int) -> str:
    return f"{replicaset_name(name, 2)}-{i:03d}"


def pod(name: str, i: int, *, rs_uid: str) -> Body:
    t = template(name, 2, with_hash=True)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, i),
            "labels": t["metadata"]["labels"],
            "ownerReferences": [owner("ReplicaSet", "apps/v1", replicaset_name(name, 2), rs_uid)],
        },
        "spec": {**t["spec"], "nodeName": NODE, "automountServiceAccountToken": False},
    }


def pod_status(
    name: str, i: int, *, started: float, now: float, restarts: int = 0, generation: int = 0
) -> Body:
    """A kubelet's status for pod ``i``: Ready and running, or crash-looping (restarts > 0).

    ``generation`` moves the running container's ``startedAt`` so that a rewrite (the
    event storm) is a real change the API server sends to watchers.
    """
    ip = f"10.{(i >> 8) % 250 + 1}.{i % 256}.{hash(name) % 250 + 1}"
    img = image(name, 2)
    container: Body = {
        "name": "app",
        "image": img,
        "imageID": f"{img}@sha256:{hashlib.sha256(img.encode()).hexdigest()}",
        "containerID": f"containerd://{hashlib.sha256(f'{name}{i}{restarts}'.encode()).hexdigest()}",
        "restartCount": restarts,
        "lastState": {},
    }
    if restarts == 0:
        container.update(
            ready=True, started=True, state={"running": {"startedAt": ts(started + generation)}}
        )
        ready = True
    else:
        container.update(
            ready=False,
            started=False,
            state={
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting container=app pod={pod_name(name, i)}",
                }
            },
            lastState={
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "startedAt": ts(now - 2),
                    "finishedAt": ts(now - 1),
                    "containerID": container["containerID"],
                }
            },
        )
        ready = False

    def cond(kind: str, ok: bool) -> Body:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "lastTransitionTime": ts(started),
        }

    return {
        "status": {
            "phase": "Running",
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", True),
                cond("Ready", ready),
                cond("ContainersReady", ready),
                cond("PodScheduled", True),
            ],
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": ts(started),
            "containerStatuses": [container],
        }
    }


def policy(namespace: str) -> Body:
    """One HealingPolicy per namespace: every covered Deployment, roll back on a crash loop.

    Guardrails are opened wide: the benchmark runs many incidents in a row, and each must
    reach the rollback (guardrails have their own tests).
    """
    return {
        "apiVersion": "selfheal.dev/v1alpha1",
        "kind": "HealingPolicy",
        "metadata": {"name": "bench", "namespace": namespace},
        "spec": {
            "target": {"kind": "Deployment", "selector": {"matchLabels": {COVERED: "yes"}}},
            "triggers": [
                {"name": "crashloop", "crashLoop": {"restarts": THRESHOLD, "within": "10m"}}
            ],
            "remediation": {
                "steps": [{"rollback": {"to": "LastHealthy"}}],
                "verify": {"for": "30m"},
            },
            "guardrails": {
                "cooldown": "1s",
                "maxRemediations": 1000,
                "window": "1h",
                "maxConcurrent": 100,
                "maxConcurrentPerNamespace": 100,
                "storm": {"maxUnhealthy": 1000, "within": "1m"},
            },
        },
    }


def floor_twin(namespace: str) -> Body:
    """The Deployment the floor client patches (not covered: the operator ignores it)."""
    body = deployment("floor-twin", pods=0, covered=False)
    body["metadata"]["namespace"] = namespace
    return body


# --- the client ----------------------------------------------------------------------------


class ApiError(RuntimeError):
    pass


@dataclasses.dataclass
class Api:
    """Admin requests over one aiohttp session, at most ``concurrency`` in flight."""

    server: str
    ssl_context: ssl.SSLContext
    concurrency: int = 32
    _session: aiohttp.ClientSession | None = None
    _sem: asyncio.Semaphore | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context, limit=self.concurrency),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self._sem = asyncio.Semaphore(self.concurrency)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        ok: Iterable[int] = (200, 201),
    ) -> Body:
        if self._session is None or self._sem is None:
            raise RuntimeError("Api: use `async with Api(...)` before calling it")
        data = None if body is None else json.dumps(body)
        for attempt in range(8):
            async with (
                self._sem,
                self._session.request(
                    method,
                    self.server + path,
                    data=data,
                    headers={"Content-Type": content_type, "Accept": "application/json"},
                ) as r,
            ):
                text = await r.text()
                if r.status in set(ok):
                    return dict(json.loads(text)) if text else {}
                # 429 (priority and fairness) and 5xx under load: back off and retry.
                if r.status == 429 or r.status >= 500:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                raise ApiError(f"{method} {path}: HTTP {r.status}: {text[:500]}")
        raise ApiError(f"{method} {path}: still failing after 8 attempts")

    async def merge(self, path: str, body: object) -> Body:
        return await self.call("PATCH", path, body, content_type="application/merge-patch+json")


async def gather_bounded(jobs: Iterable[Callable[[], Awaitable[Body]]]) -> list[Body]:
    """Run every job (the Api bounds the concurrency); fail on the first error."""
    return list(await asyncio.gather(*(job() for job in jobs)))


def apps(namespace: str, plural: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def core(namespace: str, plural: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


@dataclasses.dataclass
class World:
    """What has been created so far; grows size by size."""

    namespaces: int
    pods_per_deployment: int
    deployments: int = 0
    started: float = dataclasses.field(default_factory=time.time)
    rs2_uid: dict[str, str] = dataclasses.field(default_factory=dict)
    storms: int = 0

    @property
    def pods(self) -> int:
        return self.deployments * self.pods_per_deployment

    def namespace(self, index: int) -> str:
        return namespace_of(index, self.namespaces)

    def pods_in(self, namespaces: Iterable[str]) -> int:
        """Pods of the Deployments created so far in these namespaces."""
        wanted = set(namespaces)
        return self.pods_per_deployment * sum(
            1 for i in range(self.deployments) if self.namespace(i) in wanted
        )

    async def setup(self, api: Api) -> None:
        """The fake Node, the namespaces, their default ServiceAccounts, policies, twins."""
        await api.call(
            "POST",
            "/api/v1/nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}},
        )
        for n in range(self.namespaces):
            ns = f"bench-{n}"
            await api.call(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
        for n in range(self.namespaces):
            ns = f"bench-{n}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    await api.call("GET", core(ns, "serviceaccounts", "default"))
                    break
                except ApiError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            await api.call(
                "POST", f"/apis/selfheal.dev/v1alpha1/namespaces/{ns}/healingpolicies", policy(ns)
            )
            await api.call("POST", apps(ns, "deployments"), floor_twin(ns))

    async def grow(self, api: Api, *, to_deployments: int) -> None:
        """Create Deployments ``self.deployments .. to_deployments - 1`` with their
        ReplicaSets and Ready Pods (see :func:`is_covered`)."""
        new = range(self.deployments, to_deployments)
        p = self.pods_per_deployment

        async def one(i: int) -> None:
            name, ns = deployment_name(i), self.namespace(i)
            d = await api.call(
                "POST",
                apps(ns, "deployments"),
                deployment(name, pods=p, covered=is_covered(i)),
            )
            uid = d["metadata"]["uid"]
            await api.merge(apps(ns, "deployments", name) + "/status", deployment_status(p))
            await api.call(
                "POST", apps(ns, "replicasets"), replicaset(name, 1, deployment_uid=uid, replicas=0)
            )
            rs2 = await api.call(
                "POST", apps(ns, "replicasets"), replicaset(name, 2, deployment_uid=uid, replicas=p)
            )
            self.rs2_uid[name] = rs2["metadata"]["uid"]

        await asyncio.gather(*(one(i) for i in new))

        async def make_pod(i: int, j: int) -> None:
            name, ns = deployment_name(i), self.namespace(i)
            await api.call("POST", core(ns, "pods"), pod(name, j, rs_uid=self.rs2_uid[name]))
            await api.merge(
                core(ns, "pods", pod_name(name, j)) + "/status",
                pod_status(name, j, started=self.started, now=time.time()),
            )

        await asyncio.gather(*(make_pod(i, j) for i in new for j in range(p)))
        self.deployments = to_deployments

    def all_pods(self) -> Iterable[tuple[int, int]]:
        for i in range(self.deployments):
            for j in range(self.pods_per_deployment):
                yield i, j

    async def storm(self, api: Api) -> int:
        """Rewrite every Pod's status once (a new container start time); returns the count."""
        self.storms += 1
        gen = self.storms
        victims = self.victims_so_far

        async def one(i: int, j: int) -> None:
            name, ns = deployment_name(i), self.namespace(i)
            await api.merge(
                core(ns, "pods", pod_name(name, j)) + "/status",
                pod_status(
                    name,
                    j,
                    started=self.started,
                    now=time.time(),
                    restarts=THRESHOLD if (i, j) in victims else 0,
                    generation=gen,
                ),
            )

        pods = list(self.all_pods())
        await asyncio.gather(*(one(i, j) for i, j in pods))
        return len(pods)

    victims_so_far: set[tuple[int, int]] = dataclasses.field(default_factory=set)

    async def retire(self, api: Api) -> int:
        """End the incidents of the sizes so far, as their rollbacks would have: every
        victim Pod healthy again and every Remediation deleted, so the next size starts
        from the same quiet state (its idle minute is not the previous size's incidents
        going on). Returns the Remediations deleted."""
        self.storms += 1
        gen = self.storms
        await asyncio.gather(
            *(
                api.merge(
                    core(self.namespace(i), "pods", pod_name(deployment_name(i), j)) + "/status",
                    pod_status(
                        deployment_name(i),
                        j,
                        started=self.started,
                        now=time.time(),
                        generation=gen,
                    ),
                )
                for i, j in self.victims_so_far
            )
        )
        self.victims_so_far.clear()
        deleted = 0
        for n in range(self.namespaces):
            ns = namespace_of(n, self.namespaces)
            path = f"/apis/selfheal.dev/v1alpha1/namespaces/{ns}/remediations"
            listing = await api.call("GET", path)
            deleted += len(listing.get("items") or ())
            await api.call("DELETE", path)
        return deleted

    async def crash(self, api: Api, i: int, *, restarts: int) -> Body:
        """One status write: pod 0 of Deployment ``i`` crash-loops with ``restarts``."""
        name, ns = deployment_name(i), self.namespace(i)
        self.victims_so_far.add((i, 0))
        return await api.merge(
            core(ns, "pods", pod_name(name, 0)) + "/status",
            pod_status(name, 0, started=self.started, now=time.time(), restarts=restarts),
        )


def is_covered(i: int) -> bool:
    """9 in 10 Deployments are covered by their namespace's policy; the uncovered ones
    (``d-..9x``) are spread over every namespace."""
    return (i // 10) % 10 != 9


def victims(first: int, last: int, count: int, *, namespaces: int = 10) -> list[int]:
    """``count`` covered Deployment indexes in ``[first, last)``, spread evenly over the
    namespaces (the operator decides one incident at a time per namespace) and, within
    each, over the range; in round-robin order of namespaces."""
    pool = [i for i in range(first, last) if is_covered(i)]
    if len(pool) < count:
        raise ValueError(f"victims: only {len(pool)} covered Deployments in [{first}, {last})")
    buckets: dict[int, list[int]] = {}
    for i in pool:
        buckets.setdefault(i % namespaces, []).append(i)
    keys = sorted(buckets)
    picks: list[list[int]] = []
    for n, key in enumerate(keys):
        lst = buckets[key]
        want = min(len(lst), count // len(keys) + (1 if n < count % len(keys) else 0))
        picks.append([lst[int(j * len(lst) / want)] for j in range(want)] if want else [])
    out = [p[j] for j in range(max(map(len, picks))) for p in picks if j < len(p)]
    if len(out) < count:  # a namespace ran short: fill from what is left, in order
        out += [i for i in pool if i not in set(out)][: count - len(out)]
    return out[:count]


def crossing(status: Mapping[str, Any]) -> bool:
    """Whether a pod status reaches the threshold: the floor client's whole detector."""
    total = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ())
    return total >= THRESHOLD
