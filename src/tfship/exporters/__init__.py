"""Built-in model exporters, run as `python -m tfship.exporters` (inside the devel image, or on the host).

Each exporter is a module with `export(export_dir: Path, *, seed: int, log) -> dict`: it writes one SavedModel
version into export_dir (which must not exist yet), deterministically for the seed, and returns a summary.
This package imports TensorFlow only when an exporter runs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXPORTERS = ("half_plus_two", "digits", "mnist")

# The last line the command line prints: this prefix, then the summary as JSON (tfship.export reads it).
RESULT_PREFIX = "tfship-export-result "


def exporter(name: str) -> ModuleType:
    if name not in EXPORTERS:
        raise KeyError(name)
    return importlib.import_module(f"tfship.exporters.{name}")
