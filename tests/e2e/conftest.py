"""The e2e layer's cluster fixture (shared with tests/faults): see tests/fixtures/cluster_fixtures.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from cluster_fixtures import Cluster, cluster  # noqa: E402,F401 (the fixture, and the type tests annotate with)
