"""The tensorflow_model_server command line: both flag syntaxes, TF Serving's precedence, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tfship.server.entrypoint import entrypoint_argv
from tfship.server.batching import BatchingOptions
from tfship.server.flags import FlagError, grpc_channel_arguments, parse_flags
from tfship.server.model_config import read_batching_parameters


def test_both_flag_syntaxes_and_defaults() -> None:
    options = parse_flags(["--port=9000", "--rest_api_port", "9001", "--model_name", "digits",
                           "--model_base_path=/models/digits", "--file_system_poll_wait_seconds=5"])
    assert (options.port, options.rest_api_port, options.model_name) == (9000, 9001, "digits")
    assert options.model_base_path == "/models/digits"
    assert options.file_system_poll_wait_seconds == 5
    assert options.rest_api_timeout_in_ms == 30000


def test_boolean_flag_forms() -> None:
    base = ["--model_base_path=/m"]
    assert parse_flags([*base, "--allow_version_labels_for_unavailable_models"]).allow_version_labels_for_unavailable_models
    assert not parse_flags([*base, "--allow_version_labels_for_unavailable_models=false"]) \
        .allow_version_labels_for_unavailable_models


def test_config_file_wins_over_model_flags(tmp_path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list {}")
    options = parse_flags(["--model_name=x", "--model_base_path=/m", f"--model_config_file={config}"])
    assert options.model_config_file == str(config)


@pytest.mark.parametrize(("argv", "message"), [
    (["--model_base_path=/m", "--no_such_flag=1"], "unrecognized arguments: --no_such_flag=1"),
    (["--model_base_path=/m", "--port=abc"], "invalid int value"),
    ([], "Both --model_base_path and --model_config_file are empty"),
    (["--model_base_path=/m", "--port=8500", "--rest_api_port=8500"], "both 8500"),
    (["--model_base_path=/m", "--rest_api_port=70000"], "not a TCP port"),
    (["--model_config_file=/nonexistent/models.config"], "no such file"),
    (["--model_base_path=/m", "--mod=1"], "unrecognized arguments"),  # no silent abbreviations
])
def test_bad_flags_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as raised:
        parse_flags(argv)
    assert message in str(raised.value)


def test_bad_flag_exits_2_with_one_line_and_without_loading_tensorflow() -> None:
    result = subprocess.run([sys.executable, "-m", "tfship.server", "--model_base_path=/m", "--bogus"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["tfship.server: error: unrecognized arguments: --bogus"]


def test_unparsable_model_config_exits_1_naming_the_file(tmp_path) -> None:
    config = tmp_path / "bad.config"
    config.write_text("model_config_list { config { name: 'a' base_path: '/m' bogus_field: 1 } }")
    result = subprocess.run([sys.executable, "-m", "tfship.server", f"--model_config_file={config}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in last_line
    assert str(config) in last_line


def test_entrypoint_mirrors_the_official_image() -> None:
    argv = entrypoint_argv({"MODEL_NAME": "digits"}, ["--rest_api_timeout_in_ms=1000"])
    assert argv == ["--port=8500", "--rest_api_port=8501", "--model_name=digits",
                    "--model_base_path=/models/digits", "--rest_api_timeout_in_ms=1000"]
    assert entrypoint_argv({"MODEL_BASE_PATH": "/srv/"}, [])[2:4] == ["--model_name=model",
                                                                        "--model_base_path=/srv/model"]
    parse_flags(argv)  # and the server accepts what the entrypoint builds


def test_grpc_channel_arguments_as_tf_serving_reads_them() -> None:
    parsed = grpc_channel_arguments("grpc.max_connection_age_ms=30000, grpc.max_receive_message_length=4096,"
                                    "grpc.primary_user_agent=tfship,grpc.big=99999999999")
    assert parsed == [("grpc.max_connection_age_ms", 30000), ("grpc.max_receive_message_length", 4096),
                      ("grpc.primary_user_agent", "tfship"), ("grpc.big", "99999999999")]  # beyond int32: a string
    assert grpc_channel_arguments("") == []
    with pytest.raises(FlagError, match="'grpc.max_connection_age_ms' is not key=value"):
        parse_flags(["--model_base_path=/m", "--grpc_channel_arguments=grpc.max_connection_age_ms"])


def test_thread_and_batching_flags_are_checked() -> None:
    with pytest.raises(FlagError, match="--grpc_max_threads=0 must be at least 1"):
        parse_flags(["--model_base_path=/m", "--grpc_max_threads=0"])
    with pytest.raises(FlagError, match="--rest_api_num_threads=0 must be at least 1"):
        parse_flags(["--model_base_path=/m", "--rest_api_num_threads=0"])
    with pytest.raises(FlagError, match="without setting --enable_batching"):
        parse_flags(["--model_base_path=/m", "--batching_parameters_file=/b.config"])
    assert parse_flags(["--model_base_path=/m"]).enable_model_warmup  # on by default, as in TF Serving


def test_batching_parameters_file_in_tf_serving_text_format(tmp_path) -> None:
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n"
                    "num_batch_threads { value: 2 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
                    'thread_pool_name { value: "batch_threads" }\n')
    options = read_batching_parameters(str(path))
    assert options == BatchingOptions(max_batch_size=8, batch_timeout_micros=2000, max_enqueued_batches=10,
                                      num_batch_threads=2, allowed_batch_sizes=(4, 8))
    assert read_batching_parameters("") == BatchingOptions()


@pytest.mark.parametrize(("text", "message"), [
    ("max_batch_size: 8", "Error parsing text-format tensorflow.serving.BatchingParameters"),  # needs { value: }
    ("max_batch_sise { value: 8 }", "max_batch_sise"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "must equal max_batch_size"),
    ("pad_variable_length_inputs: true", "not supported"),
])
def test_bad_batching_parameters_name_the_file(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(FlagError) as raised:
        read_batching_parameters(str(path))
    assert message in str(raised.value) and str(path) in str(raised.value)
