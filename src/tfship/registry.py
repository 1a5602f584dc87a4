"""Registries: tfship's local one (insecure, or TLS + bcrypt htpasswd) and a small client of the registry HTTP API.

The local registry is CNCF Distribution: the upstream `registry:2` image where the engine has or can pull it,
otherwise Debian's `docker-registry` package run as a host process (LAB.md §3). Everything it owns lives in the
state dir, one folder per port, so data, certificates and generated credentials survive restarts:

    <state>/registry/<port>/server/      config.yml, data/, certs/ (ca.crt, server.crt, server.key), htpasswd
                                         (the only folder a registry:2 container sees, mounted at /tfship)
    <state>/registry/<port>/ca/ca.key    the CA's key, never mounted
    <state>/registry/<port>/credentials.json   generated credentials (mode 0600), when none came from the env
    <state>/registry/<port>/registry.pid, registry.log   the host process

Any other registry works from config (`registry.local: false`, `url`, `insecure`, `ca_file`) with credentials
from TFSHIP_REGISTRY_USERNAME/TFSHIP_REGISTRY_PASSWORD or the Docker credential store.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import requests
import yaml

from tfship import docker_client
from tfship.config import Config, state_dir
from tfship.errors import ConfigError, DockerError, RegistryError
from tfship.host import proc
from tfship.progress import step

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TEMPLATES = Path(__file__).resolve().parents[2] / "registry"
# Where dockerd looks for a registry's CA (read on every connection, so no engine restart is needed).
ENGINE_CERTS_DIR = Path("/etc/docker/certs.d")
CONTAINER_MOUNT = "/tfship"
GENERATED_USERNAME = "tfship"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
USERNAME_ENV = "TFSHIP_REGISTRY_USERNAME"
PASSWORD_ENV = "TFSHIP_REGISTRY_PASSWORD"

Credentials = tuple[str, str]


class TransientRegistryError(RegistryError):
    """A failure worth retrying (5xx, reset connection, timeout)."""


@dataclass
class RegistryInfo:
    address: str  # host:port images are tagged with
    scheme: str  # http or https
    local: bool  # managed by tfship (registry.up)
    auth: bool  # TLS + htpasswd (local), or credentials expected (external)
    running: bool = False
    server: str = ""  # local: "process" or "container"
    ca_file: str = ""  # CA to verify its certificate with; empty: the system's
    detail: str = ""  # pid, container name, log

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.address}"

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    def describe(self) -> str:
        kind = "TLS + htpasswd" if self.auth and self.local else ("TLS" if self.scheme == "https" else "insecure HTTP")
        if not self.local:
            return f"external registry {self.base_url} ({kind}{', CA ' + self.ca_file if self.ca_file else ''})"
        state = f"running as a {self.server}" if self.running else "not running"
        extra = f"; {self.detail}" if self.detail else ""
        return f"local registry {self.base_url} ({kind}): {state}{extra}"


# --------------------------------------------------------------------------------------------------------------
# Addresses


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"registry address {address!r} is not host:port", "e.g. registry.url: 127.0.0.1:5000")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_address(config: Config, auth: bool | None = None) -> str:
    """host:port images go to: the local TLS registry's `auth_url` with auth, else `url`."""
    auth = config.registry.auth if auth is None else auth
    if config.registry.local and auth:
        return config.registry.auth_url
    return config.registry.url


def resolve(config: Config, auth: bool | None = None) -> RegistryInfo:
    """Where images go and how to reach it, without starting anything (`running` says whether it runs)."""
    auth = config.registry.auth if auth is None else auth
    address = target_address(config, auth)
    if not config.registry.local:
        ca = str(config.path(config.registry.ca_file)) if config.registry.ca_file else ""
        scheme = "http" if config.registry.insecure and not ca else "https"
        return RegistryInfo(address, scheme, local=False, auth=auth, running=True, server="external", ca_file=ca)
    site = LocalSite(address, auth)
    return site.info()


# --------------------------------------------------------------------------------------------------------------
# Credentials


