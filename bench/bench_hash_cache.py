"""No-op tag time of a serving context holding a 1 GB (sparse) model: every file hashed (before the hash cache)
versus hashes read from the cache (after), side by side.

    .venv/bin/python bench/bench_hash_cache.py [--size-gb 1]

The tag is the whole per-file cost of a no-op build (everything else a no-op build does is one image lookup), so
this is what `invoke build` with an unchanged multi-GB model saves. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tfship import filehash, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfship-bench-hash-") as work:
        root = Path(work)
        os.environ["TFSHIP_CACHE_DIR"] = str(root / "cache")
        version = root / "models" / "big" / "1"
        (version / "variables").mkdir(parents=True)
        (version / "saved_model.pb").write_bytes(b"\0" * 4096)
        with open(version / "variables" / "variables.data-00000-of-00001", "wb") as data:
            data.truncate(int(args.size_gb * (1 << 30)))  # sparse: no disk used, but every byte is read to hash
        dockerfile = root / "Dockerfile"
        dockerfile.write_text("FROM scratch\n")
        old = time.time_ns() - 10 * 1_000_000_000  # settled files (older than filehash.RACY_SECONDS)
        for path in [dockerfile, *version.rglob("*")]:
            os.utime(path, ns=(old, old))

        def tag() -> float:
            started = time.monotonic()
            images.content_tag(dockerfile, {"models": root / "models"}, {}, "sha256:parent")
            return time.monotonic() - started

        before = [tag() for _ in range(2) if not (root / "cache" / filehash.CACHE_NAME).unlink(missing_ok=True)]
        tag()  # fill the cache
        after = [tag() for _ in range(2)]
        print(f"no-op content tag, {args.size_gb:g} GB sparse model   before (hash all)   after (cached)")
        for run, (slow, fast) in enumerate(zip(before, after), 1):
            print(f"  run {run}                                     {slow:10.2f} s      {fast:10.4f} s")


if __name__ == "__main__":
    main()
