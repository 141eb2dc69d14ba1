"""Alertmanager as a trigger source, through the running operator: the real
Alertmanager delivers to the operator's webhook receiver (bearer token), the operator
restarts the Deployment the alert names and verifies it once the alert resolved."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import pathlib
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support.alertmanager import AlertmanagerServer
from tests.support.exporter import Exporter
from tests.support.kubelet import Kubelet
from tests.support.operator import OperatorProcess
from tests.support.prometheus import PrometheusServer, free_port
from tests.support.workloads import available, deployment, eventually, policy, remediations

TOKEN = "am-to-selfheal-7f3a"
ALERT = "ShopUnavailable"
SPEC: dict[str, Any] = {
    "triggers": [{"name": "shop-down", "alert": {"name": ALERT, "matchers": {"severity": "page"}}}],
    "remediation": {"steps": [{"restart": {}}], "verify": {"for": "3s", "timeout": "90s"}},
}


class Receiver:
    """Where the operator's receiver listens, and its token file."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.port = free_port()
        self.token_file = tmp / "alert-webhook-token"
        self.token_file.write_text(TOKEN + "\n")  # a mounted Secret's key ends in a newline

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    @property
    def args(self) -> list[str]:
        return [
            "--alert-webhook-port",
            str(self.port),
            "--alert-webhook-token-file",
            str(self.token_file),
        ]

    def post(
        self, body: object, *, token: str | None, tls: ssl.SSLContext | None = None
    ) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = self.url.replace("http://", "https://") if tls else self.url
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=5, context=tls) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@pytest.fixture
def receiver(tmp_path: pathlib.Path) -> Receiver:
    return Receiver(tmp_path)


@pytest.fixture
def am(tmp_path: pathlib.Path, receiver: Receiver) -> Iterator[AlertmanagerServer]:
    server = AlertmanagerServer(
        data_dir=tmp_path / "am", webhook_url=receiver.url, bearer_token=TOKEN
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _labels(ns: str) -> dict[str, str]:
    return {"alertname": ALERT, "namespace": ns, "deployment": "shop", "severity": "page"}


async def _post_alert(am: AlertmanagerServer, ns: str, *, ends_in: float) -> None:
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ends_in)
    await asyncio.to_thread(
        am.post_alert,
        _labels(ns),
        annotations={"summary": "shop answers 503"},
        ends_at=ends,
    )


async def _deploy(kube: k.Kube, ns: str, spec: dict[str, Any], *, wait: bool = True) -> None:
    await kube.create(k.apps(ns, "deployments"), deployment("shop", f"registry.local/{ns}/shop:v1"))
    await kube.create(
        k.group(API_VERSION, ns, "healingpolicies"),
        policy("shop", selector={"app": "shop"}, spec=spec),
    )
    if wait:
        await eventually(lambda: available(kube, ns, "shop"), timeout=60, what="shop available")


def _notification(ns: str) -> dict[str, Any]:
    """An Alertmanager webhook notification (version 4) with one firing alert."""
    return {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": _labels(ns),
                "fingerprint": "0123456789abcdef",
                "startsAt": dt.datetime.now(dt.UTC).isoformat(),
            }
        ],
    }


async def _leading(proc: OperatorProcess) -> bool:
    return await asyncio.to_thread(proc.metric, "selfheal_leader") == 1


async def _record(kube: k.Kube, ns: str, phase: str) -> dict[str, Any] | None:
    hits = [
        r for r in await remediations(kube, ns) if (r.get("status") or {}).get("phase") == phase
    ]
    return hits[0] if hits else None


