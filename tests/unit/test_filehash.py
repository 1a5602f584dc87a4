"""Content tags hash model files once: a second tag of unchanged inputs reads no file bytes; a changed file (size or
mtime) is read again and changes the tag."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest

from tfship import filehash, images


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSHIP_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "models" / "m" / "1"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph" * 1000)
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 100_000)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    old = 1_700_000_000_000_000_000  # older than RACY_SECONDS, so hashes are cached
    for path in [dockerfile, *model.rglob("*")]:
        os.utime(path, ns=(old, old))
    return tmp_path, dockerfile, {"models": tmp_path / "models"}


@pytest.fixture
def opened(monkeypatch, inputs):
    """Paths below the test folder opened for reading since the fixture started."""
    root = str(inputs[0])
    seen: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(root) and "cache" not in os.fspath(file):
            seen.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    return seen


def tag(inputs) -> str:
    _, dockerfile, files = inputs
    return images.content_tag(dockerfile, files, {"A": "1"}, "sha256:parent")


def test_a_second_tag_reads_no_file_bytes(inputs, opened):
    first = tag(inputs)
    assert len(opened) == 3  # Dockerfile, saved_model.pb, variables data
    opened.clear()
    assert tag(inputs) == first
    assert opened == []


def test_a_changed_file_is_hashed_again_and_changes_the_tag(inputs, opened):
    first = tag(inputs)
    data = inputs[0] / "models" / "m" / "1" / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(b"\1" * 100_000)  # same size, new mtime
    old = 1_700_000_001_000_000_000
    os.utime(data, ns=(old, old))
    opened.clear()
    second = tag(inputs)
    assert opened == [str(data)]
    assert second != first
    data.write_bytes(b"\1" * 100_001)  # new size, mtime set back to the cached one
    os.utime(data, ns=(old, old))
    assert tag(inputs) not in (first, second)


def test_a_file_written_just_now_is_not_cached(inputs, opened):
    model_file = inputs[0] / "models" / "m" / "1" / "saved_model.pb"
    model_file.write_bytes(b"fresh")
    tag(inputs)
    opened.clear()
    tag(inputs)
    assert opened == [str(model_file)]  # mtime within RACY_SECONDS: hashed each time until it settles


def test_a_damaged_cache_is_ignored(inputs, opened):
    first = tag(inputs)
    (inputs[0] / "cache" / filehash.CACHE_NAME).write_text("{not json")
    assert tag(inputs) == first
