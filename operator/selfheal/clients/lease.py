"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

One replica leads (evaluates and acts); the others stand by with warm caches and take
over when the leader stops renewing. The rules are those of client-go's
``tools/leaderelection`` (what kube-controller-manager and controller-runtime use):

- A candidate acquires the Lease when nobody holds it (``holderIdentity`` empty, as a
  graceful release leaves it) or when it has seen the Lease *unchanged* for the
  holder's ``leaseDurationSeconds``. "Seen" is on this process's own monotonic clock,
  from the moment it first received that version of the record: the timestamps in the
  Lease were written by another machine's clock and are never compared with ours. So
  clock offsets between nodes do not matter (clock *rates* would, within the ratio of
  LeaseDuration to RenewDeadline).
- Every write is a PUT carrying the ``resourceVersion`` that was read (or a create):
  of two candidates racing for an expired Lease exactly one write succeeds; the other
  gets a 409 and stays a standby. A takeover increments ``leaseTransitions``.
- The leader renews every RetryPeriod. If it has not renewed within RenewDeadline of
  the last renewal it *sent*, it stops leading: ``is_leader`` turns false. A renewal
  reached the API server no earlier than it was sent, and a standby saw it no earlier
  than that, so the old leader stops at least LeaseDuration - RenewDeadline (5 s by
  default) before any standby may take over.
- On cancellation (graceful shutdown) the leader stops leading first, then releases
  the Lease (``ReleaseOnCancel``: empty holder), so a standby takes over at its next
  attempt instead of waiting for the Lease to expire.
- An API error of any kind (5xx, a refused connection, a dropped connection, a
  timeout, a garbled answer) is a failed attempt, never the end of the loop.

Unlike client-go's ``Run``, losing the Lease does not end ``run()``: the elector goes
back to being a candidate. Everything selfheal must not lose lives in the API server,
and what acts checks ``is_leader`` (or the ``on_stopped_leading`` hook) first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from selfheal.clients import kube as k

logger = logging.getLogger(__name__)

API_VERSION = "coordination.k8s.io/v1"
JITTER_FACTOR = 1.2
"""client-go's ``JitterFactor``: a candidate waits RetryPeriod x (1 + [0, 1.2)) between
attempts, so standbys started together do not hit the API server in step."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timings:
    """client-go's defaults (kube-controller-manager, controller-runtime)."""

    lease_duration: float = 15.0
    """Seconds a standby waits without seeing the Lease change before it takes over.
    Written into the Lease as ``leaseDurationSeconds`` (whole seconds, at least 1)."""

    renew_deadline: float = 10.0
    """Seconds after its last successful renewal by which a leader must have renewed
    again, or it stops leading. Must be below ``lease_duration``."""

    retry_period: float = 2.0
    """Seconds between attempts: a leader's renewals, a candidate's tries (jittered)."""

    def __post_init__(self) -> None:
        # The same checks as client-go's NewLeaderElector: without them a leader could
        # still think it leads when a standby already may take over.
        if min(self.lease_duration, self.renew_deadline, self.retry_period) <= 0:
            raise ValueError(f"leader election timings must be positive: {self}")
        if self.lease_duration < 1:
            raise ValueError("lease_duration must be at least 1 s (the Lease counts seconds)")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}s) must be greater than "
                f"renew_deadline ({self.renew_deadline}s)"
            )
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}s) must be greater than "
                f"{JITTER_FACTOR} x retry_period ({self.retry_period}s)"
            )

    @property
    def lease_duration_seconds(self) -> int:
        # Rounded down, as client-go's int(LeaseDuration / time.Second): a standby must
        # never be told to wait longer than the leader's renew deadline protects.
        return max(1, int(self.lease_duration))

    def jittered(self, rnd: float) -> float:
        """The wait between a candidate's attempts; ``rnd`` is uniform in [0, 1)."""
        return self.retry_period * (1 + JITTER_FACTOR * rnd)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """The election state in a Lease's spec (client-go's ``LeaderElectionRecord``)."""

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            out["acquireTime"] = self.acquire_time
        if self.renew_time:
            out["renewTime"] = self.renew_time
        return out


@dataclasses.dataclass
class Observation:
    """The last record a candidate saw and when, on its own clock. Pure: no I/O."""

    record: Record | None = None
    at: float = -math.inf
    """Local monotonic time at which ``record`` was first received as it is."""

    def see(self, record: Record, now: float) -> bool:
        """Note a record just received; True when it changed (the clock restarts)."""
        if record == self.record:
            return False
        self.record, self.at = record, now
        return True

    def expires_at(self) -> float:
        """When the holder's term runs out by our clock (-inf: nothing seen yet)."""
        if self.record is None:
            return -math.inf
        return self.at + self.record.lease_duration_seconds

    def expired(self, now: float) -> bool:
        # client-go's isLeaseValid is observedTime + duration > now.
        return now >= self.expires_at()

    def may_acquire(self, identity: str, now: float) -> bool:
        """True when ``identity`` may write itself into the record: it is free, ours, or
        unchanged for the holder's whole lease duration."""
        if self.record is None:
            return True
        holder = self.record.holder
        return not holder or holder == identity or self.expired(now)

    def takeover_due_in(self, identity: str, now: float) -> float:
        """Seconds until ``may_acquire`` turns true without a change (0: now)."""
        if self.may_acquire(identity, now):
            return 0.0
        return self.expires_at() - now