def credentials(config: Config) -> Credentials | None:
    """(username, password) for the configured registry, or None when it needs none / none are known.

    Order: TFSHIP_REGISTRY_USERNAME + TFSHIP_REGISTRY_PASSWORD; for the local TLS registry, the credentials
    `registry.up --auth` generated; for any other, the Docker credential store (~/.docker/config.json).
    The local insecure registry has no credentials. The password is only ever held in memory.
    """
    from_env = _env_credentials()
    if config.registry.local and not config.registry.auth:
        return None
    if from_env:
        return from_env
    address = target_address(config)
    if config.registry.local:
        return LocalSite(address, auth=True).stored_credentials()
    return docker_store_credentials(address)


def _env_credentials() -> Credentials | None:
    username, password = os.environ.get(USERNAME_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if bool(username) != bool(password):
        missing = PASSWORD_ENV if username else USERNAME_ENV
        raise ConfigError(f"{missing} is not set but its partner is",
                          f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")
    return (username, password) if username else None


def docker_store_credentials(address: str) -> Credentials | None:
    """Credentials `docker login ADDRESS` stored (config.json auths, credsStore or credHelpers)."""
    import docker.auth
    import docker.errors

    try:
        entry = docker.auth.load_config().resolve_authconfig(address)
    except docker.errors.DockerException as exc:
        raise RegistryError(f"the Docker credential store failed for {address}: {exc}", "check ~/.docker/config.json")
    if not entry:
        return None
    fields = {key.lower(): value for key, value in entry.items()}
    if fields.get("username") and fields.get("password"):
        return fields["username"], fields["password"]
    return None


# --------------------------------------------------------------------------------------------------------------
# The local registry


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
        client = _docker_client()
        if client is None:
            return None
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
        if all(path.is_file() for path in (self.ca_cert, self.server_cert, self.server_key, self.ca_key)):
            return False
        self.certs_dir.mkdir(parents=True, exist_ok=True)
        self.ca_key.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.ca_key.parent, 0o700)
        openssl = "openssl"
        if shutil.which(openssl) is None:
            from tfship.host.apt import ensure_packages as apt_install

            apt_install(["openssl"], error=RegistryError)
        run = dict(error=RegistryError, timeout=60, hint="check that openssl works: openssl version")
        proc.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
                  "-keyout", self.ca_key, "-out", self.ca_cert, "-subj", f"/CN=tfship registry CA {self.port}",
                  "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                 **run)
        csr = self.certs_dir / "server.csr"
        extensions = self.certs_dir / "server.ext"
        extensions.write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
        )
        proc.run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.server_key, "-out", csr,
                  "-subj", "/CN=127.0.0.1"], **run)
        proc.run([openssl, "x509", "-req", "-sha256", "-days", "825", "-in", csr, "-CA", self.ca_cert,
                  "-CAkey", self.ca_key, "-CAcreateserial", "-CAserial", self.ca_key.parent / "ca.srl",
                  "-extfile", extensions, "-out", self.server_cert], **run)
        csr.unlink()
        extensions.unlink()
        for key in (self.ca_key, self.server_key):
            os.chmod(key, 0o600)
        return True

    def stored_credentials(self) -> Credentials | None:
        try:
            data = json.loads(self.credentials_file.read_text())
            return data["username"], data["password"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def desired_credentials(self) -> Credentials:
        """From the environment, else the stored ones, else new ones stored mode 0600."""
        from_env = _env_credentials()
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

    def engine_ca_paths(self) -> list[Path]:
        """certs.d entries for both names of this registry (127.0.0.1:PORT and localhost:PORT)."""
        return [ENGINE_CERTS_DIR / f"{host}:{self.port}" / "ca.crt" for host in ("127.0.0.1", "localhost")]

    def install_engine_ca(self) -> None:
        ca = self.ca_cert.read_bytes()
        for path in self.engine_ca_paths():
            if path.is_file() and path.read_bytes() == ca:
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(ca)
            except OSError as exc:
                raise RegistryError(
                    f"cannot install the registry CA for the Docker engine at {path}: {exc.strerror}",
                    f"as root: install -D -m 644 {self.ca_cert} {path}",
                )

    def remove_engine_ca(self) -> None:
        ca = self.ca_cert.read_bytes() if self.ca_cert.is_file() else None
        for path in self.engine_ca_paths():
            if ca is not None and path.is_file() and path.read_bytes() == ca:
                path.unlink()
                try:
                    path.parent.rmdir()
                except OSError:
                    pass

    # ---- start and stop

    def start_process(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        child = proc.start_detached(["docker-registry", "serve", self.config_file], self.log_file)
        self.pid_file.write_text(f"{child.pid}\n")

    def start_container(self, image: str) -> None:
        client = _docker_client(required=True)
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
            _terminate(pid)
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


def up(config: Config, auth: bool | None = None) -> RegistryInfo:
    """Start the local registry (TLS + htpasswd with `auth`), or check that an external one answers.

    Idempotent: a registry that runs with the same configuration is left alone; a changed configuration or
    changed credentials restart it. Data stays in the state dir across restarts.
    """
    auth = config.registry.auth if auth is None else auth
    if not config.registry.local:
        info = resolve(config, auth)
        RegistryClient(info, credentials(config)).check()
        info.detail = "answers (registry.local is false: tfship does not manage it)"
        return info
    site = LocalSite(target_address(config, auth), auth)
    with step(f"Local registry on {site.address}{' (TLS + htpasswd)' if auth else ''}") as progress:
        running, _ = site.running_server()
        server = _choose_server(config, running)
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
            from tfship.host.apt import ensure_packages as apt_install

            progress.update("installing Debian's docker-registry")
            apt_install(["docker-registry"], error=RegistryError)
        _check_port_free(site)
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


def down(config: Config, auth: bool | None = None, purge: bool = False) -> list[str]:
    """Stop the local registries (both, or the one `auth` names). Data is kept unless `purge`, which also
    deletes its certificates, credentials and the CA installed for the engine."""
    if not config.registry.local:
        return [f"registry {config.registry.url} is not local (registry.local is false): nothing to stop"]
    lines = []
    for secure in ([False, True] if auth is None else [auth]):
        site = LocalSite(target_address(config, secure), secure)
        stopped = site.stop()
        lines.append(f"local registry {site.address}: {'stopped' if stopped else 'was not running'}"
                     + ("" if purge else f" (data kept in {site.root})"))
        if purge:
            site.remove_engine_ca()
            shutil.rmtree(site.root, ignore_errors=True)
            lines.append(f"local registry {site.address}: data, certificates and credentials deleted")
    return lines


def status(config: Config) -> list[RegistryInfo]:
    """The local insecure and TLS registries (or the external one), with whether each runs and answers."""
    if not config.registry.local:
        info = resolve(config)
        try:
            info.running = RegistryClient(info, None).answers()
        except RegistryError as exc:
            info.running, info.detail = False, exc.one_line()
        return [info]
    return [resolve(config, auth=False), resolve(config, auth=True)]


def _check_port_free(site: LocalSite) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex(("127.0.0.1", site.port)) == 0:
            raise RegistryError(
                f"port {site.port} on 127.0.0.1 is already taken by a process tfship did not start",
                "stop it (Debian's docker-registry service: systemctl disable --now docker-registry), "
                "or choose another port in registry.url / registry.auth_url",
            )


def _choose_server(config: Config, running: str | None) -> str:
    """container or process: as configured; `auto` keeps what runs, else prefers the upstream image."""
    wanted = config.registry.server
    if wanted == "process":
        return "process"
    if wanted == "auto" and running is not None:
        return running
    if _upstream_image_available(config):
        return "container"
    if wanted == "container":
        raise RegistryError(
            f"registry.server is 'container' but the Docker engine neither has nor can pull {config.registry.image}",
            "set registry.server: process (Debian's docker-registry on the host) or auto, or load that image",
        )
    return "process"


def _upstream_image_available(config: Config) -> bool:
    """True when the engine has `registry.image` or pulls it within base.pull_timeout seconds."""
    client = _docker_client(timeout=config.base.pull_timeout)
    if client is None:
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


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our child (tests start it in-process); otherwise just probe it.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _docker_client(*, required: bool = False, timeout: int = 60):
    """The engine's client; None when no engine answers, unless it is `required`."""
    try:
        return docker_client.engine(timeout)
    except DockerError:
        if required:
            raise
        return None


def _template(name: str, values: dict[str, str]) -> dict[str, Any]:
    text = string.Template((TEMPLATES / name).read_text()).substitute(values)
    return yaml.safe_load(text)


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# --------------------------------------------------------------------------------------------------------------
# The registry HTTP API


class RegistryClient:
    """Reachability, credential checks and manifest digests through the registry HTTP API (v2)."""

    def __init__(self, info: RegistryInfo, creds: Credentials | None, timeout: float = HTTP_TIMEOUT):
        self.info = info
        self.creds = creds
        self.timeout = timeout
        self.session = requests.Session()
        # A proxy from the environment must not see traffic to this machine's registry.
        self.session.trust_env = not is_loopback(info.host)
        if info.scheme == "https":
            self.session.verify = info.ca_file or True

    def _request(self, method: str, path: str, *, with_auth: bool = True, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(
                method, f"{self.info.base_url}{path}", timeout=self.timeout,
                auth=self.creds if with_auth else None, **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            if "wrong version number" in str(exc).lower():
                raise RegistryError(f"registry {self.info.address} does not speak TLS",
                                    "it is a plain HTTP registry: set registry.insecure: true and no registry.ca_file")
            raise untrusted_tls(self.info, _short(exc))
        except requests.exceptions.ConnectionError as exc:
            if self.info.scheme == "http" and ("BadStatusLine" in str(exc) or "RemoteDisconnected" in str(exc)):
                raise RegistryError(f"registry {self.info.address} did not answer plain HTTP ({_short(exc)})",
                                    "it probably speaks TLS: set registry.insecure: false (and registry.ca_file)")
            raise unreachable(self.info, _short(exc))
        except requests.exceptions.Timeout:
            raise TransientRegistryError(f"registry {self.info.address} did not answer within {self.timeout:.0f}s",
                                         "check that it runs and is not overloaded")

    def answers(self) -> bool:
        """True when something speaking the registry API answers /v2/ (with or without asking for credentials)."""
        response = self._request("GET", "/v2/", with_auth=False)
        if response.status_code == 400 and "HTTPS" in response.text:
            raise RegistryError(f"registry {self.info.address} speaks TLS, not plain HTTP",
                                "set registry.insecure: false (and registry.ca_file if its CA is private)")
        return response.status_code in (200, 401)

    def check(self) -> bool:
        """Raise a RegistryError unless the registry answers and accepts our credentials (if it wants any).
        Returns whether it requires credentials."""
        if not self.answers():
            raise unreachable(self.info, "/v2/ did not answer as a registry")
        anonymous = self._request("GET", "/v2/", with_auth=False)
        if anonymous.status_code == 200:
            return False
        if self.creds is None:
            raise missing_credentials(self.info)
        if self._request("GET", "/v2/").status_code == 401:
            raise refused_credentials(self.info, self.creds[0])
        return True

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest the registry serves for repository:reference (Docker v2 schema 2), or None."""
        response = self._request("HEAD", f"/v2/{repository}/manifests/{reference}",
                                 headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"})
        if response.status_code == 404:
            return None
        self._raise_for(response, f"{repository}:{reference}")
        return response.headers.get("Docker-Content-Digest")

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        response = self._request("GET", f"/v2/{repository}/manifests/{reference}",
                                 headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"})
        self._raise_for(response, f"{repository}:{reference}")
        return response.json()

    def _raise_for(self, response: requests.Response, what: str) -> None:
        if response.status_code == 401:
            raise refused_credentials(self.info, self.creds[0]) if self.creds else missing_credentials(self.info)
        if response.status_code >= 500:
            raise TransientRegistryError(f"registry {self.info.address} answered {response.status_code} for {what}",
                                         "retry; see the registry's log")
        if response.status_code >= 400:
            raise RegistryError(f"registry {self.info.address} answered {response.status_code} for {what}",
                                "check the repository name and your access")


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("certificate verify failed", "Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker
    return text[:160]


# --------------------------------------------------------------------------------------------------------------
# The error catalog: one line each, with the fix


def _start_hint(info: RegistryInfo) -> str:
    return f"run: invoke registry.up{' --auth' if info.auth else ''}"


def unreachable(info: RegistryInfo, reason: str) -> RegistryError:
    hint = _start_hint(info) if info.local else f"check registry.url ({info.address}) and that the registry runs"
    return RegistryError(f"registry {info.base_url} is unreachable ({reason})", hint)


def untrusted_tls(info: RegistryInfo, reason: str) -> RegistryError:
    if info.local:
        hint = "run: invoke registry.up --auth (it reinstalls the CA it generated)"
    else:
        hint = (f"set registry.ca_file to the CA that signed its certificate and install it for the engine "
                f"at {ENGINE_CERTS_DIR}/{info.address}/ca.crt")
    return RegistryError(f"TLS to registry {info.address} is not trusted ({reason})", hint)


def missing_credentials(info: RegistryInfo) -> RegistryError:
    return RegistryError(
        f"registry {info.address} answered 401: no basic auth credentials",
        f"set {USERNAME_ENV} and {PASSWORD_ENV}"
        + (" to the credentials registry.up --auth was given" if info.local else f", or docker login {info.address}"),
    )


def refused_credentials(info: RegistryInfo, username: str) -> RegistryError:
    return RegistryError(
        f"registry {info.address} answered 401: it refused the password of user {username!r}",
        f"check {PASSWORD_ENV}" + (" against the one registry.up --auth was given" if info.local else ""),
    )


def http_not_allowed(info: RegistryInfo) -> RegistryError:
    return RegistryError(
        f"the Docker engine does not allow plain HTTP to registry {info.address}",
        f'add "insecure-registries": ["{info.address}"] to /etc/docker/daemon.json and restart dockerd, '
        "or give the registry TLS (registry.insecure: false, registry.ca_file)",
    )


def explain(message: str, info: RegistryInfo, username: str | None) -> RegistryError:
    """Map a Docker engine error about a registry (push stream errorDetail, login) to a catalog entry;
    `username` is the user we authenticated as (None: no credentials were sent)."""
    text = message.lower()
    if "server gave http response to https client" in text:
        return http_not_allowed(info)
    if "x509" in text or "certificate" in text:
        return untrusted_tls(info, "the Docker engine says: " + message.strip()[:120])
    if "no basic auth credentials" in text or "authentication required" in text or "unauthorized" in text:
        return refused_credentials(info, username) if username else missing_credentials(info)
    if "denied" in text:
        return RegistryError(f"registry {info.address} denied the push: {message.strip()[:160]}",
                             "check that your user may push to that repository")
    if "connection refused" in text or "no such host" in text:
        error = unreachable(info, message.strip()[:120])
        return TransientRegistryError(error.message, error.hint)
    if any(marker in text for marker in TRANSIENT_MARKERS) or _has_5xx(text):
        return TransientRegistryError(f"registry {info.address} failed transiently: {message.strip()[:160]}",
                                      "retry; see the registry's log")
    return RegistryError(f"pushing to registry {info.address} failed: {message.strip()[:200]}",
                         "see the Docker engine's log for details")


TRANSIENT_MARKERS = (
    "eof", "connection reset", "timeout", "timed out", "broken pipe", "temporarily", "too many requests",
)


def _has_5xx(text: str) -> bool:
    return ("status" in text or "http" in text) and any(str(code) in text for code in (500, 502, 503, 504))


def engine_allows_http(registry_config: dict[str, Any], address: str) -> bool:
    """Whether the engine (docker info's RegistryConfig) lets plain HTTP reach `address`."""
    host, _ = split_address(address)
    if is_loopback(host):
        return True
    indexes = registry_config.get("IndexConfigs") or {}
    index = indexes.get(address) or indexes.get(host)
    if index is not None and index.get("Secure") is False:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.gethostbyname(host))
        except OSError:
            return False
    cidrs = registry_config.get("InsecureRegistryCIDRs") or []
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
