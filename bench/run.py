"""``make bench``: the operator at cluster scale, side by side with the floor.

One local control plane grows through the sizes (1,000 / 10,000 / 50,000 Pods across
100 / 1,000 / 5,000 Deployments in 10 namespaces, 9 in 10 Deployments covered by a
policy; ``--sizes 1000,10000`` leaves 50,000 out and takes half the time). For each
size the operator (``python -m selfheal``, cluster-wide) and the floor client
(``bench.scale.floor``) start as separate processes, and the run measures start-up,
footprint after the listing and after a minute idle, reaction latency over
``--incidents`` crash loops, API cost from the audit log, and an event storm. Then the
Prometheus cost with 10 and 500 Deployments. Writes ``bench/out/report.{md,json}`` and,
for the default (full) run, the committed ``bench/REPORT.md`` and ``bench/report.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.cluster import Cluster, free_port
from tests.support.crds import install_async
from tests.support.operator import ensure_operator_identity, grant_leases

from bench.scale import profile as prof
from bench.scale import promcost, world
from bench.scale.stats import (
    AuditRecord,
    Distribution,
    audit_record,
    count_requests,
    cpu_seconds,
    per,
    pod_writes,
    ratio,
    rss_bytes,
)
from selfheal.clients.kube import Kube
from selfheal.sharding import Shard, shard_of

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
OPERATOR_USER = "system:serviceaccount:selfheal-system:selfheal-test"
FLOOR_USER = "system:serviceaccount:selfheal-system:bench-floor"
ADMIN_USER = "selfheal-admin"
TICKS = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024
DEFAULT_SIZES = (1000, 10000, 50000)
PODS_PER_DEPLOYMENT = 10
NAMESPACES = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- processes ------------------------------------------------------------------------------


def sample(pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) of ``pid``."""
    rss = rss_bytes(Path(f"/proc/{pid}/status").read_text())
    cpu = cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), ticks_per_second=TICKS)
    return rss, cpu


class Peak:
    """Samples a process's RSS every 0.2 s in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, sample(self.pid)[0])
            except (OSError, ValueError):
                return

    def __enter__(self) -> Peak:
        self.peak = sample(self.pid)[0]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def start_operator(
    kubeconfig: Path, logfile: Path, *, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "selfheal",
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-port",
        str(port),
        "--log-level",
        "INFO",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    with logfile.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return proc, port


def wait_ready(proc: subprocess.Popen[bytes], port: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the operator was not ready within {timeout}s")


def start_floor(kubeconfig: Path, logfile: Path) -> subprocess.Popen[bytes]:
    with logfile.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.scale.floor", "--kubeconfig", str(kubeconfig)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def wait_floor(logfile: Path, proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the floor exited: {logfile.read_text()[-2000:]}")
        if "listed" in logfile.read_text():
            return
        time.sleep(0.05)
    raise TimeoutError("the floor client did not list within its time")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --- the audit log --------------------------------------------------------------------------


class Audit:
    """Reads the audit log as it grows; keeps every completed request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.records: list[AuditRecord] = []
        self._partial = b""

    def read(self) -> list[AuditRecord]:
        new: list[AuditRecord] = []
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return new
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line:
                continue
            rec = audit_record(json.loads(line))
            if rec is not None:
                new.append(rec)
        self.records.extend(new)
        return new

    def find(
        self, *, user: str, verb: str, resource: str, namespace: str, name: str, after: float
    ) -> AuditRecord | None:
        for r in self.records:
            if (
                r.received >= after
                and r.user == user
                and r.verb == verb
                and r.resource == resource
                and r.namespace == namespace
                and r.name == name
                and 200 <= r.code < 300
            ):
                return r
        return None

    def counts(self, user: str, start: float, end: float) -> Counter[str]:
        self.read()
        # Long-running watches are logged when they end: not a request rate.
        return Counter(
            {
                k: v
                for k, v in count_requests(self.records, user=user, start=start, end=end).items()
                if not k.startswith("watch ")
            }
        )


# --- one size -------------------------------------------------------------------------------


