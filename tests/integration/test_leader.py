"""Leader election against the real kube-apiserver: two candidates, one Lease.

Each test runs ``selfheal.clients.lease.LeaderElector`` with client-go's default timings
(LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s) and prints what it measured.
A leader is "killed" by cancelling its task without the release (as SIGKILL leaves
the Lease), "cut off" by a loopback TCP relay in front of the API server that the test
stops forwarding. The chart's RBAC for the Lease is in tests/e2e/test_leader_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from selfheal.clients import kube as k
from selfheal.clients.lease import API_VERSION, JITTER_FACTOR, LeaderElector, Record, Timings
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration

T = Timings()
LEASE = "selfheal-test"
# The longest a candidate sleeps between attempts (client-go's jitter), plus slack for
# two requests on a loaded 2-core machine.
POLL = T.retry_period * (1 + JITTER_FACTOR)
SLACK = 1.5


class Relay:
    """A loopback TCP relay to the API server (TLS passes through untouched) that the
    test can cut: ``refuse`` closes every connection and stops listening (connection
    refused, server disconnected); ``silent`` keeps connections open but forwards
    nothing (requests hang until their timeout). ``heal`` forwards again."""

    def __init__(self, target: str) -> None:
        url = urlsplit(target)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.listen_port = 0
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.listen_port, reuse_address=True
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.listen_port}"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.add(server_w)
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )
        for w in (client_w, server_w):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            if not self.silent:  # silent: swallow every byte, answer nothing
                w.write(data)
                await w.drain()

    def _abort_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def cut(self, mode: str) -> None:
        if mode == "silent":
            self.silent = True
            return
        assert mode == "refuse"
        assert self._server is not None
        self._server.close()
        self._abort_all()
        await self._server.wait_closed()
        self._server = None

    async def heal(self) -> None:
        self._abort_all()  # half-swallowed TLS streams are beyond repair
        self.silent = False
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()


class Candidates:
    """Electors on one Lease, each with its own client and task; all stopped at the end."""

    def __init__(self, namespace: str, kubeconfig: Path) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.clients: list[k.Kube] = []

    async def start(self, name: str, *, kubeconfig: Path | None = None) -> LeaderElector:
        kube = await k.Kube.connect(kubeconfig=str(kubeconfig or self.kubeconfig))
        self.clients.append(kube)
        el = LeaderElector(
            kube=kube, namespace=self.namespace, name=LEASE, identity=f"{name}_{id(kube):x}"
        )
        self.tasks[el.identity] = asyncio.create_task(el.run(), name=el.identity)
        return el

    def task(self, el: LeaderElector) -> asyncio.Task[None]:
        return self.tasks[el.identity]

    async def kill(self, el: LeaderElector) -> None:
        """As SIGKILL: the process is gone and the Lease is left as it was."""
        el.release_on_cancel = False
        await self.stop(el)

    async def stop(self, el: LeaderElector) -> None:
        """As a graceful shutdown: cancelled, so it releases the Lease if it holds it."""
        task = self.task(el)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for kube in self.clients:
            await kube.close()


@pytest.fixture
async def candidates(cluster: Cluster, namespace: str) -> AsyncIterator[Candidates]:
    c = Candidates(namespace, cluster.kubeconfig)
    try:
        yield c
    finally:
        await c.close()


async def lease(kube: k.Kube, namespace: str) -> Record:
    return Record.of(await kube.get(k.group(API_VERSION, namespace, "leases", LEASE)))


async def until(what: str, check: Callable[[], bool], *, timeout: float) -> float:
    """Poll ``check`` every 20 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.1f}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic()


async def leading_with_standby(candidates: Candidates, **kw: Any) -> tuple[LeaderElector, ...]:
    """``a`` leads (started first), ``b`` stands by and has seen ``a`` in the Lease."""
    a = await candidates.start("a", **kw)
    await asyncio.wait_for(a.wait_for_leadership(), timeout=10)
    b = await candidates.start("b")
    await until("b sees a as the holder", lambda: b.leader == a.identity, timeout=POLL + SLACK)
    return a, b


async def test_two_candidates_on_one_lease_exactly_one_leads(
    kube: k.Kube, namespace: str, candidates: Candidates
) -> None:
    # Started together: both find no Lease and race to create it; the API server lets
    # exactly one create succeed (the other gets 409 AlreadyExists).
    a, b = await asyncio.gather(candidates.start("a"), candidates.start("b"))
    await until("someone leads", lambda: a.is_leader or b.is_leader, timeout=10)
    leader, standby = (a, b) if a.is_leader else (b, a)
    first = await lease(kube, namespace)
    # Over several renewals (and several of the standby's attempts), never two leaders.
    deadline = time.monotonic() + 2 * POLL
    while time.monotonic() < deadline:
        assert [e.is_leader for e in (leader, standby)] == [True, False]
        await asyncio.sleep(0.05)
    rec = await lease(kube, namespace)
    assert rec.holder == leader.identity
    assert rec.lease_duration_seconds == 15
    assert rec.transitions == 0  # created by the leader: no transition yet
    assert rec.renew_time != first.renew_time  # renewed meanwhile
    assert rec.acquire_time == first.acquire_time
    assert standby.leader == leader.identity
    assert not candidates.task(standby).done()


