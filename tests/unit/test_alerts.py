"""Alertmanager's webhook as a trigger source, as pure functions: the payload as data,
deduplication by fingerprint, and the verdict per workload (firing, resolved, expired,
no word)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from selfheal.detect import alerts
from selfheal.detect.signal import Health, Signal, WorkloadRef
from selfheal.handlers.alert_webhook import authorized
from selfheal.handlers.boot import check
from selfheal.policy.model import AlertTrigger, PolicyError
from selfheal.policy.parse import parse
from selfheal.settings import Settings

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
START = "2026-05-28T20:26:40Z"

# What Alertmanager 0.25 POSTs to a webhook_configs receiver (version 4).
PAYLOAD: dict[str, Any] = {
    "receiver": "selfheal",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "HighErrorRate",
                "namespace": "shop",
                "deployment": "checkout",
                "severity": "page",
            },
            "annotations": {"summary": "checkout answers 12% 5xx"},
            "startsAt": START,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": "a1b2c3d4e5f60708",
        }
    ],
    "groupLabels": {"alertname": "HighErrorRate"},
    "commonLabels": {"alertname": "HighErrorRate"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{alertname="HighErrorRate"}',
    "truncatedAlerts": 0,
}

TRIGGER = AlertTrigger(alertname="HighErrorRate", matchers={"severity": "page"})
CHECKOUT = WorkloadRef(namespace="shop", name="checkout", uid="u1")
CART = WorkloadRef(namespace="shop", name="cart", uid="u2")


def payload(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(PAYLOAD)
    body["alerts"][0].update(changes)
    return body


def alert(**changes: Any) -> alerts.Alert:
    (a,) = alerts.parse_payload(payload(**changes))
    return a


def verdicts(
    book: list[alerts.Alert],
    *,
    now: float = T0 + 60,
    workloads: tuple[WorkloadRef, ...] = (CHECKOUT, CART),
    pod_owners: dict[tuple[str, str], WorkloadRef] | None = None,
    trigger: AlertTrigger = TRIGGER,
    listed_at: float | None = None,
) -> dict[str, tuple[Health, str]]:
    got = alerts.evaluate(
        policy="shop",
        trigger_name="errors",
        trigger=trigger,
        alerts=book,
        workloads=workloads,
        pod_owners=pod_owners or {},
        now=now,
        listed_at=listed_at,
    )
    return {s.workload.name: (s.health, s.cause) for s in got}


# --- the payload ------------------------------------------------------------------------


def test_a_webhook_notification_becomes_alerts() -> None:
    (a,) = alerts.parse_payload(PAYLOAD)
    assert a.fingerprint == "a1b2c3d4e5f60708"
    assert a.name == "HighErrorRate"
    assert a.status == "firing"
    assert a.labels["deployment"] == "checkout"
    assert a.starts_at == T0
    assert a.ends_at is None  # Alertmanager's zero time: no end known
    assert a.annotations == {"summary": "checkout answers 12% 5xx"}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda b: b.update(alerts="x"), "alerts"),
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts[0].status"),
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts[0].fingerprint"),
        (lambda b: b["alerts"][0]["labels"].pop("alertname"), "alerts[0].labels.alertname"),
        (lambda b: b["alerts"][0]["labels"].update(n=3), "alerts[0].labels.n"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
    ],
)
def test_a_bad_notification_is_refused_naming_the_field(edit: Any, field: str) -> None:
    body = copy.deepcopy(PAYLOAD)
    edit(body)
    with pytest.raises(alerts.PayloadError) as err:
        alerts.parse_payload(body)
    assert str(err.value).startswith(f"{field}:")


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(alerts.PayloadError, match=r"^body"):
        alerts.parse_payload([PAYLOAD])


# --- verdicts -----------------------------------------------------------------------------


def test_a_firing_alert_makes_its_deployment_unhealthy_and_no_word_is_unknown() -> None:
    got = alerts.evaluate(
        policy="shop",
        trigger_name="errors",
        trigger=TRIGGER,
        alerts=[alert()],
        workloads=[CHECKOUT, CART],
        pod_owners={},
        now=T0 + 60,
    )
    by = {s.workload.name: s for s in got}
    assert by["checkout"].health is Health.UNHEALTHY
    assert by["checkout"].cause == "AlertFiring"
    assert "checkout answers 12% 5xx" in by["checkout"].detail
    assert by["checkout"].evidence["fingerprint"] == "a1b2c3d4e5f60708"
    assert by["checkout"].evidence["startsAt"] == START
    assert by["cart"].health is Health.UNKNOWN  # never an action
    assert by["cart"].cause == "NoData"


def test_resolved_is_healthy() -> None:
    book = alerts.AlertBook()
    book.receive([alert()], now=T0)
    book.receive([alert(status="resolved", endsAt="2026-05-28T20:30:00Z")], now=T0 + 200)
    assert len(book) == 1  # the same fingerprint: one alert
    assert verdicts(book.alerts(), now=T0 + 201)["checkout"] == (Health.HEALTHY, "AlertResolved")


def test_an_alert_not_sent_again_after_its_ends_at_is_healthy() -> None:
    book = [alert(endsAt="2026-05-28T20:31:40Z")]  # T0 + 300
    assert verdicts(book, now=T0 + 299)["checkout"][0] is Health.UNHEALTHY
    assert verdicts(book, now=T0 + 300)["checkout"] == (Health.HEALTHY, "AlertExpired")


def test_matchers_and_name_must_all_match() -> None:
    other_severity = alert(labels={**PAYLOAD["alerts"][0]["labels"], "severity": "info"})
    other_name = alert(labels={**PAYLOAD["alerts"][0]["labels"], "alertname": "Other"})
    assert verdicts([other_severity, other_name])["checkout"][0] is Health.UNKNOWN


def test_another_namespace_or_kind_is_another_workload() -> None:
    labels = PAYLOAD["alerts"][0]["labels"]
    elsewhere = alert(labels={**labels, "namespace": "bank"})
    sts = {k: v for k, v in labels.items() if k != "deployment"} | {"statefulset": "checkout"}
    assert verdicts([elsewhere, alert(labels=sts)])["checkout"][0] is Health.UNKNOWN


def test_a_pod_alert_is_about_the_pods_owner() -> None:
    labels = {k: v for k, v in PAYLOAD["alerts"][0]["labels"].items() if k != "deployment"}
    pod_alert = alert(labels={**labels, "pod": "checkout-7d9f-abcde"})
    owners = {("shop", "checkout-7d9f-abcde"): CHECKOUT}
    assert alerts.pods_named([pod_alert]) == {("shop", "checkout-7d9f-abcde")}
    assert verdicts([pod_alert], pod_owners=owners)["checkout"][0] is Health.UNHEALTHY
    assert verdicts([pod_alert])["checkout"][0] is Health.UNKNOWN  # owner not known: no word


def test_one_firing_instance_among_resolved_ones_keeps_it_unhealthy() -> None:
    resolved = alert(status="resolved", endsAt="2026-05-28T20:27:00Z")
    firing = alert(fingerprint="ffff000011112222")
    got = verdicts([resolved, firing])
    assert got["checkout"] == (Health.UNHEALTHY, "AlertFiring")


# --- the book -----------------------------------------------------------------------------


def test_a_resend_changes_nothing_and_a_new_word_does() -> None:
    book = alerts.AlertBook()
    assert book.receive([alert()], now=T0) == 1
    assert book.receive([alert()], now=T0 + 60) == 0  # Alertmanager's repeat
    assert book.receive([alert(status="resolved")], now=T0 + 120) == 1
    assert len(book) == 1


def test_an_empty_book_after_a_restart_decides_nothing() -> None:
    got = verdicts(alerts.AlertBook().alerts())
    assert {h for h, _ in got.values()} == {Health.UNKNOWN}


def test_ended_alerts_are_forgotten_after_a_while_and_firing_ones_kept() -> None:
    book = alerts.AlertBook()
    book.receive(
        [alert(status="resolved", endsAt=START), alert(fingerprint="f2")],
        now=T0,
    )
    book.prune(now=T0 + alerts.KEEP_RESOLVED + 1)
    assert [a.fingerprint for a in book.alerts()] == ["f2"]


def test_the_book_is_bounded() -> None:
    book = alerts.AlertBook()
    many = [alert(fingerprint=f"fp{i}") for i in range(alerts.MAX_ALERTS + 5)]
    book.receive(many, now=T0)
    assert len(book) == alerts.MAX_ALERTS


# --- the receiver's checks ------------------------------------------------------------------


def test_only_the_right_bearer_token_is_authorized() -> None:
    assert authorized("Bearer s3cret", "s3cret")
    assert authorized("bearer s3cret", "s3cret")
    assert not authorized("Bearer wrong", "s3cret")
    assert not authorized("Basic czNjcmV0", "s3cret")
    assert not authorized(None, "s3cret")
    assert not authorized("Bearer ", "")  # no token read: nobody gets in


def test_a_receiver_without_a_token_file_does_not_start() -> None:
    assert "--alert-webhook-token-file" in check(Settings(alert_webhook_port=9443))
    assert check(Settings(alert_webhook_port=9443, alert_webhook_token_file="/t")) == ""
    assert "go together" in check(
        Settings(alert_webhook_port=1, alert_webhook_token_file="/t", alert_webhook_cert_file="/c")
    )


# --- the policy ---------------------------------------------------------------------------


def _policy(trigger: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "shop", "generation": 1},
        "spec": {
            "target": {"selector": {"matchLabels": {"app": "shop"}}},
            "triggers": [{"name": "errors", **trigger}],
            "remediation": {"steps": [{"restart": {}}]},
        },
    }


def test_an_alert_trigger_parses() -> None:
    policy = parse(_policy({"alert": {"name": "HighErrorRate", "matchers": {"severity": "page"}}}))
    (trigger,) = policy.triggers
    assert trigger.kind == "alert"
    assert trigger.alert == TRIGGER


@pytest.mark.parametrize(
    ("alert", "field"),
    [
        ({}, "spec.triggers[0].alert.name"),
        (
            {"name": "A", "matchers": {"bad-label": "x"}},
            "spec.triggers[0].alert.matchers.bad-label",
        ),
        ({"name": "A", "matchers": {"severity": ""}}, "spec.triggers[0].alert.matchers.severity"),
        ({"name": "A", "matchers": "severity=page"}, "spec.triggers[0].alert.matchers"),
    ],
)
def test_a_bad_alert_trigger_names_the_field(alert: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse(_policy({"alert": alert}))
    assert err.value.field == field


# --- Alertmanager's own list (a silenced alert's resolution is never notified) -------------


def test_the_api_listing_is_firing_and_what_it_lacks_has_resolved() -> None:
    item = {
        "fingerprint": "a1b2c3d4e5f60708",
        "labels": PAYLOAD["alerts"][0]["labels"],
        "annotations": {},
        "startsAt": START,
        "endsAt": "2026-05-28T20:31:40Z",
        "status": {"state": "suppressed", "silencedBy": ["s1"], "inhibitedBy": []},
    }
    (listed,) = alerts.from_api([item, {"labels": {}}])  # the second is no alert: skipped
    assert listed.firing(T0 + 60)
    book = alerts.AlertBook()
    book.replace_matching(TRIGGER, [listed], now=T0 + 60)
    assert verdicts(book.alerts())["checkout"][0] is Health.UNHEALTHY
    other = alert(fingerprint="other", labels={**PAYLOAD["alerts"][0]["labels"], "alertname": "X"})
    book.receive([other], now=T0 + 60)
    assert book.replace_matching(TRIGGER, [], now=T0 + 70) == 1  # only this trigger's alert
    assert verdicts(book.alerts(), now=T0 + 71)["checkout"] == (Health.HEALTHY, "AlertResolved")
    assert {a.fingerprint: a.status for a in book.alerts()}["other"] == "firing"


def test_alertmanager_listing_nothing_is_healthy_while_fresh_and_unknown_after() -> None:
    book = alerts.AlertBook()  # a restarted operator: no webhook word yet
    assert book.listed_at(TRIGGER) is None
    book.replace_matching(TRIGGER, [], now=T0)
    listed = book.listed_at(TRIGGER)
    fresh = verdicts(book.alerts(), now=T0 + 5, listed_at=listed)
    assert fresh["checkout"] == (Health.HEALTHY, "NotListed")
    stale = verdicts(book.alerts(), now=T0 + alerts.LISTING_FRESH + 1, listed_at=listed)
    assert stale["checkout"][0] is Health.UNKNOWN  # Alertmanager unreachable since: no word


# --- verify.alertResolved: a healthy verdict waits for the workload's alerts -----------------


def _healthy(workload: WorkloadRef = CHECKOUT) -> Signal:
    return Signal(
        policy="shop", workload=workload, trigger="crashloop", health=Health.HEALTHY, at=T0 + 60
    )


def test_a_healthy_verdict_waits_while_an_alert_about_the_workload_fires() -> None:
    firing = alert()  # HighErrorRate about shop/checkout
    gated = alerts.gate(_healthy(), [firing], now=T0 + 60)
    assert (gated.health, gated.cause) == (Health.UNKNOWN, "AlertFiring")  # never an action
    assert "HighErrorRate" in gated.detail
    resolved = alert(status="resolved", endsAt=START)
    assert alerts.gate(_healthy(), [resolved], now=T0 + 60).health is Health.HEALTHY
    assert alerts.gate(_healthy(CART), [firing], now=T0 + 60).health is Health.HEALTHY
    unhealthy = dataclasses.replace(_healthy(), health=Health.UNHEALTHY)
    assert alerts.gate(unhealthy, [firing], now=T0 + 60) == unhealthy  # only healthy waits


def test_a_listing_for_a_workload_resolves_only_that_workloads_alerts() -> None:
    book = alerts.AlertBook()
    labels = PAYLOAD["alerts"][0]["labels"]
    cart = alert(fingerprint="cart1", labels={**labels, "deployment": "cart"})
    book.receive([alert(), cart], now=T0)
    book.replace_listed([], covers=lambda a: alerts.about(a, CHECKOUT), now=T0 + 10)
    states = {a.fingerprint: a.status for a in book.alerts()}
    assert states == {"a1b2c3d4e5f60708": "resolved", "cart1": "firing"}


def test_verify_alert_resolved_parses() -> None:
    body = _policy({"crashLoop": {}})
    body["spec"]["remediation"]["verify"] = {"for": "1m", "alertResolved": True}
    assert parse(body).remediation.verify_alert_resolved
    body["spec"]["remediation"]["verify"]["alertResolved"] = "yes"
    with pytest.raises(PolicyError) as err:
        parse(body)
    assert err.value.field == "spec.remediation.verify.alertResolved"
