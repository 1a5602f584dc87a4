"""Build figures: no-op, warm and (with --cold) cold build times, a model-only rebuild, and image sizes.

    .venv/bin/python bench/bench_build.py [--cold] [--runtime python|tfserving|auto] [--base debian|upstream|auto]

Works on a throwaway project in a temporary folder (TF Serving's half_plus_two test models) with image names of
its own (tfship-bench-*), so it never touches the project's images. Prints figures; asserts nothing about time.
--cold builds the TensorFlow layers without the engine's cache (a fresh machine; downloads TensorFlow again).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfship import bases, config as tfconfig, docker_client, engine, images

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "tf_serving"  # ../shared beside the repository
ROOT = Path(__file__).resolve().parents[1]


def timed(label: str, action) -> float:
    started = time.monotonic()
    quietly(action)  # keep the figures readable; the build logs are not the point
    elapsed = time.monotonic() - started
    print(f"{label:<58} {elapsed:8.1f} s", flush=True)
    return elapsed


def quietly(action):
    with contextlib.redirect_stderr(io.StringIO()):
        return action()


def dangling_images() -> set[str]:
    return {image["Id"] for image in docker_client.api().images(filters={"dangling": True})}


def size_mb(ref: str) -> float:
    return docker_client.inspect_image(ref)["Size"] / 1e6


def untag_keeping_cache(ref: str) -> None:
    """Remove a tag but keep its layers and the builder's intermediate images: the next build is 'warm'."""
    docker_client.api().remove_image(ref, noprune=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--runtime", default="python")
    parser.add_argument("--base", default="debian")
    args = parser.parse_args()
    engine.ensure_engine()
    work = Path(tempfile.mkdtemp(prefix="tfship-bench-"))
    dangling_before = dangling_images()
    try:
        shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", work / "models" / "half_plus_two")
        (work / "tfship.yaml").write_text(
            f"project: tfship-bench\nbase:\n  source: {args.base}\nserving:\n  runtime: {args.runtime}\n"
            "images:\n  devel: tfship-bench-devel\n  serving: tfship-bench-serving\n"
            "models:\n  - name: half_plus_two\n"
        )
        config = tfconfig.load(work / "tfship.yaml", environ={})
        print(f"tfship build figures ({args.runtime} runtime, {args.base} bases, {time.strftime('%Y-%m-%d %H:%M')})")

        if args.cold:
            timed("cold: TF venv + devel + serving, no layer cache", lambda: images.build(config, nocache=True))
        else:
            timed("first build here (reuses whatever the engine has)", lambda: images.build(config))
        timed("no-op build, in process (every input unchanged)", lambda: images.build(config))
        invoke = [str(ROOT / ".venv" / "bin" / "invoke"), "--search-root", str(ROOT), "build"]
        started = time.monotonic()
        subprocess.run(invoke, cwd=work, check=True, capture_output=True,
                       env={**os.environ, "TFSHIP_CONFIG": str(work / "tfship.yaml")})
        print(f"{'no-op `invoke build` (a new process, CLI included)':<58} {time.monotonic() - started:8.1f} s")

        devel = quietly(lambda: images.ensure_devel_image(config))
        untag_keeping_cache(devel.local_ref)
        timed("warm devel build (layer cache hot, tag removed)", lambda: images.ensure_devel_image(config))
        serving = quietly(lambda: images.ensure_serving_image(config))
        untag_keeping_cache(serving.local_ref)
        timed("warm serving build + acceptance (layer cache hot)", lambda: images.ensure_serving_image(config))

        variables = work / "models" / "half_plus_two" / "00000123" / "assets" / "foo.txt"
        variables.write_text(variables.read_text() + "bench: a model-only change\n")
        changed: list = []
        timed("model-only change: serving rebuild + acceptance", lambda: changed.append(images.ensure_serving_image(config)))
        model_bytes = sum(p.stat().st_size for p in (work / "models").rglob("*") if p.is_file())
        history = docker_client.api().history(changed[0].local_ref)  # newest first: the models COPY is the top one
        model_layer = next(entry["Size"] for entry in history if "COPY" in entry.get("CreatedBy", ""))
        print(f"{'  model layer / model files on disk':<58} {model_layer / 1e3:8.1f} kB / {model_bytes / 1e3:.1f} kB")
        docker_client.remove_image(changed[0].local_ref)

        print("image sizes:")
        base = quietly(lambda: bases.python_base(config).ref)
        tf_ref, _ = quietly(lambda: images.ensure_tf_image(config))
        for label, ref in [("python base", base), ("TF venv image", tf_ref), ("devel", devel.local_ref),
                           (f"serving ({serving.runtime})", serving.local_ref)]:
            print(f"  {label:<24} {ref:<52} {size_mb(ref):8.0f} MB")
        print(f"  serving adds {size_mb(serving.local_ref) - size_mb(base):.0f} MB over its base {base}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.cold:  # the uncached builder stages (GBs each) are this run's, not anyone's cache
            for image_id in dangling_images() - dangling_before:
                if any("tfship-build" in entry.get("CreatedBy", "") for entry in docker_client.api().history(image_id)):
                    docker_client.remove_image(image_id)
        for name in ("tfship-bench-devel", "tfship-bench-serving", "tfship-bench-tf", "tfship-bench-runtime-python"):
            for image in docker_client.api().images(name=name):
                for ref in image.get("RepoTags") or []:
                    docker_client.remove_image(ref)


if __name__ == "__main__":
    sys.exit(main())
