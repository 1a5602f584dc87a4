"""The Docker engine tfship builds and runs with."""

from invoke import task

from tfship.tasks._common import handles_errors, load_config


@task
@handles_errors
def up(c):
    """Make a Docker engine answer: install and start one on Debian where `docker info` fails; else do nothing."""
    from tfship import engine

    print(engine.ensure_engine(load_config()))


@task
@handles_errors
def status(c):
    """Say whether the Docker engine answers, and which one it is."""
    from tfship import engine

    print(engine.describe())
