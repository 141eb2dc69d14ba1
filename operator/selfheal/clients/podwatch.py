"""A light Pod watcher: a paged list, then a watch, each Pod summarised at once.

What kopf (or a controller-runtime informer) keeps per Pod is the whole body; what
selfheal reads is a small summary. This client never holds a body beyond the moment it
is summarised:

- **List** in pages (``limit``/``continue``), each page decoded, its Pods passed to
  ``summarize`` and the page dropped; the list's ``resourceVersion`` is where the watch
  starts. The next page is requested before a page is decoded (its ``continue`` token
  is read from the head of the body), so the server's work and the client's overlap:
  at most two pages are held.
- **Watch** with ``allowWatchBookmarks``, the stream read line by line (one event a
  line, never the whole response), resumed from the last ``resourceVersion`` seen (an
  event's or a bookmark's) when the server ends it (``timeoutSeconds``) or the
  connection drops.
- **Relist** when the server says the version is gone (410 on the watch, an ``ERROR``
  event with code 410, or an expired ``continue`` token): the fresh listing is compared
  with what was kept, and every difference is reported (added, changed, deleted), so
  nothing that happened in between is lost.

``on_change(old, new)`` is called for each change of a summary: ``old`` ``None`` for a
new Pod, ``new`` ``None`` for a deleted one; a change that leaves the summary equal is
not reported. ``keep(namespace)`` (sharding) drops the objects of namespaces it refuses
before they are summarised: a cluster-wide watch filtered on the client, as
kube-state-metrics' shards do, so a shard holds only its share. ``on_change`` runs on
the event loop inside the stream's loop, so it must be quick (queue work, do not do it).
``synced`` turns True after the first complete listing and stays True across relists
(the cache keeps serving what it had meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import aiohttp

from selfheal.clients import kube as k

logger = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_LIMIT = 500
"""Pods per list page: one page's JSON (about 2-3 MB at 500 Pods) is the peak held."""
WATCH_TIMEOUT = 300
"""Seconds the server keeps one watch open (``timeoutSeconds``) before it is resumed."""
RETRY = (0.5, 30.0)
"""Seconds of the first wait after a failed request, and the cap of its doubling."""
GONE = 410


class _Gone(Exception):
    """The resourceVersion (or continue token) is too old: list again."""


@dataclasses.dataclass
class Stats:
    """What the watcher did, for tests and the bench (requests a user pays for)."""

    lists: int = 0
    """Complete listings: the first one and every relist."""
    pages: int = 0
    ahead: int = 0
    """Pages asked for before the previous page was decoded (its token read from its
    head); a wrong guess is not counted."""
    watches: int = 0
    """Watch requests opened (the first, and every resume)."""
    events: int = 0
    """ADDED, MODIFIED and DELETED events read from watches."""
    bookmarks: int = 0
    gone: int = 0
    """Times the server said 410 Gone (watch or continue token), each forcing a relist."""
    errors: int = 0
    """Failed requests or streams other than 410, each retried with backoff."""
    dropped: int = 0
    """Objects (listed or in events) of namespaces ``keep`` refused: never summarised."""


def collection(api: str, plural: str, namespace: str | None) -> str:
    """The list/watch path of a resource: ``api`` is ``v1`` or ``group/version``."""
    root = "/api/v1" if api == "v1" else f"/apis/{api}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


