"""Loopback receivers for notifications, driven by apprise's real code path.

``Webhook``: an HTTP server that takes apprise's ``json://`` POSTs (it can be told to
answer 500 for a while, as an outage). ``Smtp``: an ``aiosmtpd`` server that takes
``mailto://`` messages. Both bind 127.0.0.1 only and keep what they received.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.cluster import free_port


class Webhook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.refused = 0
        self._fail = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size)
                with outer._lock:
                    failing = outer._fail > 0
                    if failing:
                        outer._fail -= 1
                        outer.refused += 1
                    else:
                        outer.received.append(json.loads(raw))
                        outer.paths.append(self.path)
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/oncall") -> str:
        """The apprise URL of this receiver."""
        return f"json://127.0.0.1:{self.port}{path}"

    def fail_next(self, n: int) -> None:
        """Answer 500 to the next ``n`` POSTs."""
        with self._lock:
            self._fail = n

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str


class _Handler:
    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain",)) if msg.is_multipart() else msg
        text = part.get_content() if part is not None else ""
        self.mails.append(
            Mail(
                sender=str(envelope.mail_from),
                recipients=tuple(envelope.rcpt_tos),
                subject=str(msg["Subject"]),
                text=str(text),
            )
        )
        return "250 OK"


class Smtp:
    def __init__(self) -> None:
        self._handler = _Handler()
        self.port = free_port()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def url(self, to: str = "oncall@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=selfheal@example.com&to={to}&mode=insecure"

    @property
    def mails(self) -> list[Mail]:
        return list(self._handler.mails)

    def close(self) -> None:
        self._controller.stop()
