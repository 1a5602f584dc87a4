"""Models on disk: the `models/<name>/<integer version>/` layout, validation, next versions, importing.

Contract (TF Serving's): each model folder holds integer version folders (`1`, `00000123`), each a SavedModel with
`saved_model.pb` (+ `variables/`). Entries starting with `.` are ignored (tfship stages half-written exports under
`models/.tfship-staging/` and renames them into place only once they validate, so a failure leaves nothing behind).

Validation reads signatures from saved_model.pb's proto (fast), then checks the model really loads with
`tf.saved_model.load`. A successful load is remembered in the cache under a hash of the folder's content and the
TensorFlow version, so validating unchanged models before every build costs no TensorFlow start-up.

Each version may carry `assets.extra/smoke_sample.json` (written by the built-in exporters): held-out inputs with
the expected outputs, for smoke tests. See `load_smoke_sample`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tfship import importers, savedmodel_pb
from tfship.config import Config, ModelSpec, cache_dir
from tfship.errors import ModelError
from tfship.host import proc
from tfship.progress import say

SAVED_MODEL_FILE = "saved_model.pb"
SERVE_TAG = "serve"
STAGING_DIR = ".tfship-staging"
SMOKE_SAMPLE = Path("assets.extra") / "smoke_sample.json"
DEFAULT_SIZE_LIMIT_MB = 4096


# --------------------------------------------------------------------------------------------------------------
# Layout


def model_dir(config: Config, name: str) -> Path:
    return config.models_path / name


def version_dirs(folder: Path) -> dict[int, Path]:
    """The version folders of one model folder, by version number; a non-integer entry is a ModelError."""
    versions: dict[int, Path] = {}
    if not folder.is_dir():
        return versions
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.name.isdigit() or not entry.name.isascii():
            raise ModelError(
                f"{entry} is not an integer version folder",
                f"rename it to a version number (e.g. {folder / str(max(versions, default=0) + 1)}) or move it out",
            )
        if not entry.is_dir():
            raise ModelError(f"{entry} is a file, not a version folder", "remove it or replace it with a SavedModel")
        number = int(entry.name)
        if number in versions:
            raise ModelError(
                f"{entry} and {versions[number]} are both version {number}", "remove or renumber one of them"
            )
        versions[number] = entry
    return versions


def versions(config: Config, name: str) -> list[int]:
    """Version numbers of a model on disk, oldest first."""
    return sorted(version_dirs(model_dir(config, name)))


def next_version(config: Config, name: str) -> int:
    return max(versions(config, name), default=0) + 1


def version_path(config: Config, name: str, version: int) -> Path:
    found = version_dirs(model_dir(config, name)).get(version)
    if found is None:
        raise ModelError(f"{model_dir(config, name) / str(version)} does not exist", _fill_hint(config, name))
    return found


def load_smoke_sample(version_dir: Path) -> dict[str, Any]:
    """The held-out sample an exporter stored beside a version.

    Keys: model, signature (predict signature), input_key, output_key, inputs (list of rows), example_feature (the
    tf.Example feature the classify/regress signatures parse), classify_signature, and either expected_labels
    (digits: "0".."9" per row, plus held_out_accuracy) or expected_outputs (half_plus_two: rows of floats; plus
    regress_signature)."""
    path = version_dir / SMOKE_SAMPLE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} does not exist", "export the model with tfship (invoke export) to get a sample")
    except ValueError as error:
        raise ModelError(f"{path} is not valid JSON ({error})", "export the model again: invoke export")


# --------------------------------------------------------------------------------------------------------------
# Validation


def read_signatures(version_dir: Path) -> dict[str, str]:
    """Signature name -> method_name of the `serve` meta graph, read straight from saved_model.pb (without
    TensorFlow: see savedmodel_pb)."""
    pb_path = version_dir / SAVED_MODEL_FILE
    if not pb_path.is_file():
        raise ModelError(
            f"{pb_path} is missing",
            "a version folder must hold a SavedModel: export it again (invoke export) or copy the whole SavedModel",
        )
    try:
        meta_graphs = savedmodel_pb.read_meta_graphs(memoryview(pb_path.read_bytes()))
    except ValueError as error:
        raise ModelError(f"{pb_path} is not a SavedModel protobuf ({error})", "export or copy the model again")
    if not meta_graphs:
        raise ModelError(f"{pb_path} holds no meta graph (corrupt or not a SavedModel)", "export or copy it again")
    for tags, signatures in meta_graphs:
        if SERVE_TAG in tags:
            # __saved_model_init_op is TF2's internal initializer, not something a client calls.
            return {name: method for name, method in signatures.items() if not name.startswith("__")}
    raise ModelError(f"{pb_path} has no meta graph tagged '{SERVE_TAG}'", "save the model with the serve tag")


def validate_model(path: Path | str, signatures: list[str], size_limit_mb: int = DEFAULT_SIZE_LIMIT_MB) -> dict[str, str]:
    """Check one version folder: its files bounded, saved_model.pb present and parseable, the named signatures
    present, and the model loads. Returns its signatures (name -> method_name). Raises ModelError naming the path
    and the fix."""
    version_dir = Path(path)
    if not version_dir.is_dir():
        raise ModelError(f"{version_dir} is not a folder", "give the folder that holds saved_model.pb")
    check_files(version_dir, size_limit_mb)
    found = _check_signatures(version_dir, signatures)
    check_loads([version_dir])
    return found


def check_files(version_dir: Path, size_limit_mb: int) -> int:
    """Bound what a version folder may bring into an image: a symlink must resolve inside the folder (a link to /
    would bake the machine in, or never finish copying), and the whole must stay under the size limit. Returns the
    folder's size in bytes. Walks without following links, so a loop of links cannot hang it."""
    root = version_dir.resolve()
    limit = size_limit_mb * 1024 * 1024
    total = 0
    for folder, folders, files in os.walk(version_dir, followlinks=False):
        for name in folders + files:
            entry = Path(folder) / name
            if entry.is_symlink():
                target = Path(os.path.realpath(entry))
                if not target.exists():
                    raise ModelError(f"{entry} is a dangling symlink (to {os.readlink(entry)})",
                                     "remove it, or copy the file it named into the model folder")
                if target != root and root not in target.parents:
                    raise ModelError(f"{entry} is a symlink to {target}, outside the model folder {version_dir}",
                                     "copy what it points to into the model folder instead of linking to it")
                if target.is_dir():
                    raise ModelError(f"{entry} is a symlink to a folder ({target})",
                                     "replace the link with the folder's files")
            if name in files:
                total += entry.stat().st_size
                if total > limit:
                    raise ModelError(f"{version_dir} is larger than the {size_limit_mb} MB limit (model_size_limit_mb)",
                                     "raise model_size_limit_mb in tfship.yaml if the model really is that large")
    return total


