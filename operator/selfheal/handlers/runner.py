"""Start-up: logging, clients, the driver, the HTTP endpoint, then kopf.

Configuration is read once here (never at import time). kopf is told to keep its
own bookkeeping in ``selfheal.dev`` annotations on the objects selfheal owns
(HealingPolicy, Remediation) and never to post its log lines as Events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

import kopf

from selfheal.clients import kube as k
from selfheal.clients.jira import Jira, JiraCredentials, credentials_from_secret
from selfheal.clients.prometheus import Prometheus
from selfheal.detect.prometheus import PrometheusEvaluator
from selfheal.handlers import reconciler, web
from selfheal.handlers.runtime import Runtime
from selfheal.remediation import escalation
from selfheal.remediation.driver import Driver
from selfheal.settings import Settings

logger = logging.getLogger("selfheal")


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


async def _jira_credentials(kube: k.Kube, ref: str | None) -> JiraCredentials | None:
    if not ref:
        return None
    namespace, _, name = ref.partition("/")
    if not name:
        raise ValueError(f"jira_secret: {ref!r} must be namespace/name")
    secret = await kube.get(k.core(namespace, "secrets", name))
    return credentials_from_secret(secret, name=ref)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: Settings = memo["settings"]
    # Own objects only: progress and diff-base in annotations of selfheal.dev.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP_PREFIX}/finalizer"
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
    driver = Driver(
        kube=kube,
        jira=jira,
        evidence=escalation.Evidence(kube=kube, prometheus=prom).gather,
        ticket_horizon=cfg.ticket_horizon,
    )
    health = web.Health()
    rt = Runtime(
        settings=cfg,
        driver=driver,
        prometheus=PrometheusEvaluator(client=prom),
        health=health,
    )
    memo["runtime"] = rt
    memo["kube"] = kube
    memo["tasks"] = [
        asyncio.create_task(reconciler.await_ready(rt), name="selfheal readiness"),
        asyncio.create_task(reconciler.run(rt, kube), name="selfheal reconciler"),
    ]
    if cfg.metrics_port:
        memo["web"] = await web.serve(port=cfg.metrics_port, health=health)
    logger.info(
        "selfheal started: %s, prometheus=%s, jira=%s",
        "namespaces " + ",".join(cfg.namespaces) if cfg.namespaces else "cluster-wide",
        cfg.prometheus_url or "off",
        cfg.jira_url or "off",
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    tasks: list[asyncio.Task[None]] = memo.get("tasks") or []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    rt: Runtime | None = memo.get("runtime")
    if rt is not None:
        await rt.driver.close()
    if (runner := memo.get("web")) is not None:
        await runner.cleanup()
    if (kube := memo.get("kube")) is not None:
        await kube.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # The in-cluster service account first; a kubeconfig (KUBECONFIG) when run by hand.
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


GROUP_PREFIX = "selfheal.dev"


def run(cfg: Settings, *, kubeconfig: str | None) -> int:
    configure_logging(cfg)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    # Importing registers the handlers with kopf's default registry.
    from selfheal.handlers import policies, watch  # noqa: F401

    memo = kopf.Memo(settings=cfg, kubeconfig=kubeconfig)
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not cfg.namespaces,
                namespaces=list(cfg.namespaces),
                standalone=cfg.peering is None,
                peering_name=cfg.peering,
                memo=memo,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["run"]
