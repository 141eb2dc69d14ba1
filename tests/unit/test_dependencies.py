"""Dependency health, the pure parts: host names found, matched to Services, counted."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.evidence.checklist import checklist
from selfheal.evidence.dependencies import Dependency, candidates, endpoint_counts, match
from tests.unit.test_render import bundle, describe


def service(ns: str, name: str, ip: str = "", kind: str = "ClusterIP") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind}
    if ip:
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


SERVICES = [
    service("shop", "payments", "10.96.0.12"),
    service("shop", "db", "10.96.0.20"),
    service("billing", "ledger", "10.96.1.3"),
    service("shop", "legacy", kind="ExternalName"),
    service("shop", "main"),  # a Service named like a word in a stack trace
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("POST http://payments:8080/charge failed: connection refused", ("shop", "payments")),
        ("dial tcp: lookup payments.shop on 10.96.0.10:53: no such host", ("shop", "payments")),
        ("upstream ledger.billing.svc.cluster.local:9090 timed out", ("billing", "ledger")),
        ("grpc: ledger.billing.svc unavailable", ("billing", "ledger")),
        ("connect ECONNREFUSED 10.96.0.12:8080", ("shop", "payments")),
        ("OperationalError: could not connect to server: host=db port=5432", ("shop", "db")),
        ("redis://:[REDACTED]@db:6379/0", ("shop", "db")),
    ],
)  # fmt: skip
def test_host_names_in_logs_map_to_services(text: str, expected: tuple[str, str]) -> None:
    found = match(candidates([text]), SERVICES, namespace="shop")
    assert [(ns, name) for ns, name, _, _ in found] == [expected]


def test_words_and_frames_are_not_hosts() -> None:
    trace = (
        'Traceback (most recent call last):\n  File "/app/main.py", line 42, in <module>\n'
        "    main()\nat com.shop.Main.run(Main.java:12)\n"
        "2026-11-28T08:00:00Z payments module loaded; db schema v3"
    )
    assert match(candidates([trace]), SERVICES, namespace="shop") == []


def test_a_bare_name_resolves_in_the_pods_namespace_only() -> None:
    found = match(candidates(["http://ledger:9090"]), SERVICES, namespace="shop")
    assert found == []
    found = match(candidates(["http://ledger:9090"]), SERVICES, namespace="billing")
    assert [(ns, n) for ns, n, _, _ in found] == [("billing", "ledger")]


def test_endpoint_counts_follow_the_endpointslice_rules() -> None:
    slices = [
        {
            "endpoints": [
                {"addresses": ["10.1.0.1"], "conditions": {"ready": True},
                 "targetRef": {"uid": "a"}},
                {"addresses": ["10.1.0.2"], "conditions": {"ready": False},
                 "targetRef": {"uid": "b"}},
                {"addresses": ["10.1.0.3"], "conditions": {}, "targetRef": {"uid": "c"}},
                {"addresses": ["10.1.0.4"], "conditions": {"ready": True, "terminating": True},
                 "targetRef": {"uid": "d"}},
            ]
        },
        # The IPv6 slice lists pod "a" again: one endpoint, not two.
        {"endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": True},
                        "targetRef": {"uid": "a"}}]},
    ]  # fmt: skip
    assert endpoint_counts(slices) == (2, 4)
    assert endpoint_counts([]) == (0, 0)


def test_an_unhealthy_dependency_comes_first_in_the_checklist_and_the_ticket() -> None:
    b = bundle()
    b.dependencies = [
        Dependency(namespace="shop", service="payments", seen_as="payments:8080", ready=0,
                   total=3),
        Dependency(namespace="shop", service="db", seen_as="db", ready=2, total=2),
    ]  # fmt: skip
    checks = checklist(b, cause="CrashLoopBackOff")
    assert checks[0].title == "Dependency payments.shop is down"
    assert checks[0].detail == (
        "payments.shop: 0 of 3 endpoints ready (named as payments:8080): fix it first"
    )
    text = describe(b)
    assert "* (x) payments.shop: 0 of 3 endpoints ready (named as payments:8080)" in text
    assert "* (/) db.shop: 2 of 2 endpoints ready (named as db)" in text


def test_a_dependency_with_its_own_open_incident_is_named_with_it() -> None:
    b = bundle()
    b.dependencies = [
        Dependency(namespace="shop", service="payments", seen_as="payments", ready=2, total=2,
                   incidents=("payments-error-ratio-0a1b2c-1",)),
    ]  # fmt: skip
    [first, *_] = checklist(b, cause="CrashLoopBackOff")
    assert first.title == "Dependency payments.shop has an open incident"
    line = "payments.shop: 2 of 2 endpoints ready; open incident payments-error-ratio-0a1b2c-1"
    assert first.detail == f"{line} (named as payments): fix it first"
    assert f"* (x) {line} (named as payments)" in describe(b)
