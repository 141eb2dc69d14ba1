"""The notification client and one attempt, through apprise's real code path against
loopback receivers: a JSON webhook and an SMTP server (aiosmtpd); the target URLs are
read from a real Secret on the local API server."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from selfheal.actions import notify
from selfheal.clients import kube as k
from selfheal.clients.notify import Notifier, NotifyRejected, NotifyUnavailable, target_id
from selfheal.policy.model import SecretKeyRef
from tests.support.cluster import free_port
from tests.support.notify_receivers import Smtp, Webhook

MSG = notify.Message(title="[selfheal] escalated: shop/pay", body="Ticket: OPS-1\nCause: x")


async def _until(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("not received")


async def test_a_json_webhook_gets_the_title_and_body(webhook: Webhook) -> None:
    n = Notifier(timeout=3)
    try:
        await n.send(url=webhook.url("/hooks/oncall"), position=1, title=MSG.title, body=MSG.body)
    finally:
        n.close()
    [got] = webhook.messages()
    assert got["title"] == MSG.title
    assert got["message"] == MSG.body
    assert webhook.paths == ["/hooks/oncall"]


async def test_an_smtp_server_gets_the_mail(smtp: Smtp) -> None:
    n = Notifier(timeout=3)
    try:
        await n.send(url=smtp.url(), position=1, title=MSG.title, body=MSG.body)
    finally:
        n.close()
    await _until(lambda: smtp.mails)
    [mail] = smtp.mails
    assert mail.recipients == ("oncall@example.com",)
    assert mail.subject == MSG.title
    assert "Ticket: OPS-1" in mail.text


async def test_failures_map_to_temporary_and_permanent(webhook: Webhook) -> None:
    n = Notifier(timeout=2)
    try:
        webhook.fail_next(1)
        with pytest.raises(NotifyUnavailable, match=r"target 2 \(json\).*500"):
            await n.send(url=webhook.url(), position=2, title="t", body="b")
        with pytest.raises(NotifyUnavailable, match=r"target 1 \(json\)"):
            await n.send(url=f"json://127.0.0.1:{free_port()}/x", position=1, title="t", body="b")
        with pytest.raises(NotifyRejected, match=r"target 3 \(nosuch\): not a usable"):
            await n.send(url="nosuch://token@host", position=3, title="t", body="b")
    finally:
        n.close()
    assert webhook.refused == 1


async def _secret(kube: k.Kube, ns: str, urls: str) -> SecretKeyRef:
    await kube.create(
        k.core(ns, "secrets"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "oncall"},
            "data": {"urls": base64.b64encode(urls.encode()).decode()},
        },
    )
    return SecretKeyRef(name="oncall", key="urls")


async def test_a_retry_sends_only_to_the_targets_that_did_not_take_it(
    kube: k.Kube, namespace: str, webhook: Webhook, smtp: Smtp
) -> None:
    ref = await _secret(kube, namespace, f"# on-call\n{smtp.url()}\n{webhook.url()}\n")
    n = Notifier(timeout=3)
    try:
        webhook.fail_next(1)
        first = await notify.attempt(
            notifier=n,
            kube=kube,
            namespace=namespace,
            ref=ref,
            msg=MSG,
            entry=notify.pending(notify.Kind.ESCALATION),
            now=1000.0,
            horizon=3600.0,
        )
        assert first.entry["state"] == "Pending"
        assert first.entry["delivered"] == [target_id(smtp.url())]
        assert "target 2 (json)" in first.entry["lastError"]
        assert webhook.url() not in first.entry["lastError"]
        second = await notify.attempt(
            notifier=n,
            kube=kube,
            namespace=namespace,
            ref=ref,
            msg=MSG,
            entry=first.entry,
            now=1010.0,
            horizon=3600.0,
        )
    finally:
        n.close()
    assert second.entry["state"] == "Sent"
    assert second.entry["attempts"] == 2
    await _until(lambda: smtp.mails)
    assert len(smtp.mails) == 1  # not sent again
    assert len(webhook.messages()) == 1


async def test_a_missing_secret_is_retried_and_given_up_at_the_horizon(
    kube: k.Kube, namespace: str
) -> None:
    ref = SecretKeyRef(name="nobody", key="urls")
    n = Notifier(timeout=2)
    try:
        first = await notify.attempt(
            notifier=n,
            kube=kube,
            namespace=namespace,
            ref=ref,
            msg=MSG,
            entry=notify.pending(notify.Kind.ESCALATION),
            now=1000.0,
            horizon=3600.0,
        )
        assert first.entry["state"] == "Pending"
        assert (
            f"Secret {namespace}/nobody key urls: the Secret does not exist"
            in (first.entry["lastError"])
        )
        late = await notify.attempt(
            notifier=n,
            kube=kube,
            namespace=namespace,
            ref=ref,
            msg=MSG,
            entry=first.entry,
            now=1000.0 + 3600.0,
            horizon=3600.0,
        )
    finally:
        n.close()
    assert late.gave_up
    assert late.entry["state"] == "Failed"
    assert late.entry["lastError"].startswith("gave up after 2 attempts")
