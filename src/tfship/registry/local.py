"""The local registry's lifecycle: config rendering, certificates, htpasswd, the process or container, waiting, logs.

The local registry is CNCF Distribution: the upstream `registry:2` image where the engine has or can pull it,
otherwise Debian's `docker-registry` package run as a host process (LAB.md §3). Everything it owns lives in the
state dir, one folder per port, so data, certificates and generated credentials survive restarts:

    <state>/registry/<port>/server/      config.yml, data/, certs/ (ca.crt, server.crt, server.key), htpasswd
                                         (the only folder a registry:2 container sees, mounted at /tfship)
    <state>/registry/<port>/ca/ca.key    the CA's key, never mounted
    <state>/registry/<port>/credentials.json   generated credentials (mode 0600), when none came from the env
    <state>/registry/<port>/registry.pid, registry.log   the host process
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import string
import time
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from tfship import docker_client, resources
from tfship.config import Config, state_dir
from tfship.errors import ConfigError, DockerError, RegistryError
from tfship.host import apt, proc, processes
from tfship.progress import step
from tfship.registry import tls
from tfship.registry.address import RegistryInfo, is_loopback, split_address
from tfship.registry.client import RegistryClient
from tfship.registry.credentials import USERNAME_ENV, Credentials, env_credentials

# The registry's templates at the repository's top-level registry/ folder.
TEMPLATES = resources.template_dir("registry")
CONTAINER_MOUNT = "/tfship"
GENERATED_USERNAME = "tfship"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class LocalSite:
    """The files and the running server of one local registry (one per port)."""

    def __init__(self, address: str, auth: bool):
        self.address = address
        self.auth = auth
        self.host, self.port = split_address(address)
        if not is_loopback(self.host):
            raise ConfigError(
                f"registry address {address} is not on this machine, but registry.local is true",
                "use 127.0.0.1:PORT for the local registry, or set registry.local: false for an existing one",
            )
        self.root = state_dir() / "registry" / str(self.port)
        self.server_dir = self.root / "server"
        self.data_dir = self.server_dir / "data"
        self.certs_dir = self.server_dir / "certs"
        self.config_file = self.server_dir / "config.yml"
        self.htpasswd = self.server_dir / "htpasswd"
        self.ca_cert = self.certs_dir / "ca.crt"
        self.server_cert = self.certs_dir / "server.crt"
        self.server_key = self.certs_dir / "server.key"
        self.ca_key = self.root / "ca" / "ca.key"
        self.credentials_file = self.root / "credentials.json"
        self.pid_file = self.root / "registry.pid"
        self.log_file = self.root / "registry.log"
        self.container_name = f"tfship-registry-{self.port}"

    # ---- what runs

    def info(self) -> RegistryInfo:
        server, detail = self.running_server()
        return RegistryInfo(
            self.address,
            "https" if self.auth else "http",
            local=True,
            auth=self.auth,
            running=server is not None,
            server=server or "",
            ca_file=str(self.ca_cert) if self.auth else "",
            detail=detail,
        )

    def running_server(self) -> tuple[str | None, str]:
        pid = self.process_pid()
        if pid is not None:
            return "process", f"pid {pid}, log {self.log_file}"
        container = self._container()
        if container is not None and container.status == "running":
            return "container", f"container {self.container_name}"
        return None, ""

    def process_pid(self) -> int | None:
        """The pid of our docker-registry process, checked against its command line (pids get reused)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if any(part.endswith(b"docker-registry") for part in cmdline) and str(self.config_file).encode() in cmdline:
            return pid
        return None

    def _container(self):
        try:
            client = docker_client.engine(60)
        except DockerError:
            return None  # no engine answers: no container either
        import docker.errors

        try:
            return client.containers.get(self.container_name)
        except docker.errors.NotFound:
            return None
        finally:
            client.close()

    # ---- files

    def render_config(self, mount: str | None) -> str:
        """config.yml for a host process (mount None: host paths) or the container (paths under `mount`)."""
        base = Path(mount) if mount else self.server_dir

        def inner(path: Path) -> str:
            return str(base / path.relative_to(self.server_dir))

        values = {
            "storage": inner(self.data_dir),
            "addr": ":5000" if mount else f"{'127.0.0.1' if self.host == 'localhost' else self.host}:{self.port}",
            "certificate": inner(self.server_cert),
            "key": inner(self.server_key),
            "htpasswd": inner(self.htpasswd),
        }
        data = _template("config.yml", values)
        if self.auth:
            _merge(data, _template("auth.yml", values))
        return yaml.safe_dump(data, sort_keys=False)

    def write_config(self, mount: str | None) -> bool:
        """Write config.yml; True when it changed (a running registry must restart to read it)."""
        text = self.render_config(mount)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config_file.is_file() and self.config_file.read_text() == text:
            return False
        self.config_file.write_text(text)
        return True

    def ensure_certificates(self) -> bool:
        """A CA and a server certificate for 127.0.0.1 and localhost; True when (re)generated."""
        return tls.ensure_server_certificate(self.ca_cert, self.ca_key, self.server_cert, self.server_key,
                                             ca_name=f"tfship registry CA {self.port}")

    def stored_credentials(self) -> Credentials | None:
        try:
            data = json.loads(self.credentials_file.read_text())
            return data["username"], data["password"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def desired_credentials(self) -> Credentials:
        """From the environment, else the stored ones, else new ones stored mode 0600."""
        from_env = env_credentials()
        if from_env:
            if self.stored_credentials() not in (None, from_env):
                self.credentials_file.unlink()  # the htpasswd is about to hold the env's; stale ones would mislead
            return from_env
        stored = self.stored_credentials()
        if stored:
            return stored
        generated = (GENERATED_USERNAME, secrets.token_urlsafe(24))
        self.root.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"username": generated[0], "password": generated[1]}, handle)
        return generated

    def ensure_htpasswd(self, creds: Credentials) -> bool:
        """A bcrypt htpasswd holding exactly `creds`; True when rewritten."""
        username, password = creds
        if ":" in username:
            raise ConfigError(f"registry username {username!r} contains ':'", f"choose another {USERNAME_ENV}")
        try:
            user, hashed = self.htpasswd.read_text().strip().split(":", 1)
            if user == username and bcrypt.checkpw(password.encode(), hashed.encode()):
                return False
        except (OSError, ValueError):
            pass
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        self.htpasswd.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.htpasswd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{username}:{hashed}\n")
        return True

    def engine_addresses(self) -> list[str]:
        """Both names of this registry (127.0.0.1:PORT and localhost:PORT), each with its certs.d entry."""
        return [f"{host}:{self.port}" for host in ("127.0.0.1", "localhost")]

    def engine_ca_paths(self) -> list[Path]:
        return tls.engine_ca_paths(self.engine_addresses())

    def install_engine_ca(self) -> None:
        tls.install_engine_ca(self.ca_cert, self.engine_addresses())

    def remove_engine_ca(self) -> None:
        tls.remove_engine_ca(self.ca_cert, self.engine_addresses())

    # ---- start and stop

    def start_process(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        child = proc.start_detached(["docker-registry", "serve", self.config_file], self.log_file)
        self.pid_file.write_text(f"{child.pid}\n")

    def start_container(self, image: str) -> None:
        client = docker_client.engine()
        try:
            client.containers.run(
                image,
                command=[f"{CONTAINER_MOUNT}/config.yml"],
                name=self.container_name,
                detach=True,
                restart_policy={"Name": "unless-stopped"},
                ports={"5000/tcp": ("127.0.0.1", self.port)},
                volumes={str(self.server_dir): {"bind": CONTAINER_MOUNT, "mode": "rw"}},
                labels={"tfship.registry": str(self.port)},
            )
        finally:
            client.close()

    def stop(self) -> bool:
        """Stop whatever serves this registry; True when something was running."""
        stopped = False
        pid = self.process_pid()
        if pid is not None:
            processes.terminate([pid], STOP_TIMEOUT)
            stopped = True
        self.pid_file.unlink(missing_ok=True)
        container = self._container()
        if container is not None:
            stopped = stopped or container.status == "running"
            container.remove(force=True)
        return stopped

    def wait_until_answering(self, info: RegistryInfo) -> None:
        client = RegistryClient(info, None, timeout=2.0)
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            server, _ = self.running_server()
            if server is None:
                raise RegistryError(
                    f"the registry on {self.address} exited while starting: {self.log_tail()}", f"see {self.log_file}"
                )
            try:
                if client.answers():
                    return
            except RegistryError as exc:
                last = exc.message
            time.sleep(0.2)
        raise RegistryError(f"the registry on {self.address} did not answer within {START_TIMEOUT:.0f}s: {last}",
                            f"see {self.log_file}")

    def log_text(self) -> str:
        """The registry's log: the container's output, or the host process's log file."""
        container = self._container()
        if container is not None:
            return container.logs().decode(errors="replace")
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 3) -> str:
        tail = self.log_text().strip().splitlines()[-lines:]
        return " | ".join(line.strip() for line in tail) or "no log"

