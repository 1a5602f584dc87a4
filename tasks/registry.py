"""The local image registry."""

from invoke import task

from tasks._common import handles_errors, load_config
from tfship.errors import TfshipError


@task(help={"auth": "TLS with a generated CA and bcrypt htpasswd"})
@handles_errors
def up(c, auth=False):
    """Start the local registry (idempotent)."""
    raise TfshipError("'registry.up' is not implemented yet", "see the open issues for when it lands")


@task
@handles_errors
def down(c):
    """Stop the local registry (its data is kept)."""
    raise TfshipError("'registry.down' is not implemented yet", "see the open issues for when it lands")


@task
@handles_errors
def status(c):
    """Say whether the local registry runs, where, and with which security."""
    raise TfshipError("'registry.status' is not implemented yet", "see the open issues for when it lands")