async def test_a_killed_leader_is_replaced_within_lease_duration_and_a_retry(
    kube: k.Kube, namespace: str, candidates: Candidates
) -> None:
    a, b = await leading_with_standby(candidates)
    before = await lease(kube, namespace)
    await asyncio.sleep(T.retry_period * 1.5)  # a few renewals: a live leader, then none
    await candidates.kill(a)
    killed = time.monotonic()
    took_over = await until("b leads", lambda: b.is_leader, timeout=T.lease_duration + POLL + 5)
    failover = took_over - killed
    print(
        f"\nfailover after the leader was killed: {failover:.2f}s "
        f"(LeaseDuration {T.lease_duration:.0f}s, RetryPeriod {T.retry_period:.0f}s)"
    )
    # Not before the killed leader's last renewal could have run out (it renewed at most
    # a RetryPeriod before the kill), and no later than one poll after the expiry.
    assert T.lease_duration - T.retry_period - SLACK <= failover
    assert failover <= T.lease_duration + POLL + SLACK
    rec = await lease(kube, namespace)
    assert rec.holder == b.identity
    assert rec.transitions == before.transitions + 1


async def test_a_released_lease_is_taken_over_at_the_next_attempt(
    kube: k.Kube, namespace: str, candidates: Candidates
) -> None:
    a, b = await leading_with_standby(candidates)
    before = await lease(kube, namespace)
    seen: list[bool] = []

    async def watch_b() -> None:
        async for leading in b.transitions():
            seen.append(leading)

    watcher = asyncio.create_task(watch_b())
    await asyncio.sleep(0)  # subscribed before anything can change
    await candidates.stop(a)
    released = time.monotonic()
    assert not a.is_leader  # stopped leading before the release was written
    rec = await lease(kube, namespace)
    assert rec.holder in ("", b.identity)  # released (b may be quicker than this read)
    took_over = await until("b leads", lambda: b.is_leader, timeout=POLL + SLACK)
    handover = took_over - released
    print(
        f"\nhandover after a graceful release: {handover:.2f}s "
        f"(RetryPeriod {T.retry_period:.0f}s, jittered up to {POLL:.1f}s)"
    )
    assert handover <= POLL + SLACK  # not a LeaseDuration
    rec = await lease(kube, namespace)
    assert rec.holder == b.identity
    assert rec.transitions == before.transitions + 1
    await asyncio.wait_for(b.wait_for_leadership(), timeout=0.1)  # returns at once now
    watcher.cancel()
    assert seen == [True]


def _kubeconfig_via(cluster: Cluster, server: str, path: Path) -> Path:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for c in config["clusters"]:
        c["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("mode", ["refuse", "silent"])
async def test_a_leader_cut_off_from_the_api_stops_leading_before_its_lease_can_expire(
    kube: k.Kube,
    namespace: str,
    cluster: Cluster,
    candidates: Candidates,
    tmp_path: Path,
    mode: str,
) -> None:
    relay = Relay(cluster.server)
    await relay.start()
    try:
        via = _kubeconfig_via(cluster, relay.url, tmp_path / "via-relay.kubeconfig")
        a, b = await leading_with_standby(candidates, kubeconfig=via)
        before = await lease(kube, namespace)
        await relay.cut(mode)
        cut = time.monotonic()
        stopped = await until(
            "a stops leading", lambda: not a.is_leader, timeout=T.renew_deadline + SLACK
        )
        # At that moment the Lease still names a: nobody could have taken it over yet.
        assert (await lease(kube, namespace)).holder == a.identity
        assert not b.is_leader
        took_over = await until("b leads", lambda: b.is_leader, timeout=T.lease_duration + POLL)
        print(
            f"\n[{mode}] leader stopped {stopped - cut:.2f}s after the cut; the standby "
            f"took over {took_over - stopped:.2f}s later"
        )
        # a's last renewal was sent before the cut: it stops RenewDeadline after it...
        assert stopped - cut <= T.renew_deadline + 0.5
        # ... and the standby waits LeaseDuration from when it saw that renewal, so there
        # are LeaseDuration - RenewDeadline (5 s) with no leader at all, never two.
        assert took_over - stopped >= T.lease_duration - T.renew_deadline - 0.5
        rec = await lease(kube, namespace)
        assert (rec.holder, rec.transitions) == (b.identity, before.transitions + 1)

        # Errors never ended a's loop: back in touch, it sees b and stands by.
        assert not candidates.task(a).done()
        await relay.heal()
        await until("a sees b as the holder", lambda: a.leader == b.identity, timeout=15)
        assert not a.is_leader
        assert b.is_leader
    finally:
        await relay.close()
