"""The real Alertmanager (Debian's ``prometheus-alertmanager``) on a free loopback port.

    am = AlertmanagerServer(data_dir=tmp / "am", webhook_url=receiver_url)
    am.start()                       # waits for /-/ready
    prometheus = PrometheusServer(..., rules=[...], alertmanagers=[am.target])
    ...
    am.silence({"alertname": "X"}, comment="...")   # POST /api/v2/silences -> its id
    am.silences()                    # GET /api/v2/silences
    am.alerts()                      # GET /api/v2/alerts
    am.stop()                        # SIGTERM, then SIGKILL; bounded waits

Every alert is routed to one webhook receiver (``webhook_url``, a loopback server of the
test) with short group timings, so a notification leaves about ``group_wait`` after the
first alert arrives. Clustering (gossip, by default on 0.0.0.0:9094) is switched off:
nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, cast

from tests.support.cluster import _die_with_parent
from tests.support.prometheus import INSTALL_HINT, free_port

ALERTMANAGER = (
    os.environ.get("SELFHEAL_ALERTMANAGER")
    or shutil.which("prometheus-alertmanager")
    or "/usr/bin/prometheus-alertmanager"
)


class AlertmanagerServer:
    def __init__(
        self,
        *,
        data_dir: pathlib.Path,
        webhook_url: str,
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        send_resolved: bool = True,
        port: int | None = None,
        bearer_token: str | None = None,
    ) -> None:
        if not os.path.exists(ALERTMANAGER):
            raise RuntimeError(f"{ALERTMANAGER} not found: {INSTALL_HINT}")
        self.data_dir = data_dir
        self.webhook_url = webhook_url
        self.route = {
            "receiver": "test",
            "group_by": ["alertname"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        }
        self.send_resolved = send_resolved
        self.bearer_token = bearer_token
        """Sent as ``Authorization: Bearer`` on every webhook POST (``http_config``)."""
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"alertmanager-{self.port}.log"

    @property
    def target(self) -> str:
        """``host:port`` for Prometheus' ``alerting.alertmanagers``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> pathlib.Path:
        webhook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": self.send_resolved}
        if self.bearer_token is not None:
            webhook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": self.bearer_token}
            }
        config = {
            "route": self.route,
            "receivers": [{"name": "test", "webhook_configs": [webhook]}],
        }
        path = self.data_dir.parent / f"alertmanager-{self.port}.yml"
        path.write_text(json.dumps(config))  # YAML is a superset of JSON
        return path

    def start(self, *, timeout: float = 30.0) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={self.data_dir}",
                f"--web.listen-address={self.target}",
                f"--web.external-url={self.url}",
                "--cluster.listen-address=",  # no gossip: a single, loopback-only instance
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # a killed test run leaves no Alertmanager behind
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"alertmanager exited with {self._proc.returncode}: {self.tail_log()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"alertmanager not ready within {timeout}s: {self.tail_log()}")

    def stop(self, *, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- API v2 helpers for tests (plain HTTP, not code under test) ---------------------------

    def _api(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts Alertmanager holds now."""
        return cast(list[dict[str, Any]], self._api("GET", "alerts"))

    def post_alert(
        self,
        labels: Mapping[str, str],
        *,
        annotations: Mapping[str, str] | None = None,
        starts_at: dt.datetime | None = None,
        ends_at: dt.datetime | None = None,
    ) -> None:
        """``POST /api/v2/alerts``, as Prometheus does: one alert; an ``ends_at`` in the
        past resolves it."""
        body: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {})}
        if starts_at is not None:
            body["startsAt"] = starts_at.isoformat()
        if ends_at is not None:
            body["endsAt"] = ends_at.isoformat()
        self._api("POST", "alerts", [body])

    def silence(
        self,
        matchers: Mapping[str, str],
        *,
        comment: str,
        created_by: str = "selfheal-tests",
        duration: dt.timedelta = dt.timedelta(hours=1),
    ) -> str:
        """``POST /api/v2/silences`` with equality matchers; returns the silence's id."""
        now = dt.datetime.now(dt.UTC)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in matchers.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + duration).isoformat(),
            "createdBy": created_by,
            "comment": comment,
        }
        return str(self._api("POST", "silences", body)["silenceID"])

    def silences(self) -> list[dict[str, Any]]:
        """``GET /api/v2/silences``: every silence, active, pending and expired."""
        return cast(list[dict[str, Any]], self._api("GET", "silences"))


class WebhookReceiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it (Alertmanager's
    webhook notifications), for a test to wait on.

    receiver = WebhookReceiver().start()
    receiver.url                      # http://127.0.0.1:<port>/alerts
    receiver.wait_for(lambda n: n["status"] == "firing", timeout=30)
    receiver.stop()
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.notifications: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._cond:
                    receiver.notifications.append(body)
                    receiver.paths.append(self.path)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first notification (received so far or within ``timeout``) matching it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for n in self.notifications[seen:]:
                    if predicate(n):
                        return n
                seen = len(self.notifications)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no matching webhook notification within {timeout}s; "
                        f"received: {self.notifications}"
                    )
                self._cond.wait(timeout=left)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
