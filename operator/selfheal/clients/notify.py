"""A thin, typed asyncio wrapper over the synchronous ``apprise`` package.

Each target (one apprise URL) is sent on its own, in this client's bounded
``ThreadPoolExecutor`` (one slow target, or one slow notification backend, cannot
starve Jira's or Prometheus' threads), under an overall deadline (``asyncio.wait_for``)
on top of the socket timeouts given to the apprise plugin.

Errors map to a small taxonomy:

- ``NotifyUnavailable``: the target did not take the message (no answer, a timeout,
  a refusal apprise does not tell apart from an outage); worth retrying.
- ``NotifyRejected``: the URL cannot be used at all (an unknown scheme, a malformed
  URL); retrying is useless.

URLs carry credentials: messages name a target by its position and scheme only
(``target 2 (json)``), never by the URL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import time
from collections.abc import Sequence

from selfheal import metrics

BACKEND = "notify"
ERROR_LIMIT = 300
"""Characters of apprise's own log message kept in an error."""


class NotifyError(Exception):
    """Sending to one target failed."""

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target
        """The target as messages name it: ``target N (scheme)``."""


class NotifyUnavailable(NotifyError):
    """Temporary: the target did not take the message; retry later."""


class NotifyRejected(NotifyError):
    """Permanent: the URL cannot be used (unknown scheme, malformed)."""


def target_id(url: str) -> str:
    """A short stable hash of a URL: records which targets took a message without
    storing the URL (which carries credentials)."""
    return hashlib.sha256(url.strip().encode()).hexdigest()[:16]


def parse_urls(text: str) -> list[str]:
    """The URLs of a Secret value: one a line; blank lines and ``#`` comments skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower()[:16] if sep else "?"


class Notifier:
    def __init__(self, *, timeout: float = 10.0, max_workers: int = 2) -> None:
        """``timeout``: seconds for one target (connect and read each, and the whole
        send, which may be several requests, gets ``2 * timeout``); ``max_workers``:
        threads of this client's own executor."""
        self.timeout = timeout
        self.deadline = 2 * timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="selfheal-notify"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def send(self, *, url: str, position: int, title: str, body: str) -> None:
        """Send one message to one target; ``position`` (1-based) names it in errors.

        Raises ``NotifyRejected`` or ``NotifyUnavailable``.
        """
        # Imported on first use: apprise loads every plugin (tens of ms), and the
        # operator needs none of them to become ready.
        import apprise

        target = f"target {position} ({_scheme(url)})"
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            metrics.BACKEND_ERRORS.labels(BACKEND, "rejected").inc()
            raise NotifyRejected(
                f"{target}: not a usable apprise URL (unknown scheme or malformed)",
                target=target,
            )
        # apprise's own socket timeouts (its defaults are 4 s).
        plugin.socket_connect_timeout = self.timeout
        plugin.socket_read_timeout = self.timeout

        def run() -> tuple[bool, str]:
            with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as logs:  # type: ignore[no-untyped-call]
                ok = bool(plugin.notify(body=body, title=title))
                return ok, logs.getvalue()

        started = time.monotonic()
        status = "ok"
        loop = asyncio.get_running_loop()
        try:
            ok, log = await asyncio.wait_for(
                loop.run_in_executor(self._executor, run), timeout=self.deadline
            )
        except TimeoutError:
            status = "timeout"
            metrics.BACKEND_ERRORS.labels(BACKEND, "timeout").inc()
            raise NotifyUnavailable(
                f"{target}: no answer within {self.deadline:.0f}s", target=target
            ) from None
        except Exception as e:  # apprise plugins raise little, but a bug must not escape raw
            status = "error"
            metrics.BACKEND_ERRORS.labels(BACKEND, "error").inc()
            raise NotifyUnavailable(f"{target}: {type(e).__name__}", target=target) from None
        finally:
            metrics.BACKEND_REQUESTS.labels(BACKEND, "send", status).inc()
            metrics.BACKEND_LATENCY.labels(BACKEND).observe(time.monotonic() - started)
        if not ok:
            metrics.BACKEND_ERRORS.labels(BACKEND, "refused").inc()
            lines = [line.strip() for line in log.splitlines() if line.strip()]
            why = (lines[-1] if lines else "the target did not take the message")[:ERROR_LIMIT]
            raise NotifyUnavailable(f"{target}: {why}", target=target)


def describe(errors: Sequence[NotifyError]) -> str:
    """One line for ``lastError``."""
    return "; ".join(str(e) for e in errors)
