"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager.

Everything listens on 127.0.0.1 on ports chosen at start, in one data directory
that holds the certificates, etcd's data, the audit log and each process's log.
No kubelet and no scheduler run: ``tests/support/kubelet.py`` stands in for both.

As a library (tests, benchmarks)::

    with Cluster() as cluster:
        cluster.kubectl("get", "nodes")

As a command (``make cluster-up`` / ``make cluster-down``)::

    python -m tests.support.cluster up      # detached; also starts the kubelet stand-in
    python -m tests.support.cluster status
    python -m tests.support.cluster down    # stops everything and deletes the data

The detached state (pids, paths) lives in ``.cache/cluster/``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = ROOT / ".cache" / "bin"
STATE_DIR = ROOT / ".cache" / "cluster"
BUILD_TOOLS = ROOT / "hack" / "build-tools.sh"
TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")

SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# The audit log records every request once, when its response completes (long
# running requests such as watches also log ResponseStarted), at Metadata level:
# user, verb, resource, namespace, name, response code. Benchmarks count the
# operator's requests by ``user.username`` in it.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""
ADMIN_USER = "selfheal-admin"
KUBELET_USER = "selfheal-kubelet"


class ClusterError(RuntimeError):
    """The control plane failed to start or to answer; the message carries the log tail."""


@dataclass(frozen=True)
class Pki:
    """Paths of the certificates and keys written at start, all PEM."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def kubelet_client_cert(self) -> Path:
        """The kubelet stand-in's identity towards the API server (system:masters)."""
        return self.dir / "kubelet.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.dir / "kubelet.key"

    @property
    def kubelet_serving_cert(self) -> Path:
        """The stand-in's log server certificate, signed by the cluster CA for 127.0.0.1."""
        return self.dir / "kubelet-serving.crt"

    @property
    def kubelet_serving_key(self) -> Path:
        return self.dir / "kubelet-serving.key"


# --- certificates ---------------------------------------------------------------------------

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _ec_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys take microseconds to generate where RSA takes tens of milliseconds.
    return ec.generate_private_key(ec.SECP256R1())


