"""build/artifacts.json: the only hand-off between stages (build -> push -> render/deploy -> smoke-test).

`build` records each image's local name, content tag and id, and the model versions baked in; `push` adds the
registry repository and manifest digest; `render`/`deploy` read the pinned reference. No secret is ever stored here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tfship.errors import TfshipError


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
class Artifacts:
    images: dict[str, ImageArtifact] = field(default_factory=dict)
    # model name -> versions baked into the serving image
    models: dict[str, list[int]] = field(default_factory=dict)
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
        return cls(images=images, **data)


def load(path: Path) -> Artifacts:
    """The recorded artifacts; an empty record when nothing was built yet."""
    try:
        return Artifacts.from_json(path.read_text())
    except FileNotFoundError:
        return Artifacts()
    except (ValueError, TypeError) as exc:
        raise TfshipError(f"{path} is not a tfship artifacts file ({exc})", f"delete {path} and run: invoke build")


def save(path: Path, artifacts: Artifacts) -> None:
    """Write atomically and durably (a unique temp file, fsync, rename), so an interrupted stage or a full disk
    never leaves a half-written hand-off, and two writers never share a temp file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as out:
            out.write(artifacts.to_json())
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
