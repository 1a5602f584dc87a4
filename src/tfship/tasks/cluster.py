"""The Kubernetes cluster tfship deploys to."""

from invoke import task

from tfship.tasks._common import exclusive, handles_errors, load_config


@task(help={"provider": "auto (the current kubectl context if it answers, else local), local (built from Debian's "
                        "source), kind, or external (default: tfship.yaml)"})
@handles_errors
@exclusive
def up(c, provider=None):
    """Make the configured cluster answer (local: built from Debian's source; external: only checked); idempotent."""
    from tfship import cluster

    print(cluster.up(load_config(**{"kubernetes.provider": provider})))


@task(help={"provider": "local or kind (default: tfship.yaml)"})
@handles_errors
@exclusive
def down(c, provider=None):
    """Stop the local cluster and leave nothing running."""
    from tfship import cluster

    print(cluster.down(load_config(**{"kubernetes.provider": provider})))


@task
@handles_errors
def status(c):
    """Say whether the cluster answers and its nodes are Ready (exits non-zero when none is)."""
    from tfship import cluster
    from tfship.errors import KubernetesError

    current = cluster.status(load_config())
    print(current.describe())
    if not current.ready:
        raise KubernetesError("no node of the cluster is Ready", "see the node's reason above, or run: invoke cluster.up")
