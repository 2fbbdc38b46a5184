"""The world the fault tests break: a PostgreSQL server of their own (stopped and started by
them, never the machine's shared one), a Mosquitto of their own on a fixed port (restarted with
its persistence), the payment sandbox and an SMTP server over real sockets, the platform's
signing keys, and `caas worker` processes they start and kill."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from caas.app import create_app
from caas.core.db import make_engine, make_session_factory
from caas.core.net import free_port
from caas.core.settings import Settings
from caas.iot.local import LocalBroker, start_local_broker
from caas.iot.mosquitto import available as mosquitto_available
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial, ensure_demo_keys
from tests.billing.conftest import API_KEY, WEBHOOK_SECRET, PaymentSandbox, payment_sandbox
from tests.conftest import ScratchDatabases, SmtpInbox
from tests.faults.processes import PrivatePostgres, WorkerProcess, environment_of, warm_up
from tests.vehicles.support import CommittedDatabase

__all__ = ["payment_sandbox"]

# The platform's wait for the provider: long enough for a loaded machine.
PAYMENT_TIMEOUT = 5.0
# A manifest the car has not answered is published again this soon (the default is 30 s).
RESEND_SECONDS = 2.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    warm_up()  # the workers' fork server imports the platform meanwhile
    try:
        server = PrivatePostgres().init()
    except RuntimeError as error:
        pytest.skip(f"no private PostgreSQL server for the fault tests: {error}")
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def database(private_postgres: PrivatePostgres) -> CommittedDatabase:
    """The fault tests' database (schema and demo data) on their private server; its
    transactions really commit. Tests add their own cars and customers."""
    url = ScratchDatabases(private_postgres.admin_url).create()
    engine = make_engine(url)
    return CommittedDatabase(url, engine, make_session_factory(engine))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """Mosquitto on a port of its own that stays the same across restarts."""
    if not mosquitto_available():
        pytest.skip("mosquitto (with its dynamic security plugin) is not installed")
    with start_local_broker(
        tmp_path_factory.mktemp("faults-mqtt"), kind="mosquitto", port=free_port()
    ) as local:
        yield local


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("faults-keys")
    ensure_demo_keys(directory)
    return directory


@pytest.fixture
def signing(keys_dir: Path) -> Iterator[SigningMaterial]:
    """This process signs with the keys the workers read (`CAAS_OTA_KEYS_DIR`)."""
    material = ensure_demo_keys(keys_dir)
    ota.use_signing_material(material)
    yield material
    ota.use_signing_material(None)


@pytest.fixture(scope="session")
def settings(
    database: CommittedDatabase,
    broker: LocalBroker,
    smtp_server: SmtpInbox,
    payment_sandbox: PaymentSandbox,
    keys_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """What the API (in this process) and the workers (as `CAAS_*` variables) run with."""
    return Settings(
        env="test",
        database_url=database.url,
        data_dir=tmp_path_factory.mktemp("faults-data"),
        mqtt_url=broker.service_url,
        mqtt_admin_username=broker.admin_username,
        mqtt_admin_password=broker.admin_password,
        smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
        public_url="http://testserver",
        ota_keys_dir=keys_dir,
        ota_resend_seconds=RESEND_SECONDS,
        payment_url=payment_sandbox.url,
        payment_api_key=API_KEY,
        payment_webhook_secret=WEBHOOK_SECRET,
        payment_timeout_seconds=PAYMENT_TIMEOUT,
    )


@pytest.fixture(scope="session")
def api(settings: Settings, database: CommittedDatabase) -> FastAPI:
    """The platform's API in this process, built once: the first build imports every route,
    which takes seconds on a busy machine and must not fall inside a fault's window."""
    return create_app(settings=settings, sessions=database.sessions)


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[StartWorker]:
    """`start_worker(kill_at=None)`: a `caas worker` process with these settings (told to
    kill itself at a `caas.core.faults` point when `kill_at` is given); every one still running
    is stopped after the test, and their logs are printed (pytest shows them on failure)."""
    started: list[WorkerProcess] = []

    def start(*, kill_at: str | None = None) -> WorkerProcess:
        more = {"CAAS_FAULT_KILL_AT": kill_at} if kill_at else {}
        log_path = tmp_path / f"worker-{len(started) + 1}.log"
        worker = WorkerProcess(environment_of(settings, **more), log_path).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
        print(f"--- {worker.log_path.name} (exit {worker.exitcode}) ---\n{worker.log_tail()}")
