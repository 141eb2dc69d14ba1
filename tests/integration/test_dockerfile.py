"""operator/Dockerfile builds a working operator: its install steps, run for real.

There is no container engine on the build machines, so this test plays the build
stage of the Dockerfile itself: each WORKDIR, COPY, ENV and RUN in order, with the
container's absolute paths mapped under a temporary directory and the base image's
``python`` being this CPython 3.11. The RUN lines are the Dockerfile's own text (only
paths are rewritten), so a broken install step fails here. Dependencies come from PyPI
as in a real build; pip's cache is kept (the Dockerfile's PIP_NO_CACHE_DIR is not
applied) so a second run takes seconds.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.crds import ROOT

pytestmark = pytest.mark.integration

DOCKERFILE = ROOT / "operator" / "Dockerfile"


@dataclasses.dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each a list of (INSTRUCTION, arguments)."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.strip().partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.IGNORECASE)
            assert m, f"FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda v: args[v[1]], m[1])
            stages.append(Stage(base=base, name=m[2] or "", instructions=[]))
        else:
            assert stages, f"{op} before FROM"
            stages[-1].instructions.append((op, rest))
    return args, stages


def test_the_image_is_pinned_non_root_and_runs_the_operator() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    assert len(stages) == 2, "a build stage and a slim run stage"
    for stage in stages:
        # Pinned by full version (and digest when given): never a floating tag.
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", stage.base)
    final = dict(stages[-1].instructions)
    assert final["USER"] == "65532:65532"
    assert final["ENTRYPOINT"] == '["python", "-m", "selfheal"]'
    assert final["COPY"] == "--from=build /opt/venv /opt/venv"
    assert "RUN" not in final, "the run stage installs nothing: everything comes from the build"


def _map(container_path: str, root: Path, cwd: str) -> Path:
    p = container_path if container_path.startswith("/") else f"{cwd.rstrip('/')}/{container_path}"
    return root / p.lstrip("/")


@pytest.mark.timeout(600)
def test_the_build_steps_install_a_working_operator_from_the_lock(tmp_path: Path) -> None:
    _, stages = parse(DOCKERFILE.read_text())
    build = stages[0]
    root = tmp_path / "rootfs"
    root.mkdir()
    # The base image's `python` is CPython 3.11: this interpreter, first on PATH.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)
    env = {
        "PATH": f"{shim}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PIP_CERT": os.environ.get("PIP_CERT", ""),
        "PIP_FIND_LINKS": os.environ.get("PIP_FIND_LINKS", ""),
    }
    env = {k: v for k, v in env.items() if v}
    cwd = "/"
    container_paths: set[str] = set()
    for op, rest in build.instructions:
        if op == "ENV":
            for key, value in (kv.split("=", 1) for kv in shlex.split(rest)):
                if key != "PIP_NO_CACHE_DIR":  # keep pip's cache between test runs
                    env[key] = value
        elif op == "WORKDIR":
            cwd = rest
            container_paths.add(rest)
            _map(rest, root, "/").mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *sources, dest = shlex.split(rest)
            assert not any(s.startswith("--") for s in sources), f"COPY {rest}"
            target = _map(dest, root, cwd)
            for src in sources:
                origin = ROOT / src.rstrip("/")
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "Dockerfile*")
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif op == "RUN":
            container_paths.update(re.findall(r"python -m venv (\S+)", rest))
            command = rest
            for path in sorted(container_paths, key=len, reverse=True):
                command = command.replace(path, str(_map(path, root, "/")))
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=_map(cwd, root, "/"),
                env=env,
                capture_output=True,
                text=True,
                timeout=480,
            )
            assert proc.returncode == 0, f"RUN {rest}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        else:
            assert op in ("ARG", "LABEL"), f"the test does not know {op}: teach it"

    venv = root / "opt" / "venv"
    py = str(venv / "bin" / "python")
    clean = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    run = {"cwd": tmp_path, "env": clean, "capture_output": True, "text": True, "timeout": 120}
    help_ = subprocess.run([py, "-m", "selfheal", "--help"], **run)  # type: ignore[call-overload]
    assert help_.returncode == 0, help_.stderr
    assert "--jira-secret" in help_.stdout
    version = subprocess.run([py, "-m", "selfheal", "--version"], **run)  # type: ignore[call-overload]
    assert version.stdout.strip() == "selfheal 0.1.0"
    # The operator's whole import graph loads (kopf, kubernetes, jira, numpy, ...).
    imports = "import selfheal.handlers.runner, selfheal.handlers.watch, selfheal.handlers.policies"
    loaded = subprocess.run([py, "-c", imports], **run)  # type: ignore[call-overload]
    assert loaded.returncode == 0, loaded.stderr

    # Every installed distribution is the lock's version; no dev tool made it in.
    listing = subprocess.run(
        [py, "-c", "import importlib.metadata as m\n"
         "for d in m.distributions(): print(d.metadata['Name'], d.version)"],
        **run,
    )  # type: ignore[call-overload]  # fmt: skip
    installed = dict(line.split(" ", 1) for line in listing.stdout.splitlines())
    lock = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    )

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    locked = {norm(k): v for k, v in lock.items()}
    unpinned = {
        n: v for n, v in installed.items() if norm(n) != "selfheal" and locked.get(norm(n)) != v
    }
    assert unpinned == {}, "installed at another version than requirements.lock (or not locked)"
    assert "selfheal" in installed
    for dev_tool in ("pytest", "mypy", "ruff", "pip", "setuptools"):
        assert norm(dev_tool) not in {norm(n) for n in installed}, f"{dev_tool} is in the image"