def _check_signatures(version_dir: Path, signatures: list[str]) -> dict[str, str]:
    found = read_signatures(version_dir)
    missing = [name for name in signatures if name not in found]
    if missing:
        raise ModelError(
            f"{version_dir} has no signature {', '.join(missing)} (it has: {', '.join(sorted(found)) or 'none'})",
            "export it with those signatures, or fix the model's `signatures` in tfship.yaml",
        )
    return found


def validate_all(config: Config) -> list[str]:
    """Validate every configured model, every version on disk; one line per version. Run before every build.

    Layout and signatures of all models first (fast), then one TensorFlow process loads whatever is not cached."""
    lines: list[str] = []
    to_load: list[Path] = []
    for spec in config.models:
        for number, path in _layout_of(config, spec):
            check_files(path, config.model_size_limit_mb)
            _check_signatures(path, spec.signatures)
            to_load.append(path)
            lines.append(f"{spec.name}/{number}: ok, loads, signatures {', '.join(spec.signatures)}")
    check_loads(to_load)
    configured = {spec.name for spec in config.models}
    if config.models_path.is_dir():
        for extra in sorted(config.models_path.iterdir()):
            if extra.is_dir() and not extra.name.startswith(".") and extra.name not in configured:
                lines.append(f"{extra.name}: not in tfship.yaml, not served (add it under models: to serve it)")
    return lines


