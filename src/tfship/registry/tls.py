"""A private CA and a server certificate signed by it (with openssl), and that CA installed where dockerd reads it.

Keys are written mode 0600 and the CA key's folder 0700; nothing here is ever committed or mounted into a container
except the server certificate and key.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from tfship.errors import RegistryError
from tfship.host import apt, proc

# Where dockerd looks for a registry's CA (read on every connection, so no engine restart is needed).
ENGINE_CERTS_DIR = Path("/etc/docker/certs.d")
LOOPBACK_NAMES = ("IP:127.0.0.1", "DNS:localhost")


def ensure_server_certificate(ca_cert: Path, ca_key: Path, cert: Path, key: Path, ca_name: str,
                              names: Iterable[str] = LOOPBACK_NAMES) -> bool:
    """A CA (`ca_cert`, `ca_key`) and a server certificate for `names` (subjectAltName entries) signed by it;
    True when (re)generated, False when all four files exist already."""
    if all(path.is_file() for path in (ca_cert, ca_key, cert, key)):
        return False
    names = list(names)
    cert.parent.mkdir(parents=True, exist_ok=True)
    ca_key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_key.parent, 0o700)
    openssl = "openssl"
    if shutil.which(openssl) is None:
        apt.ensure_packages(["openssl"], error=RegistryError, why="to make certificates")
    run = dict(error=RegistryError, timeout=60, hint="check that openssl works: openssl version")
    proc.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
              "-keyout", ca_key, "-out", ca_cert, "-subj", f"/CN={ca_name}",
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
             **run)
    csr = cert.with_suffix(".csr")
    extensions = cert.with_suffix(".ext")
    extensions.write_text(
        f"subjectAltName={','.join(names)}\n"
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    common_name = names[0].split(":", 1)[1]
    proc.run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
              "-subj", f"/CN={common_name}"], **run)
    proc.run([openssl, "x509", "-req", "-sha256", "-days", "825", "-in", csr, "-CA", ca_cert,
              "-CAkey", ca_key, "-CAcreateserial", "-CAserial", ca_key.with_suffix(".srl"),
              "-extfile", extensions, "-out", cert], **run)
    csr.unlink()
    extensions.unlink()
    for private in (ca_key, key):
        os.chmod(private, 0o600)
    return True


def engine_ca_paths(addresses: Iterable[str]) -> list[Path]:
    """The certs.d entries dockerd reads for registries at `addresses` (host:port)."""
    return [ENGINE_CERTS_DIR / address / "ca.crt" for address in addresses]


def install_engine_ca(ca_cert: Path, addresses: Iterable[str]) -> None:
    ca = ca_cert.read_bytes()
    for path in engine_ca_paths(addresses):
        if path.is_file() and path.read_bytes() == ca:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(ca)
        except OSError as exc:
            raise RegistryError(
                f"cannot install the registry CA for the Docker engine at {path}: {exc.strerror}",
                f"as root: install -D -m 644 {ca_cert} {path}",
            )


def remove_engine_ca(ca_cert: Path, addresses: Iterable[str]) -> None:
    """Remove the certs.d entries that hold this CA (and their folders when empty); others' CAs stay."""
    ca = ca_cert.read_bytes() if ca_cert.is_file() else None
    for path in engine_ca_paths(addresses):
        if ca is not None and path.is_file() and path.read_bytes() == ca:
            path.unlink()
            try:
                path.parent.rmdir()
            except OSError:
                pass
