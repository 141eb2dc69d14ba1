"""Root conftest: loads every fixture module under tests/support/fixtures/.

Each area (cluster, crds, prometheus, jira, ...) keeps its fixtures in its own
module there, so no two areas edit one shared file.
"""

from __future__ import annotations

import pathlib

_here = pathlib.Path(__file__).parent / "support" / "fixtures"
pytest_plugins = sorted(
    f"tests.support.fixtures.{p.stem}" for p in _here.glob("*.py") if p.stem != "__init__"
)
