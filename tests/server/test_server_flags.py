"""The tensorflow_model_server command line: both flag syntaxes, TF Serving's precedence, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tfship.server.entrypoint import entrypoint_argv
from tfship.server.flags import FlagError, parse_flags


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
