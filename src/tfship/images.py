"""The devel and serving images: content-tagged, built only when an input changed, serving images accepted only
after a live prediction.

The chain (each image named by a hash of its inputs, so an existing tag means there is nothing to do):

    python base (bases.py) ─► tfship-tf (TensorFlow venv, one layer) ─┬─► tfship-devel (+ scikit-learn, tfship)
                                                                      └─► tfship-runtime-python (+ tfship.server)
    tensorflow/serving:<version> or tfship-runtime-python ─► tfship-serving (+ models, copied last)

A tag hashes the Dockerfile, every context file, the build arguments and the parent image's id. Build-only
files (the CA bundle, pip.conf) are sent to builder stages only and never hashed or kept.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import tfship
from tfship import artifacts as artifacts_mod
from tfship import acceptance, bases, contract, docker_client, filehash
from tfship import models as model_stage
from tfship.artifacts import ImageArtifact, ServingRecord, SmokeRecord
from tfship.config import Config, ModelSpec
from tfship.errors import ConfigError, DockerError, ModelError
from tfship.progress import say, step

DOCKERFILES = bases.DOCKERFILES
SOURCE_DIR = Path(tfship.__file__).resolve().parent
TAG_LENGTH = 16
MODELS_LABEL = "io.tfship.models"
REVISION_LABEL = "org.opencontainers.image.revision"
ROLES = ("devel", "serving")
CANDIDATE_SUFFIX = "-candidate"  # a serving image's tag until it has passed acceptance
OPTIONAL_ROLES = ("web",)  # in "all" only with images.web (the default), else when asked for by name
RUNTIMES = ("tfserving", "python")


def all_roles(config: Config) -> tuple[str, ...]:
    """What `invoke build` and `invoke up` build: devel and serving, and the web page unless images.web is false."""
    return (*ROLES, *OPTIONAL_ROLES) if config.images.web else ROLES



@dataclass
class ImagePlan:
    """Everything one build needs; `tag` is a hash of all of it but the build-only files."""

    name: str
    dockerfile: Path
    parent_id: str
    files: dict[str, Path] = field(default_factory=dict)
    buildargs: dict[str, str] = field(default_factory=dict)
    # hashed into the tag but never shown or passed to the build (e.g. a pip index URL that holds a token)
    private_inputs: dict[str, str] = field(default_factory=dict)
    needs_pypi: bool = False

    @functools.cached_property
    def tag(self) -> str:
        """Computed once: a plan describes one moment of its inputs (files may change while it builds)."""
        return content_tag(self.dockerfile, self.files, {**self.buildargs, **self.private_inputs}, self.parent_id)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


# --------------------------------------------------------------------------------------------------------------
# Tags


def content_tag(dockerfile: Path, files: Mapping[str, Path], buildargs: Mapping[str, str], parent_id: str) -> str:
    """A tag that changes when any input changes and not otherwise: the Dockerfile, every context file's path,
    mode and content, the build arguments and the parent image's id. File times do not count (they only decide
    whether a file's cached hash is still good: see filehash)."""
    digest = hashlib.sha256()
    hashes = filehash.HashCache()

    def feed(*parts: str) -> None:
        for part in parts:
            digest.update(part.encode())
            digest.update(b"\0")

    with hashes:
        feed("dockerfile", hashes.sha256(dockerfile), "parent", parent_id)
        for key in sorted(buildargs):
            feed("arg", key, buildargs[key])
        for name in sorted(files):
            for relative, path in docker_client.context_entries(name, files[name]):
                mode = "x" if os.access(path, os.X_OK) and path.is_file() else "-"
                feed("file", relative, mode, hashes.sha256(path) if path.is_file() else "dir")
    return digest.hexdigest()[:TAG_LENGTH]


# --------------------------------------------------------------------------------------------------------------
# Plans


