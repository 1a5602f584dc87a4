"""Version policies and the base path scan, as TF Serving's file system source applies them."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfship.server.models import aspired_versions, versions_on_disk


def _config(policy: str) -> model_server_config_pb2.ModelConfig:
    return text_format.Parse(f'name: "m" base_path: "/m" {policy}', model_server_config_pb2.ModelConfig())


def test_default_policy_is_the_latest_version() -> None:
    assert aspired_versions(_config(""), [1, 3, 2]) == {3}


def test_latest_n_all_and_specific() -> None:
    assert aspired_versions(_config("model_version_policy { latest { num_versions: 2 } }"), [1, 3, 2]) == {2, 3}
    assert aspired_versions(_config("model_version_policy { all {} }"), [1, 3, 2]) == {1, 2, 3}
    specific = _config("model_version_policy { specific { versions: 1 versions: 9 } }")
    assert aspired_versions(specific, [1, 3]) == {1}  # 9 is not on disk (yet)


def test_only_integer_directories_are_versions(tmp_path: Path) -> None:
    for name in ("00000123", "7", "latest", ".staging-1"):
        (tmp_path / name).mkdir()
    (tmp_path / "42").write_text("a file, not a version")
    assert versions_on_disk(str(tmp_path)) == {123: str(tmp_path / "00000123"), 7: str(tmp_path / "7")}
    assert versions_on_disk(str(tmp_path / "missing")) == {}
