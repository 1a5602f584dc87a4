"""The local image registry: insecure on registry.url, or TLS + htpasswd on registry.auth_url (--auth)."""

from invoke import task

from tfship.tasks._common import exclusive, handles_errors, load_config


@task(help={"auth": "TLS with a generated CA and bcrypt htpasswd (on registry.auth_url)"})
@handles_errors
@exclusive
def up(c, auth=False):
    """Start the local registry (idempotent; data kept across restarts in the state dir)."""
    from tfship import registry

    print(registry.up(load_config(**{"registry.auth": True if auth else None})).describe())


@task(help={"purge": "also delete its data, certificates and generated credentials"})
@handles_errors
@exclusive
def down(c, purge=False):
    """Stop the local registries (their data is kept unless --purge)."""
    from tfship import registry

    for line in registry.down(load_config(), purge=purge):
        print(line)


@task
@handles_errors
def status(c):
    """Say whether the local registries run, where, and with which security."""
    from tfship import registry

    for info in registry.status(load_config()):
        print(info.describe())
