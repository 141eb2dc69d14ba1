"""A kubelet stand-in for the local control plane (no container ever runs).

It registers one Node (more on request: ``add_nodes``), binds every unbound Pod
(there is no scheduler): a Pod pinned to a Node by nodeAffinity ``matchFields``
``metadata.name``, as the DaemonSet controller writes it, to that Node when it is
one of the stand-in's, every other Pod to the first Node;
writes Pod status the way a kubelet would, confirms the termination of deleted
Pods, keeps the Node's Lease fresh, and serves container logs over TLS so that
``kubectl logs --previous`` and the ``pods/log`` API work through the real API
server. What a container "does" is chosen by its image:

- explicitly, with ``kubelet.behave(image, Behaviour(...))`` (thread-safe);
- otherwise by the image tag: a tag containing ``oom`` crash-loops OOMKilled
  (exit 137), ``crash`` crash-loops with exit 1, ``badpull`` is stuck in
  ImagePullBackOff, ``configerror`` in CreateContainerConfigError; anything else
  runs and is Ready.

It stays cheap with 10,000 Pods: one watch on all Pods, a status write only when
the desired status differs from the last one written, and crash-loop restarts
driven by one timer over a heap (each loop stops after ``max_restarts``).

``python -m tests.support.kubelet --server URL --pki DIR`` runs it as a process
(``python -m tests.support.cluster up`` does that).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import heapq
import json
import logging
import math
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from tests.support.cluster import Cluster

log = logging.getLogger("selfheal.test.kubelet")

NODE_NAME = "selfheal-node-1"
NODE_IP = "127.0.0.1"
KUBELET_VERSION = "v1.37.2"
LEASE_SECONDS = 40
LEASE_RENEW_EVERY = 10.0
NODE_STATUS_EVERY = 60.0

Kind = Literal["running", "crashloop", "imagepull", "configerror"]
KINDS: tuple[Kind, ...] = ("running", "crashloop", "imagepull", "configerror")

RUNNING_LOGS = "starting server\nlistening on :8080\nready\n"
CRASH_LOGS = """\
starting server
connecting to database at db:5432
Traceback (most recent call last):
  File "/app/main.py", line 42, in <module>
    main()
  File "/app/main.py", line 37, in main
    db = connect(settings.database_url)
  File "/app/db.py", line 12, in connect
    raise ConnectionError("connection refused: db:5432")
ConnectionError: connection refused: db:5432
"""
OOM_LOGS = "starting server\nloading cache\nloaded 1048576 entries\n"

Body = dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Behaviour:
    """What the containers of one image do.

    ``kind``: ``running`` (Running and Ready), ``crashloop`` (CrashLoopBackOff, the
    restart count grows by one every ``restart_every`` seconds up to
    ``max_restarts``), ``imagepull`` (waiting in ``reason``, default
    ImagePullBackOff; ErrImagePull is the other choice) or ``configerror``
    (waiting in CreateContainerConfigError).
    ``exit_code``/``reason``/``message``: the crashed container's
    ``lastState.terminated`` (reason ``Error`` or ``OOMKilled``; an empty message
    falls back to the last line of ``previous_logs``, as
    ``terminationMessagePolicy: FallbackToLogsOnError`` does).
    ``logs``: the current container's log; ``previous_logs``: the crashed one's.
    """

    kind: Kind = "running"
    exit_code: int = 1
    reason: str = ""
    message: str = ""
    restart_every: float = 2.0
    max_restarts: int = 100
    logs: str = RUNNING_LOGS
    previous_logs: str = CRASH_LOGS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Behaviour.kind={self.kind!r}: use one of {', '.join(KINDS)}")
        if self.restart_every < 0.05:
            raise ValueError(
                f"Behaviour.restart_every={self.restart_every}: use at least 0.05 seconds"
            )
        if self.max_restarts < 1:
            raise ValueError(f"Behaviour.max_restarts={self.max_restarts}: use at least 1")

    @property
    def terminated_reason(self) -> str:
        return self.reason or "Error"

    @property
    def termination_message(self) -> str:
        if self.message:
            return self.message
        lines = self.previous_logs.strip().splitlines()
        return lines[-1] if lines else ""

    def waiting(self, image: str) -> tuple[str, str]:
        """(reason, message) of the waiting state for the non-running kinds."""
        if self.kind == "imagepull":
            reason = self.reason or "ImagePullBackOff"
            if reason == "ErrImagePull":
                return reason, self.message or (
                    f'failed to pull and unpack image "{image}": not found'
                )
            return reason, self.message or f'Back-off pulling image "{image}"'
        if self.kind == "configerror":
            return "CreateContainerConfigError", self.message or 'secret "app-config" not found'
        return "CrashLoopBackOff", ""


def image_tag(image: str) -> str:
    """``repo/name:tag@digest`` -> ``tag`` (``latest`` when there is none)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def default_behaviour(image: str) -> Behaviour:
    """The behaviour chosen by the image tag alone (see the module docstring)."""
    tag = image_tag(image).lower()
    if "oom" in tag:
        return Behaviour(
            kind="crashloop",
            exit_code=137,
            reason="OOMKilled",
            message="",
            logs=OOM_LOGS,
            previous_logs=OOM_LOGS,
        )
    if "crash" in tag:
        return Behaviour(kind="crashloop", exit_code=1, reason="Error", logs=CRASH_LOGS)
    if "badpull" in tag:
        return Behaviour(kind="imagepull")
    if "configerror" in tag:
        return Behaviour(kind="configerror")
    return Behaviour()


