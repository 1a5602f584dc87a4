"""tfship-web: `invoke web` opens the page (a port-forward to the web Service on 127.0.0.1, printing the URL).

Until build/render/deploy/smoke-test call tfship.web.stages themselves, web.build, web.deploy and web.smoke run
those steps on their own (after `invoke build push deploy` of the model server).
"""

from invoke import task

from tfship.tasks._common import handles_errors, load_config


@task(name="open", default=True, help={"port": "local port on 127.0.0.1 (default: a free one)"})
@handles_errors
def open_page(c, port=0):
    """Open the web page: port-forward to the web Service on 127.0.0.1 and print its URL (Ctrl-C stops)."""
    from tfship.web import stages

    cfg = load_config()
    exposed = stages.node_port(cfg)
    forward = stages.service_forward(cfg, int(port))
    try:
        print(f"tfship-web: http://127.0.0.1:{forward.ports[stages.WEB_PORT]}/  (Ctrl-C to stop)", flush=True)
        if exposed:
            print(f"also on every node at port {exposed} (Service type NodePort)", flush=True)
        forward.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        forward.stop()


@task(help={"base": "base images: upstream, debian or auto"})
@handles_errors
def build(c, base=None):
    """Build the web image (skipped when its inputs are unchanged); `invoke push` then pushes it."""
    from tfship.web import stages

    artifact = stages.ensure_web_image(load_config(**{"base.source": base}))
    print(f"{artifact.role}: {artifact.local_ref} user {artifact.user}")


@task(help={"service_type": "ClusterIP (default) or NodePort"})
@handles_errors
def deploy(c, service_type="ClusterIP"):
    """Deploy the web page next to the model server and wait until it is ready."""
    from tfship.web import stages

    print(stages.render_and_deploy(load_config(), service_type))


@task
@handles_errors
def smoke(c):
    """Upload held-out digits through the web Service and check the answers."""
    from tfship import artifacts
    from tfship.errors import SmokeTestError
    from tfship.web import stages

    cfg = load_config()
    result = stages.smoke_web(cfg, artifacts.load(cfg.artifacts_path))
    print(result.line())
    if not result.ok:
        raise SmokeTestError(f"the web page got {result.right} of {result.sent} known digits right",
                             "look at the page (invoke web) and the web pod's log")
