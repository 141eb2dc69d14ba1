"""Start-up, after ``handlers.boot``: clients, the driver, the HTTP endpoint, then kopf.

Configuration is read once (never at import time); logging and the light watchers were
started by ``handlers.boot`` before this module was imported. kopf is told to keep its
own bookkeeping in ``selfheal.dev`` annotations on the objects selfheal owns
(HealingPolicy, Remediation) and never to post its log lines as Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf

from selfheal import metrics
from selfheal.clients import kube as k
from selfheal.clients.alertmanager import Alertmanager
from selfheal.clients.jira import Jira, JiraCredentials, credentials_from_secret
from selfheal.clients.lease import LeaderElector, Timings, new_identity
from selfheal.clients.notify import Notifier
from selfheal.clients.prometheus import Prometheus
from selfheal.detect.prometheus import PrometheusEvaluator
from selfheal.handlers import alert_webhook, reconciler, watch, web
from selfheal.handlers.boot import Early
from selfheal.handlers.podcache import Coalescer
from selfheal.handlers.runtime import Runtime
from selfheal.remediation import escalation
from selfheal.remediation.dependency_probe import DependencyProbe
from selfheal.remediation.driver import Driver
from selfheal.remediation.silences import Silencer
from selfheal.settings import Settings

logger = logging.getLogger("selfheal")


async def _jira_credentials(kube: k.Kube, ref: str | None) -> JiraCredentials | None:
    if not ref:
        return None
    namespace, _, name = ref.partition("/")
    if not name:
        raise ValueError(f"jira_secret: {ref!r} must be namespace/name")
    secret = await kube.get(k.core(namespace, "secrets", name))
    return credentials_from_secret(secret, name=ref)


def _read_token(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError as e:
        # Silences will fail with 401 and say so; the rest of the operator keeps serving.
        logger.error("Alertmanager token file %s unreadable (%s): no token sent", path, e)
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: Settings = memo["settings"]
    # Own objects only: progress and diff-base in annotations of selfheal.dev.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP_PREFIX, key="last-handled-configuration"
    )
    # One per shard: kopf strips any finalizer of its name that it does not need.
    settings.persistence.finalizer = watch.finalizer(cfg.sharding)
    settings.posting.enabled = False
    if cfg.namespaces:
        # Exact namespaces and known CRDs: no need for cluster-scoped scans (and RBAC).
        settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 8
    kube = await k.Kube.connect(kubeconfig=memo.get("kubeconfig"))
    jira: Jira | None = None
    if cfg.jira_url:
        try:
            creds = await _jira_credentials(kube, cfg.jira_secret)
        except (k.KubeError, ValueError) as e:
            # Escalations will say so; the rest of the operator keeps serving.
            logger.error("Jira credentials unavailable (%s): tickets will fail until fixed", e)
            creds = None
        jira = Jira(url=cfg.jira_url, credentials=creds, timeout=cfg.jira_timeout)
    prom = (
        Prometheus(url=cfg.prometheus_url, timeout=cfg.prometheus_timeout)
        if (cfg.prometheus_url)
        else None
    )
    clock = _clock(cfg.test_clock_file)
    driver = Driver(
        kube=kube,
        jira=jira,
        evidence=escalation.Evidence(kube=kube, prometheus=prom).gather,
        ticket_horizon=cfg.ticket_horizon,
        notifier=Notifier(),
        failpoint=cfg.failpoint,
        clock=clock,
        # The same clock: facts are judged fresh against the driver's "now".
        dependencies=DependencyProbe(kube=kube, clock=clock),
    )
    silencer = None
    if cfg.alertmanager_url:
        token = None
        if cfg.alertmanager_token_file:
            token = await asyncio.to_thread(_read_token, cfg.alertmanager_token_file)
        silencer = Silencer(
            kube=kube,
            alertmanager=Alertmanager(
                url=cfg.alertmanager_url, token=token, timeout=cfg.alertmanager_timeout
            ),
        )
    health = web.Health()
    rt = Runtime(
        settings=cfg,
        pods=memo["early"].pods,
        driver=driver,
        prometheus=PrometheusEvaluator(client=prom),
        health=health,
        elector=memo.get("elector"),
        silencer=silencer,
        shard=cfg.sharding,
    )
    rt.evaluations = Coalescer(functools.partial(watch.evaluate_owner, rt))
    memo["runtime"] = rt
    memo["kube"] = kube
    early: Early = memo["early"]
    # The watchers started before kopf: their caches are bound now, replayed from what
    # they hold (handlers.boot).
    early.replicasets.bind(functools.partial(watch.rs_changed, rt))
    early.deployments.bind(functools.partial(watch.deployment_changed, rt))
    early.pod_changes.bind(functools.partial(watch.pod_changed, rt))
    memo["tasks"] = [
        asyncio.create_task(reconciler.await_ready(rt), name="selfheal readiness"),
        asyncio.create_task(reconciler.run(rt, kube), name="selfheal reconciler"),
    ]
    if cfg.metrics_port:
        memo["web"] = await web.serve(port=cfg.metrics_port, health=health)
    if cfg.alert_webhook_port and cfg.alert_webhook_token_file:
        memo["alert_web"] = await alert_webhook.serve(
            rt,
            port=cfg.alert_webhook_port,
            token_file=cfg.alert_webhook_token_file,
            cert_file=cfg.alert_webhook_cert_file,
            key_file=cfg.alert_webhook_key_file,
        )
    elector = memo.get("elector")
    logger.info(
        "selfheal started: %s%s, prometheus=%s, jira=%s, leader election=%s",
        "namespaces " + ",".join(cfg.namespaces) if cfg.namespaces else "cluster-wide",
        f", shard {rt.shard} (namespaces whose hash falls in it)" if rt.shard.sharded else "",
        cfg.prometheus_url or "off",
        cfg.jira_url or "off",
        f"Lease {elector.namespace}/{elector.name} as {elector.identity}" if elector else "off",
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    tasks: list[asyncio.Task[None]] = memo.get("tasks") or []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if (early := memo.get("early")) is not None:
        await early.close()  # no Pod change reaches the handlers once they stop
    rt: Runtime | None = memo.get("runtime")
    if rt is not None:
        await rt.evaluations.close()
        await rt.driver.close()
        if rt.silencer is not None:
            await rt.silencer.alertmanager.close()
    for key in ("web", "alert_web"):
        if (runner := memo.get(key)) is not None:
            await runner.cleanup()
    if (kube := memo.get("kube")) is not None:
        await kube.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # The in-cluster service account first; a kubeconfig (KUBECONFIG) when run by hand.
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


GROUP_PREFIX = "selfheal.dev"


def _clock(test_file: str) -> Callable[[], float]:
    """The driver's clock: the wall clock or, in tests (``Settings.test_clock_file``),
    the wall clock plus the seconds the test wrote in that file."""
    if not test_file:
        return time.time
    path = Path(test_file)

    def clock() -> float:
        try:  # a tiny local file, read by tests only
            return time.time() + float(path.read_text() or 0)
        except (OSError, ValueError):
            return time.time()

    return clock


def _elector(cfg: Settings, kube: k.Kube, timings: Timings, identity: str) -> LeaderElector:
    gauge = metrics.LEADER.labels(identity)
    return LeaderElector(
        kube=kube,
        namespace=cfg.leader_election_namespace or cfg.namespace,
        # One Lease per shard: each shard has its own leader and standbys.
        name=cfg.sharding.lease_name(cfg.leader_election_name),
        identity=identity,
        timings=timings,
        on_started_leading=lambda: gauge.set(1),
        on_stopped_leading=lambda: gauge.set(0),
    )


async def _operate(cfg: Settings, memo: kopf.Memo, timings: Timings) -> None:
    """kopf's operator inside the elector's lifetime: the campaign starts before kopf
    fills its caches and the Lease is released only after kopf stopped every handler
    (and ran the cleanup), so nothing acts once a standby may take over."""
    identity = new_identity(cfg.pod_name)
    election: asyncio.Task[None] | None = None
    kube: k.Kube | None = None
    if cfg.leader_election:
        # A connection of its own: renewals never queue behind log or evidence downloads.
        kube = await k.Kube.connect(kubeconfig=memo.get("kubeconfig"))
        memo["elector"] = _elector(cfg, kube, timings, identity)
        metrics.LEADER.labels(identity).set(0)
        # Created before kopf starts: kopf cancels only the tasks born after it.
        election = asyncio.create_task(memo["elector"].run(), name="leader election")
    else:
        metrics.LEADER.labels(identity).set(1)  # no election: this process always acts
    shard = cfg.sharding
    metrics.SHARD.labels(str(shard.index), str(shard.total)).set(1)
    try:
        await kopf.operator(
            clusterwide=not cfg.namespaces,
            namespaces=list(cfg.namespaces),
            # kopf's own peering pauses every replica of equal priority (and the whole
            # operator when its CRDs are absent): the Lease above replaces it.
            standalone=True,
            memo=memo,
        )
    finally:
        if election is not None:
            election.cancel()  # stops leading, then releases the Lease
            with contextlib.suppress(asyncio.CancelledError):
                await election
        if kube is not None:
            await kube.close()


async def operate(cfg: Settings, *, kubeconfig: str | None, timings: Timings, early: Early) -> None:
    """kopf's operator, its caches bound to the watchers ``early`` started."""
    # The shard in memo: kopf's filters (watch.in_shard) read it before start-up runs.
    memo = kopf.Memo(
        settings=cfg, kubeconfig=kubeconfig, elector=None, shard=cfg.sharding, early=early
    )
    await _operate(cfg, memo, timings)


__all__ = ["operate"]