async def test_a_firing_alert_restarts_its_deployment_and_its_resolution_verifies_it(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    receiver: Receiver,
    am: AlertmanagerServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    await _deploy(kube, ns, SPEC)
    operator(namespaces=[ns], extra_args=receiver.args)

    await _post_alert(am, ns, ends_in=600)
    rec = await eventually(lambda: _record(kube, ns, "Verifying"), timeout=120, what="Verifying")
    assert rec["spec"]["trigger"] == {"name": "shop-down", "kind": "alert"}
    st = rec["status"]
    [held] = [a for a in await asyncio.to_thread(am.alerts) if a["labels"]["alertname"] == ALERT]
    assert st["evidence"]["fingerprint"] == held["fingerprint"]  # Alertmanager's own
    assert st["evidence"]["alertname"] == ALERT
    [step] = st["steps"]
    assert (step["action"], step["result"]) == ("restart", "Succeeded")
    dep = await kube.get(k.apps(ns, "deployments", "shop"))
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    assert "kubectl.kubernetes.io/restartedAt" in annotations

    # Still firing: not healed. Resolved (endsAt now): healthy, so verified.
    await _post_alert(am, ns, ends_in=-1)
    done = await eventually(lambda: _record(kube, ns, "Resolved"), timeout=90, what="Resolved")
    assert len(done["status"]["steps"]) == 1  # one restart, never a second
    assert len(await remediations(kube, ns)) == 1


async def test_the_receiver_refuses_a_wrong_or_missing_bearer_token(
    kube: k.Kube,
    namespace: str,
    receiver: Receiver,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    await _deploy(kube, ns, SPEC, wait=False)
    proc = operator(namespaces=[ns], extra_args=receiver.args)
    body = _notification(ns)
    code, text = await asyncio.to_thread(receiver.post, body, token="not-the-token")
    assert code == 401
    assert "bearer token" in text
    code, _ = await asyncio.to_thread(receiver.post, body, token=None)
    assert code == 401
    # Once leading, the right token with a body that is not a notification: refused,
    # naming the field.
    await eventually(lambda: _leading(proc), timeout=60, what="the operator leads")
    code, text = await asyncio.to_thread(receiver.post, {"alerts": "x"}, token=TOKEN)
    assert code == 400
    assert json.loads(text)["message"].startswith("alerts:")
    await asyncio.sleep(3)  # two policy ticks: a refused alert acted on nothing
    assert await remediations(kube, ns) == []
    assert proc.metric("selfheal_alert_webhook_requests_total", {"code": "401"}) == 2


# --- silences while healing ------------------------------------------------------------------


def _selfheal_silences(am: AlertmanagerServer) -> list[dict[str, Any]]:
    return [s for s in am.silences() if s["createdBy"] == "selfheal"]


async def _silence_state(kube: k.Kube, ns: str, state: str) -> dict[str, Any] | None:
    for r in await remediations(kube, ns):
        if ((r.get("status") or {}).get("silence") or {}).get("state") == state:
            return r
    return None


async def _start_silencing(
    kube: k.Kube,
    ns: str,
    receiver: Receiver,
    am: AlertmanagerServer,
    operator: Callable[..., OperatorProcess],
    spec: dict[str, Any],
) -> OperatorProcess:
    await _deploy(kube, ns, spec)
    return operator(namespaces=[ns], extra_args=[*receiver.args, "--alertmanager-url", am.url])


async def _active_silence(kube: k.Kube, ns: str, am: AlertmanagerServer) -> dict[str, Any]:
    """The record once its silence is Active, checked against Alertmanager's own list."""
    rec = await eventually(lambda: _silence_state(kube, ns, "Active"), timeout=120, what="silence")
    [silence] = await asyncio.to_thread(_selfheal_silences, am)
    assert silence["id"] == rec["status"]["silence"]["id"]
    assert silence["status"]["state"] == "active"
    assert f"Remediation {ns}/{rec['metadata']['name']}" in silence["comment"]
    matchers = {m["name"]: m["value"] for m in silence["matchers"]}
    assert matchers == {**_labels(ns)}  # the trigger's alert of this workload
    assert rec["status"]["phase"] in ("Acting", "Verifying")
    return rec


async def test_a_silence_holds_while_verifying_and_is_expired_when_resolved(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    receiver: Receiver,
    am: AlertmanagerServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    await _start_silencing(kube, ns, receiver, am, operator, SPEC)
    await _post_alert(am, ns, ends_in=600)
    await _active_silence(kube, ns, am)
    # Muted: Alertmanager holds it as suppressed (and will not notify its resolution).
    [held] = [a for a in await asyncio.to_thread(am.alerts) if a["labels"]["alertname"] == ALERT]
    assert held["status"]["state"] == "suppressed"

    await _post_alert(am, ns, ends_in=-1)
    done = await eventually(lambda: _record(kube, ns, "Resolved"), timeout=90, what="Resolved")
    await eventually(lambda: _silence_state(kube, ns, "Expired"), timeout=30, what="expired")
    [silence] = await asyncio.to_thread(_selfheal_silences, am)
    assert silence["status"]["state"] == "expired"
    assert len(done["status"]["steps"]) == 1


async def test_an_escalation_expires_the_silence_so_the_alert_pages(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    receiver: Receiver,
    am: AlertmanagerServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    spec = {
        **SPEC,
        "remediation": {**SPEC["remediation"], "verify": {"for": "3s", "timeout": "8s"}},
    }
    await _start_silencing(kube, ns, receiver, am, operator, spec)
    await _post_alert(am, ns, ends_in=600)
    await _active_silence(kube, ns, am)
    # The restart did not help (the alert keeps firing): escalated after the timeout.
    await eventually(lambda: _record(kube, ns, "Escalated"), timeout=90, what="Escalated")
    await eventually(lambda: _silence_state(kube, ns, "Expired"), timeout=30, what="expired")
    [silence] = await asyncio.to_thread(_selfheal_silences, am)
    assert silence["status"]["state"] == "expired"

    async def paging() -> bool:
        held = [a for a in await asyncio.to_thread(am.alerts) if a["labels"]["alertname"] == ALERT]
        return bool(held) and held[0]["status"]["state"] == "active"

    await eventually(paging, timeout=30, what="the alert active (not suppressed) again")


async def test_killed_while_verifying_the_silence_is_expired_once_and_none_leaks(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    receiver: Receiver,
    am: AlertmanagerServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    proc = await _start_silencing(kube, ns, receiver, am, operator, SPEC)
    await _post_alert(am, ns, ends_in=600)
    await _active_silence(kube, ns, am)
    proc.kill()
    await asyncio.to_thread(proc.start)  # nothing in memory: the book, the silence, all gone
    await _post_alert(am, ns, ends_in=-1)
    await eventually(lambda: _record(kube, ns, "Resolved"), timeout=120, what="Resolved")
    await eventually(lambda: _silence_state(kube, ns, "Expired"), timeout=30, what="expired")
    silences = await asyncio.to_thread(_selfheal_silences, am)
    assert [s["status"]["state"] for s in silences] == ["expired"]  # one, never a second
    [rec] = await remediations(kube, ns)
    assert rec["status"]["silence"]["id"] == silences[0]["id"]
    assert len(rec["status"]["steps"]) == 1


async def test_the_receiver_serves_tls_with_the_certificate_it_is_given(
    kube: k.Kube,
    namespace: str,
    receiver: Receiver,
    operator: Callable[..., OperatorProcess],
    tmp_path: pathlib.Path,
) -> None:
    ns = namespace
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    await asyncio.to_thread(
        subprocess.run,
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    await _deploy(kube, ns, SPEC, wait=False)
    tls_args = ["--alert-webhook-cert-file", str(cert), "--alert-webhook-key-file", str(key)]
    proc = operator(namespaces=[ns], extra_args=[*receiver.args, *tls_args])
    trusted = ssl.create_default_context(cafile=str(cert))
    code, _ = await asyncio.to_thread(receiver.post, _notification(ns), token="x", tls=trusted)
    assert code == 401  # TLS, and still the token
    # Plain HTTP to the TLS port: the server hangs up.
    with pytest.raises((OSError, http.client.HTTPException)):
        await asyncio.to_thread(receiver.post, _notification(ns), token=TOKEN)
    await eventually(lambda: _leading(proc), timeout=60, what="the operator leads")
    code, text = await asyncio.to_thread(receiver.post, _notification(ns), token=TOKEN, tls=trusted)
    assert (code, json.loads(text)["received"]) == (200, 1)


# --- verify.alertResolved ----------------------------------------------------------------------


def _value_is(want: str) -> Callable[[list[dict[str, object]]], bool]:
    def check(result: list[dict[str, object]]) -> bool:
        value = result[0].get("value") if result else None
        return isinstance(value, list) and value[1] == want

    return check


async def test_verification_waits_for_the_workloads_alert_to_resolve(
    kube: k.Kube,
    namespace: str,
    kubelet: Kubelet,
    receiver: Receiver,
    am: AlertmanagerServer,
    exporter: Exporter,
    prometheus: PrometheusServer,
    operator: Callable[..., OperatorProcess],
) -> None:
    ns = namespace
    query = f'queue_depth{{namespace="{ns}"}}'
    exporter.set_gauge("queue_depth", 50, namespace=ns, deployment="shop")
    spec = {
        "triggers": [
            {
                "name": "depth",
                "prometheus": {"query": query, "above": 10, "for": "1s", "interval": "1s"},
            }
        ],
        "remediation": {
            "steps": [{"restart": {}}],
            "verify": {"for": "3s", "timeout": "120s", "alertResolved": True},
        },
    }
    await _deploy(kube, ns, spec)
    await _post_alert(am, ns, ends_in=600)  # the SREs' own alert on shop
    args = [*receiver.args, "--alertmanager-url", am.url]
    operator(namespaces=[ns], prometheus_url=prometheus.url, extra_args=args)
    await eventually(lambda: _record(kube, ns, "Verifying"), timeout=120, what="Verifying")

    # The metric heals; the alert still fires: the step is not counted as healed.
    exporter.set_gauge("queue_depth", 3, namespace=ns, deployment="shop")
    await asyncio.to_thread(prometheus.wait_until, query, _value_is("3"))
    await asyncio.sleep(8)  # well past verify.for (3s) with the metric healthy
    rec = await _record(kube, ns, "Verifying")
    assert rec is not None, await remediations(kube, ns)
    assert rec["status"]["lastHealth"] == "unknown"  # waiting, never acting

    await _post_alert(am, ns, ends_in=-1)  # resolved (silenced: learned from the list)
    done = await eventually(lambda: _record(kube, ns, "Resolved"), timeout=90, what="Resolved")
    assert len(done["status"]["steps"]) == 1
