"""tests/lanes.py, the whole-suite runner: every test folder is in a lane, and the run's exit code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("lanes", Path(__file__).resolve().parents[1] / "lanes.py")
lanes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lanes)


def test_every_test_folder_runs_in_a_lane():
    assert lanes.unplaced() == []


def test_a_new_test_folder_without_a_lane_is_named(tmp_path):
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "test_a.py").write_text("")
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "test_b.py").write_text("")
    (tmp_path / "fixtures").mkdir()  # helpers, no tests: no lane needed
    (tmp_path / "fixtures" / "helpers.py").write_text("")
    assert lanes.unplaced(tmp_path) == ["tests/gpu"]


@pytest.mark.parametrize("codes, expected", [
    ([0, 0, 0], 0),
    ([0, 5, 5], 0),  # a -m / -k that selects nothing in some lanes
    ([5, 5, 5], 5),  # nothing ran anywhere: pytest's own "no tests" code
    ([0, 1, 0], 1),
    ([5, 2, 1], 2),  # the first failure's code
])
def test_the_run_fails_with_the_first_failing_lane(codes, expected):
    assert lanes.overall(codes) == expected
