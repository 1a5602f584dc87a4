"""The Kubernetes cluster tfship deploys to."""

from invoke import task

from tasks._common import handles_errors, load_config
from tfship.errors import TfshipError


@task
@handles_errors
def up(c):
    """Stand up the configured cluster provider (local: Kubernetes built from Debian's source)."""
    raise TfshipError("'cluster.up' is not implemented yet", "see the open issues for when it lands")


@task
@handles_errors
def down(c):
    """Stop the local cluster and leave nothing running."""
    raise TfshipError("'cluster.down' is not implemented yet", "see the open issues for when it lands")


@task
@handles_errors
def status(c):
    """Say whether the cluster answers and its nodes are Ready."""
    raise TfshipError("'cluster.status' is not implemented yet", "see the open issues for when it lands")