def up(config: Config, site: LocalSite) -> RegistryInfo:
    """Start the local registry `site` names. Idempotent: a registry that runs with the same configuration is left
    alone; a changed configuration or changed credentials restart it. Data stays in the state dir across restarts.
    """
    auth = site.auth
    with step(f"Local registry on {site.address}{' (TLS + htpasswd)' if auth else ''}") as progress:
        running, _ = site.running_server()
        server = choose_server(config, running)
        changed = site.write_config(CONTAINER_MOUNT if server == "container" else None) or running not in (None, server)
        if auth:
            changed |= site.ensure_certificates()
            changed |= site.ensure_htpasswd(site.desired_credentials())
            site.install_engine_ca()
        else:
            site.htpasswd.unlink(missing_ok=True)
        if running is not None and not changed:
            info = site.info()
            try:
                if RegistryClient(info, None, timeout=2.0).answers():
                    progress.done("already running")
                    return info
            except RegistryError:
                pass
        if running is not None:
            progress.update("restarting with the new configuration")
            site.stop()
        if server == "process" and shutil.which("docker-registry") is None:
            # Before the port check: on a systemd machine the package starts its own service on :5000.
            progress.update("installing Debian's docker-registry")
            apt.ensure_packages(["docker-registry"], error=RegistryError, why="for a local registry")
        check_port_free(site)
        how = f"the {config.registry.image} container" if server == "container" else "docker-registry as a host process"
        progress.update(f"starting {how}")
        try:
            if server == "container":
                site.start_container(config.registry.image)
            else:
                site.start_process()
            info = site.info()
            site.wait_until_answering(info)
        except BaseException:
            site.stop()  # nothing half-started stays behind
            raise
        progress.done(f"running as a {server}")
        return site.info()


