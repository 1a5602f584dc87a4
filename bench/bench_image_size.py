"""Image footprint: uncompressed size (the engine's) and compressed size (what a node pulls: the registry's
manifest layer sizes after a real push), for each image given, e.g. a serving image before and after slimming.

Pushes to its own insecure registry on a free loopback port with a throw-away state dir (never 127.0.0.1:5000).

    .venv/bin/python bench/bench_image_size.py --image before=tfship-serving:OLD --image after=tfship-serving:NEW

Prints a table and saves build/bench/image_size.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import docker

from bench_push import free_port, layer_sizes, timed_push, untag
from tfship import engine, registry
from tfship.config import Config, RegistryConfig

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", action="append", required=True, metavar="LABEL=REFERENCE",
                        help="an image to measure, repeatable")
    args = parser.parse_args()
    images = [item.split("=", 1) if "=" in item else [item, item] for item in args.image]

    engine.ensure_engine()
    client = docker.from_env(timeout=1800)
    work = tempfile.mkdtemp(prefix="tfship-bench-size-")
    os.environ["TFSHIP_STATE_DIR"] = os.path.join(work, "state")
    config = Config(root=Path(work), registry=RegistryConfig(url=f"127.0.0.1:{free_port()}"))
    suffix = secrets.token_hex(3)
    added_tags: list[str] = []
    rows = []
    try:
        registry.up(config)
        for index, (label, reference) in enumerate(images):
            image = client.images.get(reference)
            name = f"tfship-benchsize-{index}-{suffix}"
            added_tags += [f"{name}:latest", f"{config.registry.url}/{config.registry.repository}/{name}:latest"]
            image.tag(name, "latest")
            _, seconds = timed_push(config, name, image.id)
            layers = layer_sizes(config, name)
            rows.append({"label": label, "image": reference, "uncompressed_bytes": image.attrs["Size"],
                         "compressed_bytes": sum(size for _, size in layers), "layers": len(layers),
                         "push_seconds": seconds})
    finally:
        untag(client, added_tags)
        registry.down(config, purge=True)
        shutil.rmtree(work, ignore_errors=True)
        client.close()

    print(f"{'image':<12}{'uncompressed':>14}{'compressed':>12}{'layers':>8}{'push s':>8}  reference")
    for row in rows:
        print(f"{row['label']:<12}{row['uncompressed_bytes'] / 1e6:>11.0f} MB{row['compressed_bytes'] / 1e6:>9.0f} MB"
              f"{row['layers']:>8}{row['push_seconds']:>8.1f}  {row['image']}")
    out = PROJECT / "build" / "bench" / "image_size.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"(MB = 10^6 bytes; compressed = sum of the manifest's layer sizes in the registry) saved "
          f"{out.relative_to(PROJECT)}")


if __name__ == "__main__":
    main()
