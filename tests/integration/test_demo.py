"""``make demo`` as a newcomer runs it: ``python -m tests.support.demo`` in a subprocess.

The demo must play both acts, exit 0, and leave nothing behind; on Ctrl-C it must stop
everything it started and say so. The processes and ports it started are read from
its own output (it prints them), then checked to be gone once it has exited.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ensure_tools

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT = 300.0
EXECUTABLES = {
    "etcd": "etcd",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "operator": "python",
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"}


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    ensure_tools()  # the demo would build them too, but not inside its own deadline


def _alive_as(pid: int, exe: str) -> bool:
    """``pid`` exists, is not a zombie, and still runs ``exe`` (pids get reused)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    return "\nState:\tZ" not in status and exe in Path(argv0).name


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _started(output: str) -> tuple[dict[str, int], list[int], Path | None]:
    """Pids by name, loopback ports and the work dir, as the demo printed them."""
    pids: dict[str, int] = {}
    line = re.search(r"processes: (.*)", output)
    if line:
        pids = {name: int(pid) for name, pid in re.findall(r"([\w-]+) pid (\d+)", line.group(1))}
    ports = [
        int(p)
        for p in re.findall(
            r"(?:prometheus|jira|alertmanager|control plane) https?://127\.0\.0\.1:(\d+)",
            output,
        )
    ]
    workdir = re.search(r"work dir (\S+)", output)
    return pids, ports, Path(workdir.group(1)) if workdir else None


def _assert_nothing_left(output: str) -> None:
    pids, ports, workdir = _started(output)
    deadline = time.monotonic() + 10  # reparented children are reaped by init shortly
    while True:
        alive = {n: p for n, p in pids.items() if _alive_as(p, EXECUTABLES.get(n, n))}
        open_ports = [p for p in ports if _listening(p)]
        if not alive and not open_ports:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"left running after the demo: processes {alive}, ports {open_ports}")
        time.sleep(0.2)
    assert workdir is not None, output
    assert not workdir.exists(), f"{workdir} was not deleted"


@pytest.fixture
def demo() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.demo"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own process group, so a test can Ctrl-C the group as a terminal does.
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:  # the test failed midway: still clean up
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_the_demo_plays_its_three_acts_and_leaves_nothing_running(
    demo: subprocess.Popen[str],
) -> None:
    try:
        output, _ = demo.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
        pytest.fail(f"the demo took over {DEMO_TIMEOUT:.0f}s:\n{output[-6000:]}")
    assert demo.returncode == 0, output[-6000:]
    act1 = output.split("=== Act 1", 1)[1].split("=== Act 2", 1)[0]
    act2 = output.split("=== Act 2", 1)[1].split("=== Act 3", 1)[0]
    act3 = output.split("=== Act 3", 1)[1].split("=== kubectl get selfheal", 1)[0]
    # Act 1: the crash loop is detected, rolled back from revision 2 to 1, verified.
    assert "opened by trigger crashloop" in act1
    assert re.search(r"step 1 rollback: Succeeded \(revision 2 -> 1\)", act1), act1
    assert re.search(r"Verifying -> Resolved \(verification Passed", act1), act1
    # Act 2: payments goes down, the metric trigger fires; checkout's steps are skipped
    # for the failing dependency (nothing rolled back or restarted), one ticket is filed.
    assert "opened by trigger error-ratio" in act2
    assert "step 1 rollback: Refused" in act2
    assert "step 2 restart: Refused" in act2
    assert "Succeeded" not in act2
    assert "DependencyUnhealthy Deployment/checkout" in act2
    assert "-> Escalated" in act2
    key = re.search(r"Escalated, ticket (OPS-\d+)", act2)
    assert key, act2
    # The on-call got the escalation, with the ticket, on the loopback webhook.
    assert re.search(r"on-call\s+received: \[selfheal\] escalated: shop/checkout", act2), act2
    assert f"Ticket: {key.group(1)}" in act2
    # No step ran on checkout, so nothing was silenced: the escalation pages.
    assert "silence" not in act2
    # Act 3: the alert reaches selfheal through Alertmanager; silenced while healing.
    assert "opened by trigger queue-backlog" in act3
    assert re.search(r"silence \w+ active: .*alertname=CheckoutQueueBacklog", act3), act3
    assert "alert CheckoutQueueBacklog suppressed" in act3
    assert "step 1 restart: Succeeded" in act3
    assert re.search(r"silence \w+ expired", act3), act3
    assert "Resolved; silence expired" in act3
    # The summary lists both records, the ticket on the escalated one.
    table = output.split("=== kubectl get selfheal", 1)[1].split("=== The ticket", 1)[0]
    assert re.search(r"checkout-crashloop-\S+\s+Resolved", table), table
    assert re.search(r"checkout-queue-backlog-\S+\s+Resolved", table), table
    assert re.search(rf"checkout-error-ratio-\S+\s+Escalated\s.*{key.group(1)}", table), table
    ticket = output.split("=== The ticket", 1)[1]
    assert f"{key.group(1)}  [Open]" in ticket
    down = "payments.shop: 0 of 3 endpoints ready"
    assert f"skipped: dependency unhealthy: {down}" in ticket  # the summary line
    assert f"Dependency payments.shop is down*: {down}" in ticket  # what to check first
    assert "stack.txt" in ticket
    assert "deployment.yaml" in ticket
    assert f"escalated to {key.group(1)}" in output
    _assert_nothing_left(output)


@pytest.mark.parametrize(
    ("to", "sig", "code"),
    [
        ("demo", signal.SIGINT, 130),
        ("group", signal.SIGINT, 130),
        ("demo", signal.SIGTERM, 143),
    ],
    ids=["ctrl-c-to-demo", "ctrl-c-to-group", "sigterm"],
)
def test_an_interrupt_stops_everything_it_started(
    demo: subprocess.Popen[str], to: str, sig: signal.Signals, code: int
) -> None:
    """``demo``: the signal to the demo alone, which must stop its live children itself;
    ``group``: to the whole process group, as Ctrl-C in a terminal (children die first)."""
    assert demo.stdout is not None
    lines: list[str] = []

    def read() -> None:
        assert demo.stdout is not None
        lines.extend(iter(demo.stdout.readline, ""))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    # Interrupt in the middle of things: the operator has just opened an incident.
    while not any("opened by trigger crashloop" in line for line in lines):
        if demo.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the demo never opened an incident:\n" + "".join(lines)[-6000:])
        time.sleep(0.2)
    if to == "group":
        os.killpg(demo.pid, sig)
    else:
        demo.send_signal(sig)
    demo.wait(timeout=90)
    reader.join(timeout=10)
    output = "".join(lines)
    assert demo.returncode == code, output[-6000:]
    assert "DEMO FAILED" in output
    assert "interrupted" in output
    _assert_nothing_left(output)


def test_a_missed_moment_fails_with_its_name_and_still_cleans_up() -> None:
    # One second is too short for any act: the demo must say which moment it missed.
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.demo", "--act-timeout", "1"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-6000:]
    assert "DEMO FAILED" in output
    assert "Act 1: the crash-loop incident ending did not happen within 1s" in output
    assert "last lines of the operator's log" in output
    _assert_nothing_left(output)