def _layout_of(config: Config, spec: ModelSpec) -> list[tuple[int, Path]]:
    folder = model_dir(config, spec.name)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist", _fill_hint(config, spec.name))
    found = version_dirs(folder)
    if not found:
        raise ModelError(f"model folder {folder} holds no version folders", _fill_hint(config, spec.name))
    wanted = set(spec.versions) | set(spec.labels.values())
    absent = sorted(wanted - set(found))
    if absent:
        raise ModelError(
            f"models.{spec.name} names version {absent[0]}, which {folder} does not hold "
            f"(it has {', '.join(map(str, sorted(found)))})",
            "export that version or fix models.versions/labels in tfship.yaml",
        )
    return sorted(found.items())


def _fill_hint(config: Config, name: str) -> str:
    spec = next((m for m in config.models if m.name == name), None)
    if spec is not None and spec.exporter:
        return f"run: invoke export --model {name}"
    return f"run: invoke model.add PATH --name {name}"


# Run in a child process: TensorFlow's import is slow and its native logging would spill into the task's output.
_LOAD_SCRIPT = """
import sys, tensorflow as tf
for path in sys.argv[1:]:
    try:
        tf.saved_model.load(path)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        print("tfship-load-failed", path, type(error).__name__ + ": " + first, sep="\t", flush=True)
        sys.exit(3)
    print("tfship-load-ok", path, sep="\t", flush=True)
"""
LOAD_TIMEOUT = 600.0


def check_loads(version_dirs_to_load: list[Path]) -> None:
    """Check each folder loads with tf.saved_model.load, skipping content already seen to load (cached)."""
    pending = {path: _load_marker(path) for path in version_dirs_to_load}
    pending = {path: marker for path, marker in pending.items() if not marker.exists()}
    if not pending:
        return
    result = proc.run(
        [sys.executable, "-c", _LOAD_SCRIPT, *map(str, pending)],
        env={"TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=LOAD_TIMEOUT,
        check=False,
        error=ModelError,
    )
    reports = [line.split("\t") for line in result.stdout.splitlines() if line.startswith("tfship-load-")]
    loaded = {report[1] for report in reports if report[0] == "tfship-load-ok"}
    for path, marker in pending.items():
        if str(path) in loaded:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{path}\n")
    for report in reports:
        if report[0] == "tfship-load-failed":
            _, path, detail = report
            raise ModelError(
                f"{path} does not load: {detail}",
                "export or copy the model again; check it was saved with a TensorFlow no newer than this one",
            )
    if result.returncode != 0:
        tail = " | ".join((result.stderr or "").strip().splitlines()[-3:])
        raise ModelError(f"loading {', '.join(map(str, pending))} crashed: {tail}", "export or copy the model again")


def _load_marker(version_dir: Path) -> Path:
    """Cache entry meaning "this exact content loaded with this TensorFlow"."""
    digest = hashlib.sha256(_tensorflow_version().encode())
    for file in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(version_dir)).encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return cache_dir() / "validated-models" / digest.hexdigest()


