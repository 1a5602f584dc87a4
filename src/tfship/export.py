"""The export stage: run the built-in exporters and publish validated versions under models/<name>/<version>/.

Each model is exported by `python -m tfship.exporters` into a staging folder, by default inside the devel image
(the models folder bind-mounted, the container running as the folder's owner so the files stay the user's, no
network), or with `in_devel=False` on this machine with the same code. The result is validated (signatures from
tfship.yaml, loads) before one rename puts it into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tfship import models
from tfship.config import Config, ModelSpec
from tfship.errors import ConfigError, ModelError
from tfship.exporters import EXPORTERS, RESULT_PREFIX
from tfship.host import proc
from tfship.progress import step

# Inside the devel image: its venv is first on PATH (dockerfiles/Dockerfile.tf), the models folder is mounted here.
CONTAINER_PYTHON = "python"
CONTAINER_MODELS = "/models"
EXPORT_TIMEOUT = 900.0

# TensorFlow's native start-up chatter (CUDA probes, CPU feature notes): not progress, kept out of the live lines.
_NOISE = re.compile(r"^([IWE]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|To enable the following)")


@dataclass
class ExportResult:
    model: str
    version: int
    path: Path
    where: str  # "host" or the devel image reference
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        accuracy = self.summary.get("accuracy")
        extra = f", held-out accuracy {accuracy:.4f}" if accuracy is not None else ""
        return f"{self.model} version {self.version} -> {self.path} ({self.where}, {self.seconds:.1f}s{extra})"


def export(
    config: Config, *, model: str | None = None, version: int | str | None = None, in_devel: bool = True
) -> list[ExportResult]:
    """Export `model` (default: every configured model that has an exporter) as `version` (default: the next)."""
    specs = _specs_to_export(config, model)
    for spec in specs:  # an existing --version fails here, before any image is built
        models.new_version_dir(config, spec.name, version)
    config.models_path.mkdir(parents=True, exist_ok=True)
    runner = _DevelRunner(config) if in_devel else _HostRunner()
    return [_export_one(config, spec, version, runner) for spec in specs]


def _specs_to_export(config: Config, model: str | None) -> list[ModelSpec]:
    specs = [config.model(model)] if model else [spec for spec in config.models if spec.exporter]
    if not specs:
        raise ConfigError("no model in tfship.yaml has an exporter", "set models[].exporter to half_plus_two or digits")
    for spec in specs:
        if spec.exporter not in EXPORTERS:
            what = f"models.{spec.name}.exporter is {spec.exporter!r}" if spec.exporter else f"{spec.name} has no exporter"
            raise ConfigError(
                f"{what}, not a built-in exporter ({', '.join(EXPORTERS)})",
                f"set it to one of those, or import the model with: invoke model.add PATH --name {spec.name}",
            )
    return specs


def _export_one(config: Config, spec: ModelSpec, version: int | str | None, runner: "_Runner") -> ExportResult:
    target = models.new_version_dir(config, spec.name, version)
    number = int(target.name)
    with step(f"Exporting {spec.name} version {number} ({runner.where})") as progress:
        with models.staging(config, spec.name, number) as staged:
            summary = runner.run(config, spec, staged, progress.update)
            progress.update("validating: signatures " + ", ".join(spec.signatures) + ", loads")
            models.validate_model(staged, spec.signatures)
            models.publish(config, staged, target)
        progress.done(str(target))
    return ExportResult(spec.name, number, target, runner.where, progress.elapsed, summary)


def _exporter_args(spec: ModelSpec, output: str) -> list[str]:
    return ["-m", "tfship.exporters", "--exporter", spec.exporter, "--output", output, "--seed", str(spec.seed)]


def _read_result(lines: list[str], spec: ModelSpec) -> dict[str, Any]:
    for line in reversed(lines):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise ModelError(f"the {spec.exporter} exporter for {spec.name} ended without a result line", _FAILED_HINT)


def _failure_detail(lines: list[str]) -> str:
    meaningful = [line.strip() for line in lines if line.strip() and not _NOISE.match(line)]
    errors = [line for line in meaningful if line.startswith("error:")]
    return (errors or meaningful or ["no output"])[-1]


_FAILED_HINT = "see the exporter output above; run it on this machine to debug: invoke export --host --model NAME"


class _Runner:
    where = ""

    def run(self, config: Config, spec: ModelSpec, staged: Path, on_line: Callable[[str], None]) -> dict[str, Any]:
        raise NotImplementedError


class _HostRunner(_Runner):
    """The exporter in a child process of this interpreter: same code as in the image, TensorFlow kept out of
    the tasks' own process."""

    where = "host"

    def run(self, config, spec, staged, on_line):
        lines: list[str] = []

        def collect(line: str) -> None:
            lines.append(line)
            if not _NOISE.match(line) and not line.startswith(RESULT_PREFIX):
                on_line(line)

        result = proc.run(
            [sys.executable, *_exporter_args(spec, str(staged))],
            env={"TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=EXPORT_TIMEOUT,
            check=False,
            on_line=collect,
        )
        if result.returncode != 0:
            raise ModelError(f"exporting {spec.name} on this machine failed: {_failure_detail(lines)}", _FAILED_HINT)
        return _read_result(lines, spec)


class _DevelRunner(_Runner):
    """The exporter inside the devel image, built first if needed (tfship.images.ensure_devel_image)."""

    def __init__(self, config: Config):
        from tfship.images import ensure_devel_image

        self.image = ensure_devel_image(config)
        self.where = f"devel image {self.image.local_ref}"

    def run(self, config, spec, staged, on_line):
        from tfship import docker_client

        models_dir = config.models_path
        owner = models_dir.stat()
        container_output = f"{CONTAINER_MODELS}/{staged.relative_to(models_dir).as_posix()}"
        api = docker_client.api()
        name = f"tfship-export-{spec.name}-{staged.name.rsplit('-', 1)[-1]}"
        lines: list[str] = []
        with docker_client.errors(f"running the {spec.exporter} exporter in {self.image.local_ref}"):
            container = api.create_container(
                self.image.image_id or self.image.local_ref,
                command=[CONTAINER_PYTHON, *_exporter_args(spec, container_output)],
                name=name,
                # The models folder's owner, so exported files belong to whoever owns models/ on the host.
                user=f"{owner.st_uid}:{owner.st_gid}",
                environment={"HOME": "/tmp", "TF_CPP_MIN_LOG_LEVEL": "2"},
                network_disabled=True,
                host_config=api.create_host_config(
                    binds={str(models_dir): {"bind": CONTAINER_MODELS, "mode": "rw"}}, network_mode="none"
                ),
                labels={"tfship.role": "export", "tfship.models-dir": str(models_dir)},
            )
            # A hung exporter is killed, so the log stream below ends within EXPORT_TIMEOUT.
            timed_out = threading.Event()
            watchdog = threading.Timer(EXPORT_TIMEOUT, lambda: _kill_quietly(api, container["Id"], timed_out))
            try:
                api.start(container["Id"])
                watchdog.start()
                pending = ""
                for chunk in api.logs(container["Id"], stream=True, follow=True):
                    pending += chunk.decode(errors="replace")
                    *complete, pending = pending.split("\n")
                    for line in complete:
                        lines.append(line)
                        if not _NOISE.match(line) and not line.startswith(RESULT_PREFIX):
                            on_line(line)
                if pending:
                    lines.append(pending)
                exit_code = api.wait(container["Id"], timeout=60)["StatusCode"]
            finally:
                watchdog.cancel()
                api.remove_container(container["Id"], force=True)
        if timed_out.is_set():
            raise ModelError(f"exporting {spec.name} in {self.image.local_ref} took over {EXPORT_TIMEOUT:.0f}s", _FAILED_HINT)
        if exit_code != 0:
            raise ModelError(
                f"exporting {spec.name} in {self.image.local_ref} failed (exit {exit_code}): {_failure_detail(lines)}",
                _FAILED_HINT,
            )
        return _read_result(lines, spec)


def _kill_quietly(api, container_id: str, killed: threading.Event) -> None:
    killed.set()
    try:
        api.kill(container_id)
    except Exception:  # already gone: nothing to stop
        pass

