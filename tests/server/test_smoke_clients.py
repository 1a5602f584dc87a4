"""The smoke test's gRPC and REST clients against the real tfship.server, serving both exported models.

The cluster is replaced by a forward that is already open (the server listens on 127.0.0.1 itself); everything
else (known answers from the exporters' samples, status, metadata, predict over both transports) is real.
"""

from __future__ import annotations

import pytest
from model_fixtures import export_models

from tfship import images, smoke
from tfship.artifacts import Artifacts
from tfship.config import Config, ModelSpec


class OpenForward:
    def __init__(self, pod: str, grpc_port: int, rest_port: int):
        self.pod, self.ports, self.restarts = pod, {8500: grpc_port, 8501: rest_port}, 0

    def alive(self) -> bool:
        return True


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Config:
    root = tmp_path_factory.mktemp("project")
    config = Config(root=root, models=[
        ModelSpec(name="half_plus_two", exporter="half_plus_two",
                  signatures=["serving_default", "classify_x_to_y", "regress_x_to_y"]),
        ModelSpec(name="digits", exporter="digits", signatures=["serving_default", "classify"]),
    ])
    export_models(config)
    return config


def model_config(config: Config) -> str:
    entries = "".join(
        f'config {{ name: "{spec.name}" base_path: "{config.models_path / spec.name}" model_platform: "tensorflow" }}\n'
        for spec in config.models)
    return f"model_config_list {{\n{entries}}}\n"


def test_every_check_passes_on_a_healthy_replica(exported, start_server, tmp_path):
    (tmp_path / "models.config").write_text(model_config(exported))
    server = start_server(f"--model_config_file={tmp_path / 'models.config'}")
    served = {"half_plus_two": [1], "digits": [1]}
    cases = smoke.load_cases(exported, Artifacts(models=served, serving=images.serving_record(exported, served)))
    assert {c.model: bool(c.rows) for c in cases} == {"half_plus_two": True, "digits": True}

    result = smoke.check_replica(OpenForward("local", server.grpc_port, server.rest_port), cases, 8500, 8501,
                                 timeout=10, retries=2)

    assert [c.name for c in result.checks] == [
        "half_plus_two status", "half_plus_two metadata", "half_plus_two predict grpc", "half_plus_two predict rest",
        "digits status", "digits metadata", "digits predict grpc", "digits predict rest"]
    assert result.ok, smoke.format_table([result])
    assert result.error_rate <= exported.smoke.max_error_rate
    assert len(result.latencies_ms) == 8
    # The exporters' warmup files were replayed at load: half_plus_two 5 records (one per signature), digits 2.
    warmed = sorted(line.rsplit("Number of warmup records read: ", 1)[1].split(".")[0]
                    for line in server.log().splitlines() if "Number of warmup records read" in line)
    assert warmed == ["2", "5"]


def test_wrong_version_and_wrong_answers_fail(exported, start_server, tmp_path):
    (tmp_path / "models.config").write_text(model_config(exported))
    server = start_server(f"--model_config_file={tmp_path / 'models.config'}")
    served = {"half_plus_two": [1], "digits": [1]}
    cases = smoke.load_cases(exported, Artifacts(models=served, serving=images.serving_record(exported, served)))
    half = next(c for c in cases if c.model == "half_plus_two")
    half.version = 2  # not served
    half.expected_outputs = [v + 1 for v in half.expected_outputs]  # a model that answers differently

    result = smoke.check_replica(OpenForward("local", server.grpc_port, server.rest_port), [half], 8500, 8501,
                                 timeout=5, retries=1)

    failed = {c.name: c.detail for c in result.checks if not c.ok}
    assert set(failed) == {"half_plus_two status", "half_plus_two predict grpc", "half_plus_two predict rest"}
    assert "MISSING" in failed["half_plus_two status"] or "NOT_FOUND" in failed["half_plus_two status"]
    assert not result.ok
