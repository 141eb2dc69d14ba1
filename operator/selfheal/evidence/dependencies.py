"""Dependency health: the Services a crashing workload talks to, and their ready endpoints.

A pod that crashes because ``payments`` has no ready endpoint will crash again after a
rollback: the cause is elsewhere. The hostnames in its stack trace, logs and env
(``payments``, ``payments.shop``, ``payments.shop.svc.cluster.local``, a ClusterIP) are
matched to the cluster's Services, and each Service's EndpointSlices are counted:
``payments.shop: 0 of 3 endpoints ready``.

- ``candidates(texts)`` and ``match(...)`` are pure (the tests feed them strings and
  Service bodies);
- ``dependency_health(kube=..., namespace=..., texts=...)`` reads Services and
  EndpointSlices (``list`` on both; a 403 or a timeout lands in ``unavailable``, never
  raised), for the ticket and for the remediation driver, which may skip a step that
  cannot help (``DependencyUnhealthy``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from selfheal import API_VERSION
from selfheal.clients import kube as k8s

MAX_DEPENDENCIES = 10
"""At most this many Services are checked (the ones named most often first)."""

# Hostnames in host-like places only: a bare word ("payments") is a host after "://",
# "@", "host=", "lookup", "dial tcp", "connect to", or before ":<port>". Dotted names
# with a "svc" label are hosts anywhere.
_FQDN = re.compile(
    r"\b(?P<svc>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.(?P<ns>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
    r"\.svc(?:\.[a-z0-9-]+)*\b"
)
_HOST_CONTEXT = re.compile(
    r"(?:://(?:[^/\s@]*@)?|(?<![\w.-])host(?:name)?[\"']?\s*[=:]\s*[\"']?|\blookup\s+|"
    r"\bdial\s+tcp\s+|\bconnect(?:ing|ed)?\s+to\s+|\bresolve\s+|@)"
    r"(?P<host>[a-z0-9](?:[a-z0-9.-]{0,250}[a-z0-9])?)",
    re.IGNORECASE,
)
_HOST_PORT = re.compile(
    r"(?<![\w.:/-])(?P<host>[a-z0-9](?:[a-z0-9.-]{0,250}[a-z0-9])?):(?P<port>\d{2,5})\b"
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dependency:
    """One Service the workload depends on, and its EndpointSlices' readiness."""

    namespace: str
    service: str
    seen_as: str
    """How the workload named it (``payments``, ``10.96.0.12``...)."""
    ready: int
    total: int
    kind: str = "ClusterIP"
    """The Service's type; ``ExternalName`` Services have no endpoints to count."""
    selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """The Service's ``spec.selector``: which workload's pods back it."""
    incidents: tuple[str, ...] = ()
    """Open Remediations of the workloads the Service selects (their names)."""

    @property
    def healthy(self) -> bool:
        """It has a ready endpoint (or is an ExternalName, which has none to count)."""
        return self.kind == "ExternalName" or self.ready > 0

    @property
    def failing(self) -> bool:
        """No ready endpoint, or its workload has an incident of its own."""
        return not self.healthy or bool(self.incidents)

    def line(self) -> str:
        """``payments.shop: 0 of 3 endpoints ready``, then ``; open incident NAME``."""
        if self.kind == "ExternalName":
            text = f"{self.service}.{self.namespace}: ExternalName, not checked"
        elif self.total == 0:
            text = f"{self.service}.{self.namespace}: no endpoints"
        else:
            text = f"{self.service}.{self.namespace}: {self.ready} of {self.total} endpoints ready"
        if self.incidents:
            text += f"; open incident {', '.join(self.incidents)}"
        return text

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "healthy": self.healthy}


@dataclasses.dataclass(kw_only=True)
class DependencyReport:
    dependencies: list[Dependency] = dataclasses.field(default_factory=list)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    """What could not be read (``services``, ``endpointslices of payments.shop``) -> why."""

    @property
    def unhealthy(self) -> list[Dependency]:
        return [d for d in self.dependencies if not d.healthy]


