"""py-spy around a phase of the benchmark, and a summary of where the time went.

``record(pid, path)`` starts ``py-spy record --format raw`` (collapsed stacks: one line
per distinct stack, ``frame;frame;... count``) on the operator; :func:`top` ranks frames
by the share of samples in which they appear (inclusive) or are the leaf (self).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LOCATION = re.compile(r" \((?P<file>[^()]*):\d+\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pid: int, path: Path, *, rate: int = 100) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` into ``path``; ``None`` when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(path),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _frame(text: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: lines merged, paths shortened."""
    m = _LOCATION.search(text)
    if not m:
        return text
    return f"{text[: m.start()]} ({m.group('file').rsplit('/', 2)[-1]})"


def top(collapsed: str, *, n: int = 15) -> dict[str, list[tuple[str, float]]]:
    """The ``n`` frames with the highest inclusive and self share of samples (0..1)."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += k
        for f in set(frames):
            inclusive[f] += k
        leaf[frames[-1]] += k
    if not total:
        return {"inclusive": [], "self": [], "samples": []}
    return {
        "inclusive": [(f, c / total) for f, c in inclusive.most_common(n)],
        "self": [(f, c / total) for f, c in leaf.most_common(n)],
        "samples": [("total", float(total))],
    }