def _tensorflow_version() -> str:
    for distribution in ("tensorflow", "tensorflow-cpu"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


# --------------------------------------------------------------------------------------------------------------
# Import and staging


def add(config: Config, path: Path | str, name: str, version: int | str | None = None, *,
        inputs: str = "", outputs: str = "") -> Path:
    """Import the model at `path` as models/<name>/<version> (default: the next version), validated.

    A SavedModel folder is copied; a Keras file or a TF1 checkpoint with its graph is converted (see
    tfship.importers, `inputs`/`outputs` name a checkpoint's serving tensors). A version without a smoke sample gets a
    generated one (tfship.importers.ensure_smoke_sample), so the smoke test checks real answers for every model."""
    version = parse_version(version)
    source = Path(path).expanduser().resolve()
    kind = importers.kind_of(source)
    _check_name(name)
    spec = next((m for m in config.models if m.name == name), None)
    signatures = spec.signatures if spec else ["serving_default"]
    target_version = next_version(config, name) if version is None else version
    target = _new_version_dir(config, name, target_version)
    if kind == importers.SAVED_MODEL:
        validate_model(source, signatures, config.model_size_limit_mb)
    with staging(config, name, target_version) as staged:
        written: dict[str, Any] = {}
        if kind == importers.SAVED_MODEL:
            shutil.copytree(source, staged)
        else:
            say(f"converting {source.name} ({kind}) to a SavedModel")
            written = importers.convert(source, kind, staged, name, inputs=inputs, outputs=outputs)
            say(f"signature {written['signature']}: inputs {', '.join(written['inputs'])}; "
                f"outputs {', '.join(written['outputs'])}")
            validate_model(staged, signatures, config.model_size_limit_mb)
        generated = importers.ensure_smoke_sample(staged, name, written.get("generated"))
        if generated is not None:
            say(f"smoke checks: generated from signature {generated['signature']}, output {generated['output_key']}"
                if "sample" in generated else f"smoke checks: none generated ({generated['skipped']})")
        publish(config, staged, target)
    if spec is None:
        say(f"note: model {name!r} is not in tfship.yaml; add it under models: to build and serve it")
    return target


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "").replace("-", "").isalnum() or not name.isascii():
        raise ModelError(f"model name {name!r} is not valid", "use letters, digits, _ and -")


def _new_version_dir(config: Config, name: str, version: int) -> Path:
    if version < 1:
        raise ModelError(f"version {version} for {name} is not a positive integer", "give --version 1 or more")
    existing = version_dirs(model_dir(config, name))
    if version in existing:
        raise ModelError(
            f"{existing[version]} already exists",
            f"leave out --version to take the next one ({next_version(config, name)}), or delete that folder",
        )
    return model_dir(config, name) / str(version)


def parse_version(value: int | str | None) -> int | None:
    """A --version flag as a number (None: not given)."""
    if value is None or isinstance(value, int):
        return value
    if not str(value).strip().isdigit():
        raise ModelError(f"--version {value!r} is not a whole number", "give a positive integer, e.g. --version 2")
    return int(value)


def new_version_dir(config: Config, name: str, version: int | str | None) -> Path:
    """The folder a new version of `name` goes to (the next version by default); an existing one is a ModelError."""
    version = parse_version(version)
    return _new_version_dir(config, name, next_version(config, name) if version is None else version)


@contextmanager
def staging(config: Config, name: str, version: int) -> Iterator[Path]:
    """A fresh folder path under models/.tfship-staging/ (not created), removed on exit whatever happened.

    Build a version there, validate it, then `publish` it: an interrupted or failed export or import leaves nothing
    in models/<name>/."""
    root = config.models_path / STAGING_DIR
    _make_dir_owned_like_models(config, root)
    path = root / f"{name}-{version}-{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        try:
            root.rmdir()  # only when empty: another export may be staging beside this one
        except OSError:
            pass


def _make_dir_owned_like_models(config: Config, folder: Path) -> None:
    """Create `folder` owned like models/ itself: when tfship runs as root for a user's project (or the devel
    container runs as the folder's owner), exports must stay writable by that owner."""
    config.models_path.mkdir(parents=True, exist_ok=True)
    if folder.is_dir():
        return
    folder.mkdir(parents=True)
    owner = config.models_path.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(folder, owner.st_uid, owner.st_gid)


def publish(config: Config, staged: Path, target: Path) -> None:
    """Move a validated staged version into place in one rename."""
    _make_dir_owned_like_models(config, target.parent)
    try:
        os.rename(staged, target)
    except OSError as error:
        raise ModelError(f"could not move {staged} to {target}: {error.strerror}", f"check {target} does not exist")
