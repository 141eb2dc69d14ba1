"""The process's start: logging, the settings' check, and the light watchers.

Listing every Pod is most of a start-up at scale. So the Pod, ReplicaSet and
Deployment watchers start here, before kopf and the rest of the operator are imported:
the imports run in a thread while the first pages are on their way, and the handlers'
caches are bound to the watchers (replayed from what the watchers already hold) once
the runtime exists. Nothing here imports kopf: settings that cannot run (``check``) are
refused before it loads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, Generic, TypeVar

from selfheal.clients import kube as k
from selfheal.clients import podwatch
from selfheal.clients.lease import Timings
from selfheal.handlers import summaries
from selfheal.handlers.podcache import PodCache
from selfheal.settings import Settings

logger = logging.getLogger("selfheal")

T = TypeVar("T")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(cfg: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.log_level.upper())
    # kopf's per-event chatter is DEBUG material for an SRE at 3 a.m.
    logging.getLogger("kopf").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def check(cfg: Settings) -> str:
    """Why these settings cannot run, naming the flag and the fix; "" when they can."""
    if cfg.alert_webhook_port and not cfg.alert_webhook_token_file:
        return (
            "--alert-webhook-port needs --alert-webhook-token-file (SELFHEAL_ALERT_WEBHOOK_"
            "TOKEN_FILE): the receiver accepts only Alertmanager's bearer token"
        )
    if bool(cfg.alert_webhook_cert_file) != bool(cfg.alert_webhook_key_file):
        return "--alert-webhook-cert-file and --alert-webhook-key-file go together for TLS"
    try:
        cfg.sharding  # noqa: B018 (validates --shard against --total-shards)
    except ValueError as e:
        return str(e)
    return ""


class Relay(Generic[T]):
    """Watchers' change callback whose consumer comes later. Until :meth:`bind`, a
    change is only kept by the watchers themselves (their ``items``); ``bind`` hands the
    consumer every item they hold as new, then every change as it comes. Both run on
    the event loop, so no change falls between the replay and the first live one."""

    def __init__(self) -> None:
        self.sources: list[podwatch.PodWatcher[Any]] = []
        self._target: Callable[[T | None, T | None], None] | None = None

    def __call__(self, old: T | None, new: T | None) -> None:
        if self._target is not None:
            self._target(old, new)

    def bind(self, target: Callable[[T | None, T | None], None]) -> None:
        for watcher in self.sources:
            for item in list(watcher.items.values()):
                target(None, item)
        self._target = target


@dataclasses.dataclass
class Early:
    """The watchers started before kopf, and the connection they share."""

    kube: k.Kube
    pods: PodCache
    pod_changes: Relay[Any] = dataclasses.field(default_factory=Relay)
    replicasets: Relay[Any] = dataclasses.field(default_factory=Relay)
    deployments: Relay[Any] = dataclasses.field(default_factory=Relay)
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    closed: bool = False

    async def close(self) -> None:
        """Stop the watchers and close their connection (once; again is a no-op)."""
        if self.closed:
            return
        self.closed = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.kube.close()


async def start_watchers(cfg: Settings, kubeconfig: str | None) -> Early:
    """Connect and start listing Pods, ReplicaSets and Deployments now; their changes
    wait in the relays until the handlers bind them."""
    # A connection of its own: a watch stream never queues behind an action.
    kube = await k.Kube.connect(kubeconfig=kubeconfig)
    shard = cfg.sharding
    # Sharded: every watch stays cluster-wide (or on --namespace) and drops the objects
    # of other shards' namespaces before they are summarised.
    keep = shard.owns if shard.sharded else None
    early = Early(kube=kube, pods=PodCache())
    # The Pod cache files each change at once; the relay passes it on once bound.
    loops: list[Coroutine[Any, Any, None]] = early.pods.watch(
        kube, namespaces=cfg.namespaces, on_change=early.pod_changes, keep=keep
    )
    early.pod_changes.sources = list(early.pods.watchers)
    # ReplicaSets and Deployments the same way: kopf would hold every body (and its own
    # per-object machinery) to fill an index of a few small fields.
    for ns in podwatch.scopes(cfg.namespaces):
        for plural, summarize, relay in (
            ("replicasets", summaries.rs_info, early.replicasets),
            ("deployments", summaries.deployment_info, early.deployments),
        ):
            w: podwatch.PodWatcher[Any] = podwatch.PodWatcher(
                kube,
                api="apps/v1",
                plural=plural,
                namespace=ns,
                summarize=summarize,
                on_change=relay,
                keep=keep,
            )
            relay.sources.append(w)
            early.pods.watchers.append(w)  # readiness waits for every watcher
            loops.append(w.run())
    early.tasks = [asyncio.create_task(loop, name="selfheal watch") for loop in loops]
    return early


def _load() -> ModuleType:
    """The rest of the operator; importing registers its handlers with kopf's registry."""
    from selfheal.handlers import policies, runner, watch  # noqa: F401

    return runner


async def _main(cfg: Settings, kubeconfig: str | None, timings: Timings) -> None:
    early = await start_watchers(cfg, kubeconfig)
    try:
        # In a thread: the loop keeps reading the first pages meanwhile.
        runner = await asyncio.to_thread(_load)
        await runner.operate(cfg, kubeconfig=kubeconfig, timings=timings, early=early)
    finally:
        await early.close()


def run(cfg: Settings, *, kubeconfig: str | None) -> int:
    configure_logging(cfg)
    if problem := check(cfg):
        logger.error("%s", problem)
        return 2
    try:
        timings = Timings(
            lease_duration=cfg.lease_duration,
            renew_deadline=cfg.renew_deadline,
            retry_period=cfg.retry_period,
        )
    except ValueError as e:
        logger.error("leader election: %s", e)
        return 2
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    try:
        asyncio.run(_main(cfg, kubeconfig, timings))
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["Early", "Relay", "check", "configure_logging", "run", "start_watchers"]
