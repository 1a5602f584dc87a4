"""build/artifacts.json: the only hand-off between stages (build -> push -> render/deploy -> smoke-test).

`build` records each image's local name, content tag and id; for the serving image also what it serves (the model
versions baked in and the serving contract: model config text, ports, GPU) and what the smoke test checks (each
model's signatures and the digest of its smoke sample, a copy of which is kept in build/smoke-samples/ under that
digest). `push` adds the registry repository and manifest digest. `render`, `deploy` and `smoke-test` read only
this, so editing tfship.yaml after a build cannot make them disagree with the image. No secret is ever stored here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfship import contract
from tfship.errors import SmokeTestError, TfshipError

SAMPLES_DIR = "smoke-samples"


@dataclass
class ImageArtifact:
    role: str  # "devel" or "serving"
    name: str  # local repository, e.g. tfship-serving
    tag: str  # content tag: a hash of every input of the build
    image_id: str  # sha256:... of the local image
    user: int = 0  # numeric USER of the image (runAsNonRoot needs it)
    runtime: str = ""  # serving only: "tfserving" or "python"
    repository: str = ""  # after push: <registry>/<namespace>/<name>
    digest: str = ""  # after push: manifest digest sha256:..., read back from the registry

    @property
    def local_ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def pinned_ref(self) -> str:
        """The reference manifests use: repository@digest (only after push)."""
        if not (self.repository and self.digest):
            raise TfshipError(
                f"the {self.role} image {self.local_ref} has not been pushed", "run: invoke push"
            )
        return f"{self.repository}@{self.digest}"


@dataclass
class SmokeRecord:
    """What the smoke test checks for one model, fixed when the serving image was built."""

    signatures: list[str] = field(default_factory=list)
    sample: str = ""  # sha256:<hex> of the model's smoke sample (copy: build/smoke-samples/<hex>.json); "" = none
    status_only: bool = False  # configured `smoke: status-only`: status and metadata only, no known answers


@dataclass
class ServingRecord:
    """The serving contract (tfship.contract) baked into the serving image, as build applied it."""

    model_name: str  # MODEL_NAME baked in: the first model, the probes' target
    model_config: str = ""  # the model config file's text baked in; "" = one model served by MODEL_NAME
    grpc_port: int = contract.GRPC_PORT
    rest_port: int = contract.REST_PORT
    gpu: bool = False  # built FROM the -gpu tensorflow/serving image
    smoke: dict[str, SmokeRecord] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServingRecord":
        smoke = {name: SmokeRecord(**record) for name, record in data.pop("smoke", {}).items()}
        return cls(smoke=smoke, **data)


@dataclass
class Artifacts:
    images: dict[str, ImageArtifact] = field(default_factory=dict)
    # model name -> versions baked into the serving image
    models: dict[str, list[int]] = field(default_factory=dict)
    serving: ServingRecord | None = None  # what the serving image serves and how (recorded with models)
    registry: str = ""  # host:port pushed to
    registry_auth: bool = False  # the registry needs credentials (deploy creates a pull secret)

    def image(self, role: str) -> ImageArtifact:
        if role not in self.images:
            raise TfshipError(f"no {role} image recorded in build/artifacts.json", "run: invoke build")
        return self.images[role]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Artifacts":
        data = json.loads(text)
        images = {role: ImageArtifact(**image) for role, image in data.pop("images", {}).items()}
        serving = data.pop("serving", None)
        return cls(images=images, serving=ServingRecord.from_dict(serving) if serving else None, **data)


def load(path: Path) -> Artifacts:
    """The recorded artifacts; an empty record when nothing was built yet."""
    try:
        return Artifacts.from_json(path.read_text())
    except FileNotFoundError:
        return Artifacts()
    except (ValueError, TypeError) as exc:
        raise TfshipError(f"{path} is not a tfship artifacts file ({exc})", f"delete {path} and run: invoke build")


def save(path: Path, artifacts: Artifacts) -> None:
    """Write atomically and durably, so an interrupted stage or a full disk never leaves a half-written hand-off."""
    write_atomically(path, artifacts.to_json().encode())


def write_atomically(path: Path, data: bytes) -> None:
    """A unique temp file, fsync, rename: readers see the old file or the new one, and two writers never share a
    temp file. Disk full or a permission error is one line."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise TfshipError(f"cannot write {path}: {exc.strerror or exc}",
                              "free disk space or fix the folder's permissions, then run the stage again") from None
        raise


# --------------------------------------------------------------------------------------------------------------
# Smoke samples, kept by digest


def keep_sample(build_path: Path, sample: Path) -> str:
    """Copy a model's smoke sample into build/smoke-samples/<hex>.json; return its digest, sha256:<hex>."""
    data = sample.read_bytes()
    hexdigest = hashlib.sha256(data).hexdigest()
    folder = build_path / SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{hexdigest}.json"
    if not kept.is_file():
        write_atomically(kept, data)
    return f"sha256:{hexdigest}"


def read_sample(build_path: Path, digest: str) -> bytes:
    """The recorded smoke sample with `digest`, checked against it: exactly what build recorded."""
    hexdigest = digest.removeprefix("sha256:")
    kept = build_path / SAMPLES_DIR / f"{hexdigest}.json"
    try:
        data = kept.read_bytes()
    except FileNotFoundError:
        raise SmokeTestError(f"the smoke sample {digest} recorded in build/artifacts.json is missing ({kept})",
                          "run: invoke build --image serving (it keeps a copy of every sample it records)") from None
    if hashlib.sha256(data).hexdigest() != hexdigest:
        raise SmokeTestError(f"{kept} does not match its recorded digest {digest}",
                          "it was edited after the build; run: invoke build --image serving")
    return data
