"""Clients of the deployed models, through their Service: predict and evaluate."""

from invoke import task

from tfship.tasks._common import handles_errors, load_config

@task(help={"model": "model name (as in tfship.yaml)", "image": "image file to classify (any size and format)",
            "input": "input rows as JSON, e.g. '[[1.0, 2.0]]' (or {\"name\": rows} for several inputs)",
            "version": "ask this version (default: what the server serves)"})
@handles_errors
def predict(c, model, image=None, input=None, version=None):
    """Send one request through the Service and print the answer (top classes with scores for classifiers)."""
    from tfship import clients

    print(clients.predict(load_config(), model, image=image, input_json=input, version=version))


@task(help={"model": "model name (exported by mnist or digits)", "num_tests": "requests to send",
            "concurrency": "requests in flight at once", "in_cluster": "run the client as a Job inside the cluster"})
@handles_errors
def evaluate(c, model, num_tests=1000, concurrency=4, in_cluster=False):
    """Send the held-out images through the Service: inference error rate, requests/s, p50/p99, per replica."""
    from tfship import clients

    clients.evaluate(load_config(), model, num_tests=int(num_tests), concurrency=int(concurrency),
                     in_cluster=in_cluster)
