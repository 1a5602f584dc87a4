"""The templates tfship ships: the repository's top-level dockerfiles/, k8s/ and registry/ folders.

They are package data under tfship/_data/: symlinks to the top-level folders in a checkout (so an editable install
and the source tree read the same files), real folders inside a wheel, so `pip install .` works from any folder.
"""

from __future__ import annotations

from pathlib import Path

from tfship.errors import TfshipError

DATA = Path(__file__).resolve().parent / "_data"


def template_dir(name: str) -> Path:
    """dockerfiles, k8s or registry."""
    folder = DATA / name
    if not folder.is_dir():
        raise TfshipError(f"tfship's {name}/ templates are missing from {DATA}",
                          "reinstall tfship (pip install .), or run from a complete checkout")
    return folder


def template(name: str, file: str) -> Path:
    return template_dir(name) / file
