"""``make demo``: the whole loop, played on the local control plane in about a minute.

    python -m tests.support.demo [--keep] [--act-timeout SECONDS]

It starts every real part on loopback: etcd, kube-apiserver and kube-controller-manager
(``tests.support.cluster``), the kubelet stand-in (a thread), the real Prometheus
scraping a demo exporter every second, the Jira-compatible server with project OPS,
and the operator as its own process (``python -m selfheal``) under its own
ServiceAccount. It deploys a shop (namespace ``shop``, Deployment ``checkout`` v1, two
replicas) with one HealingPolicy, then plays two acts and prints a timeline of what
the operator does, read from the Remediation objects and the Events of the namespace:

- Act 1, a bad release: ``checkout:v2-crash`` crash-loops; the operator rolls back to
  v1 and verifies it: the Remediation ends ``Resolved``.
- Act 2, a failure a rollback cannot fix: ``payments`` (a real Deployment and Service
  checkout calls) goes down, its pods crash and its EndpointSlice has no ready endpoint;
  checkout's 5xx ratio (from Prometheus) climbs while its pods stay Ready. Its logs name
  ``payments.shop.svc``, so the policy (``remediation.dependencies.onUnhealthy:
  Escalate``) skips the rollback and the restart (``DependencyUnhealthy``): checkout is
  not touched, and the incident is escalated to a Jira ticket that names payments and
  its endpoint count, with the stack and snapshots; the on-call is notified (apprise, to
  a loopback JSON webhook whose messages the demo prints).
- Act 3, an alert: a Prometheus alert rule fires to the real Alertmanager, which calls
  the operator's webhook receiver; selfheal silences the alert in Alertmanager,
  restarts checkout, verifies it once the alert resolved, and expires the silence.

Everything it started is stopped and its data deleted when it ends: on success, on a
failure and on Ctrl-C (SIGINT) or SIGTERM. Exit status 0 only when Act 1 ended
``Resolved`` with the rollback verified, Act 2 left exactly one ticket (naming payments,
with checkout not restarted) and one notification, and Act 3 ended ``Resolved`` with its
silence expired.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar

from selfheal import API_VERSION
from selfheal.clients import kube as k
from tests.support import crds
from tests.support.alertmanager import AlertmanagerServer
from tests.support.cluster import Cluster, ensure_tools, free_port
from tests.support.exporter import Exporter
from tests.support.jira_server import JiraServer, ProjectSpec
from tests.support.kubelet import Behaviour, Kubelet
from tests.support.notify_receivers import Webhook
from tests.support.operator import SYSTEM_NAMESPACE, OperatorProcess
from tests.support.prometheus import PrometheusServer, alert_rule
from tests.support.workloads import available, deployment, image_of, policy, set_image

T = TypeVar("T")

NAMESPACE = "shop"
APP = "checkout"
V1 = "registry.local/checkout:v1"
V2 = "registry.local/checkout:v2-crash"
POLICY = "checkout"
PAYMENTS = "payments"
PAYMENTS_IMAGE = "registry.local/payments:v1"
PAYMENTS_REPLICAS = 3
PAYMENTS_DOWN = f"{PAYMENTS}.{NAMESPACE}: 0 of {PAYMENTS_REPLICAS} endpoints ready"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
JIRA_USER = "selfheal"
JIRA_PASSWORD = "demo-jira-s3cret-4d1e"
JIRA_SECRET = "jira-credentials"
ERROR_RATIO = (
    'sum by (namespace, deployment) (rate(http_requests_total{code=~"5.."}[1m]))'
    " / sum by (namespace, deployment) (rate(http_requests_total[1m]))"
)
# Requests per second the exporter reports for checkout: healthy, then during the outage
# (30% 503s: over the 5% threshold a few seconds into the outage, despite the 1m window).
HEALTHY_RPS = 20.0
OUTAGE_OK_RPS, OUTAGE_5XX_RPS = 14.0, 6.0

# Act 3: an alert rule on checkout's queue, routed by Alertmanager to selfheal.
ALERT = "CheckoutQueueBacklog"
QUEUE_DEPTH = f'queue_depth{{namespace="{NAMESPACE}", deployment="{APP}"}}'
ALERT_POLICY = "checkout-alerts"
ALERT_WEBHOOK_TOKEN = "demo-alertmanager-to-selfheal-9c2b"
NOTIFY_SECRET = "oncall"
ALERT_POLICY_SPEC: dict[str, Any] = {
    "mode": "Enforce",
    "triggers": [
        {"name": "queue-backlog", "alert": {"name": ALERT, "matchers": {"severity": "page"}}}
    ],
    "remediation": {"steps": [{"restart": {}}], "verify": {"for": "5s", "timeout": "60s"}},
    "guardrails": {"cooldown": "1s", "maxRemediations": 5, "window": "1h"},
}

# Short windows so the story fits in a minute; a real policy uses minutes (see
# manifests/samples/). One policy, two triggers: the steps are the policy's.
POLICY_SPEC: dict[str, Any] = {
    "mode": "Enforce",
    "triggers": [
        {"name": "crashloop", "crashLoop": {"restarts": 2, "within": "10m"}},
        {
            "name": "error-ratio",
            "prometheus": {
                "query": ERROR_RATIO,
                "workloadLabels": {"namespace": "namespace", "name": "deployment"},
                "above": 0.05,
                "for": "4s",
                "interval": "2s",
            },
        },
    ],
    "remediation": {
        "steps": [{"rollback": {"to": "LastHealthy"}}, {"restart": {}}],
        "verify": {"for": "5s", "timeout": "10s"},
        # Restarting or rolling back checkout cannot help while a Service it calls has no
        # ready endpoint: skip those steps and tell humans which dependency is down.
        "dependencies": {"onUnhealthy": "Escalate"},
        "escalate": {
            "jira": {
                "project": "OPS",
                "issueType": "Incident",
                "priority": "High",
                "labels": ["selfheal", "checkout"],
                "components": ["checkout"],
            },
            "notify": {"secretRef": {"name": NOTIFY_SECRET}},
        },
    },
    # Act 2 heals the same workload seconds after Act 1: a real cooldown is 30m.
    "guardrails": {"cooldown": "1s", "maxRemediations": 5, "window": "1h"},
}

# What checkout logs while its dependency is down: a Python stack the ticket carries.
OUTAGE_LOGS = """\
starting server
listening on :8080
ready
POST /api/checkout 200 41ms
Traceback (most recent call last):
  File "/app/checkout/handlers.py", line 88, in place_order
    receipt = payments.charge(order.total, card_token=order.card_token)
  File "/app/checkout/payments.py", line 31, in charge
    resp = session.post(PAYMENTS_URL + "/charge", json=body, timeout=2.0)
  File "/usr/lib/python3/dist-packages/requests/sessions.py", line 637, in post
    return self.request("POST", url, data=data, json=json, **kwargs)
