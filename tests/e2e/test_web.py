"""tfship-web on the real cluster: the model server (digits + half_plus_two, 2 replicas) and the web page deployed
from the local registry into this test's own namespace; the page checked through a port-forward to the web Service,
over HTTP (tfship.web.stages.smoke_web), in headless Chromium (an uploaded digit, the replica that answered), and
through `invoke web`.

Everything is provisioned through the library into a private build folder, so the project's build/artifacts.json
and deployed app are never touched.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from model_fixtures import export_models

from tfship import config as tfconfig
from tfship import deploy, images, push, registry, smoke
from tfship.web import stages

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "tfship-e2e-h13-web"
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def e2e_config(root: Path) -> tfconfig.Config:
    overrides = {
        "build_dir": str(root / "build"),
        "models_dir": str(root / "models"),
        "models": [{"name": "digits", "exporter": "digits", "signatures": ["serving_default", "classify"]},
                   {"name": "half_plus_two", "exporter": "half_plus_two"}],
        "kubernetes.namespace": NAMESPACE,
        "kubernetes.replicas": 2,
        "kubernetes.resources.cpu_request": "100m",
    }
    return tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides=overrides)


@pytest.fixture(scope="module")
def deployed(cluster):
    with tempfile.TemporaryDirectory(prefix="tfship-e2e-web-") as folder:
        config = e2e_config(Path(folder))
        export_models(config)
        images.build(config, ["serving", "web"])
        registry.up(config)
        artifacts = push.push(config)
        assert {"serving", "web"} <= set(artifacts.images)
        deploy.deploy(config)  # the model server, then the page (render and deploy include it once it is built)
        try:
            yield config, artifacts
        finally:
            cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)


def model_server_pods(cluster, config) -> set[str]:
    from tfship import render

    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", render.selector(config), "-o",
                                      "json").stdout)["items"]
    return {pod["metadata"]["name"] for pod in pods}


def test_the_web_page_answers_known_digits_through_its_service(cluster, deployed):
    config, artifacts = deployed
    result = stages.smoke_web(config, artifacts)
    print(result.line())
    assert result.ok, result.line()
    assert result.version == max(artifacts.models["digits"])
    # The replica names come from the model server's pods (python runtime), not from the web pod.
    assert result.replicas and result.replicas <= model_server_pods(cluster, config)


def test_the_page_reports_the_classifiers_it_reaches(deployed):
    """The smoke row for a project with no digits model (no image with a known answer): /readyz through the Service."""
    config, _ = deployed
    line = stages.page_ready(config)
    print(line)
    assert "classifiers: digits" in line


def test_the_smoke_test_checks_the_page_too(deployed):
    config, _ = deployed
    results = smoke.smoke_test(config)
    print(smoke.format_table(results))
    web = [r for r in results if r.pod == f"svc/{stages.web_name(config)}"]
    assert len(web) == 1 and web[0].ok, smoke.format_table(results)
    smoke.require_all_ok(results)


def test_the_web_pod_runs_restricted_and_the_model_server_stays_unexposed(cluster, deployed):
    config, _ = deployed
    web = json.loads(cluster.kubectl("get", "deployment", stages.web_name(config), "-n", NAMESPACE, "-o",
                                     "json").stdout)
    pod = web["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert web["status"].get("readyReplicas") == 1
    model_service = json.loads(cluster.kubectl("get", "service", config.kubernetes.app, "-n", NAMESPACE, "-o",
                                               "json").stdout)
    assert model_service["spec"]["type"] == "ClusterIP"


def test_an_uploaded_digit_in_chromium_through_the_port_forward(cluster, deployed, tmp_path):
    from playwright.sync_api import sync_playwright

    config, artifacts = deployed
    pngs, labels = stages.digit_pngs(config, artifacts, count=3)
    path = tmp_path / "digit.png"
    path.write_bytes(pngs[0])
    forward = stages.service_forward(config)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        url = f"http://127.0.0.1:{forward.ports[stages.WEB_PORT]}/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(30_000)
            page.goto(url)
            page.wait_for_selector("#model:not([disabled])")
            page.set_input_files("#file", str(path))
            page.click("#upload-button")
            page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")
            page.screenshot(path=str(SCREENSHOTS / "cluster-upload-digit.png"), full_page=True)
            prediction, replica = page.inner_text("#prediction"), page.inner_text("#meta-replica")
            browser.close()
    finally:
        forward.stop()
    assert prediction == labels[0]
    pod = replica.split(" ")[0]
    assert pod in model_server_pods(cluster, config) and "(model server)" in replica


def test_invoke_web_prints_a_working_url(deployed):
    config, _ = deployed
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TFSHIP_KUBERNETES_NAMESPACE": NAMESPACE}
    process = subprocess.Popen([sys.executable, "-m", "invoke", "web"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = ""
        for _ in range(20):  # kubectl chatter may come first
            line = process.stdout.readline()
            if "http://127.0.0.1:" in line or not line:
                break
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, line
        assert requests.get(match.group(0) + "readyz", timeout=30).json()["ready"] is True
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
