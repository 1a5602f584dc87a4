"""SHA-256 of build-input files, cached by (real path, size, mtime_ns, inode) so a no-op build of a multi-GB model
reads no model bytes: only a file whose metadata changed is hashed again.

The cache is one JSON file in the cache folder (outside the work tree, shared by every project of this user),
written atomically. A file modified less than RACY_SECONDS ago is hashed but not cached: a same-size rewrite within
the file system's time granularity would otherwise keep a stale hash (git's "racy clean" problem).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from tfship import config as config_mod
from tfship.artifacts import write_atomically

CACHE_NAME = "file-hashes.json"
RACY_SECONDS = 2.0
CHUNK = 1 << 20


def sha256(path: Path) -> str:
    """The file's SHA-256 in hex, read in chunks (never whole into memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for chunk in iter(lambda: data.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """Use as a context manager around one tag computation: loaded once, saved once if anything changed."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_mod.cache_dir() / CACHE_NAME
        self.entries: dict[str, list] = {}
        self.changed = False

    def __enter__(self) -> "HashCache":
        try:
            loaded = json.loads(self.path.read_text())
            self.entries = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self.entries = {}  # missing or damaged: a cache, never a source of truth
        return self

    def __exit__(self, *exc) -> None:
        if not self.changed or exc[0] is not None:
            return
        # Forget files that are gone, so the cache does not grow with every deleted model version.
        kept = {path: entry for path, entry in self.entries.items() if os.path.exists(path)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(kept, sort_keys=True).encode())
        except OSError:
            pass  # a read-only or full cache folder costs time next build, not correctness

    def sha256(self, path: Path) -> str:
        real = os.path.realpath(path)
        stat = os.stat(real)
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self.entries.get(real)
        if entry is not None and entry[:3] == key:
            return entry[3]
        value = sha256(Path(real))
        if time.time() - stat.st_mtime_ns / 1e9 > RACY_SECONDS:
            self.entries[real] = [*key, value]
            self.changed = True
        return value