def _issue(
    *,
    cn: str,
    key: _PrivateKey,
    ca: tuple[x509.Certificate, _PrivateKey] | None,
    org: str | None = None,
    sans: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    subject = x509.Name(attrs)
    issuer_name, signing_key = (ca[0].subject, ca[1]) if ca else (subject, key)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is None:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        names: list[x509.GeneralName] = []
        for s in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                names.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(signing_key, hashes.SHA256())


def _write_pair(pki: Path, name: str, cert: x509.Certificate, key: _PrivateKey) -> None:
    (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = pki / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


def make_pki(pki: Path, *, service_ip: str) -> None:
    """Writes the CA, every component's certificate and the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _ec_key()
    ca_cert = _issue(cn="selfheal-local-ca", key=ca_key, ca=None)
    _write_pair(pki, "ca", ca_cert, ca_key)
    ca = (ca_cert, ca_key)
    apiserver_sans = [
        "127.0.0.1",
        "localhost",
        service_ip,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    leaves: list[tuple[str, str, str | None, list[str], bool, bool]] = [
        # file name, CN, O, SANs, server, client
        ("apiserver", "kube-apiserver", None, apiserver_sans, True, False),
        (
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "system:masters",
            [],
            False,
            True,
        ),
        ("admin", ADMIN_USER, "system:masters", [], False, True),
        ("controller-manager", "system:kube-controller-manager", None, [], False, True),
        ("kubelet", KUBELET_USER, "system:masters", [], False, True),
        ("kubelet-serving", "selfheal-node-1", None, ["127.0.0.1", "localhost"], True, False),
    ]
    for name, cn, org, sans, server, client in leaves:
        key = _ec_key()
        cert = _issue(cn=cn, key=key, ca=ca, org=org, sans=sans, server=server, client=client)
        _write_pair(pki, name, cert, key)
    # Service-account tokens are RS256 signed: an RSA pair.
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(
        sa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _kubeconfig(*, server: str, ca: Path, user: Mapping[str, str], name: str) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "selfheal-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [
            {"name": "selfheal-local", "context": {"cluster": "selfheal-local", "user": name}}
        ],
        "current-context": "selfheal-local",
    }
    # JSON is YAML, and every kubeconfig reader accepts it.
    return json.dumps(doc, indent=2) + "\n"


def _cert_user(pki: Path, name: str) -> dict[str, str]:
    return {
        "client-certificate-data": base64.b64encode((pki / f"{name}.crt").read_bytes()).decode(),
        "client-key-data": base64.b64encode((pki / f"{name}.key").read_bytes()).decode(),
    }


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return cast(int, s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the process that started it dies, so a
    # killed test run leaves no control plane behind. Best effort elsewhere.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def missing_tools(bin_dir: Path = BIN_DIR) -> list[str]:
    return [t for t in TOOLS if not os.access(bin_dir / t, os.X_OK)]


def ensure_tools(bin_dir: Path = BIN_DIR) -> None:
    """Builds the missing binaries with hack/build-tools.sh (minutes on a cold machine)."""
    missing = missing_tools(bin_dir)
    if missing:
        subprocess.run([str(BUILD_TOOLS), *missing], check=True, cwd=ROOT)
    still = missing_tools(bin_dir)
    if still:
        raise ClusterError(f"{', '.join(still)} missing in {bin_dir} after hack/build-tools.sh")


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class Cluster:
    """etcd + kube-apiserver + kube-controller-manager on loopback, RBAC on.

    ``data_dir``: where everything is written; ``None`` makes a temporary one, deleted
    by ``stop()``. ``detached``: the processes get their own session and survive this
    Python process (used by ``python -m tests.support.cluster up``).
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        bin_dir: Path = BIN_DIR,
        detached: bool = False,
        start_timeout: float = 90.0,
        controllers: Sequence[str] | None = None,
    ) -> None:
        self.bin_dir = bin_dir
        # kube-controller-manager's --controllers (e.g. ``["*", "-deployment"]``); ``None``:
        # its default set. Benchmarks that write ReplicaSets and Pods themselves disable the
        # controllers that would fight them.
        self.controllers = tuple(controllers) if controllers is not None else None
        self.detached = detached
        self.start_timeout = start_timeout
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="selfheal-cluster-")) if data_dir is None else data_dir
        )
        self.pki = Pki(self.data_dir / "pki")
        self.kubeconfig = self.data_dir / "admin.kubeconfig"
        self.ca_file = self.pki.ca_cert
        self.audit_log = self.data_dir / "audit.log"
        self.logs_dir = self.data_dir / "logs"
        self.server = ""
        self.etcd_url = ""
        self.service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        self._procs: list[_Proc] = []
        self._tied = False
        self._ssl: ssl.SSLContext | None = None
        self.startup_seconds: dict[str, float] = {}

    # -- lifecycle

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Starts the three processes and returns once the API server is ready and the
        controller-manager has created the ``default`` ServiceAccount."""
        t0 = time.monotonic()
        self._tied = not self.detached and threading.current_thread() is threading.main_thread()
        still = missing_tools(self.bin_dir)
        if still:
            raise ClusterError(
                f"{', '.join(still)} missing in {self.bin_dir}: run hack/build-tools.sh"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        try:
            make_pki(self.pki.dir, service_ip=self.service_ip)
            self.startup_seconds["pki"] = time.monotonic() - t0
            self._start_etcd()
            self.startup_seconds["etcd"] = time.monotonic() - t0
            self._start_apiserver()
            # Written before the wait, so a failed start leaves a kubeconfig to debug with.
            self.write_admin_kubeconfig()
            self._start_controller_manager()
            self._wait("kube-apiserver /readyz", self._ready)
            self.startup_seconds["apiserver"] = time.monotonic() - t0
            self._wait("ServiceAccount default/default", self._default_sa)
            self.startup_seconds["controller-manager"] = time.monotonic() - t0
        except BaseException:
            # The logs named in the error stay on disk: keep the data dir for a look.
            self.stop(keep_data=True)
            raise

    def stop(self, *, keep_data: bool = False) -> None:
        """Terminates every process (controller-manager first) and deletes owned data."""
        for p in reversed(self._procs):
            _terminate(p.popen.pid, p.popen)
        self._procs.clear()
        if self._own_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.popen.pid for p in self._procs}

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.logs_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=self.detached,
                # PDEATHSIG fires when the starting *thread* ends: only tie the
                # processes to the main thread, which lives as long as the process.
                preexec_fn=_die_with_parent if self._tied else None,
            )
        self._procs.append(_Proc(name, popen, log))

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for p in self._procs:
                if p.popen.poll() is not None:
                    raise ClusterError(
                        f"{p.name} exited with {p.popen.returncode} while waiting for {what}; "
                        f"last lines of {p.log}:\n{tail(p.log)}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.log}:\n{tail(p.log, 15)}" for p in self._procs)
                raise ClusterError(f"{what} not ready after {self.start_timeout:.0f}s\n{logs}")
            time.sleep(0.1)

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=selfheal",
                f"--data-dir={self.data_dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=selfheal=http://127.0.0.1:{peer}",
                # Throwaway data: durability buys nothing and fsync costs every write.
                "--unsafe-no-fsync",
                # One member on loopback: elect it in ~0.1s instead of ~1s.
                "--heartbeat-interval=10",
                "--election-timeout=100",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                    return bool(json.load(r).get("health") == "true")
            except (OSError, ValueError):
                return False

        self._wait("etcd /health", healthy)

    def restart_apiserver(self, *, down_for: float = 0.0) -> None:
        """Stops kube-apiserver, waits ``down_for`` seconds, starts it again on the same
        port (clients' kubeconfigs stay valid) and returns once it is ready. Call it from
        the main thread: the process dies with the thread that started it."""
        if threading.current_thread() is not threading.main_thread():
            raise ClusterError("restart_apiserver: call it from the main thread")
        for p in [p for p in self._procs if p.name == "kube-apiserver"]:
            _terminate(p.popen.pid, p.popen)
            self._procs.remove(p)
        time.sleep(down_for)
        self._start_apiserver(port=int(self.server.rsplit(":", 1)[1]))
        self._wait("kube-apiserver /readyz", self._ready)

    def _start_apiserver(self, *, port: int | None = None) -> None:
        port = port or free_port()
        self.server = f"https://127.0.0.1:{port}"
        pki = self.pki.path
        (self.data_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.data_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki('apiserver.crt')}",
                f"--tls-private-key-file={pki('apiserver.key')}",
                f"--client-ca-file={pki('ca.crt')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={pki('sa.pub')}",
                f"--service-account-signing-key-file={pki('sa.key')}",
                f"--kubelet-client-certificate={pki('apiserver-kubelet-client.crt')}",
                f"--kubelet-client-key={pki('apiserver-kubelet-client.key')}",
                f"--kubelet-certificate-authority={pki('ca.crt')}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--audit-log-path={self.audit_log}",
                # lumberjack rotates at 100 MB when this is 0; tests read one file.
                "--audit-log-maxsize=100000",
                f"--audit-policy-file={self.data_dir / 'audit-policy.yaml'}",
                # 127.0.0.1 is not a valid Endpoints address: the reconciler of the
                # `kubernetes` Service would fail forever. Nothing in-cluster calls it.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                # Benchmarks hold thousands of objects and many clients at once.
                "--max-requests-inflight=800",
                "--max-mutating-requests-inflight=400",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_controller_manager(self) -> None:
        kubeconfig = self.data_dir / "controller-manager.kubeconfig"
        kubeconfig.write_text(
            _kubeconfig(
                server=self.server,
                ca=self.ca_file,
                user=_cert_user(self.pki.dir, "controller-manager"),
                name="system:kube-controller-manager",
            )
        )
        pki = self.pki.path
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",  # nothing scrapes it; one port fewer to find
                "--leader-elect=false",
                f"--service-account-private-key-file={pki('sa.key')}",
                f"--root-ca-file={pki('ca.crt')}",
                "--use-service-account-credentials",
                f"--cluster-signing-cert-file={pki('ca.crt')}",
                f"--cluster-signing-key-file={pki('ca.key')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Defaults (20 qps) make a 10,000-pod ReplicaSet take minutes.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-deployment-syncs=10",
                *([f"--controllers={','.join(self.controllers)}"] if self.controllers else []),
                "--v=1",
            ],
        )

    # -- readiness probes

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the cluster CA and presents the admin client certificate."""
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            ctx.load_cert_chain(self.pki.path("admin.crt"), self.pki.path("admin.key"))
            self._ssl = ctx
        return self._ssl

    def _ready(self) -> bool:
        try:
            return bool(self.api("GET", "/readyz", raw=True) == b"ok")
        except (OSError, ClusterError):
            return False

    def _default_sa(self) -> bool:
        try:
            self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return True
        except (OSError, ClusterError):
            return False

    # -- API access

    def api(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        query: Mapping[str, str] | None = None,
        raw: bool = False,
        timeout: float = 30.0,
    ) -> Any:
        """One admin request, synchronous (for fixtures and CLIs, never in an event loop).

        Returns the decoded JSON (or the bytes with ``raw``); raises ``ClusterError``
        carrying the status on an HTTP error.
        """
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as r:
                payload: bytes = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise ClusterError(f"{method} {path}: HTTP {e.code}: {detail}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else {}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``.cache/bin/kubectl --kubeconfig <admin>``; output captured as text."""
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A bound token for the ServiceAccount from the TokenRequest API.

        ``seconds`` must be at least 600 (the API server's minimum).
        """
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        return cast(str, self.api("POST", path, body)["status"]["token"])

    def kubeconfig_for_token(self, token: str) -> Path:
        """A kubeconfig file (in the data dir) that authenticates with ``token``."""
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        path = self.data_dir / "kubeconfigs" / f"token-{digest}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            _kubeconfig(server=self.server, ca=self.ca_file, user={"token": token}, name="token")
        )
        path.chmod(0o600)
        return path

    def write_admin_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            _kubeconfig(
                server=self.server,
                ca=self.ca_file,
                user=_cert_user(self.pki.dir, "admin"),
                name=ADMIN_USER,
            )
        )
        self.kubeconfig.chmod(0o600)


def _terminate(pid: int, popen: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the child when it is ours."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# --- detached mode: python -m tests.support.cluster up|down|status ----------------------------

STATE_FILE = STATE_DIR / "state.json"


def _load_state() -> dict[str, Any] | None:
    try:
        return cast(dict[str, Any], json.loads(STATE_FILE.read_text()))
    except (OSError, ValueError):
        return None


def _ours(pid: int, exe: str) -> bool:
    """True when ``pid`` is alive and still runs ``exe`` (pids get reused)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    return _alive(pid) and Path(argv0).name == Path(exe).name


def _running(state: Mapping[str, Any]) -> dict[str, bool]:
    procs: dict[str, Any] = state.get("processes", {})
    return {name: _ours(int(p["pid"]), str(p["exe"])) for name, p in procs.items()}


def _down(state: Mapping[str, Any]) -> None:
    procs: dict[str, Any] = state.get("processes", {})
    # The kubelet stand-in first, the store last.
    for name in ("kubelet", "kube-controller-manager", "kube-apiserver", "etcd"):
        p = procs.get(name)
        if p and _ours(int(p["pid"]), str(p["exe"])):
            _terminate(int(p["pid"]))
    shutil.rmtree(str(state.get("data_dir", STATE_DIR / "data")), ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)


def _print_info(state: Mapping[str, Any]) -> None:
    kubeconfig = state["kubeconfig"]
    print(f"kubeconfig: {kubeconfig}")
    print(f"server:     {state['server']}")
    print(f"audit log:  {state['audit_log']}")
    print(f"logs:       {state['data_dir']}/logs/")
    print(f"try:        {BIN_DIR / 'kubectl'} --kubeconfig {kubeconfig} get nodes,pods -A")


def _up() -> int:
    state = _load_state()
    if state is not None:
        if all(_running(state).values()):
            print("already up")
            _print_info(state)
            return 0
        _down(state)  # half dead: start clean
    ensure_tools()
    data = STATE_DIR / "data"
    shutil.rmtree(data, ignore_errors=True)
    cluster = Cluster(data_dir=data, detached=True)
    t0 = time.monotonic()
    cluster.start()
    log = cluster.logs_dir / "kubelet.log"
    with log.open("ab") as out:
        kubelet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.kubelet",
                "--server",
                cluster.server,
                "--pki",
                str(cluster.pki.dir),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    exes = {
        "etcd": "etcd",
        "kube-apiserver": "kube-apiserver",
        "kube-controller-manager": "kube-controller-manager",
    }
    state = {
        "data_dir": str(data),
        "kubeconfig": str(cluster.kubeconfig),
        "server": cluster.server,
        "audit_log": str(cluster.audit_log),
        "processes": {
            **{n: {"pid": pid, "exe": exes[n]} for n, pid in cluster.pids.items()},
            "kubelet": {"pid": kubelet.pid, "exe": Path(sys.executable).name},
        },
    }
    STATE_FILE.write_text(json.dumps(state, indent=2))
    deadline = time.monotonic() + 30
    while not _node_ready(cluster):
        if kubelet.poll() is not None or time.monotonic() > deadline:
            _down(state)
            raise ClusterError(f"the kubelet stand-in did not register its Node:\n{tail(log)}")
        time.sleep(0.2)
    print(f"up in {time.monotonic() - t0:.1f}s")
    _print_info(state)
    return 0


def _node_ready(cluster: Cluster) -> bool:
    try:
        node = cluster.api("GET", "/api/v1/nodes/selfheal-node-1")
    except (ClusterError, OSError):
        return False
    conds = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.cluster",
        description="The local control plane, detached (state in .cache/cluster/).",
    )
    p.add_argument("command", choices=["up", "down", "status"])
    args = p.parse_args(argv)
    if args.command == "up":
        return _up()
    state = _load_state()
    if state is None:
        print("not running")
        return 0 if args.command == "down" else 1
    if args.command == "down":
        _down(state)
        print("down; data deleted")
        return 0
    running = _running(state)
    for name, alive in running.items():
        print(f"{name:24} {'running' if alive else 'DEAD'}")
    _print_info(state)
    return 0 if all(running.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
