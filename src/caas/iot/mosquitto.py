"""A private Mosquitto 2 broker for the demo, the benchmarks and the tests.

It listens on 127.0.0.1 only, refuses anonymous clients, and keeps its state (retained messages,
sessions, and the dynamic security plugin's clients and roles) in its own data directory. The
plugin's file is written before the broker starts with one account, the administrator, whose
only right is the plugin's control API (`$CONTROL/dynamic-security/v1`): cars and the platform's
service account are created through that API by `caas.iot.broker.DynsecAdmin`, as they would be
on a production broker.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from caas.core.net import free_port, port_open
from caas.iot.broker import car_role, role_acls
from caas.iot.rules import MAX_PACKET_SIZE, car_permissions

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
PLUGIN_NAME = "mosquitto_dynamic_security.so"
ADMIN_ROLE = "caas-admin"
CONTROL_TOPICS = "$CONTROL/dynamic-security/#"
# What the plugin hashes passwords with; the administrator's hash is written by us.
_PBKDF2_ITERATIONS = 1000

_BINARY_CANDIDATES = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
_PLUGIN_DIRS = (
    "/usr/lib/*-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/lib/mosquitto",
    "/usr/local/lib",
    "/usr/local/lib/mosquitto",
    "/opt/homebrew/lib",
    "/usr/local/opt/mosquitto/lib",
)


class MosquittoUnavailable(RuntimeError):
    """The mosquitto binary or its dynamic security plugin is not installed here."""


class MosquittoFailed(RuntimeError):
    """The broker exited or did not accept connections in time."""


def find_binary() -> Path | None:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return next((Path(p) for p in _BINARY_CANDIDATES if Path(p).is_file()), None)


def find_plugin() -> Path | None:
    """The dynamic security plugin, looked for in the usual library directories."""
    for pattern in _PLUGIN_DIRS:
        root, _, rest = pattern.rpartition("/")
        for directory in sorted(Path(root).glob(rest)):
            candidate = directory / PLUGIN_NAME
            if candidate.is_file():
                return candidate
    return None


def available() -> bool:
    """Whether a private Mosquitto can be started here (binary and plugin installed)."""
    return find_binary() is not None and find_plugin() is not None


def _password_fields(password: str) -> dict[str, Any]:
    """The plugin's stored form of a password: PBKDF2-SHA512 over a random salt, base64."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _PBKDF2_ITERATIONS,
    }


def write_dynsec_config(path: Path, *, admin_username: str, admin_password: str) -> None:
    """Create the plugin's file, or update its administrator in place, keeping everything else.

    Nothing is allowed by default: every account gets exactly what its roles grant, including
    the right to receive the messages its subscriptions match.
    """
    config: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    config["defaultACLAccess"] = {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    admin_role = {
        "rolename": ADMIN_ROLE,
        "textname": "Administers the dynamic security plugin, nothing else",
        "acls": [
            {"acltype": acltype, "topic": CONTROL_TOPICS, "allow": True, "priority": 0}
            for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern")
        ],
    }
    roles = [r for r in config.get("roles", []) if r.get("rolename") != ADMIN_ROLE]
    config["roles"] = [admin_role, *roles]
    clients = [c for c in config.get("clients", []) if c.get("username") != admin_username]
    admin = {
        "username": admin_username,
        "textname": "caas broker administrator",
        "roles": [{"rolename": ADMIN_ROLE}],
        **_password_fields(admin_password),
    }
    config["clients"] = [admin, *clients]
    config.setdefault("groups", [])
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(config, indent=2))
    temporary.chmod(0o600)
    temporary.replace(path)


def write_car_accounts(path: Path, cars: Iterable[tuple[str, str]]) -> int:
    """Add (or replace) the accounts of many cars, `(vin, password)`, in the plugin's file while
    the broker is stopped: each car's own role and its client id pinned to its VIN, exactly
    what `DynsecAdmin.add_car` creates through the plugin's API. Return how many were written.

    For loading thousands of cars at once (the benchmarks): the plugin of Mosquitto 2.0 writes
    its whole file again after every command, so adding N cars through its API costs N
    rewrites of a file that grows with N (a few cars a second at ten thousand).
    """
    cars = list(cars)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # hashing frees the GIL
        hashed = list(pool.map(_password_fields, [password for _, password in cars]))
    vins = {vin for vin, _ in cars}
    roles = {car_role(vin) for vin in vins}
    config: dict[str, Any] = json.loads(path.read_text())
    config["roles"] = [role for role in config.get("roles", []) if role["rolename"] not in roles]
    config["roles"] += [
        {"rolename": car_role(vin), "acls": role_acls(car_permissions(vin))} for vin, _ in cars
    ]
    config["clients"] = [c for c in config.get("clients", []) if c["username"] not in vins]
    config["clients"] += [
        {"username": vin, "clientid": vin, "roles": [{"rolename": car_role(vin)}], **fields}
        for (vin, _), fields in zip(cars, hashed, strict=True)
    ]
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(config))
    temporary.chmod(0o600)
    temporary.replace(path)
    return len(cars)


