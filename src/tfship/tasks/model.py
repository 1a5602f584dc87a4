"""Models on disk: import a SavedModel, Keras file or checkpoint; validate them all."""

from invoke import task

from tfship.tasks._common import exclusive, handles_errors, load_config


@task(help={"path": "a SavedModel folder, a Keras .keras/.h5 file, or a TF1 checkpoint with its .meta graph",
            "name": "model name", "version": "version number (default: the next one)",
            "inputs": "checkpoint only: serving input tensors, comma-separated (e.g. x:0)",
            "outputs": "checkpoint only: serving output tensors, comma-separated (e.g. y:0)"})
@handles_errors
@exclusive
def add(c, path, name, version=None, inputs="", outputs=""):
    """Import a model as models/<name>/<version>: converted to a SavedModel if needed, validated, smoke sample made."""
    from tfship import models

    target = models.add(load_config(), path, name, version, inputs=inputs, outputs=outputs)
    print(f"added {target}")


@task
@handles_errors
def validate(c):
    """Validate every configured model: integer versions, saved_model.pb, loads, has its signatures."""
    from tfship import models

    for line in models.validate_all(load_config()):
        print(line)