def candidates(texts: Iterable[str]) -> list[str]:
    """Host names and IPv4 addresses in host-like places, most often named first."""
    counts: dict[str, int] = {}
    for text in texts:
        if not text:
            continue
        found = [m.group(0) for m in _FQDN.finditer(text)]
        found += [m.group("host") for m in _HOST_CONTEXT.finditer(text)]
        found += [m.group("host") for m in _HOST_PORT.finditer(text)]
        found += _IPV4.findall(text)
        for host in found:
            h = host.lower().rstrip(".")
            counts[h] = counts.get(h, 0) + 1
    return sorted(counts, key=lambda h: (-counts[h], h))


def match(
    hosts: Sequence[str], services: Iterable[Mapping[str, Any]], *, namespace: str
) -> list[tuple[str, str, str, str]]:
    """``(namespace, service, type, seen_as)`` for each host that names a Service.

    ``svc`` resolves in ``namespace`` (the pod's search path), ``svc.ns`` and
    ``svc.ns.svc[.domain]`` anywhere, an address by ``spec.clusterIP(s)``.
    """
    by_name: dict[tuple[str, str], str] = {}
    by_ip: dict[str, tuple[str, str]] = {}
    for s in services:
        meta, spec = s.get("metadata") or {}, s.get("spec") or {}
        svc = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        by_name[svc] = str(spec.get("type") or "ClusterIP")
        for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
            if ip and ip != "None":
                by_ip[str(ip)] = svc
    out: list[tuple[str, str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for host in hosts:
        key: tuple[str, str] | None = None
        if _is_ip(host):
            key = by_ip.get(host)
        else:
            labels = host.split(".")
            if len(labels) == 1:
                key = (namespace, labels[0])
            elif len(labels) == 2 or (len(labels) >= 3 and labels[2] == "svc"):
                key = (labels[1], labels[0])
        if key is None or key not in by_name or key in seen:
            continue
        seen.add(key)
        out.append((key[0], key[1], by_name[key], host))
    return out


def endpoint_counts(slices: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(ready, total) endpoints over a Service's EndpointSlices.

    ``conditions.ready`` unset means ready (the EndpointSlice API's rule); an endpoint
    listed in two slices (IPv4 and IPv6) counts once, by its target pod or addresses.
    """
    ready: set[str] = set()
    total: set[str] = set()
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            ref = ep.get("targetRef") or {}
            ident = str(ref.get("uid") or ref.get("name") or ",".join(ep.get("addresses") or []))
            total.add(ident)
            cond = ep.get("conditions") or {}
            if cond.get("ready") is not False and not cond.get("terminating"):
                ready.add(ident)
    return len(ready), len(total)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service ``selector`` picks pods with ``labels`` (an empty selector picks none)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def open_incidents(
    selector: Mapping[str, str],
    *,
    records: Iterable[Mapping[str, Any]],
    templates: Mapping[str, Mapping[str, str]],
) -> tuple[str, ...]:
    """Names of the open Remediations (``records``, one namespace) of the Deployments
    whose pod template labels (``templates``: name -> labels) the Service selects."""
    out = []
    for rec in records:
        phase = (rec.get("status") or {}).get("phase")
        if not phase or phase in _FINAL:
            continue
        workload = str(((rec.get("spec") or {}).get("workload") or {}).get("name") or "")
        if workload in templates and selects(selector, templates[workload]):
            out.append(str((rec.get("metadata") or {}).get("name") or ""))
    return tuple(sorted(out))


_FINAL = ("Resolved", "Closed")


async def dependency_health(
    *,
    kube: k8s.Kube,
    namespace: str,
    texts: Sequence[str],
    timeout: float = 5.0,
    own_labels: Mapping[str, str] | None = None,
    incidents: bool = False,
) -> DependencyReport:
    """The Services named in ``texts`` (logs, stack, env values) and their readiness.

    Services are listed cluster-wide (``svc.other-ns`` is common); when that is
    forbidden, in ``namespace`` only. ``own_labels``: the workload's pod template
    labels; a Service selecting them is the workload's own, not a dependency.
    ``incidents``: also name each dependency's open Remediations (``list`` on
    remediations and deployments of its namespace). Never raises for the API server.
    """
    report = DependencyReport()
    hosts = candidates(texts)
    if not hosts:
        return report

    async def get(what: str, path: str, **query: object) -> dict[str, Any] | None:
        try:
            data = await kube.raw("GET", path, query=query or None, timeout=timeout)
            body = json.loads(data)
        except k8s.KubeError as e:
            report.unavailable[what] = f"{e.status} {e.reason}".strip()
            return None
        except (TimeoutError, OSError, ValueError) as e:
            report.unavailable[what] = f"{type(e).__name__}: {e}"[:300]
            return None
        return body if isinstance(body, dict) else None

    listing = await get("services", "/api/v1/services")
    if listing is None:
        # Cluster-wide list forbidden (a namespaced install): the pod's namespace then.
        cluster_wide = report.unavailable.pop("services", "")
        listing = await get("services", k8s.core(namespace, "services"))
        if listing is None:
            report.unavailable["services"] += f" (cluster-wide: {cluster_wide})"
    services = [s for s in (listing or {}).get("items", []) if isinstance(s, dict)]
    if listing is not None and (listing.get("kind") == "ServiceList" or services):
        for s in services:
            # A namespaced list's items carry their namespace; a cluster-wide one too.
            s.setdefault("metadata", {}).setdefault("namespace", namespace)
    selectors = {
        (str(s["metadata"].get("namespace", "")), str(s["metadata"].get("name", ""))): {
            str(k): str(v) for k, v in ((s.get("spec") or {}).get("selector") or {}).items()
        }
        for s in services
    }
    found = [
        f
        for f in match(hosts, services, namespace=namespace)
        if own_labels is None or not selects(selectors.get((f[0], f[1]), {}), own_labels)
    ][:MAX_DEPENDENCIES]

    async def one(ns: str, name: str, kind: str, seen: str) -> Dependency | None:
        selector = selectors.get((ns, name), {})
        if kind == "ExternalName":
            return Dependency(
                namespace=ns,
                service=name,
                seen_as=seen,
                ready=0,
                total=0,
                kind=kind,
                selector=selector,
            )
        body = await get(
            f"endpointslices of {name}.{ns}",
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            labelSelector=f"kubernetes.io/service-name={name}",
        )
        if body is None:
            return None
        ready, total = endpoint_counts(body.get("items") or [])
        return Dependency(
            namespace=ns,
            service=name,
            seen_as=seen,
            ready=ready,
            total=total,
            kind=kind,
            selector=selector,
        )

    results = await asyncio.gather(*(one(*f) for f in found))
    report.dependencies = [d for d in results if d is not None]
    if incidents:
        spaces = sorted({d.namespace for d in report.dependencies if d.selector})
        found_incidents = await asyncio.gather(*(_incidents(get, ns) for ns in spaces))
        by_ns = dict(zip(spaces, found_incidents, strict=True))
        report.dependencies = [
            dataclasses.replace(d, incidents=by_ns[d.namespace](d.selector))
            if d.namespace in by_ns
            else d
            for d in report.dependencies
        ]
    return report


_Get = Callable[..., Awaitable[dict[str, Any] | None]]


async def _incidents(get: _Get, ns: str) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    """For namespace ``ns``: selector -> the open incidents of the workloads it selects."""
    listing = await get(f"remediations in {ns}", k8s.group(API_VERSION, ns, "remediations"))
    records = [r for r in (listing or {}).get("items", []) if isinstance(r, dict)]
    open_ = [r for r in records if (r.get("status") or {}).get("phase") not in (None, *_FINAL)]
    templates: dict[str, dict[str, str]] = {}
    if open_:
        deps = await get(f"deployments in {ns}", k8s.apps(ns, "deployments"))
        for d in (deps or {}).get("items", []):
            meta = ((d.get("spec") or {}).get("template") or {}).get("metadata") or {}
            name = str((d.get("metadata") or {}).get("name") or "")
            templates[name] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return lambda selector: open_incidents(selector, records=open_, templates=templates)


__all__ = [
    "MAX_DEPENDENCIES",
    "Dependency",
    "DependencyReport",
    "candidates",
    "dependency_health",
    "endpoint_counts",
    "match",
    "open_incidents",
    "selects",
]