def check_port_free(site: LocalSite) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex(("127.0.0.1", site.port)) == 0:
            raise RegistryError(
                f"port {site.port} on 127.0.0.1 is already taken by a process tfship did not start",
                "stop it (Debian's docker-registry service: systemctl disable --now docker-registry), "
                "or choose another port in registry.url / registry.auth_url",
            )


def choose_server(config: Config, running: str | None) -> str:
    """container or process: as configured; `auto` keeps what runs, else prefers the upstream image."""
    wanted = config.registry.server
    if wanted == "process":
        return "process"
    if wanted == "auto" and running is not None:
        return running
    if upstream_image_available(config):
        return "container"
    if wanted == "container":
        raise RegistryError(
            f"registry.server is 'container' but the Docker engine neither has nor can pull {config.registry.image}",
            "set registry.server: process (Debian's docker-registry on the host) or auto, or load that image",
        )
    return "process"


def upstream_image_available(config: Config) -> bool:
    """True when the engine has `registry.image` or pulls it within base.pull_timeout seconds."""
    try:
        client = docker_client.engine(config.base.pull_timeout)
    except DockerError:
        return False
    import docker.errors
    import requests.exceptions

    try:
        client.images.get(config.registry.image)
        return True
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(config.registry.image)
        return True
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    finally:
        client.close()


def _template(name: str, values: dict[str, str]) -> dict[str, Any]:
    text = string.Template((TEMPLATES / name).read_text()).substitute(values)
    return yaml.safe_load(text)


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
