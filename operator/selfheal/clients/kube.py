"""A thin, typed asyncio client for the Kubernetes API (``kubernetes.aio``).

Bodies are plain JSON dicts, as kopf hands them to handlers, so no layer above
needs the generated models. Every call has a timeout. Errors map to a small
taxonomy: ``NotFound``, ``Conflict``, ``Forbidden``, ``Invalid`` and the
``KubeError`` base (``temporary`` for 429 and 5xx, worth retrying). No answer at all is
a ``KubeError`` with status 0 (temporary) too: a refused or reset connection, a timeout,
and aiohttp's own errors, which are not ``OSError`` (the server closing the connection
before or in the middle of an answer, a truncated or malformed body).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from urllib.parse import urlencode

import aiohttp
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig
from kubernetes.aio.client.exceptions import ApiException

from selfheal import metrics

Body = dict[str, Any]

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    """An API call failed. ``status`` is the HTTP status (0: no response)."""

    def __init__(self, status: int, reason: str, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def temporary(self) -> bool:
        return self.status in (0, 429) or self.status >= 500


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    """409: the object exists already, or its resourceVersion changed (optimistic lock)."""


class Forbidden(KubeError):
    pass


class Invalid(KubeError):
    """422: the API server (schema, CEL rules or admission) rejected the object."""


_BY_STATUS: dict[int, type[KubeError]] = {
    404: NotFound,
    409: Conflict,
    403: Forbidden,
    422: Invalid,
}


def _resource_of(path: str) -> str:
    # /api/v1/namespaces/ns/pods/p/log -> pods/log ; /apis/g/v/namespaces/ns/x -> x
    parts = [p for p in path.split("?")[0].split("/") if p]
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:] or ["namespaces"]
    if not parts:
        return "namespaces"
    return parts[0] + (f"/{parts[2]}" if len(parts) >= 3 else "")


class Kube:
    """One connection pool to one API server."""

    def __init__(self, api: kclient.ApiClient, *, timeout: float = 30.0) -> None:
        self._api = api
        self.timeout = timeout

    @classmethod
    async def connect(cls, *, kubeconfig: str | None = None, timeout: float = 30.0) -> Kube:
        """From a kubeconfig file, or the in-cluster service account when ``None``."""
        cfg = kclient.Configuration()
        if kubeconfig:
            await kconfig.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            kconfig.load_incluster_config(client_configuration=cfg)
        return cls(kclient.ApiClient(configuration=cfg), timeout=timeout)

    @classmethod
    def from_token(cls, *, host: str, token: str, ca_file: str, timeout: float = 30.0) -> Kube:
        cfg = kclient.Configuration(host=host)
        cfg.api_key = {"authorization": f"Bearer {token}"}
        cfg.ssl_ca_cert = ca_file
        return cls(kclient.ApiClient(configuration=cfg), timeout=timeout)

    @property
    def host(self) -> str:
        return cast(str, self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def raw(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, object] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> bytes:
        """One request; returns the response bytes or raises a ``KubeError``."""
        url = self._api.configuration.host + path
        if query:
            url += "?" + urlencode({k: _qs(v) for k, v in query.items() if v is not None})
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        auth: dict[str, str] = {}
        await self._api.update_params_for_auth(headers, auth, ["BearerToken"], path, method, body)
        resource = _resource_of(path)
        started = time.monotonic()
        status = "error"
        try:
            resp = await self._api.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                _request_timeout=timeout or self.timeout,
            )
            data = cast(bytes, await resp.read())
            status = str(resp.status)
            # kubernetes.aio's call_api returns error responses instead of raising them.
            if not 200 <= int(resp.status) <= 299:
                err = ApiException(status=resp.status, reason=resp.reason, body=data.decode())
                raise _error(err, method, path)
            return data
        except ApiException as e:
            status = str(e.status or 0)
            raise _error(e, method, path) from None
        except TimeoutError:
            raise KubeError(0, "Timeout", "no response in time", method=method, path=path) from None
        except OSError as e:  # refused, reset; aiohttp's ClientOSError too
            raise KubeError(0, "ConnectionError", str(e), method=method, path=path) from None
        except aiohttp.ClientError as e:
            # ServerDisconnectedError, ClientPayloadError, ClientConnectionError, and
            # ClientResponseError: aiohttp's parser refusing a malformed answer (its
            # "400" is the parser's, not the server's, so it is no answer either).
            raise KubeError(
                0, type(e).__name__, str(e) or "connection lost", method=method, path=path
            ) from None
        finally:
            metrics.BACKEND_REQUESTS.labels("kubernetes", f"{method} {resource}", status).inc()
            metrics.BACKEND_LATENCY.labels("kubernetes").observe(time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        timeout: aiohttp.ClientTimeout,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose body is read by the caller as it arrives (a watch, a large list).

        Yields the open response once its status is 2xx; an error status raises the
        ``KubeError`` of its body, as :meth:`raw` does. The body is never buffered here.
        """
        url = self._api.configuration.host + path
        if query:
            url += "?" + urlencode({k: _qs(v) for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json"}
        auth: dict[str, str] = {}
        await self._api.update_params_for_auth(headers, auth, ["BearerToken"], path, "GET", None)
        label = f"GET {_resource_of(path)}"
        status = "error"
        started = time.monotonic()
        try:
            resp = await self._api.call_api(
                "GET", url, header_params=headers, _request_timeout=timeout
            )
        except TimeoutError:
            raise KubeError(0, "Timeout", "no response in time", method="GET", path=path) from None
        except (OSError, aiohttp.ClientError) as e:
            raise KubeError(
                0, type(e).__name__, str(e) or "connection lost", method="GET", path=path
            ) from None
        finally:
            metrics.BACKEND_LATENCY.labels("kubernetes").observe(time.monotonic() - started)
        raw: aiohttp.ClientResponse = resp.response
        try:
            status = str(raw.status)
            if not 200 <= raw.status <= 299:
                data = await raw.read()
                err = ApiException(status=raw.status, reason=raw.reason, body=data.decode())
                raise _error(err, "GET", path)
            yield raw
        except BaseException:
            raw.close()  # a body left unread (a watch cut short) must not go back to the pool
            raise
        else:
            raw.release()
        finally:
            metrics.BACKEND_REQUESTS.labels("kubernetes", label, status).inc()

    async def request(self, method: str, path: str, **kw: Any) -> Body:
        data = await self.raw(method, path, **kw)
        return cast(Body, json.loads(data)) if data else {}

    async def get(self, path: str, **query: object) -> Body:
        return await self.request("GET", path, query=query or None)

    async def text(self, path: str, **query: object) -> str:
        return (await self.raw("GET", path, query=query or None)).decode("utf-8", "replace")

    async def create(self, path: str, body: Mapping[str, Any], *, dry_run: bool = False) -> Body:
        return await self.request("POST", path, body=body, query=_dry(dry_run))

    async def patch(
        self,
        path: str,
        body: object,
        *,
        content_type: str = MERGE,
        dry_run: bool = False,
        subresource: str | None = None,
    ) -> Body:
        p = f"{path}/{subresource}" if subresource else path
        return await self.request(
            "PATCH", p, body=body, content_type=content_type, query=_dry(dry_run)
        )

    async def replace(self, path: str, body: Mapping[str, Any], *, dry_run: bool = False) -> Body:
        return await self.request("PUT", path, body=body, query=_dry(dry_run))

    async def delete(self, path: str) -> Body:
        return await self.request("DELETE", path)


def _dry(dry_run: bool) -> dict[str, object] | None:
    return {"dryRun": "All"} if dry_run else None


def _qs(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _error(e: ApiException, method: str, path: str) -> KubeError:
    status = int(e.status or 0)
    message, reason = str(e.reason or ""), str(e.reason or "")
    try:
        body = json.loads(e.body or b"{}")
        message = body.get("message", message)
        reason = body.get("reason", reason)
    except (ValueError, TypeError, AttributeError):
        pass
    return _BY_STATUS.get(status, KubeError)(status, reason, message, method=method, path=path)


# Paths, so no layer above has to spell URLs.
def core(namespace: str, plural: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def apps(namespace: str, plural: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def group(api: str, namespace: str, plural: str, name: str = "") -> str:
    """``api`` is ``group/version``, e.g. ``selfheal.dev/v1alpha1``."""
    return f"/apis/{api}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")
