"""Cold deploy-to-ready: N replicas when the node's engine does not hold the serving image yet (it is removed from
the engine first, so every layer comes from the registry), then warm (the same deploy with the image present), for
the serving image `invoke push` recorded and, with --before TF_VENV_IMAGE, the same server, entrypoint and models on
an older TensorFlow venv image (e.g. the 2.1 GB one with the full `tensorflow` wheel), side by side in one run.

    .venv/bin/python bench/bench_cold_pull.py [--replicas 3] [--before tfship-tf:OLD]

The local cluster runs its pods on the engine the builds use, so "the node" is this engine; images still used by a
container are refused (delete that app first). Each image's local tags are put back afterwards. Deploys into its own
namespace (the deployed app is not touched) from a copy of build/artifacts.json; the web page is left out.
Prints a table and saves build/bench/cold_pull.json.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tfship import artifacts as artifacts_store  # noqa: E402
from tfship import cluster, deploy, engine  # noqa: E402
from tfship import config as tfconfig  # noqa: E402
from tfship import config as config_mod  # noqa: E402
from tfship.errors import TfshipError  # noqa: E402

NAMESPACE = "tfship-bench-cold"
BEFORE_TAG = "bench-before"


def before_image(client: docker.DockerClient, after_ref: str, tf_venv: str) -> str:
    """The serving image's server, entrypoint and models on another TensorFlow venv image; returns its local ref."""
    after = client.images.get(after_ref).attrs["Config"]
    env = [item for item in after["Env"] if not item.startswith("PATH=")]
    models_root = next(item.split("=", 1)[1] for item in env if item.startswith("MODEL_BASE_PATH="))
    site = "/opt/venv/lib/python3.11/site-packages"
    dockerfile = "\n".join([
        f"FROM {after_ref} AS after",
        f"FROM {tf_venv}",
        "COPY --from=after /opt/tfship /opt/tfship",
        f"COPY --from=after {site}/tfship.pth {site}/tfship.pth",
        "COPY --from=after /usr/bin/tfship-entrypoint.sh /usr/bin/tfship-entrypoint.sh",
        f"COPY --from=after {models_root} {models_root}",
        *(f"ENV {item.split('=', 1)[0]}={json.dumps(item.split('=', 1)[1])}" for item in env),
        f"USER {after['User']}",
        f"ENTRYPOINT {json.dumps(after['Entrypoint'])}",
    ])
    ref = f"tfship-serving:{BEFORE_TAG}"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
    return ref


def push(client: docker.DockerClient, local_ref: str, repository: str) -> tuple[str, str]:
    """Push under repository:BEFORE_TAG; returns (image id, digest)."""
    image = client.images.get(local_ref)
    image.tag(repository, BEFORE_TAG)
    digest = ""
    for line in client.images.push(repository, BEFORE_TAG, stream=True, decode=True):
        if "error" in line:
            raise SystemExit(f"push failed: {line['error']}")
        digest = line.get("aux", {}).get("Digest", digest)
    return image.id, digest


def timed_deploy(config: tfconfig.Config, replicas: int) -> float:
    started = time.monotonic()
    deploy.deploy(config, replicas)
    return time.monotonic() - started


def sharing_layers(client: docker.DockerClient, image_id: str) -> list:
    """Every image holding one of this image's layers (its parents and their other children): removing only the image
    itself would leave most of its layers on the node, and the 'cold' pull would fetch the top layer alone."""
    layers = set(client.images.get(image_id).attrs["RootFS"]["Layers"])
    return [image for image in client.images.list(all=True) if layers & set(image.attrs["RootFS"].get("Layers", []))]


def remove_all(client: docker.DockerClient, ids: list[str]) -> None:
    """Remove the images, children before parents: a pass removes what has no child left (bounded passes)."""
    left = list(ids)
    for _ in range(len(ids) + 1):
        blocked = []
        for image_id in left:
            try:
                client.images.remove(image_id, force=True)
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as error:
                if error.status_code != 409:  # 409: a child image is still there
                    raise
                blocked.append(image_id)
        if not blocked:
            return
        left = blocked
    raise SystemExit(f"{len(left)} images could not be removed: {left[:3]}")


def measure(client: docker.DockerClient, config: tfconfig.Config, replicas: int, image_id: str) -> dict:
    users = [c for image in sharing_layers(client, image_id)
             for c in client.containers.list(all=True, filters={"ancestor": image.id})]
    if users:
        raise SystemExit(f"{len(users)} containers use the image or one sharing its layers: delete that app first "
                         "(invoke destroy, or kubectl delete namespace ...), then run this again")
    size = client.images.get(image_id).attrs["Size"]
    deploy.destroy(config)
    sharing = sharing_layers(client, image_id)
    tagged = [image for image in sharing if image.tags]
    saved = config_mod.cache_dir() / "bench-cold-pull-saved.tar"  # outside the work tree; loaded back below
    saved.parent.mkdir(parents=True, exist_ok=True)
    print(f"saving {len(tagged)} images that share its layers to {saved}, then removing {len(sharing)}", flush=True)
    subprocess.run(["docker", "save", "-o", str(saved), *[tag for image in tagged for tag in image.tags]],
                   check=True, timeout=1800)
    try:
        remove_all(client, [image.id for image in sharing])
        cold = timed_deploy(config, replicas)
        deploy.destroy(config)
        warm = timed_deploy(config, replicas)
    finally:
        deploy.destroy(config)
        subprocess.run(["docker", "load", "-q", "-i", str(saved)], check=True, timeout=1800)  # every tag back
        saved.unlink()
    return {"uncompressed_mb": round(size / 1e6), "cold_s": round(cold, 1), "warm_s": round(warm, 1),
            "images_removed": len(sharing)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--before", metavar="TF_VENV_IMAGE", help="an older TensorFlow venv image to compare with")
    args = parser.parse_args()
    engine.ensure_engine()
    client = docker.from_env(timeout=1800)
    config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides={
        "kubernetes.namespace": NAMESPACE, "kubernetes.resources.cpu_request": "100m"})
    recorded = artifacts_store.load(config.artifacts_path)
    serving = recorded.image("serving")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="tfship-bench-cold-") as folder:
        candidates = {"after (this build)": (serving.image_id, serving.digest)}
        if args.before:
            candidates = {f"before ({args.before})": push(client, before_image(client, serving.local_ref, args.before),
                                                          serving.repository), **candidates}
        for label, (image_id, digest) in candidates.items():
            data = json.loads(config.artifacts_path.read_text())
            data["images"] = {"serving": {**data["images"]["serving"], "image_id": image_id, "digest": digest}}
            Path(folder, "artifacts.json").write_text(json.dumps(data))
            config.build_dir = folder
            try:
                rows[label] = measure(client, config, args.replicas, image_id)
            except TfshipError as error:
                print(error.one_line(), file=sys.stderr)
                return 1
            print(f"{label}: {rows[label]}", flush=True)
    cluster.target(config).run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
    print(f"\ndeploy-to-ready of {args.replicas} replicas, image removed from the node first (cold) and present (warm)")
    print(f"{'image':<48} {'size MB':>8} {'cold s':>8} {'warm s':>8} {'pull s':>8}")
    for label, row in rows.items():
        print(f"{label:<48} {row['uncompressed_mb']:>8} {row['cold_s']:>8} {row['warm_s']:>8} "
              f"{row['cold_s'] - row['warm_s']:>8.1f}")
    out = REPO / "build" / "bench" / "cold_pull.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"replicas": args.replicas, "rows": rows}, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