class PodWatcher(Generic[T]):
    """Pods (or, with ``api`` and ``plural``, any other resource) of one namespace, or of
    the whole cluster (``namespace`` ``None``)."""

    def __init__(
        self,
        kube: k.Kube,
        *,
        summarize: Callable[[Mapping[str, Any]], T],
        on_change: Callable[[T | None, T | None], None] | None = None,
        namespace: str | None = None,
        api: str = "v1",
        plural: str = "pods",
        page_limit: int = PAGE_LIMIT,
        watch_timeout: int = WATCH_TIMEOUT,
        retry: tuple[float, float] = RETRY,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        self.kube = kube
        self.summarize = summarize
        self.on_change = on_change
        self.namespace = namespace
        self.plural = plural
        self.page_limit = page_limit
        self.watch_timeout = watch_timeout
        self.retry = retry
        self.keep = keep
        """Namespace -> whether this process holds its objects; ``None``: all."""
        self.path = collection(api, plural, namespace)
        self.items: dict[str, T] = {}
        """Pod uid -> its summary: the cache itself."""
        self.resource_version = ""
        """Where the next watch starts; empty: list first."""
        self.stats = Stats()
        self._synced = asyncio.Event()

    @property
    def synced(self) -> bool:
        """The first complete listing is in (the cache may serve)."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def scope(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.plural}, {where}"

    async def run(self) -> None:
        """List and watch until cancelled; every failure is logged and retried."""
        delay = self.retry[0]
        while True:
            try:
                if not self.resource_version:
                    await self._relist()
                await self._watch()
                delay = self.retry[0]
            except _Gone:
                # Not an error: the server compacted past us. List again at once.
                self.stats.gone += 1
                self.resource_version = ""
                logger.info("%s: resourceVersion gone, listing again", self.scope)
            except k.KubeError as e:
                self.stats.errors += 1
                logger.warning("%s: %s; retried in %.1fs", self.scope, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry[1])

    # --- list ---------------------------------------------------------------------------

    async def _page(self, cont: str) -> bytes:
        query = {"limit": self.page_limit, "continue": cont or None}
        try:
            return await self.kube.raw("GET", self.path, query=query)
        except k.KubeError as e:
            if e.status == GONE:  # the continue token expired mid-listing
                raise _Gone from None
            raise

    async def _relist(self) -> None:
        fresh: dict[str, T] = {}
        cont = ""
        ahead: asyncio.Task[bytes] | None = None
        try:
            while True:
                data = await (ahead if ahead is not None else self._page(cont))
                # The next page is asked for before this one is decoded: the server
                # prepares it while the client decodes (the token heads the body).
                guess = _continue_of(data)
                ahead = asyncio.create_task(self._page(guess)) if guess else None
                with _collector_paused():
                    page = json.loads(data)
                    del data
                    for obj in page.get("items") or ():
                        obj_meta = obj.get("metadata") or {}
                        uid = obj_meta.get("uid")
                        if uid and self._kept(obj_meta):
                            fresh[str(uid)] = self.summarize(obj)
                    meta = page.get("metadata") or {}
                    cont = str(meta.get("continue") or "")
                    version = str(meta.get("resourceVersion") or "")
                    del page  # the page's bodies go now, before the next page arrives
                self.stats.pages += 1
                if ahead is not None and guess != cont:
                    await _cancelled(ahead)  # a wrong guess: ask for the right page
                    ahead = None
                elif ahead is not None:
                    self.stats.ahead += 1
                if not cont:
                    break
        finally:
            if ahead is not None:
                await _cancelled(ahead)
        before, self.items = self.items, fresh
        for uid, new in fresh.items():
            old = before.pop(uid, None)
            if old != new:
                self._emit(old, new)
        for old in before.values():
            self._emit(old, None)  # gone while we were not watching
        self.resource_version = version
        self.stats.lists += 1
        if not self.synced:
            logger.info("%s: %d listed in %d page(s)", self.scope, len(fresh), self.stats.pages)
        self._synced.set()

    # --- watch --------------------------------------------------------------------------

    async def _watch(self) -> None:
        query = {
            "watch": "true",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self.watch_timeout,
        }
        # No total limit (the server ends the watch); a silent socket past the server's
        # own timeout means the connection is dead.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10, sock_read=self.watch_timeout + 30
        )
        self.stats.watches += 1
        try:
            async with (
                self.kube.stream(self.path, query=query, timeout=timeout) as resp,
                contextlib.aclosing(_lines(resp)) as lines,
            ):
                async for line in lines:
                    self._event(json.loads(line))
        except k.KubeError as e:
            if e.status == GONE:
                raise _Gone from None
            raise
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as e:
            # A dropped connection or a torn line: resume from the last version seen.
            raise k.KubeError(
                0, type(e).__name__, str(e) or "stream lost", method="WATCH", path=self.path
            ) from None

    def _event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            if code == GONE:
                raise _Gone
            raise k.KubeError(
                code,
                str(obj.get("reason", "")),
                str(obj.get("message", "")),
                method="WATCH",
                path=self.path,
            )
        meta = obj.get("metadata") or {}
        version = str(meta.get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.stats.events += 1
            uid = str(meta.get("uid") or "")
            if kind == "DELETED":
                old = self.items.pop(uid, None)
                if old is not None:
                    self._emit(old, None)
            elif self._kept(meta):
                new = self.summarize(obj)
                old = self.items.get(uid)
                self.items[uid] = new
                if old != new:
                    self._emit(old, new)
        if version:
            self.resource_version = version

    def _kept(self, meta: Mapping[str, Any]) -> bool:
        if self.keep is None or self.keep(str(meta.get("namespace") or "")):
            return True
        self.stats.dropped += 1
        return False

    def _emit(self, old: T | None, new: T | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(old, new)
        except Exception:
            # One consumer's bug must not stop the cache that every workload reads.
            logger.exception("%s: a change handler failed", self.scope)


_CONTINUE = re.compile(rb'"continue":"([A-Za-z0-9_.=+/-]+)"')
HEAD = 1024
"""Bytes of a list's body searched for its ``metadata.continue`` (the API server writes
the list's metadata before its items)."""


def _continue_of(data: bytes) -> str:
    """The continue token at the head of a list's body; "" when none is seen there (the
    decoded page then says; a wrong guess only costs the page asked for too early)."""
    items = data.find(b'"items":', 0, HEAD)
    found = _CONTINUE.search(data, 0, items if items >= 0 else HEAD)
    return found.group(1).decode() if found else ""


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while one page is decoded, summarised and
    dropped (no ``await`` inside). A page is a tree of fresh dicts and lists (52,000 for
    500 of the bench's Pods); with the collector on, they set off collections that also
    walk every object the process holds: a page took two to three times as long as its
    decoding alone. A JSON tree has no cycles: reference counting frees it when dropped."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _cancelled(task: asyncio.Task[bytes]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, k.KubeError, _Gone):
        await task


async def _lines(resp: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
    """The body's lines as they arrive, whatever their length (a Pod with large
    annotations can exceed aiohttp's line limit)."""
    pending: list[bytes] = []
    async for chunk in resp.content.iter_any():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending.append(chunk[start:end])
            line = b"".join(pending)
            pending.clear()
            start = end + 1
            if line.strip():
                yield line
        if start < len(chunk):
            pending.append(chunk[start:])
    tail = b"".join(pending)
    if tail.strip():
        yield tail


def scopes(namespaces: tuple[str, ...]) -> tuple[str | None, ...]:
    """One watcher per watched namespace, or one cluster-wide (``None``)."""
    return tuple(namespaces) if namespaces else (None,)


__all__ = ["PodWatcher", "Stats", "collection", "scopes"]