def tf_plan(config: Config) -> ImagePlan:
    """The shared TensorFlow venv image on the configured Python base (building the base if needed)."""
    base = bases.python_base(config)
    parent = docker_client.image_id(base.ref)
    if parent is None:
        raise DockerError(f"the base image {base.ref} is missing", "run again, or set base.source: debian")
    return ImagePlan(
        name=f"{config.project}-tf",
        dockerfile=DOCKERFILES / "Dockerfile.tf",
        parent_id=parent,
        buildargs={"PYTHON_BASE": base.ref, "TENSORFLOW_VERSION": config.images.tensorflow_version,
                   "TENSORFLOW_PACKAGE": tensorflow_package(config)},
        private_inputs={"pip_index_url": config.base.pip_index_url},
        needs_pypi=True,
    )


def tensorflow_package(config: Config) -> str:
    """The TensorFlow wheel of the shared venv: the CPU-only one unless a GPU is configured (0.6 GB smaller)."""
    return "tensorflow" if config.serving.gpu else "tensorflow-cpu"


def devel_plan(config: Config, tf_ref: str, tf_id: str) -> ImagePlan:
    return ImagePlan(
        name=config.images.devel,
        dockerfile=DOCKERFILES / "Dockerfile.devel",
        parent_id=tf_id,
        files={"tfship.pth": DOCKERFILES / "tfship.pth", "src/tfship": SOURCE_DIR},
        buildargs={"TF_IMAGE": tf_ref, "USER_ID": str(config.images.user)},
        private_inputs={"pip_index_url": config.base.pip_index_url},
        needs_pypi=True,
    )


def python_runtime_plan(config: Config, tf_ref: str, tf_id: str) -> ImagePlan:
    # Only the server package and the serving contract (neither imports anything else of tfship), so other code
    # changes leave serving images alone.
    return ImagePlan(
        name=f"{config.project}-runtime-python",
        dockerfile=DOCKERFILES / "Dockerfile.runtime-python",
        parent_id=tf_id,
        files={"tfship.pth": DOCKERFILES / "tfship.pth", "src/tfship/__init__.py": SOURCE_DIR / "__init__.py",
               "src/tfship/contract.py": SOURCE_DIR / "contract.py", "src/tfship/server": SOURCE_DIR / "server"},
        # the slim runtime starts from the bare base again (see the Dockerfile)
        buildargs={"TF_IMAGE": tf_ref, "PYTHON_BASE": bases.python_base(config).ref},
    )


def serving_plan(config: Config, runtime_ref: str, runtime_id: str, staging: Path,
                 models: list[contract.ServedModel]) -> ImagePlan:
    """The serving image over `staging` (models/ from stage_models; the entrypoint script is written here)."""
    entrypoint = staging / "tfship-entrypoint.sh"
    entrypoint.write_text(contract.entrypoint_script())
    entrypoint.chmod(0o755)
    return ImagePlan(
        name=config.images.serving,
        dockerfile=DOCKERFILES / "Dockerfile.serving",
        parent_id=runtime_id,
        files={"tfship-entrypoint.sh": entrypoint, "models": staging / "models"},
        buildargs={
            "RUNTIME_IMAGE": runtime_ref,
            **contract.image_build_args(models, config.serving.grpc_port, config.serving.rest_port),
            "USER_ID": str(config.images.user),
        },
    )


# --------------------------------------------------------------------------------------------------------------
# Models baked into the serving image


def served_versions(config: Config, spec: ModelSpec) -> dict[int, Path]:
    """version -> folder for the versions spec's policy serves (latest: the newest; all; specific: the listed)."""
    folder = model_stage.model_dir(config, spec.name)
    found = model_stage.version_dirs(folder)  # a non-integer version folder is a ModelError naming it
    for version_dir in found.values():
        if not (version_dir / "saved_model.pb").is_file():
            raise ModelError(f"{version_dir} has no saved_model.pb", f"re-export it or remove {version_dir}")
    if not found:
        raise ModelError(f"no exported version of model '{spec.name}' in {folder}",
                         f"run: invoke export --model {spec.name} (or invoke model.add)")
    missing = [v for v in spec.versions if v not in found] if spec.version_policy == "specific" else []
    if missing:
        raise ModelError(f"model '{spec.name}': versions {missing} listed in tfship.yaml are not in {folder}",
                         f"export them, or change models.{spec.name}.versions (found: {sorted(found)})")
    return {v: found[v] for v in contract.served_versions(spec.version_policy, spec.versions, found)}


