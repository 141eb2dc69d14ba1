"""The Alertmanager webhook receiver: ``POST /alerts`` on its own port.

Alertmanager's ``webhook_configs`` deliver notifications here with
``http_config.authorization`` (a bearer token). What arrives is parsed into pure data
(``selfheal.detect.alerts``) and kept in the runtime's alert book, which each policy's
timer reads. Answers:

- 200: taken (a resend of the same word changes nothing: fingerprints deduplicate);
  with shards, alerts about another shard's namespaces are ignored (``ignored`` counts
  them) and still answered 200, so Alertmanager does not retry what is not ours;
- 400: not an Alertmanager notification (the message names the field);
- 401: no or a wrong bearer token;
- 503: this replica is a standby, or the token file cannot be read: Alertmanager retries,
  and through the Service reaches the leader.

Nothing here must outlive the process: after a restart every alert trigger is unknown
until Alertmanager resends, which never causes an action.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import ssl
import time

from aiohttp import web

from selfheal import metrics
from selfheal.detect import alerts
from selfheal.handlers.runtime import Runtime

logger = logging.getLogger(__name__)

PATH = "/alerts"
MAX_BODY = 4 * 2**20
"""Bytes of one notification at most (Alertmanager batches a group's alerts in one)."""
TOKEN_RECHECK = 10.0
"""Seconds a read token is trusted before the file is looked at again (Secret rotation)."""


class TokenFile:
    """The bearer token from a file (a mounted Secret's key), re-read when it changed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._token = ""
        self._checked = -TOKEN_RECHECK
        self._mtime = -1.0

    def _read(self) -> tuple[float, str]:
        mtime = os.stat(self.path).st_mtime
        if mtime == self._mtime:
            return mtime, self._token
        with open(self.path, encoding="utf-8") as f:
            return mtime, f.read().strip()

    async def token(self) -> str:
        """The token, or "" when the file cannot be read (every request is then refused)."""
        now = time.monotonic()
        if now - self._checked >= TOKEN_RECHECK:
            self._checked = now
            try:
                # A file read is quick, but a stalled volume must not hold the loop.
                self._mtime, self._token = await asyncio.wait_for(
                    asyncio.to_thread(self._read), timeout=5.0
                )
            except (OSError, TimeoutError, UnicodeDecodeError) as e:
                logger.error("alert webhook token file %s unreadable: %s", self.path, e)
                self._mtime, self._token = -1.0, ""
        return self._token


def authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not token or not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _answer(code: int, message: str, **headers: str) -> web.Response:
    metrics.ALERT_WEBHOOK.labels(str(code)).inc()
    return web.json_response({"message": message}, status=code, headers=headers or None)


def make_app(rt: Runtime, tokens: TokenFile) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        token = await tokens.token()
        if not token:
            return _answer(503, "the receiver's token file cannot be read; see the operator log")
        if not authorized(request.headers.get("Authorization"), token):
            return _answer(
                401,
                "missing or wrong bearer token: set http_config.authorization.credentials "
                "of the Alertmanager webhook to the token in the operator's Secret",
                **{"WWW-Authenticate": 'Bearer realm="selfheal"'},
            )
        if not rt.is_leader:
            return _answer(503, "this replica is a standby; Alertmanager retries on the leader")
        try:
            body = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError) as e:
            return _answer(400, f"body: not JSON ({e})")
        try:
            got = alerts.parse_payload(body)
        except alerts.PayloadError as e:
            return _answer(400, str(e))
        got, others = alerts.split_by_shard(got, rt.shard.owns)
        if others:
            logger.debug(
                "Alertmanager: %d alert(s) about other shards' namespaces ignored (%s)",
                len(others),
                ", ".join(sorted({a.labels.get("namespace", "") for a in others})),
            )
        changed = rt.alerts.receive(got, now=time.time())
        if changed:
            logger.info(
                "Alertmanager: %d alert(s) received, %d changed (%s)",
                len(got),
                changed,
                ", ".join(sorted({f"{a.name} {a.status}" for a in got})),
            )
        metrics.ALERT_WEBHOOK.labels("200").inc()
        return web.json_response({"received": len(got), "changed": changed, "ignored": len(others)})

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, receive)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve(
    rt: Runtime,
    *,
    port: int,
    token_file: str,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> web.AppRunner:
    context = None
    if cert_file and key_file:
        context = await asyncio.to_thread(tls_context, cert_file, key_file)
    runner = web.AppRunner(make_app(rt, TokenFile(token_file)), access_log=None)
    await runner.setup()
    # Alertmanager runs elsewhere in the cluster: listen on every interface, behind auth.
    await web.TCPSite(runner, host="0.0.0.0", port=port, ssl_context=context).start()
    logger.info(
        "Alertmanager webhook receiver on %s://:%d%s",
        "https" if context else "http",
        port,
        PATH,
    )
    return runner