def micro_time(at: dt.datetime) -> str:
    """A ``metav1.MicroTime``: RFC 3339 in UTC with microseconds."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_identity(pod_name: str | None = None) -> str:
    """``<pod>_<random>``: unique per process, so a restarted pod (same name) is a new
    candidate and never mistakes its predecessor's Lease for its own."""
    return f"{pod_name or socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


Hook = Callable[[], object]


class LeaderElector:
    """Campaigns for one Lease until cancelled. ``run()`` is the loop; the rest reads it.

    ``clock`` (monotonic seconds) and ``sleep`` must agree with each other; ``wall``
    only stamps the Lease's informational ``acquireTime``/``renewTime``.
    """

    def __init__(
        self,
        *,
        kube: k.Kube,
        namespace: str,
        name: str,
        identity: str,
        timings: Timings | None = None,
        release_on_cancel: bool = True,
        on_started_leading: Hook | None = None,
        on_stopped_leading: Hook | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = _utcnow,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.timings = timings or Timings()
        self.release_on_cancel = release_on_cancel
        self._identity = identity
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock, self._wall, self._sleep, self._rng = clock, wall, sleep, rng
        self._path = k.group(API_VERSION, namespace, "leases", name)
        self._observed = Observation()
        self._lease: dict[str, Any] | None = None  # the last Lease read or written
        self._leading = False
        self._valid_until = -math.inf
        self._became_leader = asyncio.Event()
        self._stopped_leading = asyncio.Event()
        self._stopped_leading.set()
        self._subscribers: list[asyncio.Queue[bool]] = []

    # -- what the rest of the operator reads

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def is_leader(self) -> bool:
        """True while this process leads. Checked against the renew deadline on every
        read, so it turns false in time even if the loop were starved."""
        return self._leading and self._clock() < self._valid_until

    @property
    def leader(self) -> str:
        """The holder last seen in the Lease ("" when none): for logs and status only."""
        return self._observed.record.holder if self._observed.record else ""

    @property
    def lease_path(self) -> str:
        return self._path

    async def wait_for_leadership(self) -> None:
        """Return once this process leads (at once if it does)."""
        await self._became_leader.wait()

    async def wait_for_loss(self) -> None:
        """Return once this process does not lead (at once if it does not)."""
        await self._stopped_leading.wait()

    async def transitions(self) -> AsyncIterator[bool]:
        """Each change of leadership from now on: True (started), False (stopped)."""
        queue: asyncio.Queue[bool] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    # -- the loop

    async def run(self) -> None:
        """Campaign, lead, renew; back to campaigning when the Lease is lost. Returns
        only by cancellation, after releasing the Lease if it held it."""
        logger.info("leader election: %s campaigns for Lease %s", self.identity, self._where)
        try:
            while True:
                await self._acquire()
                self._set_leading(True)
                await self._renew()
                self._set_leading(False)
        except asyncio.CancelledError:
            held = self._leading
            # Stop leading before the Lease is let go: nothing may act once a standby
            # can take over.
            self._set_leading(False)
            if held and self.release_on_cancel:
                await self._release()
            raise

    async def _acquire(self) -> None:
        while True:
            if await self._attempt(timeout=self.timings.renew_deadline):
                return
            delay = self.timings.jittered(self._rng())
            # Wake when the holder's term runs out by our clock, not a retry later.
            due = self._observed.takeover_due_in(self.identity, self._clock())
            await self._sleep(min(delay, due + 0.01) if due > 0 else delay)

    async def _renew(self) -> None:
        while True:
            await self._sleep(self.timings.retry_period)
            while True:
                remaining = self._valid_until - self._clock()
                if remaining <= 0:
                    logger.error(
                        "leader election: %s could not renew Lease %s within %.0fs: "
                        "stopped leading",
                        self.identity,
                        self._where,
                        self.timings.renew_deadline,
                    )
                    return
                if await self._attempt(timeout=remaining):
                    break
                if self.leader != self.identity:
                    logger.warning(
                        "leader election: Lease %s is held by %s now: stopped leading",
                        self._where,
                        self.leader,
                    )
                    return
                left = self._valid_until - self._clock()
                await self._sleep(min(self.timings.retry_period, max(0.0, left)))

    async def _attempt(self, *, timeout: float) -> bool:
        """One try to acquire or renew, bounded by ``timeout``; False on any failure."""
        try:
            return await asyncio.wait_for(self._try_acquire_or_renew(), timeout=max(timeout, 0))
        except TimeoutError:
            logger.warning("leader election: no answer about Lease %s in time", self._where)
        except k.Conflict:
            # Someone else wrote the Lease between our read and our write: they won.
            logger.debug("leader election: lost a race for Lease %s", self._where)
        except (k.KubeError, aiohttp.ClientError, OSError, ValueError) as e:
            # 5xx, refused or dropped connections, truncated bodies: a failed attempt.
            logger.warning("leader election: Lease %s: %s", self._where, e)
        except Exception:
            # Not expected; still a failed attempt: a dead loop would leave a standby
            # that never takes over.
            logger.exception("leader election: unexpected error on Lease %s", self._where)
        return False

    async def _try_acquire_or_renew(self) -> bool:
        now = self._wall()
        timings = self.timings
        # 1. Fast path, as client-go: the leader writes over the version it last wrote.
        if self._leading and self._lease is not None:
            old = self._observed.record or Record()
            record = dataclasses.replace(
                old,
                holder=self.identity,
                lease_duration_seconds=timings.lease_duration_seconds,
                renew_time=micro_time(now),
            )
            try:
                await self._write(record, create=False)
                return True
            except (k.KubeError, aiohttp.ClientError, OSError, ValueError) as e:
                logger.debug("leader election: fast renew failed (%s), reading the Lease", e)

        # 2. Read the Lease, or create it.
        try:
            lease = await self.kube.request("GET", self._path, timeout=timings.renew_deadline)
        except k.NotFound:
            record = Record(
                holder=self.identity,
                lease_duration_seconds=timings.lease_duration_seconds,
                acquire_time=micro_time(now),
                renew_time=micro_time(now),
                transitions=0,
            )
            await self._write(record, create=True)  # AlreadyExists is a 409: we lost
            return True
        self._lease = lease
        old = Record.of(lease)
        self._observed.see(old, self._clock())

        # 3. Held by someone else whose term has not run out by our clock: stand by.
        if not self._observed.may_acquire(self.identity, self._clock()):
            return False

        # 4. Ours to renew, or free, or expired: take it (with the resourceVersion read).
        ours = old.holder == self.identity
        record = Record(
            holder=self.identity,
            lease_duration_seconds=timings.lease_duration_seconds,
            acquire_time=old.acquire_time if ours else micro_time(now),
            renew_time=micro_time(now),
            transitions=old.transitions if ours else old.transitions + 1,
        )
        if not ours:
            logger.info(
                "leader election: taking Lease %s over from %s (transition %d)",
                self._where,
                old.holder or "nobody",
                record.transitions,
            )
        await self._write(record, create=False)
        return True

    async def _write(self, record: Record, *, create: bool) -> None:
        """Create or replace the Lease with ``record``; raises on any failure. Success
        renews our term from the moment the request was sent."""
        sent = self._clock()
        timeout = self.timings.renew_deadline
        if create:
            body: dict[str, Any] = {
                "apiVersion": API_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": record.spec(),
            }
            path = k.group(API_VERSION, self.namespace, "leases")
            lease = await self.kube.request("POST", path, body=body, timeout=timeout)
        else:
            assert self._lease is not None
            # metadata.resourceVersion rides along: the API server refuses (409) the PUT
            # if anyone wrote the Lease since we read it.
            body = {**self._lease, "spec": record.spec()}
            lease = await self.kube.request("PUT", self._path, body=body, timeout=timeout)
        self._lease = lease
        self._observed.see(Record.of(lease), self._clock())
        self._valid_until = sent + self.timings.renew_deadline

    async def _release(self) -> None:
        """Empty the holder (client-go's release), so a standby need not wait it out.
        Shielded and bounded: it runs while the task is being cancelled."""
        if self._lease is None:
            return
        old = self._observed.record or Record()
        now = micro_time(self._wall())
        # leaseDurationSeconds 1, as client-go: even a candidate that ignores an empty
        # holder waits one second only.
        record = dataclasses.replace(
            old, holder="", lease_duration_seconds=1, acquire_time=now, renew_time=now
        )
        body = {**self._lease, "spec": record.spec()}
        try:
            await asyncio.shield(
                asyncio.wait_for(
                    self.kube.request("PUT", self._path, body=body, timeout=5.0), timeout=5.0
                )
            )
            logger.info("leader election: %s released Lease %s", self.identity, self._where)
        except (Exception, asyncio.CancelledError) as e:
            # It expires on its own within lease_duration; nothing more to do.
            logger.warning("leader election: could not release Lease %s: %s", self._where, e)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self._stopped_leading.clear()
            self._became_leader.set()
            logger.info("leader election: %s leads (Lease %s)", self.identity, self._where)
        else:
            self._valid_until = -math.inf
            self._became_leader.clear()
            self._stopped_leading.set()
            logger.info("leader election: %s stopped leading", self.identity)
        hook = self._on_started if leading else self._on_stopped
        if hook is not None:
            try:
                hook()
            except Exception:
                # A hook's bug must not stop the election (nor a standby taking over).
                logger.exception("leader election: a leadership hook failed")
        for queue in self._subscribers:
            queue.put_nowait(leading)

    @property
    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"


__all__ = [
    "API_VERSION",
    "JITTER_FACTOR",
    "LeaderElector",
    "Observation",
    "Record",
    "Timings",
    "micro_time",
    "new_identity",
]