def check_models_exported(config: Config) -> None:
    """ModelError (naming the folder) unless every configured model has the versions its policy serves."""
    if not config.models:
        raise ConfigError("no models configured", "add models to tfship.yaml")
    for spec in config.models:
        served_versions(config, spec)


def served_models(config: Config, served: Mapping[str, list[int]]) -> list[contract.ServedModel]:
    """The models of `served` (name -> versions baked in) in tfship.yaml order, with their version policies."""
    return [contract.ServedModel(spec.name, tuple(served[spec.name]), spec.version_policy, dict(spec.labels))
            for spec in config.models if spec.name in served]


def stage_models(config: Config, into: Path) -> dict[str, list[int]]:
    """Link the served versions (and models.config) into `into` as the models/ part of the build context."""
    check_models_exported(config)
    served: dict[str, list[int]] = {}
    into.mkdir(parents=True, exist_ok=True)
    for spec in config.models:
        versions = served_versions(config, spec)
        served[spec.name] = list(versions)
        for version, folder in versions.items():
            target = into / spec.name / folder.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(folder, target_is_directory=True)
    models = served_models(config, served)
    if contract.needs_model_config_file(models):
        (into / Path(contract.MODEL_CONFIG_PATH).name).write_text(contract.model_config_text(models))
    return served


def serving_record(config: Config, served: Mapping[str, list[int]], *, keep_samples: bool = True) -> ServingRecord:
    """What a serving image with `served` (name -> versions) baked in promises: the contract as applied, and what
    the smoke test checks of each model: its signatures and (keep_samples) the digest of the smoke sample of its
    newest served version, a copy of which is kept in build/ under that digest."""
    models = served_models(config, served)
    smoke: dict[str, SmokeRecord] = {}
    for spec in config.models:
        if spec.name not in served:
            continue
        checks = SmokeRecord(signatures=list(spec.signatures), status_only=spec.smoke == "status-only")
        if keep_samples and not checks.status_only:
            sample = served_versions(config, spec)[max(served[spec.name])] / model_stage.SMOKE_SAMPLE
            checks.sample = artifacts_mod.keep_sample(config.build_path, sample) if sample.is_file() else ""
        smoke[spec.name] = checks
    return ServingRecord(
        model_name=models[0].name,
        model_config=contract.model_config_text(models) if contract.needs_model_config_file(models) else "",
        grpc_port=config.serving.grpc_port,
        rest_port=config.serving.rest_port,
        gpu=config.serving.gpu,
        smoke=smoke,
    )


def validate_models(config: Config) -> None:
    """The model stage's full validation (every model loads and has its signatures), before a serving build."""
    for line in model_stage.validate_all(config):
        say(f"    {line}")


# --------------------------------------------------------------------------------------------------------------
# Building


def ensure(plan: ImagePlan, config: Config, title: str, nocache: bool = False) -> tuple[str, str, bool]:
    """(ref, image id, built): build `plan` unless an image with its content tag exists (`nocache`: without the
    engine's layer cache, as on a fresh machine)."""
    ref = plan.ref
    found = docker_client.image_id(ref)
    if found is not None:
        say(f"{title} {ref}: up to date")
        return ref, found, False
    with step(f"Building {title} {ref}") as progress:
        files = dict(plan.files)
        build_only = _build_only_dir(config) if plan.needs_pypi else None
        try:
            if build_only is not None:
                files["build-only"] = build_only
            image_id = docker_client.build_image(ref, plan.dockerfile, files, plan.buildargs, progress.update,
                                                 nocache=nocache)
        finally:
            if build_only is not None:
                shutil.rmtree(build_only, ignore_errors=True)
        progress.done(image_id[7:19])
    return ref, image_id, True


