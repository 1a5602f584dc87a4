"""How build + push grow with the model: a real SavedModel of about 1 MB, 100 MB and 1 GB (a float32 weight vector,
y = x + w[0], exported with TensorFlow), each imported with `model.add`, built into the serving image (acceptance
included) and pushed, timed stage by stage, with the bytes the push sent and the registry's compressed sizes. Only
the model layer should move: a warm-up build and push (1 MB, printed, not a row) puts the runtime's layers in the
fresh registry first.

    .venv/bin/python bench/bench_model_size.py [--sizes 1,100,1000]

Works in a temporary project with image names of its own (tfship-benchsize-serving), pushed to its own insecure
registry on a free loopback port with a throw-away state dir; removes its images afterwards. Prints a table and saves
build/bench/model_size.json and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tfship import config as tfconfig  # noqa: E402
from tfship import engine, images, models, push, registry  # noqa: E402
from tfship.host.net import free_port  # noqa: E402

NAME = "tfship-benchsize-serving"


def saved_model(folder: Path, megabytes: int) -> Path:
    """A SavedModel whose variables hold `megabytes` MB of float32 (random: it does not compress)."""
    import numpy as np
    import tensorflow as tf

    class Sized(tf.Module):
        def __init__(self):
            super().__init__()
            values = np.random.default_rng(0).standard_normal(megabytes * 250_000).astype(np.float32)
            self.w = tf.Variable(values)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x + self.w[0]}

    module = Sized()
    path = folder / f"sized-{megabytes}mb"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,1000", help="model sizes in MB")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    engine.ensure_engine()
    client = docker.from_env(timeout=1800)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfship-bench-modelsize-") as folder:
        root = Path(folder)
        os.environ["TFSHIP_STATE_DIR"] = str(root / "state")
        config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides={
            "build_dir": str(root / "build"), "models_dir": str(root / "models"),
            "models": [{"name": "sized"}], "images.serving": NAME, "images.web": False,
            "registry.url": f"127.0.0.1:{free_port()}", "registry.local": True, "serving.runtime": "python"})
        registry.up(config)
        try:
            # The first build and push carry the runtime's layers too: a warm-up, printed but not a row.
            for version, megabytes in enumerate([1, *sizes], start=1):
                source = saved_model(root, megabytes)
                started = time.monotonic()
                models.add(config, str(source), "sized", version=version)  # a new version each: a new model layer
                added = time.monotonic() - started
                started = time.monotonic()
                images.build(config, images=["serving"])
                built = time.monotonic() - started
                started = time.monotonic()
                report = push.push_images(config)
                pushed = time.monotonic() - started
                [result] = [image for image in report.images if image.role == "serving"]
                row = {"model_mb": megabytes, "model.add_s": round(added, 1), "build_s": round(built, 1),
                       "push_s": round(pushed, 1), "layers_pushed": result.stream.layers_pushed,
                       "mb_pushed": round(result.stream.bytes_pushed / 1e6, 1),
                       "layers_already_there": result.stream.layers_existing}
                print(("warm-up (the runtime's first push): " if version == 1 else "") + str(row), flush=True)
                rows += [row] if version > 1 else []
                shutil.rmtree(models.model_dir(config, "sized") / str(version))  # the next image holds only the next
        finally:
            registry.down(config, purge=True)
            made = {image.id for image in client.images.list(name=NAME)}
            for image_id in made:  # every tag of each, the registry's references included
                with contextlib.suppress(docker.errors.ImageNotFound):
                    client.images.remove(image_id, force=True)
    print(f"\n{'model MB':>9} {'model.add s':>12} {'build s':>8} {'push s':>7} {'MB pushed':>10} "
          f"{'layers new/there':>17}")
    for row in rows:
        print(f"{row['model_mb']:>9} {row['model.add_s']:>12} {row['build_s']:>8} {row['push_s']:>7} "
              f"{row['mb_pushed']:>10} {row['layers_pushed']:>8}/{row['layers_already_there']}")
    out = REPO / "build" / "bench" / "model_size.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    plot(rows, out.with_suffix(".png"))
    print(f"saved {out} and .png")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sizes = [row["model_mb"] for row in rows]
    figure, axes = plt.subplots(figsize=(6, 4))
    for key, label in (("build_s", "build (with acceptance)"), ("push_s", "push")):
        axes.plot(sizes, [row[key] for row in rows], marker="o", label=label)
    axes.set_xscale("log")
    axes.set_xlabel("model size (MB)")
    axes.set_ylabel("seconds")
    axes.set_title("tfship build + push vs model size")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