async def incidents(
    api: world.Api, w: world.World, audit: Audit, targets: list[int]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in targets:
        name, ns = world.deployment_name(i), w.namespace(i)
        pod = world.pod_name(name, 0)
        t0 = time.time() - 0.001
        await w.crash(api, i, restarts=1)
        await asyncio.sleep(0.3)
        t1 = time.time() - 0.001
        await w.crash(api, i, restarts=world.THRESHOLD)
        deadline = time.monotonic() + 30
        trigger = op = floor = None
        while time.monotonic() < deadline:
            audit.read()
            trigger = trigger or audit.find(
                user=ADMIN_USER,
                verb="patch",
                resource="pods/status",
                namespace=ns,
                name=pod,
                after=t1,
            )
            if trigger is not None:
                op = op or audit.find(
                    user=OPERATOR_USER,
                    verb="patch",
                    resource="deployments",
                    namespace=ns,
                    name=name,
                    after=trigger.received,
                )
                floor = floor or audit.find(
                    user=FLOOR_USER,
                    verb="patch",
                    resource="deployments",
                    namespace=ns,
                    name="floor-twin",
                    after=trigger.received,
                )
                if op is not None and floor is not None:
                    break
            await asyncio.sleep(0.05)
        chain = []
        if trigger is not None and op is not None:
            # The operator's requests between the write and its patch: where the time goes.
            chain = [
                {
                    "request": f"{r.verb} {r.resource}",
                    "at_ms": round((r.received - trigger.completed) * 1000, 1),
                    "took_ms": round((r.completed - r.received) * 1000, 1),
                }
                for r in audit.records
                if r.user == OPERATOR_USER
                and trigger.completed <= r.received <= op.completed
                and r.verb != "watch"
            ]
        out.append(
            {
                "deployment": f"{ns}/{name}",
                "chain": chain,
                "started": t0,
                "trigger_at": trigger.completed if trigger else None,
                "operator_s": (op.completed - trigger.completed) if op and trigger else None,
                "floor_s": (floor.completed - trigger.completed) if floor and trigger else None,
            }
        )
        r = out[-1]
        log(
            f"  incident {len(out)}/{len(targets)} {r['deployment']}: operator "
            f"{_ms(r['operator_s'])}, floor {_ms(r['floor_s'])}"
        )
        await asyncio.sleep(0.3)
    return out


def _spy_done(spy: subprocess.Popen[bytes] | None, path: Path) -> Any:
    """Stop py-spy (it writes its output on SIGINT) and summarise the profile."""
    if spy is None:
        return None
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        return None
    try:
        return prof.top(path.read_text(), n=20)
    except OSError:
        return None


def _ms(v: float | None) -> str:
    return "missed" if v is None else f"{v * 1000:.0f} ms"


async def settle(pid: int, *, quiet: float = 0.05, timeout: float = 180.0) -> float:
    """Wait until ``pid`` uses less than ``quiet`` CPU seconds per second; returns when
    (after ``timeout`` at the latest)."""
    deadline = time.monotonic() + timeout
    last = sample(pid)[1]
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = sample(pid)[1]
        if now - last < quiet:
            return time.time()
        last = now
    return time.time()


async def run_size(
    cluster: Cluster,
    api: world.Api,
    w: world.World,
    audit: Audit,
    *,
    pods: int,
    first_victim: int,
    n_incidents: int,
    idle: float,
    op_kubeconfig: Path,
    floor_kubeconfig: Path,
    out: Path,
    profile: bool = False,
) -> dict[str, Any]:
    target_deployments = pods // PODS_PER_DEPLOYMENT
    t = time.monotonic()
    log(f"size {pods}: creating Deployments {w.deployments}..{target_deployments - 1}")
    await w.grow(api, to_deployments=target_deployments)
    build_s = time.monotonic() - t
    log(f"size {pods}: {w.pods} pods in {w.deployments} Deployments ({build_s:.0f}s)")
    victims = world.victims(first_victim, target_deployments, n_incidents)
    retired = await w.retire(api)
    if retired:
        log(
            f"size {pods}: the previous size's {retired} incidents retired "
            "(Pods healthy, records deleted)"
        )
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before the clock starts)

    floor_log = out / "floor.log"
    t_floor = time.monotonic()
    floor = start_floor(floor_kubeconfig, floor_log)
    wait_floor(floor_log, floor, timeout=300)
    floor_start = time.monotonic() - t_floor

    audit.read()
    t_start_wall = time.time()
    t_start = time.monotonic()
    proc, port = start_operator(op_kubeconfig, out / "operator.log")
    result: dict[str, Any] = {"pods": w.pods, "deployments": w.deployments, "build_s": build_s}
    profiles: dict[str, Any] = {}
    spy = prof.record(proc.pid, out / "profile-startup.txt") if profile else None
    try:
        wait_ready(proc, port, timeout=600)
        startup = time.monotonic() - t_start
        profiles["startup"] = _spy_done(spy, out / "profile-startup.txt")
        log(f"size {pods}: operator ready in {startup:.2f}s (floor listed in {floor_start:.2f}s)")
        rss_ready, cpu_ready = sample(proc.pid)
        frss_ready, fcpu_ready = sample(floor.pid)
        t_ready_wall = time.time()
        startup_requests = audit.counts(OPERATOR_USER, t_start_wall, t_ready_wall)

        await asyncio.sleep(idle)
        rss_idle, cpu_idle = sample(proc.pid)
        frss_idle, fcpu_idle = sample(floor.pid)
        t_idle_wall = time.time()
        idle_requests = audit.counts(OPERATOR_USER, t_ready_wall, t_idle_wall)
        log(
            f"size {pods}: idle {idle:.0f}s: rss {rss_idle / MiB:.0f} MiB, "
            f"cpu {cpu_idle - cpu_ready:.2f}s"
        )

        t_inc = time.time()
        cpu_inc0 = sample(proc.pid)[1]
        spy = prof.record(proc.pid, out / "profile-incidents.txt") if profile else None
        with Peak(proc.pid) as inc_peak:
            found = await incidents(api, w, audit, victims)
        profiles["incidents"] = _spy_done(spy, out / "profile-incidents.txt")
        await asyncio.sleep(2.0)
        t_inc_end = time.time()
        cpu_inc1 = sample(proc.pid)[1]
        inc_requests = audit.counts(OPERATOR_USER, t_inc, t_inc_end)

        t_storm = time.time()
        cpu_storm0 = sample(proc.pid)[1]
        fcpu_storm0 = sample(floor.pid)[1]
        spy = prof.record(proc.pid, out / "profile-storm.txt") if profile else None
        with Peak(proc.pid) as storm_peak, Peak(floor.pid) as floor_peak:
            written = await w.storm(api)
            storm_writes_s = time.time() - t_storm
            # "Caught up": back under twice its idle CPU rate (at least 5%).
            idle_rate = (cpu_idle - cpu_ready) / idle
            settled = await settle(proc.pid, quiet=max(0.05, 2 * idle_rate))
        profiles["storm"] = _spy_done(spy, out / "profile-storm.txt")
        cpu_storm1 = sample(proc.pid)[1]
        fcpu_storm1 = sample(floor.pid)[1]
        rss_after_storm = sample(proc.pid)[0]
        storm_requests = audit.counts(OPERATOR_USER, t_storm, settled)
        log(
            f"size {pods}: storm of {written} status writes in {storm_writes_s:.0f}s; operator "
            f"busy until +{settled - t_storm:.0f}s, cpu {cpu_storm1 - cpu_storm0:.1f}s, "
            f"peak rss {storm_peak.peak / MiB:.0f} MiB"
        )
        all_requests = audit.counts(OPERATOR_USER, t_start_wall, time.time())
    finally:
        stop(proc)
        stop(floor)

    op_lat = [r["operator_s"] for r in found if r["operator_s"] is not None]
    fl_lat = [r["floor_s"] for r in found if r["floor_s"] is not None]
    op_d = Distribution.of(op_lat) if op_lat else None
    fl_d = Distribution.of(fl_lat) if fl_lat else None
    log_text = (out / "operator.log").read_text(errors="replace")
    result.update(
        {
            "startup_s": startup,
            "floor_startup_s": floor_start,
            "startup_requests": dict(startup_requests),
            "reaction": {
                "incidents": len(found),
                "missed_operator": len(found) - len(op_lat),
                "missed_floor": len(found) - len(fl_lat),
                "operator_s": op_d.as_dict() if op_d else None,
                "floor_s": fl_d.as_dict() if fl_d else None,
                "ratio_p50": ratio(op_d.p50, fl_d.p50) if op_d and fl_d else None,
                "ratio_p99": ratio(op_d.p99, fl_d.p99) if op_d and fl_d else None,
                "each": found,
            },
            "footprint": {
                "rss_ready_mib": rss_ready / MiB,
                "rss_idle_mib": rss_idle / MiB,
                "rss_incidents_peak_mib": inc_peak.peak / MiB,
                "rss_storm_peak_mib": storm_peak.peak / MiB,
                "rss_after_storm_mib": rss_after_storm / MiB,
                "rss_per_pod_kib": rss_idle / 1024 / w.pods,
                "cpu_startup_s": cpu_ready,
                "cpu_idle_s": cpu_idle - cpu_ready,
                "idle_s": idle,
                "cpu_incidents_s": cpu_inc1 - cpu_inc0,
                "cpu_storm_s": cpu_storm1 - cpu_storm0,
                "storm_writes": written,
                "storm_writes_s": storm_writes_s,
                "storm_busy_s": settled - t_storm,
                "cpu_ms_per_pod_event": (cpu_storm1 - cpu_storm0) * 1000 / written,
                "floor_rss_ready_mib": frss_ready / MiB,
                "floor_rss_idle_mib": frss_idle / MiB,
                "floor_rss_storm_peak_mib": floor_peak.peak / MiB,
                "floor_cpu_idle_s": fcpu_idle - fcpu_ready,
                "floor_cpu_storm_s": fcpu_storm1 - fcpu_storm0,
            },
            "api": {
                "idle_per_minute": per(idle_requests, idle / 60),
                "per_incident": per(inc_requests, len(found)),
                "per_1000_pod_events": per(storm_requests, written / 1000),
                "pod_writes_total": pod_writes(all_requests),
                "total": dict(sorted(all_requests.items())),
            },
            "profiles": profiles,
            "operator_log": {
                "errors": log_text.count(" ERROR "),
                "tracebacks": log_text.count("Traceback"),
            },
        }
    )
    return result


