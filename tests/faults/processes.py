"""The processes the fault tests start, stop and kill: a private PostgreSQL server, worker
processes, an SMTP server that can go away and come back on the same port.

Workers are `caas worker` itself (`caas.cli.worker`, settings from `CAAS_*` variables), run in
processes forked from a multiprocessing fork server that imported the platform once: a fresh
interpreter spends seconds importing it on a busy machine, and these tests start a worker again
after every kill. Each one is a process of its own, with its own connections, that `kill -9`
ends as it would end any other.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import io
import multiprocessing
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from email import message_from_bytes
from email.message import Message
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from caas.core.net import free_port, port_open
from caas.core.settings import Settings

# Imported once by the fork server, so a worker starts in a fraction of a second.
WORKER_MODULES = (
    "caas.cli",
    "caas.runtime",
    "caas.worker",
    "caas.iot.bridge",
    "caas.billing.resolve",
    "caas.factory.jobs",
    "caas.iot.jobs",
    "caas.notifications.jobs",
    "caas.ota.jobs",
    "caas.ownership.jobs",
    "caas.registration.jobs",
    "caas.releases.jobs",
    "caas.store.jobs",
    "caas.store.purchases",
    "caas.upkeep.jobs",
    "caas.upkeep.readings",
)

_context: ForkServerContext | None = None


def _fork_server() -> ForkServerContext:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        _context = context
    return _context


def warm_up() -> None:
    """Start the fork server now (it imports the platform in the background), so the first
    worker does not wait for it."""
    from multiprocessing import forkserver

    _fork_server()
    forkserver.ensure_running()


def _preload() -> None:
    for name in WORKER_MODULES:
        importlib.import_module(name)


_preload()  # in the fork server, which imports this module before its first fork


def _orphaned(test_process: int) -> None:
    """End this worker when the tests' process is gone (killed by a timeout, say), so no
    worker outlives the run."""
    while True:
        time.sleep(1)
        try:
            os.kill(test_process, 0)
        except ProcessLookupError:
            os._exit(1)


def _run_worker(environment: dict[str, str], log_path: str, test_process: int) -> None:
    """In the forked process: `caas worker` with `environment`, its output to `log_path`."""
    threading.Thread(target=_orphaned, args=(test_process,), daemon=True).start()
    output = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(output, 1)
    os.dup2(output, 2)
    for stream in (sys.stdout, sys.stderr):  # line by line: a killed worker keeps its log
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every stack
    os.environ.update(environment)
    from caas.cli import worker
    from caas.core.settings import get_settings
    from caas.ota import service

    get_settings.cache_clear()
    service.use_signing_material(None)  # read from CAAS_OTA_KEYS_DIR, as `caas worker` does
    worker()


def environment_of(settings: Settings, **more: str) -> dict[str, str]:
    """`settings` as the `CAAS_*` variables `caas worker` reads."""
    environment = {
        f"CAAS_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }
    # JSON lines, as in production (a worker's output is not a terminal).
    environment.update(CAAS_LOG_FORMAT="json", CAAS_LOG_LEVEL="INFO")
    environment.update(more)
    return environment


class WorkerProcess:
    """One `caas worker` process; `kill()` is `kill -9`, `stop()` is SIGTERM (a clean stop)."""

    def __init__(self, environment: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.process: BaseProcess = _fork_server().Process(
            target=_run_worker,
            args=(dict(environment), str(log_path), os.getpid()),
            daemon=True,
        )

    def start(self) -> WorkerProcess:
        self.process.start()
        return self

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def kill(self) -> None:
        if self.process.pid is not None and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(10)

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(15)
        if self.process.is_alive():
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- PostgreSQL of our own ---------------------------------------------------------------------


def _binaries() -> Path | None:
    """Debian's newest server binaries, else pgserver's."""
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / "pg_ctl").exists():
            return directory
    with contextlib.suppress(ImportError):
        import pgserver  # type: ignore[import-untyped,unused-ignore]

        directory = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (directory / "pg_ctl").exists():
            return directory
    return None


def _system_user() -> str | None:
    """Who runs the server: PostgreSQL refuses root, so root hands it to `postgres` (or to
    `pgserver`, made as pgserver makes it)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    # No Debian server here: the user pgserver makes for its own embedded server.
    from pgserver.utils import ensure_user_exists  # type: ignore[import-untyped,unused-ignore]

    ensure_user_exists("pgserver")
    return "pgserver"


class PrivatePostgres:
    """A PostgreSQL server of these tests only, on a free port, that they stop and start.

    Never the machine's shared server: stopping that one would break everyone else's tests.
    Durability is off (fsync), which a clean stop does not need.
    """

    def __init__(self) -> None:
        binaries = _binaries()
        if binaries is None:
            raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
        self.binaries = binaries
        self.user = _system_user()
        self.root = Path(tempfile.mkdtemp(prefix="caas-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.binaries / program), *arguments]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")

    def init(self) -> PrivatePostgres:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
            "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a restart by the operator."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def running(self) -> bool:
        return port_open("127.0.0.1", self.port)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# --- SMTP that goes away ---------------------------------------------------------------------


class RestartableSmtp:
    """A real SMTP server on a fixed port that can be stopped and started again there; every
    message it accepted is kept, parsed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if address in (m.get("To") or "")]
