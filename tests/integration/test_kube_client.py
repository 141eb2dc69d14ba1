"""The kube client against a loopback server that breaks its answers on purpose.

aiohttp's own errors (the server disconnecting before or in the middle of an answer, a
truncated or malformed body) are not ``OSError``; ``selfheal.clients.kube`` maps them to
a temporary ``KubeError`` (status 0) like a refused connection, and the next request on
the same client works again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from kubernetes.aio import client as kclient

from selfheal.clients.kube import Kube, KubeError

BODY = json.dumps({"kind": "Namespace", "metadata": {"name": "shop"}}).encode()
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

# How the server answers, one script per connection (then it answers properly).
ANSWERS: dict[str, bytes] = {
    # Reads the request, closes without a byte.
    "disconnect-before-answer": b"",
    # Promises 1000 bytes, sends part of the body, closes.
    "truncated-body": HEAD + b"Content-Length: 1000\r\n\r\n" + BODY[:10],
    # A chunked answer cut inside a chunk.
    "truncated-chunk": HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + BODY[:10],
    # A chunked answer with a chunk size that is not hex.
    "malformed-chunk": HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY + b"\r\n",
    # Headers cut in the middle.
    "truncated-headers": b"HTTP/1.1 200 OK\r\nContent-Ty",
}


class BreakingServer:
    """Answers each connection with the next queued script, or properly when none is."""

    def __init__(self) -> None:
        self.scripts: collections.deque[bytes] = collections.deque()
        self.requests = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> BreakingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One request per connection (``Connection: close``): aiohttp silently retries a
        # request whose reused keep-alive connection was closed, which would hide the
        # break this server is for.
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            self.requests += 1
            if self.scripts:
                writer.write(self.scripts.popleft())  # then close: the answer is broken
            else:
                writer.write(
                    HEAD
                    + f"Connection: close\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
                    + BODY
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[BreakingServer]:
    async with BreakingServer() as s:
        yield s


@pytest.fixture
async def kube(server: BreakingServer) -> AsyncIterator[Kube]:
    k = Kube(kclient.ApiClient(configuration=kclient.Configuration(host=server.url)), timeout=5)
    yield k
    await k.close()


@pytest.mark.parametrize("script", sorted(ANSWERS))
async def test_a_broken_answer_is_a_temporary_kube_error(
    server: BreakingServer, kube: Kube, script: str
) -> None:
    assert (await kube.get("/api/v1/namespaces/shop"))["metadata"]["name"] == "shop"
    # Twice: aiohttp resends a GET once by itself when the server disconnected before
    # answering (RFC 9112, 9.3.1), so a server that keeps breaking is what fails a call.
    server.scripts.extend([ANSWERS[script]] * 2)
    with pytest.raises(KubeError) as e:
        await kube.get("/api/v1/namespaces/shop")
    assert e.value.status == 0
    assert e.value.temporary
    assert "GET /api/v1/namespaces/shop: 0 " in str(e.value)
    server.scripts.clear()
    # The client is not poisoned: the next request (a new connection) is answered.
    assert (await kube.get("/api/v1/namespaces/shop"))["metadata"]["name"] == "shop"
    assert server.requests in (3, 4)


async def test_a_disconnect_on_a_write_is_a_temporary_kube_error(
    server: BreakingServer, kube: Kube
) -> None:
    server.scripts.append(ANSWERS["truncated-body"])
    with pytest.raises(KubeError) as e:
        await kube.patch("/api/v1/namespaces/shop", {"metadata": {"labels": {"a": "b"}}})
    assert (e.value.status, e.value.temporary) == (0, True)
    assert e.value.reason == "ClientPayloadError"


async def test_a_server_that_is_gone_is_a_temporary_kube_error(
    server: BreakingServer, kube: Kube
) -> None:
    await server.__aexit__()
    with pytest.raises(KubeError) as e:
        await kube.get("/api/v1/namespaces/shop")
    assert (e.value.status, e.value.temporary) == (0, True)
    await server.__aenter__()  # the fixture closes it again
