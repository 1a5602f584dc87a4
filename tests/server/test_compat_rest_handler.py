"""TF Serving's REST handler tests, ported against the real server on loopback:
tensorflow_serving/model_servers/http_rest_api_handler_test.cc (set up as there: TF Serving's half_plus_two
under the name saved_model_half_plus_two_2_versions, version 123 only, and a reload that labels it
"Version_Label"), http_rest_api_util_test.cc (URL parsing, reserved characters) and the dispatch rules of
http_server.cc (what is handled, CORS preflight)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Iterator

import grpc
import pytest
import requests
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from server_harness import HALF_PLUS_TWO_2_VERSIONS, TESTDATA, ServerProcess, require_testdata

TIMEOUT = 30.0
MODEL = "saved_model_half_plus_two_2_versions"  # kTestModelName
LABEL = "Version_Label"  # kTestModelVersionLabel
RESERVED = "!#$%&'()*+,/:;=?@[]"  # the reserved characters of http_rest_api_util_test.cc
RESERVED_ENCODED = "%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"


def _config(with_labels: bool) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name in (MODEL, "modelname" + RESERVED):
        model = config.model_config_list.config.add(name=name, base_path=str(HALF_PLUS_TWO_2_VERSIONS),
                                                    model_platform="tensorflow")
        model.model_version_policy.specific.versions.append(123)
        if with_labels:
            model.version_labels[LABEL if name == MODEL else "latest" + RESERVED] = 123
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """As HttpRestApiHandlerTest::CreateServerCore: the models load first, then a reload assigns the label."""
    require_testdata()
    workdir = tmp_path_factory.mktemp("rest_handler")
    config_file = workdir / "models.config"
    config_file.write_text(text_format.MessageToString(_config(with_labels=False)))
    process = ServerProcess([f"--model_config_file={config_file}"], workdir / "server.log")
    process.wait_ready()
    with grpc.insecure_channel(process.grpc_address) as channel:
        reload = model_management_pb2.ReloadConfigRequest(config=_config(with_labels=True))
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(reload, TIMEOUT)
    yield process
    assert process.stop() == 0


def _call(server: ServerProcess, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
    data = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.request(method, f"{server.rest_url}{path}", data=data, timeout=TIMEOUT, **kwargs)


def _json(reply: requests.Response, status: int = 200) -> Any:
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"] == "application/json"  # the only header TF Serving adds
    return reply.json()


def test_path_regex(server: ServerProcess) -> None:
    """kPathRegex: the handler takes every path under /v1/ (case-insensitively), nothing else (a bare 404)."""
    assert _call(server, "GET", "/statuspage").status_code == 404
    assert _call(server, "GET", "/index").status_code == 404
    assert _call(server, "GET", "/v1/models").status_code == 400
    assert _call(server, "GET", "/V1/foo").status_code == 400


@pytest.mark.parametrize(("method", "path", "expected"), [  # UnsupportedApiCalls
    ("GET", "/v1/foo", "Malformed request"),
    ("POST", "/v1/foo", "Malformed request"),
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/debug/model_name", "Malformed request"),
    ("POST", "/v1/models", "Malformed request"),
    ("GET", "/v1/models/foo:predict", "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
    ("POST", "/v1/models/foo/metadata", "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
    ("PUT", f"/v1/models/{MODEL}", "Malformed request"),
    ("POST", f"/v1/models/{MODEL}:PREDICT", "Malformed request"),  # the path matches; the verb must be lowercase
])
def test_unsupported_api_calls(server: ServerProcess, method: str, path: str, expected: str) -> None:
    error = _json(_call(server, method, path, ""), 400)["error"]
    assert expected in error
    if expected == "Malformed request":
        assert error == f"Malformed request: {method} {path}"


def test_version_out_of_range(server: ServerProcess) -> None:
    """UnsupportedApiCalls / TestParseModelInfoForPost: a version past int64 is 'Failed to convert version',
    returned before TF Serving's handler writes a body, so the 400 comes with an empty one."""
    reply = _call(server, "POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "")
    assert (reply.status_code, reply.content) == (400, b"")


@pytest.mark.parametrize("path", [  # PredictModelNameVersionErrors
    "/v1/models/foo:predict",
    "/v1/models/foo/versions/50:predict",
    f"/v1/models/{MODEL}99:predict",
    f"/v1/models/{MODEL}/versions/124:predict",  # on disk, but not in the version policy
])
def test_predict_model_name_version_errors(server: ServerProcess, path: str) -> None:
    assert "Servable not found for request" in _json(_call(server, "POST", path, {"instances": [1]}), 404)["error"]


def test_predict_request_errors(server: ServerProcess) -> None:  # PredictRequestErrors
    path = f"/v1/models/{MODEL}:predict"
    assert "JSON Parse error: The document is empty" in _json(_call(server, "POST", path, ""), 400)["error"]
    assert "JSON Parse error: Invalid value" in _json(_call(server, "POST", path, "instances = [1, 2]"), 400)["error"]
    assert "not of expected type: float" in _json(_call(server, "POST", path, {"instances": ["x", "y"]}), 400)["error"]
    by_label = _call(server, "POST", f"/v1/models/{MODEL}/labels/Version_Nonexistent:predict", {"instances": ["x"]})
    assert _json(by_label, 400)["error"] == "Unrecognized servable version label: Version_Nonexistent"
    assert "'signature_name' key must be a string value." in \
        _json(_call(server, "POST", path, {"signature_name": 100}), 400)["error"]


def test_predict(server: ServerProcess) -> None:  # Predict
    base = f"/v1/models/{MODEL}"
    assert _json(_call(server, "POST", f"{base}:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]})) == \
        {"predictions": [[2.5, 3.0], [3.5, 4.0]]}
    assert _json(_call(server, "POST", f"{base}/versions/123:predict", {"instances": [1.0, 2.0]})) == \
        {"predictions": [2.5, 3.0]}
    assert _json(_call(server, "POST", f"{base}/labels/{LABEL}:predict", {"instances": [1.0, 2.0]})) == \
        {"predictions": [2.5, 3.0]}
    assert _json(_call(server, "POST", f"{base}/versions/123:predict",
                       {"signature_name": "serving_default", "instances": [3.0, 4.0]})) == {"predictions": [3.5, 4.0]}
    assert _json(_call(server, "POST", f"{base}/versions/123:predict",
                       {"signature_name": "serving_default", "inputs": [3.0, 4.0]})) == {"outputs": [3.5, 4.0]}


def test_regress(server: ServerProcess) -> None:  # Regress
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    for path in (f"/v1/models/{MODEL}:regress", f"/v1/models/{MODEL}/versions/123:regress",
                 f"/v1/models/{MODEL}/labels/{LABEL}:regress"):
        assert _json(_call(server, "POST", path, body)) == {"results": [42.0]}


def test_classify(server: ServerProcess) -> None:  # Classify
    assert _json(_call(server, "POST", f"/v1/models/{MODEL}:classify",
                       {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]})) == {"results": [[["", 12.0]]]}
    assert _json(_call(server, "POST", f"/v1/models/{MODEL}/labels/{LABEL}:classify",
                       {"signature_name": "classify_x_to_y", "examples": [{"x": 10.0}]})) == {"results": [[["", 7.0]]]}


def test_get_status(server: ServerProcess) -> None:  # GetStatus
    expected = {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    for path in (f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/123", f"/v1/models/{MODEL}/labels/{LABEL}"):
        assert _json(_call(server, "GET", path)) == expected


def test_get_model_metadata(server: ServerProcess) -> None:  # GetModelMetadata
    reply = _json(_call(server, "GET", f"/v1/models/{MODEL}/metadata"))
    # TF Serving compares with saved_model_half_plus_two_2_versions_metadata.json, which testdata lacks; this
    # version has the signatures of half_plus_two_model_metadata.json, identical, plus classify_x2_to_y3.
    expected = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert reply["model_spec"] == {"name": MODEL, "signature_name": "", "version": "123"}
    signatures = reply["metadata"]["signature_def"]["signature_def"]
    expected_signatures = expected["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == sorted([*expected_signatures, "classify_x2_to_y3"])
    assert {name: signatures[name] for name in expected_signatures} == expected_signatures


def test_parse_model_info_reserved_characters(server: ServerProcess) -> None:
    """TestParseModelInfoForGet / ForPost: model names and labels are URL-decoded after matching."""
    name, label = "modelname" + RESERVED, "latest" + RESERVED
    base = f"/v1/models/modelname{RESERVED_ENCODED}"
    metadata = _json(_call(server, "GET", f"{base}/labels/latest{RESERVED_ENCODED}/metadata"))
    assert metadata["model_spec"] == {"name": name, "signature_name": "", "version": "123"}
    assert _json(_call(server, "GET", base))["model_version_status"][0]["version"] == "123"
    assert _json(_call(server, "POST", f"{base}/labels/latest{RESERVED_ENCODED}:predict", {"instances": [1.0]})) == \
        {"predictions": [2.5]}
    assert _json(_call(server, "POST", f"{base}:predict", {"instances": [1.0]})) == {"predictions": [2.5]}
    assert urllib.parse.unquote(RESERVED_ENCODED) == RESERVED and label.endswith(RESERVED)


def test_parse_model_info_version_and_label(server: ServerProcess) -> None:
    """TestParseModelInfoForGet: /versions/99 and /labels/latest reach the model that was named."""
    assert _json(_call(server, "GET", "/v1/models/modelname/versions/99"), 404)["error"] == \
        "Could not find version 99 of model modelname"
    assert _json(_call(server, "POST", "/v1/models/modelname/labels/latest:predict", {"instances": [1]}), 400)[
        "error"] == "Unrecognized servable version label: latest"


def test_cors_preflight(server: ServerProcess) -> None:
    """http_server.cc: OPTIONS is a CORS preflight, accepted only with an http(s) Origin."""
    path = f"/v1/models/{MODEL}:predict"
    assert _call(server, "OPTIONS", path, headers={"Origin": "https://example.test"}).status_code == 200
    refused = _call(server, "OPTIONS", path)
    assert (refused.status_code, refused.content) == (400, b"")
