"""The e2e layer's cluster fixture (shared with tests/faults): see tests/fixtures/cluster_fixtures.py."""

from __future__ import annotations

from cluster_fixtures import Cluster, cluster  # noqa: F401 (the fixture, and the type tests annotate with)