requests.exceptions.ConnectTimeout: HTTPSConnectionPool(host='payments.shop.svc', port=443): \
Max retries exceeded with url: /charge (Caused by ConnectTimeoutError())
POST /api/checkout 503 2004ms
"""


class DemoFailed(RuntimeError):
    """The story did not go as it should; the message says which moment is missing."""


# --- the timeline ---------------------------------------------------------------------------


class Timeline:
    """Prints one line per moment: seconds since the start, wall clock, who, what."""

    def __init__(self, *, out: TextIO = sys.stdout, t0: float | None = None) -> None:
        self.out = out
        self.t0 = time.monotonic() if t0 is None else t0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, who: str, text: str) -> None:
        wall = dt.datetime.now().strftime("%H:%M:%S")
        lines = text.splitlines() or [""]
        head = f"{self.elapsed():+7.1f}s {wall}  {who:<9} "
        print(head + lines[0], file=self.out, flush=True)
        for line in lines[1:]:
            print(" " * len(head) + line, file=self.out, flush=True)

    def banner(self, text: str) -> None:
        print(f"\n=== {text} ===", file=self.out, flush=True)

    def block(self, text: str, indent: int = 4) -> None:
        print(textwrap.indent(text.rstrip("\n"), " " * indent), file=self.out, flush=True)


def _short(message: str, limit: int = 220) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _creation_order(ev: dict[str, Any]) -> tuple[int, str]:
    rv = str(ev["metadata"].get("resourceVersion") or "")
    return (int(rv) if rv.isdigit() else 0, ev["metadata"]["name"])


def _step_line(step: dict[str, Any], *, message: bool = True) -> str:
    change = step.get("change") or {}
    text = f"step {int(step.get('index', 0)) + 1} {step.get('action')}: {step.get('result')}"
    old, new = change.get("fromRevision"), change.get("toRevision")
    if step.get("result") == "Succeeded" and old and new and old != new:
        text += f" (revision {old} -> {new})"
    if message and step.get("message"):
        text += f" - {_short(str(step['message']))}"
    return text


@dataclasses.dataclass
class _Seen:
    phase: str = ""
    steps: list[str] = dataclasses.field(default_factory=list)
    ticket: str = ""


class Watcher:
    """Polls the namespace's Remediations and Events (twice a second) and narrates them.

    Polling rather than a watch keeps it simple and bounded; half a second is finer
    than any moment of the story.
    """

    SHOWN_EVENT_KINDS = ("Deployment", "Pod")

    def __init__(self, *, kube: k.Kube, namespace: str, timeline: Timeline) -> None:
        self.kube = kube
        self.namespace = namespace
        self.timeline = timeline
        self.records: dict[str, dict[str, Any]] = {}
        self._seen_records: dict[str, _Seen] = {}
        self._seen_events: set[str] = set()
        self._primed = False

    async def prime(self) -> None:
        """Remember what exists now so only what happens next is printed."""
        await self.poll(quiet=True)
        self._primed = True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.poll()
            except k.KubeError as e:
                self.timeline.say("demo", f"(watching the namespace failed once: {e})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)

    async def poll(self, *, quiet: bool = False) -> None:
        events = (await self.kube.get(k.core(self.namespace, "events"))).get("items") or []
        # Timestamps have whole seconds; the resourceVersion orders creations within one.
        events.sort(key=_creation_order)
        for ev in events:
            uid = ev["metadata"]["uid"]
            if uid in self._seen_events:
                continue
            self._seen_events.add(uid)
            if not quiet:
                self._print_event(ev)
        items = (await self.kube.get(k.group(API_VERSION, self.namespace, "remediations"))).get(
            "items"
        ) or []
        for rec in items:
            name = rec["metadata"]["name"]
            self.records[name] = rec
            if not quiet:
                self._print_record(rec)
            else:
                self._remember(rec)

    def _print_event(self, ev: dict[str, Any]) -> None:
        obj = ev.get("involvedObject") or {}
        if obj.get("kind") not in self.SHOWN_EVENT_KINDS:
            return  # selfheal posts each Event on the Remediation too: show it once
        source = (ev.get("source") or {}).get("component") or ev.get("reportingComponent") or "?"
        who = {
            "selfheal": "selfheal",
            "deployment-controller": "k8s",
            "kubelet": "kubelet",
        }.get(source, source[:9])
        self.timeline.say(
            who,
            f"{ev.get('type', 'Normal')} {ev.get('reason')} {obj.get('kind')}/{obj.get('name')}: "
            f"{_short(str(ev.get('message') or ''))}",
        )

    def _remember(self, rec: dict[str, Any]) -> None:
        status = rec.get("status") or {}
        self._seen_records[rec["metadata"]["name"]] = _Seen(
            phase=str(status.get("phase") or ""),
            steps=[
                _step_line(s, message=False) for s in status.get("steps") or [] if s.get("result")
            ],
            ticket=str((status.get("ticket") or {}).get("key") or ""),
        )

    def _print_record(self, rec: dict[str, Any]) -> None:
        name = rec["metadata"]["name"]
        status = rec.get("status") or {}
        seen = self._seen_records.setdefault(name, _Seen())
        trigger = (rec.get("spec") or {}).get("trigger") or {}
        phase = str(status.get("phase") or "")
        if not seen.phase and not phase:
            return
        if not seen.phase:
            detail = _short(str(status.get("detail") or ""))
            self.timeline.say("record", f"{name} opened by trigger {trigger.get('name')}: {detail}")
        for step in status.get("steps") or []:
            if not step.get("result"):
                continue
            # The step's message is in selfheal's Event just printed: not twice.
            line = _step_line(step, message=False)
            if line not in seen.steps:
                seen.steps.append(line)
                self.timeline.say("record", f"{name}: {line}")
        if phase != seen.phase:
            extra = ""
            if phase == "Resolved":
                extra = f" (verification {(status.get('verification') or {}).get('outcome')})"
            arrow = f"{seen.phase} -> {phase}" if seen.phase else f"phase {phase}"
            self.timeline.say("record", f"{name}: {arrow}{extra}")
            seen.phase = phase
        ticket = status.get("ticket") or {}
        key = str(ticket.get("key") or "")
        if key and key != seen.ticket:
            seen.ticket = key
            self.timeline.say("record", f"{name}: ticket {key} ({ticket.get('state')})")


# --- waiting ----------------------------------------------------------------------------------


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.5
) -> T:
    """Polls ``probe`` until it returns something truthy; ``DemoFailed`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            got = await probe()
        except k.KubeError as e:
            if not e.temporary:
                raise
            got, last_error = None, str(e)
        if got:
            return got
        if time.monotonic() > deadline:
            hint = f" (last API error: {last_error})" if last_error else ""
            raise DemoFailed(f"{what} did not happen within {timeout:.0f}s{hint}")
        await asyncio.sleep(every)


def _phase_of(rec: dict[str, Any]) -> str:
    return str((rec.get("status") or {}).get("phase") or "")


def _trigger_of(rec: dict[str, Any]) -> str:
    return str(((rec.get("spec") or {}).get("trigger") or {}).get("name") or "")


async def _records(kube: k.Kube, trigger: str) -> list[dict[str, Any]]:
    out = await kube.get(k.group(API_VERSION, NAMESPACE, "remediations"))
    return [r for r in out.get("items") or [] if _trigger_of(r) == trigger]


# --- the parts --------------------------------------------------------------------------------


@dataclasses.dataclass
class Parts:
    """Everything the demo started, so ``close`` can stop exactly that."""

    workdir: Path
    cluster: Cluster | None = None
    kubelet: Kubelet | None = None
    exporter: Exporter | None = None
    prometheus: PrometheusServer | None = None
    jira: JiraServer | None = None
    alertmanager: AlertmanagerServer | None = None
    webhook: Webhook | None = None
    operator: OperatorProcess | None = None

    def close(self, timeline: Timeline, *, keep: bool) -> None:
        """Stops every part (the operator first, the store last); each step is bounded."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.operator is not None:
            steps.append(("operator", self.operator.stop))
        if self.kubelet is not None:
            steps.append(("kubelet stand-in", self.kubelet.stop_thread))
        if self.prometheus is not None:
            steps.append(("prometheus", self.prometheus.stop))
        if self.alertmanager is not None:
            steps.append(("alertmanager", self.alertmanager.stop))
        if self.webhook is not None:
            steps.append(("notification webhook", self.webhook.close))
        if self.exporter is not None:
            steps.append(("exporter", self.exporter.stop))
        if self.jira is not None:
            steps.append(("jira", self.jira.stop))
        if self.cluster is not None:
            steps.append(("control plane", self.cluster.stop))
        for what, stop in steps:
            started = time.monotonic()
            try:
                stop()
            except Exception as e:  # keep going: the next part must still stop
                timeline.say("demo", f"stopping the {what} failed: {e}")
            took = time.monotonic() - started
            if took > 3.0:  # a slow stop is worth knowing about
                timeline.say("demo", f"stopping the {what} took {took:.0f}s")
        if keep:
            timeline.say("demo", f"kept the logs and data in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC = f"/apis/{RBAC_GROUP}/v1"
NS_SYSTEM = SYSTEM_NAMESPACE
_PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts",
    "ClusterRole": f"{RBAC}/clusterroles",
    "ClusterRoleBinding": f"{RBAC}/clusterrolebindings",
    "Role": f"{RBAC}/namespaces/{SYSTEM_NAMESPACE}/roles",
    "RoleBinding": f"{RBAC}/namespaces/{SYSTEM_NAMESPACE}/rolebindings",
}
PLAIN_INSTALL = crds.ROOT / "manifests" / "selfheal.yaml"
SERVICE_ACCOUNT = f"{SYSTEM_NAMESPACE}/selfheal"


def _secret_rbac(namespace: str, secret: str, role: str) -> list[dict[str, Any]]:
    """What the chart adds for a Secret the operator reads (helm/selfheal/templates/
    rbac.yaml: the Jira Secret, each of notify.secrets): get on that one Secret, by name."""
    meta = {"name": role, "namespace": namespace}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [secret],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": meta["name"],
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "selfheal", "namespace": SYSTEM_NAMESPACE}
            ],
        },
    ]


def install_identity(cluster: Cluster) -> Path:
    """The operator's own identity, as the plain install creates it: its namespace,
    ServiceAccount, least-privilege ClusterRole and binding and the Lease's Role from
    manifests/selfheal.yaml, plus the Jira Secret's Role. Returns a kubeconfig with the
    ServiceAccount's token, so every request of the operator is checked by the real
    authorizer."""
    docs = [d for d in crds.load_documents([PLAIN_INSTALL]) if d.get("kind") in _PATHS]
    kinds = sorted({str(d["kind"]) for d in docs})
    # Role and RoleBinding: the leader election Lease's, in the operator's namespace.
    if kinds != sorted(_PATHS):
        raise DemoFailed(
            f"{PLAIN_INSTALL}: expected the operator's identity objects, found {kinds}"
        )
    for doc in [*docs, *_secret_rbac(SYSTEM_NAMESPACE, JIRA_SECRET, "selfheal-jira-secret")]:
        cluster.api("POST", _PATHS[str(doc["kind"])], doc)
    token = cluster.token_for(SYSTEM_NAMESPACE, "selfheal", seconds=3600)
    return cluster.kubeconfig_for_token(token)


def _secret(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"username": JIRA_USER, "token": JIRA_PASSWORD},
    }


@dataclasses.dataclass(frozen=True)
class Running:
    """The started parts, none missing."""

    cluster: Cluster
    kubelet: Kubelet
    exporter: Exporter
    prometheus: PrometheusServer
    jira: JiraServer
    alertmanager: AlertmanagerServer
    webhook: Webhook
    operator: OperatorProcess


def start_parts(parts: Parts, timeline: Timeline) -> Running:
    """Starts every part; the ones already started are in ``parts`` if this raises."""
    say = timeline.say
    ensure_tools()  # a no-op when make tools already built them
    parts.exporter = exporter = Exporter().start()
    exporter.set_rate("http_requests_total", HEALTHY_RPS, namespace=NAMESPACE, deployment=APP,
                      code="200")  # fmt: skip
    exporter.set_rate("http_requests_total", 0.0, namespace=NAMESPACE, deployment=APP, code="503")
    exporter.set_gauge("queue_depth", 3, namespace=NAMESPACE, deployment=APP)
    # The operator's webhook receiver port is chosen first: Alertmanager's config names it.
    receiver_port = free_port()
    token_file = parts.workdir / "alert-webhook-token"
    token_file.write_text(ALERT_WEBHOOK_TOKEN + "\n")
    parts.alertmanager = am = AlertmanagerServer(
        data_dir=parts.workdir / "alertmanager" / "data",
        webhook_url=f"http://127.0.0.1:{receiver_port}/alerts",
        bearer_token=ALERT_WEBHOOK_TOKEN,
    )
    am.start()
    say("demo", f"alertmanager {am.url} routing every alert to selfheal's webhook receiver")
    parts.webhook = webhook = Webhook()
    say("demo", f"on-call notification webhook on 127.0.0.1:{webhook.port}")
    rule = alert_rule(
        ALERT,
        f"{QUEUE_DEPTH} > 100",
        labels={"severity": "page"},
        annotations={"summary": "{{ $labels.deployment }} has {{ $value }} orders queued"},
    )
    parts.prometheus = prom = PrometheusServer(
        data_dir=parts.workdir / "prometheus" / "tsdb",
        targets=[exporter.target],
        rules=[rule],
        alertmanagers=[am.target],
    )
    prom.data_dir.parent.mkdir(parents=True, exist_ok=True)
    prom.start()
    say("demo", f"prometheus {prom.url} scraping the demo exporter {exporter.url} every 1s")
    say("demo", f"alert rule {ALERT}: {QUEUE_DEPTH} > 100, sent to alertmanager")
    parts.jira = jira = JiraServer(
        users={JIRA_USER: JIRA_PASSWORD},
        tokens={},
        projects=(ProjectSpec(key="OPS", name="Operations", components=("checkout",)),),
    ).start()
    say("demo", f"jira {jira.url} (project OPS)")

    parts.cluster = cluster = Cluster(data_dir=parts.workdir / "cluster")
    cluster.start()
    say("demo", f"control plane {cluster.server} (etcd, kube-apiserver, kube-controller-manager)")
    parts.kubelet = kubelet = Kubelet.for_cluster(cluster)
    kubelet.start_in_thread()
    say("demo", "kubelet stand-in registered node selfheal-node-1")
    names = crds.install(cluster.kubeconfig)
    say("demo", f"CRDs installed: {', '.join(names)}")

    operator_kubeconfig = install_identity(cluster)
    say("demo", f"operator identity: {SERVICE_ACCOUNT} with the RBAC of {PLAIN_INSTALL.name}")
    cluster.api("POST", f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets", _secret(JIRA_SECRET))
    cluster.api(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    _wait_sync(
        lambda: _exists(cluster, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
        timeout=30,
        what=f"ServiceAccount {NAMESPACE}/default",
    )
    cluster.api(
        "POST", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", deployment(APP, V1, replicas=2)
    )
    cluster.api(
        "POST",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
        deployment(PAYMENTS, PAYMENTS_IMAGE, replicas=PAYMENTS_REPLICAS),
    )
    cluster.api("POST", f"/api/v1/namespaces/{NAMESPACE}/services", _service(PAYMENTS))
    cluster.api(
        "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", _notify_secret(webhook.url("/oncall"))
    )
    for doc in _secret_rbac(NAMESPACE, NOTIFY_SECRET, "selfheal-notify-secret"):
        path = _PATHS[str(doc["kind"])].replace(SYSTEM_NAMESPACE, NAMESPACE)
        cluster.api("POST", path, doc)
    for name, spec in ((POLICY, POLICY_SPEC), (ALERT_POLICY, ALERT_POLICY_SPEC)):
        cluster.api(
            "POST",
            f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/healingpolicies",
            policy(name, selector={"app": APP}, spec=spec),
        )
    say(
        "you",
        f"deployed {NAMESPACE}/{APP} ({V1}, 2 replicas), the {PAYMENTS} Deployment and "
        f"Service it calls ({PAYMENTS_REPLICAS} replicas), HealingPolicies {POLICY} and "
        f"{ALERT_POLICY}, and the on-call's Secret {NOTIFY_SECRET} (apprise URLs)",
    )
    # A new CRD answers 429 "storage is (re)initializing" for a moment after it is
    # Established; kopf would log that as an ERROR in the operator's first second.
    _wait_sync(
        lambda: _exists(cluster, f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/remediations"),
        timeout=30,
        what="the Remediation API",
    )

    parts.operator = op = OperatorProcess(
        kubeconfig=operator_kubeconfig,
        log_dir=parts.workdir / "operator",
        namespaces=[NAMESPACE],
        prometheus_url=prom.url,
        jira_url=jira.url,
        jira_secret=f"{SYSTEM_NAMESPACE}/{JIRA_SECRET}",
        extra_args=[
            "--alert-webhook-port", str(receiver_port),
            "--alert-webhook-token-file", str(token_file),
            "--alertmanager-url", am.url,
        ],
    )  # fmt: skip
    op.start(wait=60)
    pids = {**cluster.pids, "operator": op.proc.pid if op.proc else 0}
    say("demo", f"operator running as {SERVICE_ACCOUNT}")
    say("demo", "processes: " + ", ".join(f"{n} pid {p}" for n, p in pids.items()))
    return Running(
        cluster=cluster,
        kubelet=kubelet,
        exporter=exporter,
        prometheus=prom,
        jira=jira,
        alertmanager=am,
        webhook=webhook,
        operator=op,
    )


def _notify_secret(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": NOTIFY_SECRET},
        "stringData": {"urls": url + "\n"},
    }


def _service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "https", "port": 443}]},
    }


async def _ready_endpoints(kube: k.Kube, service: str) -> tuple[int, int]:
    """(ready, all) endpoints of ``service``'s EndpointSlices, as the controller wrote them."""
    slices = await kube.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
        labelSelector=f"kubernetes.io/service-name={service}",
    )
    eps = [e for s in slices.get("items") or [] for e in s.get("endpoints") or []]
    ready = sum(1 for e in eps if (e.get("conditions") or {}).get("ready"))
    return ready, len(eps)


def _exists(cluster: Cluster, path: str) -> bool:
    try:
        cluster.api("GET", path)
    except Exception:
        return False
    return True


def _wait_sync(probe: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} did not appear within {timeout:.0f}s")
        time.sleep(0.1)


# --- the story --------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    act1_resolved: bool = False
    ticket_key: str = ""
    tickets: int = 0
    notifications: int = 0
    act3_resolved: bool = False


async def play(parts: Running, timeline: Timeline, *, act_timeout: float) -> Outcome:
    kube = await k.Kube.connect(kubeconfig=str(parts.cluster.kubeconfig))
    stop = asyncio.Event()
    watcher = Watcher(kube=kube, namespace=NAMESPACE, timeline=timeline)
    outcome = Outcome()
    task: asyncio.Task[None] | None = None
    try:
        await wait_for(
            lambda: available(kube, NAMESPACE, APP), timeout=60, what=f"{APP} v1 available"
        )
        await wait_for(
            lambda: available(kube, NAMESPACE, PAYMENTS), timeout=60, what=f"{PAYMENTS} available"
        )
        await wait_for(
            lambda: _policy_ready(kube), timeout=30, what=f"HealingPolicy {POLICY} Ready"
        )
        timeline.say(
            "demo",
            f"{APP} v1 available (2/2 ready), {PAYMENTS} available "
            f"({PAYMENTS_REPLICAS}/{PAYMENTS_REPLICAS}); policy {POLICY} Ready",
        )
        await watcher.prime()
        task = asyncio.create_task(watcher.run(stop))

        timeline.banner("Act 1: a bad release crash-loops")
        await act1(kube, parts, timeline, watcher, timeout=act_timeout)
        outcome.act1_resolved = True

        timeline.banner("Act 2: a dependency outage no rollback can fix")
        outcome.ticket_key = await act2(kube, parts, timeline, watcher, timeout=act_timeout)
        outcome.notifications = await notified(parts, timeline, timeout=act_timeout)

        timeline.banner("Act 3: an alert from Alertmanager, silenced while selfheal heals")
        await act3(kube, parts, timeline, watcher, timeout=act_timeout)
        outcome.act3_resolved = True
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await asyncio.wait_for(watcher.poll(), timeout=10)  # the last moments
    finally:
        # Interrupted or failed: no more requests (the API server may be gone already,
        # Ctrl-C in a terminal reaches every process of the group at once).
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await kube.close()
    outcome.tickets = len(parts.jira.issues())
    return outcome


async def _policy_ready(kube: k.Kube) -> bool:
    body = await kube.get(k.group(API_VERSION, NAMESPACE, "healingpolicies", POLICY))
    conds = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


async def act1(
    kube: k.Kube, parts: Running, timeline: Timeline, watcher: Watcher, *, timeout: float
) -> None:
    timeline.say("you", f"kubectl set image deployment/{APP} app={V2}")
    await set_image(kube, NAMESPACE, APP, V2)

    async def ended() -> dict[str, Any] | None:
        recs = await _records(kube, "crashloop")
        done = [r for r in recs if _phase_of(r) in ("Resolved", "Escalated", "Closed")]
        return done[0] if done else None

    rec = await wait_for(ended, timeout=timeout, what="Act 1: the crash-loop incident ending")
    status = rec.get("status") or {}
    if _phase_of(rec) != "Resolved":
        raise DemoFailed(
            f"Act 1: Remediation {rec['metadata']['name']} ended {_phase_of(rec)}, not Resolved: "
            f"{json.dumps(status.get('steps'), indent=1)}"
        )
    steps = status.get("steps") or []
    rollback = next((s for s in steps if s.get("action") == "rollback"), None)
    verification = (status.get("verification") or {}).get("outcome")
    if rollback is None or rollback.get("result") != "Succeeded" or verification != "Passed":
        raise DemoFailed(
            f"Act 1: Resolved without a verified rollback (verification {verification}, "
            f"steps {steps})"
        )
    dep = await wait_for(
        lambda: available(kube, NAMESPACE, APP), timeout=60, what=f"{APP} v1 available again"
    )
    if image_of(dep) != V1:
        raise DemoFailed(f"Act 1: {APP} runs {image_of(dep)} after the rollback, not {V1}")
    await watcher.poll()
    revision = dep["metadata"]["annotations"].get("deployment.kubernetes.io/revision")
    timeline.say(
        "demo",
        f"Act 1 done: {rec['metadata']['name']} Resolved; {APP} runs {image_of(dep)} again "
        f"(v1 is now revision {revision})",
    )
    for s in steps:
        timeline.block(_step_line(s), indent=6)


async def act2(
    kube: k.Kube, parts: Running, timeline: Timeline, watcher: Watcher, *, timeout: float
) -> str:
    # payments' pods crash: its Service has no ready endpoint left.
    parts.kubelet.behave(PAYMENTS_IMAGE, Behaviour(kind="crashloop", restart_every=20.0))

    async def payments_down() -> tuple[int, int] | None:
        ready, total = await _ready_endpoints(kube, PAYMENTS)
        return (ready, total) if ready == 0 and total == PAYMENTS_REPLICAS else None

    await wait_for(payments_down, timeout=timeout, what=f"Act 2: {PAYMENTS_DOWN}")
    timeline.say("world", f"{PAYMENTS} is down: {PAYMENTS_DOWN}")
    parts.kubelet.behave(V1, Behaviour(kind="running", logs=OUTAGE_LOGS))
    parts.exporter.set_rate("http_requests_total", OUTAGE_OK_RPS, namespace=NAMESPACE,
                            deployment=APP, code="200")  # fmt: skip
    parts.exporter.set_rate("http_requests_total", OUTAGE_5XX_RPS, namespace=NAMESPACE,
                            deployment=APP, code="503")  # fmt: skip
    share = OUTAGE_5XX_RPS / (OUTAGE_OK_RPS + OUTAGE_5XX_RPS)
    timeline.say(
        "world",
        f"{share:.0%} of checkout's requests fail with 503 (its pods stay Running and Ready)",
    )

    async def ticketed() -> dict[str, Any] | None:
        for r in await _records(kube, "error-ratio"):
            if _phase_of(r) in ("Resolved", "Closed"):
                raise DemoFailed(
                    f"Act 2: Remediation {r['metadata']['name']} ended {_phase_of(r)}: "
                    "it should have been escalated"
                )
            key = ((r.get("status") or {}).get("ticket") or {}).get("key")
            if _phase_of(r) == "Escalated" and key:
                return r
        return None

    rec = await wait_for(
        ticketed, timeout=timeout, what="Act 2: an escalated incident with a ticket"
    )
    key = str(rec["status"]["ticket"]["key"])
    # The attachments are uploaded after the issue is created: wait for them too.
    await wait_for(
        lambda: _attachments(parts.jira, key), timeout=30, what=f"the attachments of {key}"
    )
    # No step ran (the dependency is down): nothing was silenced, the escalation pages.
    await watcher.poll()
    steps = rec["status"].get("steps") or []
    skipped = [s for s in steps if s.get("reason") == "DependencyUnhealthy"]
    if not skipped or len(skipped) != len(steps):
        raise DemoFailed(f"Act 2: steps not all skipped for {PAYMENTS}: {json.dumps(steps)}")
    dep = await kube.get(k.apps(NAMESPACE, "deployments", APP))
    if RESTARTED_AT in (dep["spec"]["template"]["metadata"].get("annotations") or {}):
        raise DemoFailed(f"Act 2: {APP} was restarted although {PAYMENTS} is down")
    issue = next(i for i in parts.jira.issues() if i["key"] == key)
    if PAYMENTS_DOWN not in str(issue["fields"].get("description") or ""):
        raise DemoFailed(f"Act 2: ticket {key} does not say {PAYMENTS_DOWN!r}")
    timeline.say(
        "demo",
        f"Act 2 done: {rec['metadata']['name']} Escalated, ticket {key}; {APP} not restarted "
        f"or rolled back: {PAYMENTS_DOWN}",
    )
    for s in steps:
        timeline.block(_step_line(s), indent=6)
    return key


async def notified(parts: Running, timeline: Timeline, *, timeout: float) -> int:
    """The on-call's message about the escalation, as the loopback webhook received it."""

    async def escalation() -> list[dict[str, Any]] | None:
        got = [m for m in parts.webhook.messages() if "escalated" in str(m.get("title"))]
        return got or None

    got = await wait_for(escalation, timeout=timeout, what="Act 2: the on-call's notification")
    for message in got:
        timeline.say("on-call", f"received: {message.get('title')}")
        timeline.block("\n".join(str(message.get("message", "")).splitlines()[:6]), indent=6)
    return len(got)


async def _silence(am: AlertmanagerServer, record: str, state: str) -> dict[str, Any] | None:
    """selfheal's silence for the Remediation ``record``, once in ``state``."""
    for s in await asyncio.to_thread(am.silences):
        mine = s.get("createdBy") == "selfheal" and f"Remediation {NAMESPACE}/{record} " in str(
            s.get("comment")
        )
        if mine and s["status"]["state"] == state:
            return s
    return None


async def _suppressed(am: AlertmanagerServer) -> list[dict[str, Any]] | None:
    held = await asyncio.to_thread(am.alerts)
    got = [a for a in held if a["labels"].get("alertname") == ALERT]
    return got if got and all(a["status"]["state"] == "suppressed" for a in got) else None


async def act3(
    kube: k.Kube, parts: Running, timeline: Timeline, watcher: Watcher, *, timeout: float
) -> None:
    parts.exporter.set_gauge("queue_depth", 480, namespace=NAMESPACE, deployment=APP)
    timeline.say("world", f"{APP}'s order queue backs up: {QUEUE_DEPTH} = 480 (rule: > 100)")

    async def verifying() -> dict[str, Any] | None:
        recs = await _records(kube, "queue-backlog")
        return next((r for r in recs if _phase_of(r) == "Verifying"), None)

    rec = await wait_for(verifying, timeout=timeout, what="Act 3: the restart verifying")
    name = rec["metadata"]["name"]
    silence = await wait_for(
        lambda: _silence(parts.alertmanager, name, "active"),
        timeout=timeout,
        what="Act 3: selfheal's silence in Alertmanager",
    )
    matchers = ", ".join(f"{m['name']}={m['value']}" for m in silence["matchers"])
    timeline.say("alertmanager", f"silence {silence['id'][:8]} active: {matchers}")
    timeline.block(f"comment: {silence['comment']}", indent=6)
    await wait_for(
        lambda: _suppressed(parts.alertmanager), timeout=30, what="Act 3: the alert muted"
    )
    timeline.say("alertmanager", f"alert {ALERT} suppressed: nobody is paged while selfheal heals")
    parts.exporter.set_gauge("queue_depth", 4, namespace=NAMESPACE, deployment=APP)
    timeline.say("world", f"the restarted pods drain the queue: {QUEUE_DEPTH} = 4")

    async def ended() -> dict[str, Any] | None:
        recs = await _records(kube, "queue-backlog")
        return next((r for r in recs if _phase_of(r) in ("Resolved", "Escalated", "Closed")), None)

    rec = await wait_for(ended, timeout=timeout, what="Act 3: the alert incident ending")
    if _phase_of(rec) != "Resolved":
        raise DemoFailed(f"Act 3: Remediation {rec['metadata']['name']} ended {_phase_of(rec)}")
    expired = await wait_for(
        lambda: _silence(parts.alertmanager, name, "expired"),
        timeout=30,
        what="Act 3: the silence expired",
    )
    await watcher.poll()
    timeline.say("alertmanager", f"silence {expired['id'][:8]} expired")
    timeline.say("demo", f"Act 3 done: {rec['metadata']['name']} Resolved; silence expired")
    for s in rec["status"].get("steps") or []:
        timeline.block(_step_line(s), indent=6)


async def _attachments(jira: JiraServer, key: str) -> list[str] | None:
    for issue in jira.issues():
        if issue["key"] == key and issue["attachments"]:
            return list(issue["attachments"])
    return None


def print_ticket(jira: JiraServer, key: str, timeline: Timeline) -> None:
    issue = next((i for i in jira.issues() if i["key"] == key), None)
    if issue is None:
        timeline.say("demo", f"ticket {key} is not in Jira")
        return
    fields = issue["fields"]
    description = str(fields.get("description") or "").splitlines()
    head = [line for line in description if line.strip()][:24]
    print(f"\n{key}  [{issue['status']}]  {fields.get('summary')}", flush=True)
    print(
        f"  type {(fields.get('issuetype') or {}).get('name')}, "
        f"priority {(fields.get('priority') or {}).get('name')}, "
        f"labels {', '.join(fields.get('labels') or [])}",
        flush=True,
    )
    print("  description (first lines):", flush=True)
    for line in head:
        print(f"    | {line[:150]}", flush=True)
    if len(description) > len(head):
        print(f"    | ... ({len(description)} lines in all)", flush=True)
    names = ", ".join(f"{n} ({len(b)} bytes)" for n, b in issue["attachment_list"])
    print(f"  attachments: {names or 'none'}", flush=True)


def kubectl_get(cluster: Cluster) -> str:
    proc = cluster.kubectl("get", "selfheal", "-n", NAMESPACE, check=False)
    return proc.stdout + (proc.stderr if proc.returncode else "")


# --- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM behaves as Ctrl-C: unwinds into the clean-up."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C must not leave half the parts running."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.demo",
        description="Play selfheal's whole loop on a local control plane, then clean up.",
    )
    p.add_argument(
        "--act-timeout",
        type=float,
        default=120.0,
        help="seconds each act may take before the demo fails (default 120)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (operator, control plane and Prometheus logs)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timeline = Timeline()
    workdir = Path(tempfile.mkdtemp(prefix="selfheal-demo-"))
    parts = Parts(workdir=workdir)
    status, failure = 1, ""
    outcome = Outcome()
    print("selfheal demo: the whole loop on a local control plane (Ctrl-C stops it cleanly)")
    print("  columns: seconds since the start, wall clock, who, what. Who: you (the SRE), world")
    print("  (the outage), k8s (controllers), kubelet, selfheal (its Events), record (Remediation)")
    timeline.banner("Setting up")
    timeline.say("demo", f"work dir {workdir}")
    try:
        with _signals_raise():
            running = start_parts(parts, timeline)
            outcome = asyncio.run(play(running, timeline, act_timeout=args.act_timeout))
            timeline.banner(f"kubectl get selfheal -n {NAMESPACE}")
            print(kubectl_get(running.cluster).rstrip(), flush=True)
            timeline.banner("The ticket")
            print_ticket(running.jira, outcome.ticket_key, timeline)
    except KeyboardInterrupt as e:
        # The shell's convention: 128 + the signal's number.
        term = str(e) == "SIGTERM"
        failure = "interrupted (SIGTERM)" if term else "interrupted (Ctrl-C)"
        status = 143 if term else 130
    except DemoFailed as e:
        failure = str(e)
    except Exception as e:  # a part failed to start: say which, then clean up
        failure = f"{type(e).__name__}: {e}"
    if not failure:
        if not outcome.act1_resolved:
            failure = "Act 1 did not end Resolved"
        elif outcome.tickets != 1:
            failure = f"expected exactly one Jira ticket, found {outcome.tickets}"
        elif outcome.notifications != 1:
            failure = f"expected one escalation notification, found {outcome.notifications}"
        elif not outcome.act3_resolved:
            failure = "Act 3 did not end Resolved"
        else:
            status = 0
    if failure and parts.operator is not None and status not in (130, 143):
        where = str(parts.operator.log) if args.keep else "deleted at the end; --keep keeps it"
        print(f"\n--- last lines of the operator's log ({where}):", flush=True)
        print(parts.operator.tail(40), flush=True)
    timeline.banner("Cleaning up")
    with _signals_ignored():
        parts.close(timeline, keep=args.keep)
    timeline.say("demo", "every process stopped" + ("" if args.keep else ", data deleted"))
    if status == 0:
        print(
            f"\nDEMO OK in {timeline.elapsed():.0f}s: Act 1 Resolved (rollback verified), "
            f"Act 2 escalated to {outcome.ticket_key} (on-call notified), "
            "Act 3 Resolved (alert silenced, then the silence expired)",
            flush=True,
        )
    else:
        print(f"\nDEMO FAILED after {timeline.elapsed():.0f}s: {failure}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
