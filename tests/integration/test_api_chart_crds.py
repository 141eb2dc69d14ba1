"""The chart installs exactly the API in crds/: its CRD templates render to the same specs.

crds/*.yaml is the source of truth. The chart keeps a copy under
helm/selfheal/templates/crds/ (behind ``crds.install``, because Helm never upgrades
a chart's crds/ folder); a copy that drifts would install an older API than the
operator serves. Regenerate the chart's copy from crds/ when this fails.
"""

from __future__ import annotations

import difflib
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.cluster import BIN_DIR, BUILD_TOOLS
from tests.support.crds import CRD_PATHS, ROOT, load_crds

pytestmark = pytest.mark.integration

CHART = ROOT / "helm" / "selfheal"
CHART_CRDS = CHART / "templates" / "crds"


def _helm() -> str:
    helm = BIN_DIR / "helm"
    if not helm.exists():  # build it like the cluster fixture builds its binaries
        subprocess.run([str(BUILD_TOOLS), "helm"], check=True, timeout=1800)
    return str(helm)


def _rendered_crds() -> dict[str, dict[str, Any]]:
    templates = sorted(p.relative_to(CHART).as_posix() for p in CHART_CRDS.glob("*.yaml"))
    assert templates, f"{CHART_CRDS} holds no *.yaml template"
    args = [_helm(), "template", "selfheal", str(CHART), "--namespace", "selfheal-system"]
    args += ["--set", "crds.install=true"]
    for t in templates:
        args += ["--show-only", t]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"helm template failed: {proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == "CustomResourceDefinition"}


def _dump(value: Any) -> list[str]:
    return yaml.safe_dump(value, sort_keys=True, width=1000).splitlines()


def test_chart_crds_are_the_crds_in_crds_dir() -> None:
    if not CHART_CRDS.is_dir():
        pytest.skip(f"{CHART_CRDS.relative_to(ROOT)} does not exist yet: the chart has no CRDs")
    rendered = _rendered_crds()
    source = {c["metadata"]["name"]: c for c in load_crds(CRD_PATHS)}
    assert sorted(rendered) == sorted(source), "the chart renders other CRDs than crds/ holds"
    for name, crd in source.items():
        # Labels and annotations may differ (chart labels, helm.sh/resource-policy: keep);
        # the API itself, spec, may not.
        diff = "\n".join(
            difflib.unified_diff(
                _dump(crd["spec"]), _dump(rendered[name]["spec"]), "crds/", "chart", lineterm=""
            )
        )
        assert not diff, f"{name}: the chart's CRD differs from crds/:\n{diff}"