LISTED = re.compile(r"pods, cluster-wide: (\d+) listed")


async def run_shards(
    api: world.Api,
    w: world.World,
    *,
    total: int,
    idle: float,
    op_kubeconfig: Path,
    single: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """``total`` shard processes (``--shard i --total-shards total``) side by side, after
    the single process stopped, on the same cluster: start-up, RSS and CPU after ``idle``
    seconds, and the Pods each holds (its own listing, from its log, and the world's
    count of its namespaces' Pods)."""
    retired = await w.retire(api)  # the same quiet state the single process started in
    log(f"shards: {total} processes ({retired} incidents retired first)")
    procs = [
        start_operator(
            op_kubeconfig,
            out / f"shard-{i}.log",
            extra=("--shard", str(i), "--total-shards", str(total)),
        )
        for i in range(total)
    ]
    t0 = time.monotonic()
    ready: dict[int, float] = {}
    each: list[dict[str, Any]] = []
    try:
        while len(ready) < total:
            for i, (proc, port) in enumerate(procs):
                if i not in ready:
                    with contextlib.suppress(TimeoutError):
                        wait_ready(proc, port, timeout=0.05)
                        ready[i] = time.monotonic() - t0
            if time.monotonic() - t0 > 600:
                raise TimeoutError("the shards were not ready within 600s")
        samples = [sample(proc.pid) for proc, _ in procs]
        await asyncio.sleep(idle)
        for i, (proc, _) in enumerate(procs):
            rss, cpu = sample(proc.pid)
            namespaces = [
                f"bench-{n}" for n in range(w.namespaces) if shard_of(f"bench-{n}", total) == i
            ]
            logged = LISTED.search((out / f"shard-{i}.log").read_text(errors="replace"))
            each.append(
                {
                    "shard": i,
                    "namespaces": namespaces,
                    "pods": w.pods_in(namespaces),
                    "pods_listed": int(logged.group(1)) if logged else None,
                    "startup_s": ready[i],
                    "rss_ready_mib": samples[i][0] / MiB,
                    "rss_idle_mib": rss / MiB,
                    "cpu_idle_s": cpu - samples[i][1],
                }
            )
            log(
                f"shard {i} of {total}: {each[-1]['pods']} Pods ({len(namespaces)} namespaces), "
                f"ready in {ready[i]:.1f}s, rss idle {rss / MiB:.0f} MiB"
            )
    finally:
        for proc, _ in procs:
            stop(proc)
    fp = single["footprint"]
    return {
        "total": total,
        "idle_s": idle,
        "each": each,
        "single_rss_idle_mib": fp["rss_idle_mib"],
        "single_pods": single["pods"],
        "floor_rss_idle_mib": fp["floor_rss_idle_mib"],
    }


async def scale(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    cluster = Cluster(controllers=world.CONTROLLERS)
    cluster.start()
    log(f"control plane up in {time.monotonic() - t0:.1f}s: {cluster.server}")
    try:
        kube = await Kube.connect(kubeconfig=str(cluster.kubeconfig))
        try:
            await install_async(kube)
        finally:
            await kube.close()
        op_kubeconfig = ensure_operator_identity(cluster)
        # Each shard campaigns for its own Lease (the chart grants them with `shards`).
        if args.shards > 1:
            grant_leases(
                cluster,
                [
                    Shard(index=i, total=args.shards).lease_name("selfheal")
                    for i in range(args.shards)
                ],
            )
        floor_kubeconfig = ensure_operator_identity(cluster, name="bench-floor")
        audit = Audit(cluster.audit_log)
        w = world.World(namespaces=NAMESPACES, pods_per_deployment=PODS_PER_DEPLOYMENT)
        async with world.Api(
            cluster.server, cluster.ssl_context(), concurrency=args.concurrency
        ) as api:
            await w.setup(api)
            for size in args.sizes:
                first = w.deployments
                results.append(
                    await run_size(
                        cluster,
                        api,
                        w,
                        audit,
                        pods=size,
                        first_victim=first,
                        n_incidents=args.incidents,
                        idle=args.idle,
                        op_kubeconfig=op_kubeconfig,
                        floor_kubeconfig=floor_kubeconfig,
                        out=out / f"size-{size}",
                        profile=args.profile,
                    )
                )
            if args.shards > 1 and results:
                # At the largest size only: the single process's figures are beside them.
                results[-1]["shards"] = await run_shards(
                    api,
                    w,
                    total=args.shards,
                    idle=args.idle,
                    op_kubeconfig=op_kubeconfig,
                    single=results[-1],
                    out=out / f"size-{args.sizes[-1]}",
                )
        if args.keep_audit:
            shutil.copy(cluster.audit_log, out / "audit.log")
    finally:
        cluster.stop()
    return {"sizes": results}


def compiled(*trees: Path) -> None:
    """Byte-compile the operator's and the floor's sources, as ``pip install`` does for the
    image: with PYTHONDONTWRITEBYTECODE (set on this machine) every process started from
    the source tree would otherwise compile each module again, a start-up cost no
    installed operator pays."""
    for tree in trees:
        if not compileall.compile_dir(str(tree), quiet=1):
            raise RuntimeError(f"byte-compiling {tree} failed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="Pod counts, grown in this order (10 Pods per Deployment)",
    )
    p.add_argument("--incidents", type=int, default=30, help="crash loops per size")
    p.add_argument("--idle", type=float, default=60.0, help="idle seconds per size")
    p.add_argument("--concurrency", type=int, default=32, help="parallel writes when building")
    p.add_argument(
        "--shards",
        type=int,
        default=2,
        help="at the largest size, also this many shard processes side by side (0: none)",
    )
    p.add_argument("--skip-scale", action="store_true", help="only the Prometheus cost")
    p.add_argument("--skip-prometheus", action="store_true")
    p.add_argument("--keep-audit", action="store_true", help="copy the audit log to bench/out")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the operator during start-up, incidents and the storm (bench/out/size-N/)",
    )
    args = p.parse_args(argv)
    args.sizes = tuple(int(s) for s in args.sizes.split(","))
    full = (
        args.sizes[: len(DEFAULT_SIZES)] == DEFAULT_SIZES
        and args.incidents >= 30
        and args.idle >= 60
        and not args.skip_scale
        and not args.skip_prometheus
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "sizes": list(args.sizes),
            "incidents": args.incidents,
            "idle_s": args.idle,
            "pods_per_deployment": PODS_PER_DEPLOYMENT,
            "namespaces": NAMESPACES,
            "shards": args.shards,
        },
    }
    if not args.skip_scale:
        compiled(ROOT / "operator", ROOT / "bench")
        report.update(asyncio.run(scale(args, out)))
    if not args.skip_prometheus:
        log("prometheus: 10 and 500 Deployments")
        report["prometheus"] = promcost.measure(out)
    report["total_s"] = time.monotonic() - started
    from bench.scale import report as render

    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render.markdown(report))
    log(f"wrote {out / 'report.md'} and report.json in {report['total_s']:.0f}s")
    if full:
        shutil.copy(out / "report.json", ROOT / "bench" / "report.json")
        shutil.copy(out / "report.md", ROOT / "bench" / "REPORT.md")
        log("published bench/REPORT.md and bench/report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