def ts(t: float) -> str:
    """RFC 3339 in whole seconds, as the API server stores ``metav1.Time``."""
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_micro(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_nano(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def parse_ts(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- per-pod memory and the pure status computation ------------------------------------------


@dataclasses.dataclass
class ContainerRun:
    """What the stand-in remembers of one container: the behaviour in effect since
    ``since`` (wall seconds) and the restart count at that moment."""

    name: str
    image: str
    since: float
    base: int = 0
    behaviour: Behaviour | None = None
    adopted_kind: Kind | None = None
    last_terminated: Body | None = None


@dataclasses.dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    node: str
    containers: list[tuple[str, str]]
    init_containers: list[tuple[str, str]]
    deleting: bool
    phase: str
    bound_at: float
    ip: str
    runs: dict[str, ContainerRun] = dataclasses.field(default_factory=dict)
    ready_since: float | None = None  # when readiness last changed; None: at binding
    written: str | None = None
    next_due: float | None = None
    delete_sent: bool = False
    failures: int = 0
    announced: dict[str, Kind] = dataclasses.field(default_factory=dict)
    pinned: str | None = None
    """The Node its nodeAffinity requires by name (DaemonSet pods); ``None``: any."""


def restart_count(run: ContainerRun, b: Behaviour, now: float) -> int:
    if b.kind != "crashloop":
        return run.base
    crashes = 1 + max(0, math.floor((now - run.since) / b.restart_every))
    return min(b.max_restarts, run.base + crashes)


def _container_id(uid: str, name: str, count: int) -> str:
    return "containerd://" + hashlib.sha256(f"{uid}/{name}/{count}".encode()).hexdigest()


def _image_id(image: str) -> str:
    repo = image.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _settle(pod: PodRun, run: ContainerRun, b: Behaviour, now: float) -> None:
    """Carries the container over when its image's behaviour changed."""
    if run.behaviour == b:
        return
    if run.behaviour is None and run.adopted_kind in (None, b.kind):
        run.behaviour = b  # first sight, or a status this stand-in wrote before a restart
        return
    old = run.behaviour
    count = restart_count(run, old, now) if old else run.base
    if old is not None and old.kind == "crashloop":
        run.last_terminated = _crash_terminated(pod.uid, run, old, count)
    if b.kind == "running" and old is not None and old.kind == "crashloop":
        count += 1  # the crashed container came back up for good
    run.base, run.since, run.behaviour, run.adopted_kind = count, now, b, None
    if old is None or (old.kind == "running") != (b.kind == "running"):
        pod.ready_since = now


def _crash_terminated(uid: str, run: ContainerRun, b: Behaviour, count: int) -> Body:
    k = count - run.base - 1  # crashes since `since`, counting from 0
    finished = run.since + max(0, k) * b.restart_every
    started = finished - min(1.0, b.restart_every / 2)
    t: Body = {
        "exitCode": b.exit_code,
        "reason": b.terminated_reason,
        "startedAt": ts(started),
        "finishedAt": ts(finished),
        "containerID": _container_id(uid, run.name, count - 1),
    }
    if b.termination_message:
        t["message"] = b.termination_message
    return t


def container_status(
    pod: PodRun, run: ContainerRun, b: Behaviour, now: float
) -> tuple[Body, float | None]:
    """One ``containerStatuses`` entry, and when it next changes by itself (or None)."""
    count = restart_count(run, b, now)
    st: Body = {
        "name": run.name,
        "image": run.image,
        "imageID": "",
        "restartCount": count,
        "ready": False,
        "started": False,
        "lastState": {},
    }
    due: float | None = None
    if b.kind == "running":
        st.update(
            imageID=_image_id(run.image),
            containerID=_container_id(pod.uid, run.name, count),
            ready=True,
            started=True,
            state={"running": {"startedAt": ts(run.since)}},
        )
        if run.last_terminated:
            st["lastState"] = {"terminated": run.last_terminated}
    elif b.kind == "crashloop":
        terminated = _crash_terminated(pod.uid, run, b, count)
        st.update(
            imageID=_image_id(run.image),
            containerID=terminated["containerID"],
            state={
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": (
                        f"back-off {min(300, 10 * 2 ** min(count, 5))}s restarting failed "
                        f"container={run.name} pod={pod.name}_{pod.namespace}({pod.uid})"
                    ),
                }
            },
            lastState={"terminated": terminated},
        )
        if count < b.max_restarts:
            k = count - run.base  # crashes so far since `since`, the next is number k+1
            due = run.since + k * b.restart_every
    else:
        reason, message = b.waiting(run.image)
        st["state"] = {"waiting": {"reason": reason, "message": message}}
        if run.last_terminated:
            st["lastState"] = {"terminated": run.last_terminated}
    return st, due


def pod_status(
    pod: PodRun, behaviour_of: Callable[[str], Behaviour], now: float
) -> tuple[Body, float | None]:
    """The status a kubelet would report for ``pod`` at ``now`` (pure but for settling
    behaviour changes into ``pod.runs``), and the next time it changes by itself."""
    statuses: list[Body] = []
    due: float | None = None
    for name, image in pod.containers:
        run = pod.runs.get(name)
        if run is None or run.image != image:
            run = pod.runs[name] = ContainerRun(
                name=name, image=image, since=now, base=run.base if run else 0
            )
        b = behaviour_of(image)
        _settle(pod, run, b, now)
        st, d = container_status(pod, run, b, now)
        statuses.append(st)
        if d is not None:
            due = d if due is None else min(due, d)
    unready = [s["name"] for s in statuses if not s["ready"]]
    started_any = any("running" in s["state"] or s["lastState"] for s in statuses)
    since = pod.ready_since or pod.bound_at
    bound = ts(pod.bound_at)

    def cond(kind: str, ok: bool, at: str, reason: str = "", message: str = "") -> Body:
        c: Body = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": at}
        if not ok:
            c.update(reason=reason, message=message)
        return c

    not_ready = f"containers with unready status: [{' '.join(unready)}]"
    status: Body = {
        "phase": "Running" if started_any else "Pending",
        "conditions": [
            cond("PodReadyToStartContainers", True, bound),
            cond("Initialized", True, bound),
            cond("Ready", not unready, ts(since), "ContainersNotReady", not_ready),
            cond("ContainersReady", not unready, ts(since), "ContainersNotReady", not_ready),
            cond("PodScheduled", True, bound),
        ],
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": pod.ip,
        "podIPs": [{"ip": pod.ip}],
        "startTime": bound,
        "containerStatuses": statuses,
    }
    if pod.init_containers:
        status["initContainerStatuses"] = [
            {
                "name": name,
                "image": image,
                "imageID": _image_id(image),
                "containerID": _container_id(pod.uid, name, 0),
                "restartCount": 0,
                "ready": True,
                "started": False,
                "lastState": {},
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": bound,
                        "finishedAt": bound,
                    }
                },
            }
            for name, image in pod.init_containers
        ]
    return status, due


