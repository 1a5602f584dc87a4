"""The serving contract: the image's shell entrypoint and the python entrypoint are the same rule, the Dockerfiles
take every value from it, and version policies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tfship import contract, images
from tfship.server import entrypoint

DOCKERFILES = Path(__file__).resolve().parents[2] / "dockerfiles"

ENVIRONMENTS = [
    {},
    {"MODEL_NAME": "digits"},
    {"MODEL_NAME": "", "MODEL_BASE_PATH": ""},  # empty means the default, as unset does
    {"MODEL_BASE_PATH": "/srv/"},
    {"MODEL_BASE_PATH": "/srv//", "MODEL_NAME": "m"},
    {"MODEL_CONFIG_FILE": "/etc/tfship/models.config", "MODEL_NAME": "ignored"},
    {"TFSHIP_GRPC_PORT": "9000", "TFSHIP_REST_PORT": "9001", "MODEL_NAME": "half_plus_two"},
]
EXTRAS = [[], ["--rest_api_timeout_in_ms=1000", "--port=7000"]]


@pytest.mark.parametrize("extra", EXTRAS, ids=["no-flags", "flags"])
@pytest.mark.parametrize("environ", ENVIRONMENTS, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()) or "empty")
def test_the_image_entrypoint_script_runs_server_argv(tmp_path, environ, extra):
    script = tmp_path / "tfship-entrypoint.sh"
    script.write_text(contract.entrypoint_script())
    script.chmod(0o755)
    fake_server = tmp_path / "server.py"
    fake_server.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    env = {"PATH": "/usr/bin:/bin", **environ, "TFSHIP_SERVER": f"{sys.executable} {fake_server}"}
    ran = subprocess.run(["/bin/sh", str(script), *extra], env=env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == contract.server_argv(environ, extra)


def test_server_argv_follows_the_official_image():
    assert contract.server_argv({}, []) == ["--port=8500", "--rest_api_port=8501", "--model_name=model",
                                            "--model_base_path=/models/model"]
    assert contract.server_argv({"MODEL_CONFIG_FILE": "/m.config", "TFSHIP_GRPC_PORT": "9000"}, ["--x=1"]) == [
        "--port=9000", "--rest_api_port=8501", "--model_config_file=/m.config", "--x=1"]
    assert entrypoint.entrypoint_argv is contract.server_argv, "the server's entrypoint is the contract's"


def test_the_script_defaults_to_tensorflow_model_server():
    script = contract.entrypoint_script()
    assert "server=${TFSHIP_SERVER:-tensorflow_model_server}" in script


def dockerfile_names(name: str, instruction: str) -> set[str]:
    text = (DOCKERFILES / name).read_text()
    if instruction == "ARG":
        return set(re.findall(r"^ARG (\w+)", text, re.M))
    env_block = re.search(r"^ENV ((?:.*\\\n)*.*)$", text, re.M).group(1)
    return set(re.findall(r"(\w+)=", env_block))


def test_the_dockerfiles_take_every_value_from_the_contract(tmp_path):
    models = [contract.ServedModel("a", (1,)), contract.ServedModel("b", (2,))]
    build_args = contract.image_build_args(models, 9000, 9001)
    assert dockerfile_names("Dockerfile.serving", "ARG") == {*build_args, "RUNTIME_IMAGE", "USER_ID"}
    assert dockerfile_names("Dockerfile.serving", "ENV") == {
        contract.ENV_MODEL_BASE_PATH, contract.ENV_MODEL_NAME, contract.ENV_MODEL_CONFIG_FILE,
        contract.ENV_GRPC_PORT, contract.ENV_REST_PORT}
    assert dockerfile_names("Dockerfile.runtime-python", "ENV") == {contract.ENV_SERVER}
    assert build_args["MODEL_CONFIG_FILE"] == contract.MODEL_CONFIG_PATH
    assert (build_args["GRPC_PORT"], build_args["REST_PORT"]) == ("9000", "9001")


def test_the_serving_plan_carries_the_contract_and_the_configured_ports(tmp_path):
    from tfship.config import Config, ModelSpec

    config = Config(models=[ModelSpec(name="a")], root=tmp_path)
    config.serving.grpc_port, config.serving.rest_port = 9000, 9001
    (tmp_path / "models").mkdir()
    plan = images.serving_plan(config, "runtime:1", "sha256:1", tmp_path, [contract.ServedModel("a", (3,))])
    assert plan.buildargs["GRPC_PORT"] == "9000" and plan.buildargs["REST_PORT"] == "9001"
    assert plan.buildargs["MODEL_NAME"] == "a" and plan.buildargs["MODEL_CONFIG_FILE"] == ""
    assert plan.files["tfship-entrypoint.sh"].read_text() == contract.entrypoint_script()
    other_ports = images.serving_plan(config, "runtime:1", "sha256:1", tmp_path, [contract.ServedModel("a", (3,))])
    config.serving.rest_port = 9002
    moved = images.serving_plan(config, "runtime:1", "sha256:1", tmp_path, [contract.ServedModel("a", (3,))])
    assert moved.tag != other_ports.tag, "the ports are part of the image"


def test_served_versions_per_policy():
    assert contract.served_versions("latest", [], [3, 10, 2]) == [10]
    assert contract.served_versions("all", [], [3, 10, 2]) == [2, 3, 10]
    assert contract.served_versions("specific", [10, 2, 7], [3, 10, 2]) == [2, 10]
    assert contract.served_versions("latest", [], []) == []
    with pytest.raises(ValueError, match="policy"):
        contract.served_versions("newest", [], [1])
