"""Push figures: a full push, then a push after a model-only change (only the last layer differs).

Runs its own insecure registry on a free port with a throw-away state dir (never touches 127.0.0.1:5000), builds
small stand-in images (a random-data "base" layer, then a "model" layer on top) and prints, for each push, the time,
the layers and bytes sent, and the new layers' bytes against the image's total as the registry's manifest states.

    .venv/bin/python bench/bench_push.py [--base-mb 64] [--model-mb 4]
    .venv/bin/python bench/bench_push.py --image tfship-serving:TAG    # a real image: full push, then again
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from tfship import artifacts, engine, push, registry
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.config import Config, RegistryConfig


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def model_image(client, base: str, name: str, model_bytes: int) -> str:
    dockerfile = f"FROM {base}\nCOPY model.bin /models/model.bin\n".encode()
    context = tar_of({"Dockerfile": dockerfile, "model.bin": os.urandom(model_bytes)})
    image, _ = client.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=f"{name}:latest", rm=True)
    return image.id


def timed_push(config: Config, name: str, image_id: str) -> tuple[push.ImagePush, float]:
    built = ImageArtifact(role="serving", name=name, tag="latest", image_id=image_id)
    artifacts.save(config.artifacts_path, Artifacts(images={"serving": built}))
    started = time.monotonic()
    report = push.push_images(config)
    return report.images[0], time.monotonic() - started


def layer_sizes(config: Config, name: str) -> list[tuple[str, int]]:
    info = registry.resolve(config)
    manifest = registry.RegistryClient(info, None).manifest(registry.image_repository(config, info, name), "latest")
    return [(layer["digest"], layer["size"]) for layer in manifest["layers"]]


def report(label: str, config: Config, name: str, result: push.ImagePush, seconds: float) -> None:
    layers = layer_sizes(config, name)
    total = sum(size for _, size in layers)
    print(f"{label}: {seconds:.2f}s, "
          + ("skipped (registry already holds the digest)" if result.skipped else
             f"{result.stream.layers_pushed} layers pushed ({result.stream.bytes_pushed / 2**20:.1f} MiB "
             f"uncompressed, per the push stream), {result.stream.layers_existing} already there")
          + f"; image {len(layers)} layers, {total / 2**20:.1f} MiB compressed")


def bench_model_change(client, config: Config, suffix: str, base_mb: int, model_mb: int, made: list[str]) -> None:
    """Synthetic base + model layers; `made` collects the ids of the images it built, for clean-up."""
    base, first, second = (f"tfship-benchpush-{part}-{suffix}" for part in ("base", "v1", "v2"))
    client.api.import_image_from_data(tar_of({"base.bin": os.urandom(base_mb * 2**20)}), repository=base, tag="latest")
    made.append(client.images.get(f"{base}:latest").id)
    made.append(model_image(client, f"{base}:latest", first, model_mb * 2**20))
    made.append(model_image(client, f"{base}:latest", second, model_mb * 2**20))
    print(f"images: base layer {base_mb} MiB of random data, model layer {model_mb} MiB")
    for label, name, image_id in (("first push (base + model v1)", first, made[1]),
                                  ("model-only change (model v2)", second, made[2]),
                                  ("no change (model v2 again)", second, made[2])):
        report(label, config, name, *timed_push(config, name, image_id))
    v1_layers = dict(layer_sizes(config, first))
    v2_layers = layer_sizes(config, second)
    new = sum(size for digest, size in v2_layers if digest not in v1_layers)
    total = sum(size for _, size in v2_layers)
    print(f"model-only change: new layer bytes {new / 2**20:.2f} MiB of {total / 2**20:.2f} MiB "
          f"({100 * new / total:.1f}% of the image); model file {model_mb} MiB")


def bench_existing(client, config: Config, reference: str, suffix: str, tags: list[str]) -> None:
    """Push an existing image under a bench name; `tags` collects the tags it added (the image is not ours)."""
    image = client.images.get(reference)
    name = f"tfship-benchpush-real-{suffix}"
    info = registry.resolve(config)
    tags += [f"{name}:latest", f"{info.repository(config.registry.repository, name)}:latest"]
    image.tag(name, "latest")
    print(f"image: {reference}, {image.attrs['Size'] / 2**20:.0f} MiB uncompressed")
    for label in ("full push", "again (no change)"):
        report(label, config, name, *timed_push(config, name, image.id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-mb", type=int, default=64)
    parser.add_argument("--model-mb", type=int, default=4)
    parser.add_argument("--image", help="push this existing local image instead of synthetic ones")
    args = parser.parse_args()

    engine.ensure_engine()
    client = docker.from_env(timeout=1800)
    work = tempfile.mkdtemp(prefix="tfship-bench-push-")
    os.environ["TFSHIP_STATE_DIR"] = os.path.join(work, "state")
    config = Config(root=Path(work), registry=RegistryConfig(url=f"127.0.0.1:{free_port()}"))
    suffix = secrets.token_hex(3)
    made_ids: list[str] = []
    added_tags: list[str] = []
    try:
        registry.up(config)
        if args.image:
            bench_existing(client, config, args.image, suffix, added_tags)
        else:
            bench_model_change(client, config, suffix, args.base_mb, args.model_mb, made_ids)
    finally:
        for tag in added_tags:
            try:
                client.images.remove(tag)  # untag only: the image belongs to whoever built it
            except docker.errors.APIError:
                pass
        for image_id in reversed(made_ids):
            try:
                client.images.remove(image_id, force=True)
            except docker.errors.APIError:
                pass
        registry.down(config, purge=True)
        shutil.rmtree(work, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    main()
