"""Models on disk: import an existing SavedModel, validate them all."""

from invoke import task

from tfship.tasks._common import exclusive, handles_errors, load_config


@task(help={"path": "folder of a SavedModel (holding saved_model.pb)", "name": "model name",
            "version": "version number (default: the next one)"})
@handles_errors
@exclusive
def add(c, path, name, version=None):
    """Import an existing SavedModel as models/<name>/<version> after validating it."""
    from tfship import models

    target = models.add(load_config(), path, name, version)
    print(f"added {target}")


@task
@handles_errors
def validate(c):
    """Validate every configured model: integer versions, saved_model.pb, loads, has its signatures."""
    from tfship import models

    for line in models.validate_all(load_config()):
        print(line)