@dataclass(frozen=True)
class TlsListener:
    """A second listener speaking MQTT over TLS with this certificate and key (PEM files);
    `cafile`, when given, is the chain the broker sends along with its certificate."""

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    port: int | None = None  # None: a free port


class PrivateMosquitto:
    """A Mosquitto process of our own, on 127.0.0.1, with its state in `data_dir`; with `tls`,
    also a TLS listener (`tls_port`, `tls_url`) with the same accounts.

    Usable as a context manager; `stop()` ends it cleanly (it saves its state on the way out),
    so a second start on the same directory keeps the cars' accounts and retained messages.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        admin_username: str = "caas-admin",
        admin_password: str | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.tls = tls
        self._requested_tls_port: int | None = None
        self.tls_port = 0
        self.host = HOST
        self._requested_port = port
        self.port = port or 0
        self.admin_username = admin_username
        self.admin_password = admin_password or secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None

    available = staticmethod(available)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def dynsec_path(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    @property
    def url(self) -> str:
        """Where clients connect (without credentials)."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        """Where clients connect over TLS (without credentials); None without a TLS listener."""
        return f"mqtts://{self.host}:{self.tls_port}" if self.tls is not None else None

    def _tls_lines(self) -> list[str]:
        if self.tls is None:
            return []
        lines = [
            f"listener {self.tls_port} {self.host}",
            f"certfile {self.tls.certfile}",
            f"keyfile {self.tls.keyfile}",
        ]
        if self.tls.cafile is not None:
            lines.append(f"cafile {self.tls.cafile}")
        return lines

    def _write_config(self, binary: Path, plugin: Path) -> None:
        lines = [
            "# Written by caas.iot.mosquitto; rewritten at every start.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"listener {self.port} {self.host}",
            "set_tcp_nodelay true",
            f"max_packet_size {MAX_PACKET_SIZE}",
            *self._tls_lines(),
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"plugin {plugin}",
            f"plugin_opt_config_file {self.dynsec_path}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # run as root: do not drop to a user who cannot write here
        self.config_path.write_text("\n".join(lines) + "\n")
        log.debug("mosquitto.config_written", path=str(self.config_path), binary=str(binary))

    def start(self, timeout: float = 10.0) -> PrivateMosquitto:
        binary, plugin = find_binary(), find_plugin()
        if binary is None or plugin is None:
            raise MosquittoUnavailable(
                "mosquitto and its dynamic security plugin are needed (Debian: apt-get install "
                "mosquitto)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_dynsec_config(
            self.dynsec_path, admin_username=self.admin_username, admin_password=self.admin_password
        )
        attempts = 1 if self._requested_port else 3  # a port chosen free may be taken meanwhile
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port(self.host)
            if self.tls is not None:
                self.tls_port = self.tls.port or self._requested_tls_port or free_port(self.host)
            self._write_config(binary, plugin)
            try:
                self._launch(binary, timeout)
            except MosquittoFailed:
                if attempt == attempts:
                    raise
                log.warning("mosquitto.retry_port", port=self.port)
            else:
                break
        log.info("mosquitto.started", url=self.url, data_dir=str(self.data_dir))
        return self

    def restart(self, timeout: float = 10.0) -> PrivateMosquitto:
        """Stop the broker and start it again on the same port with the same directory."""
        self.stop()
        self._requested_port = self._requested_port or self.port
        self._requested_tls_port = self._requested_tls_port or self.tls_port or None
        return self.start(timeout)

    def _launch(self, binary: Path, timeout: float) -> None:
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                [str(binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not all(port_open(self.host, port, timeout=0.2) for port in self._ports()):
            if self.process.poll() is not None:
                self.process = None
                raise MosquittoFailed(f"mosquitto exited at start:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise MosquittoFailed(f"mosquitto did not listen within {timeout} s")
            time.sleep(0.01)

    def _ports(self) -> list[int]:
        return [self.port] + ([self.tls_port] if self.tls is not None else [])

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the broker to exit (it saves its state), killing it if it does not in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("mosquitto.stopped", url=self.url)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
