"""The real Prometheus server on a loopback port, scraping test exporters every second.

    server = PrometheusServer(data_dir=tmp / "tsdb", targets=[exporter.target])
    server.start()           # waits for /-/ready
    ...
    server.stop()            # SIGTERM, then SIGKILL; the data dir is kept,
    server.start()           # so a restart on the same port simulates an outage

Alert rules and the Alertmanagers to send alerts to are passed at construction
(``rules=[alert_rule(...)]``, ``alertmanagers=[am.target]``; see
``tests.support.alertmanager``); rules are evaluated every ``scrape_interval``.

History a test cannot wait for is backfilled before the first start with
:func:`backfill` (``promtool tsdb create-blocks-from openmetrics``), the way an operator
imports old data: the blocks are loaded at start and queried like scraped data.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tests.support.cluster import _die_with_parent

# Debian's packages; hack/preflight.sh (``make servers``) installs them.
# SELFHEAL_PROMETHEUS and SELFHEAL_PROMTOOL point elsewhere (hack/preflight.sh reads them too).
PROMETHEUS = (
    os.environ.get("SELFHEAL_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
)
PROMTOOL = os.environ.get("SELFHEAL_PROMTOOL") or shutil.which("promtool") or "/usr/bin/promtool"
INSTALL_HINT = (
    "run `make servers` (as root it installs Debian's prometheus and prometheus-alertmanager; "
    "otherwise it prints the apt-get command)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    def __init__(
        self,
        *,
        data_dir: pathlib.Path,
        targets: Sequence[str] = (),
        scrape_interval: float = 1.0,
        port: int | None = None,
        rules: Sequence[Mapping[str, Any]] = (),
        alertmanagers: Sequence[str] = (),
    ) -> None:
        if not os.path.exists(PROMETHEUS):
            raise RuntimeError(f"{PROMETHEUS} not found: {INSTALL_HINT}")
        self.data_dir = data_dir
        self.targets = list(targets)
        self.rules = list(rules)
        self.alertmanagers = list(alertmanagers)
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"prometheus-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> pathlib.Path:
        interval = f"{self.scrape_interval:g}s"
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": "test",
                    "honor_labels": True,  # the exporter's labels win over target labels
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        if self.rules:
            rules = self.data_dir.parent / f"prometheus-{self.port}-rules.yml"
            group = {"name": "test", "interval": interval, "rules": self.rules}
            rules.write_text(json.dumps({"groups": [group]}))
            config["rule_files"] = [str(rules)]
        if self.alertmanagers:
            config["alerting"] = {
                "alertmanagers": [
                    {"api_version": "v2", "static_configs": [{"targets": self.alertmanagers}]}
                ]
            }
        path = self.data_dir.parent / f"prometheus-{self.port}.yml"
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
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.url}",  # alerts' generatorURL: loopback too
                "--storage.tsdb.retention.time=30d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # a killed test run leaves no Prometheus behind
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self._proc.returncode}: {self.tail_log()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready within {timeout}s: {self.tail_log()}")

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

    # -- helpers for tests -------------------------------------------------------------------

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, object]]:
        """An instant query over plain HTTP (for waiting in tests, not the code under test)."""
        params = {"query": promql, **({"time": repr(at)} if at is not None else {})}
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def wait_until(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, object]]], bool],
        *,
        timeout: float = 20.0,
    ) -> list[dict[str, object]]:
        """Poll ``promql`` until ``predicate(result)`` holds; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, urllib.error.URLError):
                result = self.query(promql)
                if predicate(result):
                    return result
            time.sleep(0.2)
        raise TimeoutError(f"{promql!r}: condition not met within {timeout}s; last: {result}")


def alert_rule(
    name: str,
    expr: str,
    *,
    for_: str = "0s",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One alerting rule for ``PrometheusServer(rules=[...])``."""
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": dict(labels or {}),
        "annotations": dict(annotations or {}),
    }


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}" if inner else ""


def openmetrics(
    name: str,
    series: Iterable[tuple[dict[str, str], Iterable[tuple[float, float]]]],
    *,
    kind: str = "gauge",
) -> str:
    """OpenMetrics text for ``promtool``: one metric family, samples ``(unix s, value)``."""
    lines = [f"# TYPE {name} {kind}"]
    for labels, samples in series:
        for t, v in samples:
            value = "NaN" if math.isnan(v) else repr(float(v))
            lines.append(f"{name}{_labels(labels)} {value} {t:.3f}")
    return "\n".join(lines) + "\n"


def backfill(data_dir: pathlib.Path, *families: str, timeout: float = 120.0) -> None:
    """Write OpenMetrics text (see :func:`openmetrics`) as TSDB blocks into ``data_dir``.

    Run it before the server's first start: Prometheus loads the blocks when it opens
    the data dir.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"backfill-{time.monotonic_ns()}.om"
    source.write_text("".join(families) + "# EOF\n")
    done = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    source.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"promtool backfill failed ({done.returncode}): {done.stderr[-2000:]}")