def _build_only_dir(config: Config) -> Path:
    """A private temporary folder with the CA bundle and pip.conf for builder stages; deleted after the build."""
    ca = Path(os.path.expanduser(config.base.ca_bundle))
    if not ca.is_file():
        raise ConfigError(f"base.ca_bundle {ca} does not exist", "point base.ca_bundle at a PEM bundle that pip can trust")
    folder = Path(tempfile.mkdtemp(prefix="tfship-build-only-"))
    shutil.copyfile(ca, folder / "ca.pem")
    settings = ["[global]", "cert = /tmp/tfship-build/ca.pem", "disable-pip-version-check = true",
                "no-cache-dir = true", "timeout = 180"]
    if config.base.pip_index_url:
        settings.append(f"index-url = {config.base.pip_index_url}")
    (folder / "pip.conf").write_text("\n".join(settings) + "\n")
    return folder


def ensure_tf_image(config: Config, nocache: bool = False) -> tuple[str, str]:
    ref, image_id, _ = ensure(tf_plan(config), config, "TensorFlow venv image", nocache)
    return ref, image_id


def ensure_devel_image(config: Config, nocache: bool = False) -> ImageArtifact:
    """The devel image (TensorFlow, scikit-learn, tfship), built if its inputs changed; recorded in artifacts."""
    tf_ref, tf_id = ensure_tf_image(config, nocache)
    plan = devel_plan(config, tf_ref, tf_id)
    _, image_id, _ = ensure(plan, config, "devel image", nocache)
    artifact = ImageArtifact(role="devel", name=plan.name, tag=plan.tag, image_id=image_id, user=config.images.user)
    record(config, artifact)
    return artifact


def pick_runtime(config: Config, runtime: str | None = None) -> str:
    """`tfserving` or `python`; `auto` picks tfserving where tensorflow/serving can be pulled, and says which."""
    chosen = runtime or config.serving.runtime
    if chosen not in (*RUNTIMES, "auto"):
        raise ConfigError(f"unknown serving runtime {chosen!r}", "use tfserving, python or auto")
    if chosen == "python" and config.serving.gpu:
        raise ConfigError("serving.gpu needs the tfserving runtime", "set serving.runtime: tfserving, or gpu: false")
    if chosen != "auto":
        return chosen
    image = tfserving_image(config)
    if config.base.source == "debian":
        say(f"serving.runtime auto: python (base.source is debian, so {image} is not pulled)")
        return "python"
    if bases.can_pull(image, config):
        say(f"serving.runtime auto: tfserving ({image})")
        return "tfserving"
    say(f"serving.runtime auto: {image} cannot be pulled here; using the python runtime (tfship.server)")
    return "python"


def tfserving_image(config: Config) -> str:
    return f"tensorflow/serving:{config.serving.tfserving_version}{'-gpu' if config.serving.gpu else ''}"


