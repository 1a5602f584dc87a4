"""The e2e fixture every Kubernetes test shares: a cluster that answers with a Ready node.

With kubernetes.provider local (tfship.yaml's default) it brings up the local cluster through the library,
idempotently: the first run on a fresh machine builds Kubernetes from Debian's source (about 10 minutes), later
runs find it Ready and go on at once. The cluster is left running at the end, for the next run and for
`invoke deploy`; `invoke cluster.down` stops it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tfship import cluster as tfcluster
from tfship import config as tfconfig

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    """What e2e tests need of the cluster: its config, and kubectl pointed at it."""

    config: tfconfig.Config
    up_result: str

    @property
    def context(self) -> str:
        return tfcluster.context_of(self.config)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = 120) -> subprocess.CompletedProcess:
        return tfcluster.target(self.config).run(*args, input=input, check=check, timeout=timeout)

    def kubectl_argv(self, *args: str) -> list[str]:
        return tfcluster.target(self.config).argv(*args)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME)
    result = tfcluster.up(config)
    return Cluster(config=config, up_result=result)
