"""Builds the C++ gRPC front (_grpc_front.cc) into an extension module beside its source.

    python -m tfship.server.front_build [--force]

Needs g++, pkg-config, grpc++'s headers and Python's (Debian: g++ pkg-config libgrpc++-dev python3-dev); ./run
installs them and the serving image builds it in a stage of its own. An up-to-date module is left alone. Imports
nothing heavy (./run calls it on every start).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("_grpc_front.cc")
PACKAGES_HINT = "apt-get install g++ pkg-config libgrpc++-dev python3-dev"


class BuildError(Exception):
    """The front cannot be built here: one line with what to do."""


def extension_path() -> Path:
    return SOURCE.with_name("_grpc_front" + sysconfig.get_config_var("EXT_SUFFIX"))


def compile_command(output: Path) -> list[str]:
    missing = [tool for tool in ("g++", "pkg-config") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{' and '.join(missing)} not found (hint: {PACKAGES_HINT})")
    grpc_flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True, text=True)
    if grpc_flags.returncode != 0:
        raise BuildError(f"grpc++ is not installed for building (hint: {PACKAGES_HINT})")
    python_include = sysconfig.get_paths()["include"]
    if not os.path.isfile(os.path.join(python_include, "Python.h")):
        raise BuildError(f"Python's headers are not in {python_include} (hint: {PACKAGES_HINT})")
    return ["g++", "-O2", "-shared", "-fPIC", "-std=c++17", "-Wall", f"-I{python_include}", str(SOURCE),
            "-o", str(output), *grpc_flags.stdout.split()]


def build(force: bool = False) -> Path:
    """The extension module, compiled unless it is newer than its source. Written under a temporary name and
    renamed, so a failed or interrupted build never leaves a module that imports half-written."""
    target = extension_path()
    if not force and target.exists() and target.stat().st_mtime >= SOURCE.stat().st_mtime:
        return target
    handle, scratch = tempfile.mkstemp(prefix=".front-", suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        result = subprocess.run(compile_command(Path(scratch)), capture_output=True, text=True)
        if result.returncode != 0:
            first_error = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip())
            raise BuildError(f"g++ failed on {SOURCE.name}: {first_error}")
        os.chmod(scratch, 0o755)  # mkstemp's 0600 would hide it from a server running as another user
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return target


def main(argv: list[str]) -> int:
    try:
        path = build(force="--force" in argv)
    except BuildError as error:
        print(f"tfship: the model server's C++ gRPC front is not built, its gRPC falls back to grpcio: {error}",
              file=sys.stderr)
        return 1
    print(f"C++ gRPC front: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
