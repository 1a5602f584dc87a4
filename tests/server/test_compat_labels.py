"""Version labels as TF Serving's model_servers/server_core.cc (UpdateModelVersionLabelMap,
ServableRequestFromModelSpec, GetModelVersionForLabel) and g3doc/serving_config.md define them, reload refusals
as model_service_impl.cc reports them, and GetModelStatus (get_model_status_impl.cc) ignoring labels; against
the real server serving TF Serving's saved_model_half_plus_two_2_versions (versions 123 and 124)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
import requests
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from server_harness import HALF_PLUS_TWO, HALF_PLUS_TWO_2_VERSIONS, ServerProcess, require_testdata

TIMEOUT = 30.0
NOT_AVAILABLE = "Request to assign label to version {version} of model {model}, which is not currently available " \
                "for inference"


def _model(name: str = "all", labels: dict[str, int] | None = None, base: Path = HALF_PLUS_TWO_2_VERSIONS) -> str:
    text = f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" ' \
           "model_version_policy { all {} } "
    text += "".join(f'version_labels {{ key: "{key}" value: {value} }} ' for key, value in (labels or {}).items())
    return text + "}"


def _config_text(*models: str) -> str:
    return "model_config_list { " + " ".join(models) + " }\n"


def _reload(channel: grpc.Channel, *models: str, metric_names: tuple[str, ...] = ()) -> Any:
    request = model_management_pb2.ReloadConfigRequest(metric_names=list(metric_names))
    text_format.Parse(_config_text(*models), request.config)
    return model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, TIMEOUT)


def _refused(channel: grpc.Channel, *models: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        _reload(channel, *models)
    return raised.value.code(), raised.value.details()


def _predict(channel: grpc.Channel, label: str | None = None, name: str = "all") -> int:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].dtype = 1  # DT_FLOAT
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, TIMEOUT).model_spec.version.value


def _predict_fails(channel: grpc.Channel, label: str | None = None, name: str = "all") -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        _predict(channel, label, name)
    return raised.value.code(), raised.value.details()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, grpc.Channel]]:
    """A server without --allow_version_labels_for_unavailable_models, started with no labels."""
    require_testdata()
    workdir = tmp_path_factory.mktemp("labels_plain")
    config = workdir / "models.config"
    config.write_text(_config_text(_model()))
    server = ServerProcess([f"--model_config_file={config}"], workdir / "server.log")
    server.wait_ready()
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield server, channel
    assert server.stop() == 0


def test_labels_at_startup_need_the_flag(start_server: Any, tmp_path: Path) -> None:
    """serving_config.md: labels given at start-up name versions not loaded yet; without
    --allow_version_labels_for_unavailable_models the server refuses to start (ServerCore::Create fails)."""
    require_testdata()
    config = tmp_path / "models.config"
    config.write_text(_config_text(_model(labels={"stable": 123})))
    server = start_server(f"--model_config_file={config}", wait=False)
    assert server.wait_exit(120) == 1
    assert NOT_AVAILABLE.format(version=123, model="all") in server.log()


def test_labels_assigned_by_reload_to_available_versions(plain: tuple[ServerProcess, grpc.Channel]) -> None:
    """serving_config.md: once a version is available, a reload may label it; labels then pick the version."""
    server, channel = plain
    _reload(channel, _model(labels={"stable": 123, "canary": 124}))
    assert (_predict(channel, "stable"), _predict(channel, "canary"), _predict(channel)) == (123, 124, 124)
    reply = requests.post(f"{server.rest_url}/v1/models/all/labels/stable:predict", json={"instances": [1.0]},
                          timeout=TIMEOUT)
    assert reply.json() == {"predictions": [2.5]}


def test_reload_refuses_label_on_unavailable_version(plain: tuple[ServerProcess, grpc.Channel]) -> None:
    """UpdateModelVersionLabelMap: FAILED_PRECONDITION, and the labels in force stay."""
    _, channel = plain
    _reload(channel, _model(labels={"stable": 123}))
    assert _refused(channel, _model(labels={"stable": 125})) == (
        grpc.StatusCode.FAILED_PRECONDITION, NOT_AVAILABLE.format(version=125, model="all"))
    assert _predict(channel, "stable") == 123


def test_reload_refuses_label_on_a_model_it_adds(plain: tuple[ServerProcess, grpc.Channel]) -> None:
    """Labels are checked before the reload loads anything: a model added and labelled at once is refused, and
    nothing of that reload is applied (serving_config.md: first load, then label)."""
    _, channel = plain
    code, details = _refused(channel, _model(), _model("other", {"stable": 123}, HALF_PLUS_TWO))
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, NOT_AVAILABLE.format(version=123, model="other"))
    assert _predict_fails(channel, name="other") == (grpc.StatusCode.NOT_FOUND,
                                                     "Servable not found for request: Latest(other)")
    _reload(channel, _model(), _model("other", base=HALF_PLUS_TWO))
    _reload(channel, _model(), _model("other", {"stable": 123}, HALF_PLUS_TWO))
    assert _predict(channel, "stable", name="other") == 123


def test_unknown_label_is_invalid_argument(plain: tuple[ServerProcess, grpc.Channel]) -> None:
    """GetModelVersionForLabel: 'Unrecognized servable version label: ...' (an empty label too)."""
    _, channel = plain
    assert _predict_fails(channel, "nope") == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Unrecognized servable version label: nope")
    assert _predict_fails(channel, "") == (grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: ")


def test_model_status_ignores_labels(plain: tuple[ServerProcess, grpc.Channel]) -> None:
    """get_model_status_impl.cc: only a version narrows GetModelStatus; a label (known or not) does not."""
    server, channel = plain
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "all"
    request.model_spec.version_label = "nope"
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, TIMEOUT)
    assert [status.version for status in reply.model_version_status] == [124, 123]
    rest = requests.get(f"{server.rest_url}/v1/models/all/labels/nope", timeout=TIMEOUT)
    assert [status["version"] for status in rest.json()["model_version_status"]] == ["124", "123"]
    with pytest.raises(grpc.RpcError) as raised:
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(get_model_status_pb2.GetModelStatusRequest(),
                                                                        TIMEOUT)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_reload_errors(plain: tuple[ServerProcess, grpc.Channel]) -> None:
    """model_service_impl.cc HandleReloadConfigRequest and ServerCore::ValidateModelConfigList."""
    _, channel = plain
    custom = model_management_pb2.ReloadConfigRequest()
    custom.config.custom_model_config.Pack(custom.config.model_config_list)
    with pytest.raises(grpc.RpcError) as raised:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(custom, TIMEOUT)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently "
        "supported")
    assert _refused(channel, _model(), _model()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                     "Illegal to list model all multiple times in config list")
    assert _refused(channel, 'config { name: "rel" base_path: "relative/path" }') == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected model rel to have an absolute path or URI; got base_path()=relative/path")
    assert _predict(channel) == 124  # still served


def test_reload_reports_metric_increases(plain: tuple[ServerProcess, grpc.Channel]) -> None:
    """ReloadConfigResponse.metric: one entry per requested name, with its increase during the reload."""
    _, channel = plain
    response = _reload(channel, _model(), metric_names=("/tensorflow/serving/request_count", "/no/such/metric"))
    assert [(metric.name, metric.int64_value_increase) for metric in response.metric] == [
        ("/tensorflow/serving/request_count", 0), ("/no/such/metric", 0)]


def test_flag_allows_new_labels_on_unavailable_versions(start_server: Any, tmp_path: Path) -> None:
    """--allow_version_labels_for_unavailable_models (serving_config.md): new labels may name any version, at
    start-up and on reload; an existing label may only move to an available version; such a label answers
    NOT_FOUND until its version is served."""
    require_testdata()
    config = tmp_path / "models.config"
    config.write_text(_config_text(_model(labels={"stable": 123, "canary": 124, "future": 999})))
    server = start_server(f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models")
    with grpc.insecure_channel(server.grpc_address) as channel:
        assert (_predict(channel, "stable"), _predict(channel, "canary")) == (123, 124)
        assert _predict_fails(channel, "future") == (grpc.StatusCode.NOT_FOUND,
                                                     "Servable not found for request: Specific(all, 999)")
        assert _refused(channel, _model(labels={"stable": 1000, "canary": 124})) == (
            grpc.StatusCode.FAILED_PRECONDITION, NOT_AVAILABLE.format(version=1000, model="all"))
        _reload(channel, _model(labels={"stable": 123, "canary": 123, "future": 999, "next": 1000}))
        assert (_predict(channel, "stable"), _predict(channel, "canary")) == (123, 123)
