"""Hostile and mistaken input, the way a user meets it: the real `invoke` command in a project folder of its own.

Every case must end in one `Error: what (hint: next step)` line (no traceback) and a non-zero exit, and must change
nothing: the project's artifacts.json, the engine's tfship images, the local registry's tags and the cluster's
objects are snapshotted before and after and compared. The fault table printed at the end of the run (tests/faults/conftest.py)
quotes each case.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
HALF_PLUS_TWO = REPO.parent / "shared" / "testdata" / "tf_serving" / "saved_model_half_plus_two_cpu" / "00000123"
COMMAND_TIMEOUT = 240

BASE_CONFIG = """\
project: tfship-faults
images:
  devel: faults-devel
  serving: faults-serving
models:
  - name: half_plus_two
    signatures: [serving_default]
registry:
  url: 127.0.0.1:5000
kubernetes:
  namespace: tfship-faults
"""
RECORDED = {"images": {}, "models": {}, "registry": "", "registry_auth": False}


@dataclass
class Case:
    name: str
    argv: list[str]
    expected: str  # a piece of the one Error line
    config: str = BASE_CONFIG
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def model_version(project: Path, name: str = "half_plus_two", folder: str = "1") -> Path:
    target = project / "models" / name / folder
    shutil.copytree(HALF_PLUS_TWO, target)
    return target


def with_symlink_out_of_the_model(project: Path) -> None:
    version = model_version(project)
    (version / "assets" / "escape").symlink_to("/etc")


def with_non_integer_version(project: Path) -> None:
    model_version(project, folder="latest")


def with_corrupt_saved_model(project: Path) -> None:
    source = project / "incoming"
    shutil.copytree(HALF_PLUS_TWO, source)
    (source / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 10)


def with_empty_folder(project: Path) -> None:
    (project / "incoming").mkdir()


def with_garbage_keras_file(project: Path) -> None:
    (project / "model.keras").write_bytes(b"not a zip archive")


def with_recorded_unpushed_image(project: Path) -> None:
    recorded = json.loads(json.dumps(RECORDED))
    recorded["images"]["serving"] = {"role": "serving", "name": "tfship-serving", "tag": "0123456789abcdef",
                                     "image_id": "sha256:" + "0" * 64}
    (project / "build").mkdir(exist_ok=True)
    (project / "build" / "artifacts.json").write_text(json.dumps(recorded))


CASES = [
    Case("unknown top-level key", ["render", "--offline"], "unknown", BASE_CONFIG + "kubernets: {}\n"),
    Case("unknown nested key", ["render", "--offline"], "kubernetes.replica",
         BASE_CONFIG.replace("  namespace: tfship-faults\n", "  namespace: tfship-faults\n  replica: 3\n")),
    Case("replicas not a number", ["render", "--offline"], "'kubernetes.replicas' must be a whole number",
         BASE_CONFIG + "smoke: {}\n", env={"TFSHIP_KUBERNETES_REPLICAS": "three"}),
    Case("negative replicas flag", ["deploy", "--replicas", "-1"], "kubernetes.replicas must be 0 or more"),
    Case("YAML syntax error", ["render", "--offline"], "is not valid YAML", "models: [\n"),
    Case("YAML list at the top", ["render", "--offline"], "must hold a mapping", "- a\n- b\n"),
    Case("TFSHIP_CONFIG names a missing file", ["render", "--offline"], "TFSHIP_CONFIG names",
         env={"TFSHIP_CONFIG": "/nonexistent/tfship.yaml"}),
    Case("unknown runtime in the environment", ["build"], "serving.runtime",
         env={"TFSHIP_SERVING_RUNTIME": "banana"}),
    Case("namespace is not a DNS label", ["render", "--offline"], "kubernetes.namespace 'Bad_NS' is not a DNS label",
         BASE_CONFIG.replace("namespace: tfship-faults", "namespace: Bad_NS")),
    Case("project name with a space", ["build"], "project 'My Project' is not a DNS label",
         BASE_CONFIG.replace("project: tfship-faults", "project: My Project")),
    Case("image name with capitals", ["build"], "images.serving 'Faults/Serving' is not a valid image repository",
         BASE_CONFIG.replace("serving: faults-serving", "serving: Faults/Serving")),
    Case("error rate over 1", ["smoke-test"], "smoke.max_error_rate 1.5 is not a rate",
         BASE_CONFIG + "smoke:\n  max_error_rate: 1.5\n"),
    Case("gRPC and REST on one port", ["render", "--offline"], "both 8500",
         BASE_CONFIG + "serving:\n  rest_port: 8500\n"),
    Case("duplicate model names", ["build"], "appears twice",
         BASE_CONFIG.replace("registry:", "  - name: half_plus_two\nregistry:")),
    Case("specific policy without versions", ["build"], "version_policy is 'specific'",
         BASE_CONFIG.replace("signatures: [serving_default]", "signatures: [serving_default]\n    version_policy: specific")),
    Case("export of an unknown model", ["export", "--model", "nope", "--host"], "unknown model 'nope'"),
    Case("model.add of a missing path", ["model.add", "/nonexistent/model", "--name", "half_plus_two"],
         "/nonexistent/model"),
    Case("model.add of an empty folder", ["model.add", "incoming", "--name", "half_plus_two"], "incoming",
         setup=with_empty_folder),
    Case("model.add of a corrupt saved_model.pb", ["model.add", "incoming", "--name", "half_plus_two"],
         "saved_model.pb", setup=with_corrupt_saved_model),
    Case("model.add with a path as the name", ["model.add", str(HALF_PLUS_TWO), "--name", "../evil"],
         "is not valid"),
    Case("model.add with a non-numeric version", ["model.add", str(HALF_PLUS_TWO), "--name", "half_plus_two",
                                                  "--version", "abc"], "abc"),
    Case("model.add of a file that is not a Keras model", ["model.add", "model.keras", "--name", "half_plus_two"],
         "model.keras", setup=with_garbage_keras_file),
    Case("version folder that is not a number", ["model.validate"], "latest", setup=with_non_integer_version),
    Case("symlink out of a model folder", ["model.validate"], "symlink", setup=with_symlink_out_of_the_model),
    Case("push before build", ["push"], "invoke build"),
    Case("deploy before push", ["deploy"], "has not been pushed", setup=with_recorded_unpushed_image),
    Case("render before build", ["render", "--offline"], "invoke build"),
    Case("a kubectl context that does not exist", ["status"], "nope",
         BASE_CONFIG.replace("  namespace: tfship-faults\n",
                             "  namespace: tfship-faults\n  provider: external\n  context: nope\n")),
    Case("a kubeconfig that does not exist", ["status"], "KUBECONFIG names /nonexistent/kubeconfig",
         BASE_CONFIG.replace("  namespace: tfship-faults\n", "  namespace: tfship-faults\n  provider: external\n"),
         env={"KUBECONFIG": "/nonexistent/kubeconfig"}),
]


# --------------------------------------------------------------------------------------------------------------
# What must not change


def snapshot(project: Path) -> dict:
    artifacts = project / "build" / "artifacts.json"
    state = {"artifacts": artifacts.read_text() if artifacts.is_file() else None,
             "models": sorted(str(p.relative_to(project)) for p in (project / "models").rglob("*"))
             if (project / "models").is_dir() else []}
    images = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
                            capture_output=True, text=True, timeout=60)
    # The cases' own image names (other tfship images may be built by other runs meanwhile).
    state["images"] = sorted(line for line in images.stdout.splitlines() if line.startswith(("faults-", "tfship-faults")))
    try:
        catalog = requests.get("http://127.0.0.1:5000/v2/_catalog", timeout=5).json().get("repositories", [])
        # The cases' repositories only: other runs push to this shared registry meanwhile.
        state["registry"] = {repo: requests.get(f"http://127.0.0.1:5000/v2/{repo}/tags/list", timeout=5).json()
                             for repo in catalog if "faults" in repo}
    except requests.RequestException:
        state["registry"] = "not running"
    state["cluster"] = cluster_objects()
    return state


def cluster_objects() -> list[str] | str:
    from tfship import cluster, config

    try:
        target = cluster.target(config.load(REPO / "tfship.yaml"))
        listed = target.run("get", "deployments,services,configmaps,secrets", "--all-namespaces", "-o",
                            "custom-columns=NS:.metadata.namespace,KIND:.kind,NAME:.metadata.name", "--no-headers",
                            check=False, timeout=60)
    except Exception as error:  # no cluster here: the snapshot says so, before and after alike
        return f"no cluster: {type(error).__name__}"
    if listed.returncode != 0:
        return "no cluster"
    # The cases' namespace and the default one: other runs deploy to namespaces of their own meanwhile.
    # Words, not columns: kubectl pads to the longest namespace of the whole cluster, which other runs change.
    return sorted(" ".join(line.split()) for line in listed.stdout.splitlines()
                  if line.split()[0] in ("tfship-faults", "default"))


# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: Case, tmp_path: Path, fault_row):
    project = tmp_path / "project"
    project.mkdir()
    (project / "tfship.yaml").write_text(case.config)
    if case.setup:
        case.setup(project)
    env = {**os.environ, "TFSHIP_STATE_DIR": str(tmp_path / "state"), **case.env}
    env.pop("TFSHIP_CONFIG", None) if "TFSHIP_CONFIG" not in case.env else None
    before = snapshot(project)
    result = subprocess.run([str(INVOKE), "-r", str(REPO), *case.argv], cwd=project, env=env, capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT)
    after = snapshot(project)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    fault_row(f"bad input: {case.name}", f"exit!=0, Error: …{case.expected}…", f"exit {result.returncode}: {last[:110]}",
              "none" if before == after else "CHANGED")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert last.startswith("Error: ") and case.expected in last, result.stderr
    assert "(hint: " in last, last
    assert [line for line in lines if line.startswith("Error: ")] == [last]
    assert before == after

