"""The one apt helper: which Debian packages are missing, installing them (root only), the host's apt sources,
and Debian source packages (the local cluster is built from one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from tfship.errors import TfshipError
from tfship.host import proc

SOURCE_LOCATIONS = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def missing(packages: Sequence[str]) -> list[str]:
    """The packages dpkg does not know as installed (all of them where there is no dpkg)."""
    if shutil.which("dpkg") is None:
        return list(packages)
    return [p for p in packages
            if subprocess.run(["dpkg", "-s", p], capture_output=True, timeout=60).returncode != 0]


def ensure_packages(packages: Sequence[str], *, error: type[TfshipError] = TfshipError, why: str = "") -> None:
    """Install the Debian packages that are missing (one `apt-get update` first, as a fresh machine needs).

    Only root installs: anyone else gets one line naming the packages and the command to run, and nothing runs.
    """
    needed = missing(packages)
    if not needed:
        return
    reason = f" ({why})" if why else ""
    if shutil.which("apt-get") is None:
        raise error(f"packages {', '.join(needed)} are missing{reason} and this machine has no apt-get",
                    "install them with your system's package manager")
    if not is_root():
        raise error(f"Debian packages {', '.join(needed)} are missing{reason}",
                    f"run: sudo apt-get install -y {' '.join(needed)}")
    update(error=error)
    proc.run(["apt-get", "install", "-y", "-qq", *needed], env=ENV, timeout=1200, error=error,
             hint=f"install them by hand: apt-get install -y {' '.join(needed)}")


def update(*, error: type[TfshipError] = TfshipError) -> None:
    proc.run(["apt-get", "update", "-qq"], env=ENV, timeout=600, error=error, hint="check the apt sources")


def is_root() -> bool:
    return os.geteuid() == 0


def sources(locations: Sequence[Path] = SOURCE_LOCATIONS) -> list[tuple[str, list[str]]]:
    """(uri, suites) of every `deb` entry, from deb822 .sources files and one-line .list files."""
    found: list[tuple[str, list[str]]] = []
    files: list[Path] = []
    for location in locations:
        if location.is_dir():
            files += sorted(location.glob("*.sources")) + sorted(location.glob("*.list"))
        elif location.is_file():
            files.append(location)
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = _deb822(stanza)
                if "deb" in fields.get("types", "").split():
                    for uri in fields.get("uris", "").split():
                        found.append((uri, fields.get("suites", "").split()))
        else:
            for line in text.splitlines():
                words = [w for w in line.split() if not w.startswith("[")]  # drop [signed-by=...] options
                if len(words) >= 3 and words[0] == "deb":
                    found.append((words[1], [words[2]]))
    return found


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return fields


def source_entry(mirror: str, suite: str, comment: str) -> str:
    """A deb822 `deb-src` stanza for `suite` on `mirror`."""
    return (
        f"# {comment}\n"
        "Types: deb-src\n"
        f"URIs: {mirror}\n"
        f"Suites: {suite}\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def write_source(path: Path, entry: str, *, error: type[TfshipError] = TfshipError) -> bool:
    """Make apt source file `path` hold `entry` (then `apt-get update`); False when it already did."""
    if path.is_file() and path.read_text() == entry:
        return False
    if not is_root():
        raise error(f"apt source {path} must name the mirror tfship builds from", "run as root")
    path.write_text(entry)
    update(error=error)
    return True


def download_source(package: str, suite: str, into: Path, *, error: type[TfshipError] = TfshipError,
                    hint: str | None = None) -> None:
    """`apt-get source --download-only PACKAGE/SUITE` into folder `into` (needs a deb-src entry for the suite)."""
    proc.run(["apt-get", "source", "--download-only", f"{package}/{suite}"], cwd=into, env=ENV, timeout=900,
             error=error, hint=hint)