def adopt(pod: PodRun, status: Mapping[str, Any]) -> None:
    """Takes over a status written earlier (by a previous run of the stand-in), so a
    restarted stand-in neither resets restart counts nor rewrites every Pod."""
    pod.ip = str(status.get("podIP") or pod.ip)
    pod.bound_at = parse_ts(status.get("startTime")) or pod.bound_at
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            pod.ready_since = parse_ts(c.get("lastTransitionTime"))
    for cs in status.get("containerStatuses") or []:
        name = cs.get("name")
        image = cs.get("image")
        if not isinstance(name, str) or not isinstance(image, str):
            continue
        state = cs.get("state") or {}
        count = int(cs.get("restartCount") or 0)
        run = ContainerRun(name=name, image=image, since=pod.bound_at, base=count)
        last = (cs.get("lastState") or {}).get("terminated")
        if "running" in state:
            run.adopted_kind = "running"
            run.since = parse_ts(state["running"].get("startedAt")) or run.since
            run.last_terminated = last
        elif (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            run.adopted_kind = "crashloop"
            run.base = max(0, count - 1)
            run.since = parse_ts((last or {}).get("finishedAt")) or run.since
        elif "waiting" in state:
            reason = state["waiting"].get("reason")
            run.adopted_kind = (
                "configerror" if reason == "CreateContainerConfigError" else ("imagepull")
            )
            run.last_terminated = last
        pod.runs[name] = run


def pinned_node(spec: Mapping[str, Any]) -> str | None:
    """The Node a Pod's required nodeAffinity names with ``matchFields`` ``metadata.name``
    (how the DaemonSet controller places its pods since scheduling moved to the
    scheduler), else ``spec.nodeSelector["kubernetes.io/hostname"]``; ``None``: any Node."""
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in affinity.get("nodeSelectorTerms") or ():
        for field in term.get("matchFields") or ():
            values = field.get("values") or ()
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and values:
                return str(values[0])
    host = (spec.get("nodeSelector") or {}).get("kubernetes.io/hostname")
    return str(host) if host else None


def placement(pinned: str | None, nodes: list[str]) -> str | None:
    """Where the stand-in binds a Pod: its pinned Node when that is one of ``nodes``
    (``None`` when it is not), else the first Node."""
    if pinned is None:
        return nodes[0]
    return pinned if pinned in nodes else None


# --- the stand-in ----------------------------------------------------------------------------


class _RetryError(Exception):
    pass


class Kubelet:
    """The stand-in. ``start()``/``stop()`` (or ``async with``) in a running loop, or
    ``start_in_thread()``/``stop_thread()`` to give it a thread and loop of its own."""

    def __init__(
        self,
        *,
        server: str,
        ca_file: Path,
        client_cert: Path,
        client_key: Path,
        serving_cert: Path,
        serving_key: Path,
        node_name: str = NODE_NAME,
        workers: int = 16,
    ) -> None:
        self.server = server.rstrip("/")
        self.ca_file = ca_file
        self.client_cert, self.client_key = client_cert, client_key
        self.serving_cert, self.serving_key = serving_cert, serving_key
        self.node_name = node_name
        self.node_names: list[str] = [node_name]
        """Every Node the stand-in runs; the first one takes Pods that are not pinned."""
        self.workers = workers
        self.port = 0
        self._lock = threading.Lock()
        self._behaviours: dict[str, Behaviour] = {}
        self._pods: dict[str, PodRun] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._next_ip = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0  # status writes, for benchmarks
        self._started = time.time()

    @classmethod
    def for_cluster(cls, cluster: Cluster, **kw: Any) -> Kubelet:
        pki = cluster.pki
        return cls(
            server=cluster.server,
            ca_file=cluster.ca_file,
            client_cert=pki.kubelet_client_cert,
            client_key=pki.kubelet_client_key,
            serving_cert=pki.kubelet_serving_cert,
            serving_key=pki.kubelet_serving_key,
            **kw,
        )

    # -- behaviours (thread-safe)

    def behave(self, image: str, behaviour: Behaviour) -> None:
        """From now on, containers running ``image`` do ``behaviour`` (any thread)."""
        with self._lock:
            self._behaviours[image] = behaviour
        self._requeue_threadsafe(image)

    def forget(self, image: str) -> None:
        """Back to the behaviour chosen by the image tag."""
        with self._lock:
            self._behaviours.pop(image, None)
        self._requeue_threadsafe(image)

    def behaviour_for(self, image: str) -> Behaviour:
        with self._lock:
            b = self._behaviours.get(image)
        return b if b is not None else default_behaviour(image)

    def add_nodes(self, count: int, *, timeout: float = 30.0) -> list[str]:
        """Makes sure the stand-in runs at least ``count`` Ready Nodes (any thread) and
        returns their names, the first Node first. Nodes are never removed: a DaemonSet
        runs on every one of them."""
        if count < 1:
            raise ValueError(f"add_nodes(count={count}): ask for at least 1 Node")
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("add_nodes: start the stand-in first")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("add_nodes: call it from another thread than the stand-in's")
        future = asyncio.run_coroutine_threadsafe(self._add_nodes(count), loop)
        return future.result(timeout)

    async def _add_nodes(self, count: int) -> list[str]:
        # selfheal-node-1 -> selfheal-node-2, -3, ...
        base = self.node_name.rsplit("-", 1)[0] if self.node_name[-1:].isdigit() else self.node_name
        while len(self.node_names) < count:
            name = f"{base}-{len(self.node_names) + 1}"
            self.node_names.append(name)
            await self._register_one(name)
        # Pods pinned to a Node that did not exist yet can be bound now.
        for uid, pod in self._pods.items():
            if not pod.node and pod.pinned in self.node_names:
                self._enqueue(uid)
        return list(self.node_names[:count])

    def _requeue_threadsafe(self, image: str) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._requeue_image, image)

    def _requeue_image(self, image: str) -> None:
        for pod in self._pods.values():
            if any(img == image for _, img in pod.containers):
                self._enqueue(pod.uid)

    # -- lifecycle

    async def __aenter__(self) -> Kubelet:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serves logs, registers the Node, then watches Pods in background tasks."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._wake = asyncio.Event()
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.client_cert, self.client_key)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=self.workers + 8),
            headers={"Accept": "application/json", "User-Agent": "selfheal-kubelet-stand-in"},
        )
        try:
            await self._serve_logs()
            await self._register_node()
        except BaseException:
            await self.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._guard("watch", self._watch_pods)),
            asyncio.create_task(self._guard("timer", self._timer)),
            asyncio.create_task(self._guard("heartbeat", self._heartbeat)),
        ] + [asyncio.create_task(self._guard("worker", self._worker)) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Stops every task (and so every crash loop) and the log server."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._heap.clear()

    def start_in_thread(self, *, timeout: float = 30.0) -> None:
        """Runs the stand-in on its own event loop in a daemon thread."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:
                started.set_exception(e)
                loop.close()
                return
            started.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="kubelet-stand-in", daemon=True)
        self._thread.start()
        started.result(timeout=timeout)

    def stop_thread(self, *, timeout: float = 30.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._thread = None

    async def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        # A background task that dies silently would freeze every Pod: log and restart it.
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kubelet stand-in: %s failed; restarting it in 1s", what)
                await asyncio.sleep(1.0)

    # -- API calls

    async def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Body]:
        assert self._session is not None, "Kubelet.start() first"
        data = None if body is None else json.dumps(body).encode()
        async with self._session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            headers={"Content-Type": content_type},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as r:
            raw = await r.read()
            try:
                return r.status, cast(Body, json.loads(raw)) if raw else {}
            except ValueError:
                return r.status, {"message": raw.decode(errors="replace")}

    # -- node and lease

    def _node_status(self, now: float, name: str) -> Body:
        resources = {"cpu": "64", "memory": "256Gi", "pods": "110000", "ephemeral-storage": "1Ti"}
        heartbeat = ts(now)

        def cond(kind: str, status: str, reason: str, message: str) -> Body:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": ts(self._started),
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                cond(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "selfheal",
                "systemUUID": "selfheal",
                "bootID": "selfheal",
                "kernelVersion": "stand-in",
                "osImage": "selfheal kubelet stand-in",
                "containerRuntimeVersion": "stand-in://1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def _register_node(self) -> None:
        self._started = time.time()
        for name in self.node_names:
            await self._register_one(name)

    async def _register_one(self, name: str) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        status, body = await self._call("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise RuntimeError(f"registering Node {name}: HTTP {status}: {body}")
        await self._post_node_status(name)
        await self._renew_lease(name)

    async def _post_node_status(self, name: str) -> None:
        path = f"/api/v1/nodes/{name}/status"
        body = {"status": self._node_status(time.time(), name)}
        status, resp = await self._call(
            "PATCH", path, body, content_type="application/merge-patch+json"
        )
        if status == 404:
            await self._register_one(name)
        elif status != 200:
            raise RuntimeError(f"PATCH {path}: HTTP {status}: {resp}")

    async def _renew_leases(self) -> None:
        for name in list(self.node_names):
            await self._renew_lease(name)

    async def _renew_lease(self, name: str) -> None:
        # The node lifecycle controller marks a Node NotReady (and then evicts its
        # Pods) when its Lease is not renewed within the grace period.
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": ts_micro(time.time()),
        }
        status, _ = await self._call(
            "PATCH", path, {"spec": spec}, content_type="application/merge-patch+json"
        )
        if status == 404:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            }
            await self._call("POST", path.rsplit("/", 1)[0], lease)

    async def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(LEASE_RENEW_EVERY)
            try:
                await self._renew_leases()
                if time.monotonic() - last_status >= NODE_STATUS_EVERY:
                    for name in list(self.node_names):
                        await self._post_node_status(name)
                    last_status = time.monotonic()
            except (aiohttp.ClientError, TimeoutError, RuntimeError) as e:
                log.warning("kubelet stand-in: heartbeat failed: %s", e)

    # -- the pod watch

    async def _watch_pods(self) -> None:
        while True:
            rv = await self._list_pods()
            while rv:
                try:
                    rv = await self._watch_once(rv)
                except (aiohttp.ClientError, TimeoutError) as e:
                    log.warning("kubelet stand-in: pod watch broke (%s); watching again", e)
                    await asyncio.sleep(0.5)

    async def _list_pods(self) -> str:
        seen: set[str] = set()
        rv = ""
        cont = ""
        while True:
            params = {"limit": "500"}
            if cont:
                params["continue"] = cont
            status, body = await self._call("GET", "/api/v1/pods", params=params)
            if status != 200:
                raise RuntimeError(f"listing pods: HTTP {status}: {body}")
            meta = body.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion", ""))
            for item in body.get("items") or []:
                uid = self._on_pod(item)
                if uid:
                    seen.add(uid)
            cont = str(meta.get("continue") or "")
            if not cont:
                break
        for uid in [u for u in self._pods if u not in seen]:
            self._forget_pod(uid)
        return rv

    async def _watch_once(self, rv: str) -> str:
        """One watch request; returns the resourceVersion to resume from, or "" to relist."""
        assert self._session is not None
        params = {
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        async with self._session.get(
            self.server + "/api/v1/pods",
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=360),
        ) as r:
            if r.status == 410:
                return ""
            if r.status != 200:
                raise aiohttp.ClientResponseError(
                    r.request_info, (), status=r.status, message=await r.text()
                )
            buf = b""
            # Split lines ourselves: aiohttp's readline caps a line at 64 KiB.
            async for chunk in r.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return ""
                        raise RuntimeError(f"pod watch error: {obj}")
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind in ("ADDED", "MODIFIED"):
                        self._on_pod(obj)
                    elif kind == "DELETED":
                        self._forget_pod(str(obj["metadata"]["uid"]))
        return rv

    def _on_pod(self, obj: Mapping[str, Any]) -> str | None:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        uid = str(meta.get("uid", ""))
        node = str(spec.get("nodeName") or "")
        if not uid or (node and node not in self.node_names):
            if uid in self._pods:
                self._forget_pod(uid)
            return None
        containers = [(c["name"], c.get("image", "")) for c in spec.get("containers") or []]
        inits = [(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []]
        status = obj.get("status") or {}
        pod = self._pods.get(uid)
        if pod is None:
            now = time.time()
            pod = PodRun(
                uid=uid,
                namespace=str(meta.get("namespace", "")),
                name=str(meta.get("name", "")),
                node=node,
                containers=containers,
                init_containers=inits,
                deleting=bool(meta.get("deletionTimestamp")),
                phase=str(status.get("phase") or "Pending"),
                bound_at=now,
                ip=self._allocate_ip(),
                pinned=pinned_node(spec),
            )
            if node and status.get("containerStatuses"):
                adopt(pod, status)
            self._pods[uid] = pod
            self._by_name[(pod.namespace, pod.name)] = uid
        else:
            pod.node = pod.node or node
            pod.containers, pod.init_containers = containers, inits
            pod.deleting = bool(meta.get("deletionTimestamp"))
            pod.phase = str(status.get("phase") or pod.phase)
        self._enqueue(uid)
        return uid

    def _forget_pod(self, uid: str) -> None:
        pod = self._pods.pop(uid, None)
        if pod is not None and self._by_name.get((pod.namespace, pod.name)) == uid:
            del self._by_name[(pod.namespace, pod.name)]

    def _allocate_ip(self) -> str:
        self._next_ip += 1
        n = self._next_ip
        return f"10.244.{(n >> 8) & 0xFF}.{n & 0xFF or 1}"

    # -- work queue and timer

    def _enqueue(self, uid: str) -> None:
        if uid in self._busy:
            self._again.add(uid)
        elif uid not in self._queued:
            self._queued.add(uid)
            self._queue.put_nowait(uid)

    async def _worker(self) -> None:
        while True:
            uid = await self._queue.get()
            self._queued.discard(uid)
            self._busy.add(uid)
            try:
                await self._sync(uid)
            except (_RetryError, aiohttp.ClientError, TimeoutError) as e:
                pod = self._pods.get(uid)
                if pod is not None:
                    pod.failures += 1
                    if pod.failures <= 10:
                        self._schedule(pod, time.time() + 0.5 * pod.failures)
                    else:
                        log.error("kubelet stand-in: giving up on pod %s: %s", pod.name, e)
            finally:
                self._busy.discard(uid)
                if uid in self._again:
                    self._again.discard(uid)
                    self._enqueue(uid)

    def _schedule(self, pod: PodRun, due: float) -> None:
        if pod.next_due is not None and pod.next_due <= due:
            return
        pod.next_due = due
        heapq.heappush(self._heap, (due, pod.uid))
        if self._heap[0] == (due, pod.uid):
            self._wake.set()

    async def _timer(self) -> None:
        # One timer for every crash loop and retry: sleeps until the earliest due time.
        while True:
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            due, uid = self._heap[0]
            delay = due - time.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            heapq.heappop(self._heap)
            pod = self._pods.get(uid)
            if pod is not None and pod.next_due == due:
                pod.next_due = None
                self._enqueue(uid)

    async def _sync(self, uid: str) -> None:
        pod = self._pods.get(uid)
        if pod is None:
            return
        base = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
        if pod.deleting:
            if pod.node and not pod.delete_sent:
                # A kubelet confirms termination with a zero-grace delete.
                body = {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": uid},
                }
                status, resp = await self._call("DELETE", base, body)
                if status not in (200, 202, 404, 409):
                    raise _RetryError(f"DELETE {base}: HTTP {status}: {resp}")
                pod.delete_sent = True
            return
        if pod.phase in ("Succeeded", "Failed"):
            return
        if not pod.node:
            target = placement(pod.pinned, self.node_names)
            if target is None:
                return  # pinned to a Node of someone else's: not ours to run
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": target},
            }
            status, resp = await self._call("POST", base + "/binding", binding)
            if status == 404:
                self._forget_pod(uid)
                return
            if status == 409:
                return  # bound meanwhile: the watch says by whom
            if status not in (200, 201):
                raise _RetryError(f"POST {base}/binding: HTTP {status}: {resp}")
            pod.node = target
            pod.bound_at = time.time()
        now = time.time()
        desired, due = pod_status(pod, self.behaviour_for, now)
        fingerprint = json.dumps(desired, sort_keys=True)
        if fingerprint != pod.written:
            status, resp = await self._call(
                "PATCH",
                base + "/status",
                {"status": desired},
                content_type="application/merge-patch+json",
            )
            if status == 404:
                self._forget_pod(uid)
                return
            if status != 200:
                raise _RetryError(f"PATCH {base}/status: HTTP {status}: {resp}")
            self.writes += 1
            pod.written = fingerprint
            pod.failures = 0
            await self._announce(pod, now)
        if due is not None:
            self._schedule(pod, due + 0.01)

    async def _announce(self, pod: PodRun, now: float) -> None:
        """One Warning Event when a container enters a failing behaviour, as a kubelet
        records BackOff / Failed; nothing for healthy containers (10k Pods)."""
        for name, run in pod.runs.items():
            b = run.behaviour
            if b is None or pod.announced.get(name) == b.kind:
                continue
            pod.announced[name] = b.kind
            if b.kind == "running":
                continue
            if b.kind == "crashloop":
                reason = "BackOff"
                message = f"Back-off restarting failed container {name} in pod {pod.name}"
            elif b.kind == "imagepull":
                reason = "Failed"
                message = f'Failed to pull image "{run.image}": not found'
            else:
                reason, message = "Failed", "Error: " + b.waiting(run.image)[1]
            suffix = hashlib.sha256(f"{pod.uid}/{name}/{now}".encode()).hexdigest()[:16]
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{pod.name}.{suffix}",
                    "namespace": pod.namespace,
                },
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "namespace": pod.namespace,
                    "name": pod.name,
                    "uid": pod.uid,
                    "fieldPath": f"spec.containers{{{name}}}",
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "source": {"component": "kubelet", "host": pod.node or self.node_name},
                "reportingComponent": "kubelet",
                "reportingInstance": pod.node or self.node_name,
                "firstTimestamp": ts(now),
                "lastTimestamp": ts(now),
                "count": 1,
            }
            await self._call("POST", f"/api/v1/namespaces/{pod.namespace}/events", event)

    # -- the log server

    async def _serve_logs(self) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_file))
        ctx.load_cert_chain(self.serving_cert, self.serving_key)
        # Only the API server (its kubelet client certificate) may read logs.
        ctx.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((NODE_IP, 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, ssl_context=ctx).start()

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["pod"]
        container = request.match_info["container"]
        uid = self._by_name.get((ns, name))
        pod = self._pods.get(uid) if uid else None
        if pod is None:
            return web.Response(status=404, text=f'pod "{name}" in namespace "{ns}" not found\n')
        run = pod.runs.get(container)
        if run is None or run.behaviour is None:
            return web.Response(
                status=400, text=f'container "{container}" in pod "{name}" is not running\n'
            )
        b = run.behaviour
        q = request.query
        now = time.time()
        count = restart_count(run, b, now)
        if q.get("previous") in ("true", "1"):
            if count == 0:
                return web.Response(
                    status=400,
                    text=f'previous terminated container "{container}" in pod "{name}" not found\n',
                )
            text = b.previous_logs
            if b.kind == "crashloop":
                started = parse_ts(_crash_terminated(uid or "", run, b, count)["startedAt"]) or now
            else:
                started = parse_ts((run.last_terminated or {}).get("startedAt")) or now
        else:
            if b.kind in ("imagepull", "configerror"):
                reason = b.waiting(run.image)[0]
                return web.Response(
                    status=400,
                    text=f'container "{container}" in pod "{name}" is waiting to start: {reason}\n',
                )
            text, started = b.logs, run.since
        body = select_log(
            text,
            started=started,
            tail_lines=_int(q.get("tailLines")),
            limit_bytes=_int(q.get("limitBytes")),
            timestamps=q.get("timestamps") in ("true", "1"),
        )
        return web.Response(body=body, content_type="text/plain", charset="utf-8")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def select_log(
    text: str,
    *,
    started: float,
    tail_lines: int | None = None,
    limit_bytes: int | None = None,
    timestamps: bool = False,
) -> bytes:
    """The kubelet's log options: the last ``tail_lines`` lines, each prefixed with an
    RFC 3339 timestamp when asked, cut to the first ``limit_bytes`` bytes."""
    lines = text.splitlines(keepends=True)
    if tail_lines is not None and tail_lines >= 0:
        lines = lines[-tail_lines:] if tail_lines else []
    if timestamps:
        # One millisecond apart, from the container's start: ordered and stable.
        offset = len(text.splitlines()) - len(lines)
        lines = [f"{ts_nano(started + (offset + i) / 1000)} {ln}" for i, ln in enumerate(lines)]
    data = "".join(lines).encode()
    if limit_bytes is not None and limit_bytes >= 0:
        data = data[:limit_bytes]
    return data


# --- as a process ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.kubelet", description=__doc__)
    p.add_argument("--server", required=True, help="API server URL")
    p.add_argument("--pki", required=True, type=Path, help="the cluster's pki directory")
    p.add_argument("--node", default=NODE_NAME)
    p.add_argument("--nodes", type=int, default=1, help="how many Nodes to run (DaemonSets)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pki: Path = args.pki
    kubelet = Kubelet(
        server=args.server,
        ca_file=pki / "ca.crt",
        client_cert=pki / "kubelet.crt",
        client_key=pki / "kubelet.key",
        serving_cert=pki / "kubelet-serving.crt",
        serving_key=pki / "kubelet-serving.key",
        node_name=args.node,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with kubelet:
            await kubelet._add_nodes(max(1, args.nodes))
            log.info("kubelet stand-in: node %s, logs on port %d", kubelet.node_name, kubelet.port)
            await stop.wait()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
