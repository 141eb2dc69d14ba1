"""The Alertmanager building block against the real servers, all on loopback.

A rule of the real Prometheus fires on a metric of the test exporter, Prometheus sends
the alert to the real Alertmanager, which delivers it as a webhook POST to the test's
receiver; a silence made through Alertmanager's API v2 is listed and mutes the alert.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.support.alertmanager import AlertmanagerServer, WebhookReceiver
from tests.support.exporter import Exporter
from tests.support.prometheus import PrometheusServer, alert_rule


@pytest.fixture
def alerting_prometheus(
    tmp_path: pathlib.Path, exporter: Exporter, alertmanager: AlertmanagerServer
) -> Iterator[PrometheusServer]:
    rule = alert_rule(
        "QueueTooDeep",
        "queue_depth > 10",
        labels={"severity": "page"},
        annotations={"summary": "{{ $labels.deployment }} has {{ $value }} queued"},
    )
    server = PrometheusServer(
        data_dir=tmp_path / "tsdb",
        targets=[exporter.target],
        rules=[rule],
        alertmanagers=[alertmanager.target],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_firing_rule_reaches_the_webhook_and_a_silence_mutes_it(
    exporter: Exporter,
    alertmanager: AlertmanagerServer,
    webhook_receiver: WebhookReceiver,
    alerting_prometheus: PrometheusServer,
) -> None:
    exporter.set_gauge("queue_depth", 3, namespace="shop", deployment="web")
    exporter.set_gauge("queue_depth", 50, namespace="shop", deployment="api")

    # Prometheus -> Alertmanager -> webhook: one scrape, one evaluation, group_wait 1s.
    note = webhook_receiver.wait_for(lambda n: n.get("status") == "firing", timeout=30)
    assert webhook_receiver.paths[0] == "/alerts"
    assert note["receiver"] == "test"
    assert note["version"] == "4"
    [alert] = note["alerts"]  # only api is over 10
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "QueueTooDeep",
        "severity": "page",
        "namespace": "shop",
        "deployment": "api",
        "instance": exporter.target,
        "job": "test",
    }
    assert alert["annotations"] == {"summary": "api has 50 queued"}
    assert alert["generatorURL"].startswith(alerting_prometheus.url)

    [held] = alertmanager.alerts()
    assert held["labels"]["deployment"] == "api"
    assert held["status"]["state"] == "active"

    silence_id = alertmanager.silence(
        {"alertname": "QueueTooDeep", "deployment": "api"}, comment="selfheal is on it"
    )
    [listed] = [s for s in alertmanager.silences() if s["id"] == silence_id]
    assert listed["status"]["state"] == "active"
    assert listed["comment"] == "selfheal is on it"
    assert listed["createdBy"] == "selfheal-tests"
    assert {(m["name"], m["value"], m["isRegex"]) for m in listed["matchers"]} == {
        ("alertname", "QueueTooDeep", False),
        ("deployment", "api", False),
    }

    # The silence mutes the alert Alertmanager holds (bounded wait: it is applied at once).
    deadline = time.monotonic() + 10
    while True:
        [held] = alertmanager.alerts()
        if held["status"]["state"] == "suppressed" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert held["status"]["state"] == "suppressed"
    assert held["status"]["silencedBy"] == [silence_id]
