"""Remediation names and labels: deterministic, valid, and ordered by incident."""

from __future__ import annotations

import re

import pytest

from selfheal.remediation import naming

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def name(workload: str = "checkout", trigger: str = "crashloop", ordinal: int = 1) -> str:
    return naming.remediation_name(
        namespace="shop", policy="checkout", workload=workload, trigger=trigger, ordinal=ordinal
    )


def test_name_is_readable_and_deterministic() -> None:
    fp = naming.fingerprint(
        namespace="shop", policy="checkout", workload="checkout", trigger="crashloop"
    )
    assert name() == f"checkout-crashloop-{fp}-1"
    assert name() == name()
    assert re.fullmatch(r"[0-9a-f]{12}", fp)


@pytest.mark.parametrize(
    ("workload", "trigger"),
    [
        ("a" * 253, "crashloop"),
        ("web.v2.frontend", "Error_Ratio"),
        ("x", "-" * 40),
        ("api", "p99 latency (ms) > 500!"),
        ("9lives", "z" * 63),
    ],
)
def test_name_is_a_dns_label_at_most_63_chars(workload: str, trigger: str) -> None:
    for ordinal in (1, 42, 123456):
        n = name(workload, trigger, ordinal)
        assert len(n) <= 63, n
        assert DNS_LABEL.match(n), n
        assert n.endswith(f"-{ordinal}")


def test_names_differ_by_policy_workload_trigger_and_namespace() -> None:
    base = dict(namespace="shop", policy="checkout", workload="checkout", trigger="crashloop")
    seen = {naming.remediation_name(**base, ordinal=1)}
    for key, value in (
        ("namespace", "shop2"),
        ("policy", "p2"),
        ("workload", "w2"),
        ("trigger", "t2"),
    ):
        seen.add(naming.remediation_name(**{**base, key: value}, ordinal=1))
    assert len(seen) == 5


def test_truncated_prefixes_stay_distinct_through_the_fingerprint() -> None:
    long = "a" * 100
    assert name(long + "x") != name(long + "y")


def test_ordinal_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ordinal"):
        name(ordinal=0)


def test_next_ordinal_follows_the_highest_of_this_fingerprint() -> None:
    fp = naming.fingerprint(
        namespace="shop", policy="checkout", workload="checkout", trigger="crashloop"
    )
    other = naming.fingerprint(namespace="shop", policy="checkout", workload="cart", trigger="x")
    assert naming.next_ordinal(existing=[], fingerprint=fp) == 1
    existing = [name(ordinal=1), name(ordinal=3), f"cart-x-{other}-9", "unrelated", f"x-{fp}-z"]
    assert naming.next_ordinal(existing=existing, fingerprint=fp) == 4
    assert naming.next_ordinal(existing=[name(ordinal=10), name(ordinal=2)], fingerprint=fp) == 11


def test_labels_are_valid_label_values_and_carry_the_fingerprint() -> None:
    labels = naming.labels(
        namespace="shop", policy="p" * 80, workload="web.v2-", trigger="p99 latency"
    )
    assert labels[naming.LABEL_FINGERPRINT] == naming.fingerprint(
        namespace="shop", policy="p" * 80, workload="web.v2-", trigger="p99 latency"
    )
    assert labels[naming.LABEL_WORKLOAD] == "web.v2"
    assert labels[naming.LABEL_TRIGGER] == "p99-latency"
    for value in labels.values():
        assert len(value) <= 63
        assert LABEL_VALUE.match(value), value
