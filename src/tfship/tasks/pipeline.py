"""The everyday pipeline: export, build, push, render, deploy, smoke-test, and up for all of it."""

from invoke import task

from tfship.tasks._common import exclusive, handles_errors, load_config



@task(help={"model": "export only this model", "version": "version number to write (default: next)",
            "host": "run the exporter on this machine instead of inside the devel image"})
@handles_errors
@exclusive
def export(c, model=None, version=None, host=False):
    """Export the configured models as versioned SavedModels under models/."""
    from tfship import export as stage

    for result in stage.export(load_config(), model=model, version=version, in_devel=not host):
        print(result.describe())


@task(help={"image": "devel, serving, web (the page) or all (default: the three; images.web: false skips the page)",
            "runtime": "serving runtime: tfserving, python or auto",
            "base": "base images: upstream, debian or auto"})
@handles_errors
@exclusive
def build(c, image="all", runtime=None, base=None):
    """Build the devel, serving and web images (each skipped when its inputs are unchanged)."""
    from tfship import images

    cfg = load_config(**{"serving.runtime": runtime, "base.source": base})
    wanted = images.all_roles(cfg) if image == "all" else (image,)
    for artifact in images.build(cfg, images=wanted):
        runtime_note = f" ({artifact.runtime} runtime)" if artifact.runtime else ""
        print(f"{artifact.role}: {artifact.local_ref}{runtime_note} user {artifact.user}")


@task
@handles_errors
@exclusive
def push(c):
    """Push the built images to the registry and record their digests in build/artifacts.json."""
    from tfship import push as stage

    for line in stage.push_images(load_config()).lines():
        print(line)


@task(help={"replicas": "number of serving replicas",
            "offline": "do not ask the cluster for its API versions (render for a current Kubernetes)"})
@handles_errors
@exclusive
def render(c, replicas=None, offline=False):
    """Render Kubernetes manifests, pinned by digest, into build/k8s/."""
    from tfship import render as stage

    cfg = load_config(**{"kubernetes.replicas": replicas})
    print(stage.render_manifests(cfg, offline=offline))


@task(help={"replicas": "number of serving replicas", "keep_failed": "leave a failed rollout in place for debugging"})
@handles_errors
@exclusive
def deploy(c, replicas=None, keep_failed=False):
    """Apply the manifests, wait for the rollout, and roll back on failure."""
    from tfship import deploy as stage

    cfg = load_config(**{"kubernetes.replicas": replicas})
    print(stage.deploy(cfg, keep_failed=keep_failed))


@task(name="smoke-test", help={"json": "print machine-readable results"})
@handles_errors
def smoke_test(c, json=False):
    """Check every replica through its own port-forward: status, metadata and predictions over gRPC and REST."""
    import json as json_module

    from tfship import smoke

    results = smoke.smoke_test(load_config())
    if json:
        print(json_module.dumps([r.summary() for r in results], indent=2))
    else:
        print(smoke.format_table(results))
    smoke.require_all_ok(results)


@task
@handles_errors
def status(c):
    """Show the deployed app: replicas, image digest, rollout state, and where its Service can be reached."""
    from tfship import service
    from tfship import deploy as stage

    cfg = load_config()
    print(stage.status(cfg))
    print(service.service_address(cfg).describe())


@task(help={"to": "a promoted release to serve again (its id from `invoke history`, or a unique prefix)",
            "replicas": "with --to: number of serving replicas (default: as many as serve now)"})
@handles_errors
@exclusive
def rollback(c, to=None, replicas=None):
    """Roll the deployment back to its previous revision, or to any promoted release (--to)."""
    from tfship import deploy as stage
    from tfship import release as releases

    if to is None:
        print(stage.rollback(load_config()))
        return
    deployed, record = releases.rollback_to(load_config(), to, None if replicas is None else int(replicas))
    print(f"{deployed}\nrecorded as release {record.id} ({record.reason})")


@task(help={"replicas": "number of serving replicas (default: as many as serve now)",
            "force": "release even when the serving Deployment already runs this image"})
@handles_errors
@exclusive
def release(c, replicas=None, force=False):
    """Canary, smoke test and quality gate against the serving version, then promote or reject."""
    from tfship import release as stage

    try:
        result = stage.release(load_config(), None if replicas is None else int(replicas), force=force)
    except stage.ReleaseRejected as rejected:
        print(rejected.result)
        raise
    print(result)


@task
@handles_errors
def history(c):
    """List the releases recorded in the cluster: time, digest, models, gate numbers, outcome."""
    from tfship import history as records
    from tfship import release as stage

    print(records.format_table(stage.releases(load_config())))


@task
@handles_errors
@exclusive
def destroy(c):
    """Delete the deployed app from the cluster."""
    from tfship import deploy as stage

    print(stage.destroy(load_config()))


@task(help={"replicas": "number of serving replicas (default: kubernetes.replicas in tfship.yaml)"})
@handles_errors
@exclusive
def up(c, replicas=None):
    """Everything on a fresh machine: engine, bases, export, build, registry, push, cluster, deploy, smoke-test."""
    from tfship import pipeline

    try:
        summary = pipeline.up(load_config(**{"kubernetes.replicas": replicas}))
    except pipeline.UpFailedSmokeTest as failed:
        print(failed.summary)
        raise
    print(summary)