def ensure_serving_image(config: Config, runtime: str | None = None, nocache: bool = False) -> ImageArtifact:
    """The serving image with the models baked in; a newly built one is accepted only after every model answers
    a prediction, else it is removed and DockerError raised."""
    chosen = pick_runtime(config, runtime)
    check_models_exported(config)  # before any build: nothing half-done for a missing model
    if chosen == "tfserving":
        runtime_ref = tfserving_image(config)
        runtime_id = bases.ensure_upstream(runtime_ref, config, "set serving.runtime: python (or auto) to serve with "
                                           "tfship.server where tensorflow/serving cannot be pulled")
    else:
        tf_ref, tf_id = ensure_tf_image(config, nocache)
        runtime_ref, runtime_id, _ = ensure(python_runtime_plan(config, tf_ref, tf_id), config, "python runtime image",
                                            nocache)
    staging = Path(tempfile.mkdtemp(prefix="tfship-models-"))
    try:
        served = stage_models(config, staging / "models")
        plan = serving_plan(config, runtime_ref, runtime_id, staging, served_models(config, served))
        contract_record = serving_record(config, served)
        ref = plan.ref
        image_id = docker_client.image_id(ref)
        if image_id is not None:
            say(f"serving image {ref}: up to date")
        else:
            validate_models(config)
            labels = {REVISION_LABEL: git_revision(config.root, SOURCE_DIR), MODELS_LABEL: models_label(served)}
            # Built and accepted under a candidate tag; only an accepted image gets the content tag that makes the
            # next build say "up to date" and that push reads. An interrupt or a failure at any point leaves no
            # unaccepted image under the real tag (a leftover candidate is replaced by the next build).
            candidate = f"{ref}{CANDIDATE_SUFFIX}"
            try:
                with step(f"Building serving image {ref} ({chosen} runtime)") as progress:
                    image_id = docker_client.build_image(candidate, plan.dockerfile, plan.files, plan.buildargs,
                                                         progress.update, labels=labels, nocache=nocache)
                    progress.done(image_id[7:19])
                acceptance.accept_serving_image(candidate, served, contract_record.grpc_port, contract_record.rest_port)
                docker_client.tag_image(candidate, ref)
            finally:
                docker_client.remove_image(candidate)  # only the candidate tag: an accepted image keeps its ref
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    artifact = ImageArtifact(role="serving", name=plan.name, tag=plan.tag, image_id=image_id,
                             user=config.images.user, runtime=chosen)
    record(config, artifact, models=served, serving=contract_record)
    return artifact


def build(config: Config, images: Iterable[str] = ROLES, runtime: str | None = None,
          nocache: bool = False) -> list[ImageArtifact]:
    """Build the requested images (devel, serving) where their inputs changed; return what is now current."""
    wanted = list(images)
    unknown = [role for role in wanted if role not in ROLES + OPTIONAL_ROLES]
    if unknown:
        raise ConfigError(f"unknown image {unknown[0]!r}", "use devel, serving, web or all")
    if "serving" in wanted:
        check_models_exported(config)  # fail before building the devel image, not after
    built: list[ImageArtifact] = []
    if "devel" in wanted:
        built.append(ensure_devel_image(config, nocache))
    if "serving" in wanted:
        built.append(ensure_serving_image(config, runtime, nocache))
    if "web" in wanted:
        from tfship.web import stages as web_stages  # here: tfship.web.stages imports this module

        built.append(web_stages.ensure_web_image(config, nocache))
    return built


def models_label(served: Mapping[str, list[int]]) -> str:
    return ",".join(f"{name}:{'+'.join(map(str, versions))}" for name, versions in served.items())


def git_revision(*roots: Path) -> str:
    """The source commit of the first root inside git (with -dirty when its tracked files changed), else 'unknown'."""
    for root in roots:
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10)
            if head.returncode != 0:
                continue
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.TimeoutExpired):
            continue
    return "unknown"


def record(config: Config, artifact: ImageArtifact, models: Mapping[str, list[int]] | None = None,
            serving: ServingRecord | None = None) -> None:
    """Record in build/artifacts.json; push results for the same tag are kept, any other tag replaces them.
    A serving image is recorded with what it serves (`models`, `serving`), replacing the previous one's."""
    recorded = artifacts_mod.load(config.artifacts_path)
    previous = recorded.images.get(artifact.role)
    if previous is not None and previous.tag == artifact.tag and previous.image_id == artifact.image_id:
        artifact.repository, artifact.digest = previous.repository, previous.digest
    recorded.images[artifact.role] = artifact
    if models is not None:
        recorded.models = {name: list(versions) for name, versions in models.items()}
        recorded.serving = serving
    artifacts_mod.save(config.artifacts_path, recorded)
