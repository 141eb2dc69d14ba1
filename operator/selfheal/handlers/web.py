"""The operator's HTTP endpoint: /metrics (Prometheus), /healthz (alive), /readyz.

Ready means: the API server answered, the CRDs are served, and kopf has filled
its indexes (it runs no handler before that), so a decision is possible.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)


class Health:
    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"

    def set(self, *, ready: bool, reason: str) -> None:
        if (ready, reason) != (self.ready, self.reason):
            logger.info("readiness: %s (%s)", "ready" if ready else "not ready", reason)
        self.ready, self.reason = ready, reason


async def serve(*, port: int, health: Health) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        status = 200 if health.ready else 503
        return web.Response(status=status, text=f"{health.reason}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host="0.0.0.0", port=port).start()  # probes come from the kubelet
    logger.info("serving /metrics, /healthz, /readyz on :%d", port)
    return runner
