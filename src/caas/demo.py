"""`caas demo`: the platform and the outside world it talks to, in one process on 127.0.0.1.

One asyncio loop serves the API and web pages, the factory, registry and payment simulators, the
mail catcher's inbox page and the simulated cars' screens, each a uvicorn server on its own port;
the simulated cars live on the same loop. The worker delivers the outbox and talks MQTT with the
cars (a private Mosquitto when installed, else the embedded broker) in threads. The database is
an embedded PostgreSQL under the data directory unless CAAS_DATABASE_URL names one. Ctrl-C (or
SIGTERM) stops all of it, the database last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from caas.core.db import unit_of_work
from caas.core.migrate import upgrade
from caas.core.net import free_port
from caas.core.settings import Settings
from caas.demo_cars import DemoCars
from caas.demo_customers import (
    DEMO_CUSTOMERS,
    DemoCustomer,
    Endpoints,
    Progress,
    customer_logins,
    delivered_cars,
    prepare,
)
from caas.iot.local import LocalBroker, start_local_broker
from caas.releases.demo import ensure_demo_release
from caas.runtime import Runtime, StartupError, display_url, read_settings
from caas.seed import DemoLogin
from caas_sim.mail import MailCatcher

HOST = "127.0.0.1"
EMBEDDED_DATABASE = "caas"
STATE_FILE = "demo.json"
FACTORY_EVENTS_PATH = "/api/v1/factory/events"
PAYMENT_EVENTS_PATH = "/api/v1/webhooks/payments"

# How long a ready customer's delivered car may take to come online before the demo says so.
ONLINE_SECONDS = 60.0

TEST_CARDS = [
    ("4242 4242 4242 4242", "succeeds"),
    ("4000 0000 0000 0002", "is declined"),
    ("4000 0000 0000 0119", "fails with a provider error"),
    ("4000 0000 0000 0259", "succeeds, but the answer arrives late"),
]


@dataclass(frozen=True)
class DemoOptions:
    """What `caas demo` was asked for; a port of 0 means "any free port"."""

    port: int = 8000
    data_dir: Path = Path(".caas")
    factory_port: int = 0
    registry_port: int = 0
    payment_port: int = 0
    mail_port: int = 0
    smtp_port: int = 0
    cars_port: int = 0
    stage_seconds: float = 5.0
    registry_rejection_rate: float = 0.15


@dataclass(frozen=True)
class DemoPorts:
    api: int
    factory: int
    registry: int
    payments: int
    mail: int
    cars: int
    smtp: int


@dataclass(frozen=True)
class DemoUrls:
    portal: str
    finance: str
    releases: str
    api_docs: str
    mail_inbox: str
    factory: str
    registry: str
    payments: str
    cars: str
    smtp: str

    @classmethod
    def on(cls, ports: DemoPorts) -> DemoUrls:
        return cls(
            portal=f"{_http(ports.api)}/login",
            finance=f"{_http(ports.api)}/operator/finance",
            releases=f"{_http(ports.api)}/operator/releases",
            api_docs=f"{_http(ports.api)}/docs",
            mail_inbox=f"{_http(ports.mail)}/",
            factory=_http(ports.factory),
            registry=_http(ports.registry),
            payments=_http(ports.payments),
            cars=f"{_http(ports.cars)}/cars",
            smtp=f"smtp://{HOST}:{ports.smtp}",
        )


def _http(port: int) -> str:
    return f"http://{HOST}:{port}"


class DemoServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the demo, which stops every server together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_demo(options: DemoOptions, console: Console, progress: Console) -> None:
    """Start everything, print where it is, serve until interrupted, then stop everything.

    `console` gets the table of URLs and logins, `progress` the steps while starting.
    """
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _refuse_second_demo_on(data_dir)
    _quiet_startup_logs()
    with ExitStack() as stack:
        sockets = _listen_on_ports(options, stack)
        ports = DemoPorts(
            **{name: sock.getsockname()[1] for name, sock in sockets.items()},
            smtp=options.smtp_port or free_port(HOST),
        )
        urls = DemoUrls.on(ports)
        database_url = read_settings().database_url
        database = display_url(database_url) if database_url else "the embedded PostgreSQL"
        if database_url is None:
            with progress.status("Starting the embedded PostgreSQL…"):
                database_url = _start_embedded_database(data_dir / "pg", stack)
            progress.print(f"[green]✓[/] Embedded PostgreSQL running in {data_dir / 'pg'}")
        with progress.status("Starting the MQTT broker…"):
            broker = start_local_broker(data_dir / "mqtt")
            stack.callback(broker.stop)
        progress.print(f"[green]✓[/] MQTT broker ({broker.kind}) on {broker.url}")
        settings = demo_settings(ports, database_url=database_url, data_dir=data_dir, broker=broker)
        runtime = Runtime.connect(settings)
        stack.callback(runtime.close)
        with progress.status(f"Migrating {database}…"):
            upgrade(database_url)
        progress.print(f"[green]✓[/] Schema of {database} is up to date")
        with progress.status("Loading the demo data…"):
            logins = runtime.load_demo_data()
            with unit_of_work(runtime.sessions) as session:
                delivered = delivered_cars(session)
                ensure_demo_release(session, settings, now=runtime.clock.now())
            logins += customer_logins(delivered)
        progress.print("[green]✓[/] Demo data ready (a second run keeps it and adds nothing)")

        with progress.status("Starting the simulators, the worker and the web servers…"):
            apps, catcher, cars = _build_apps(runtime, options, ports, data_dir, stack, broker)
            worker = runtime.create_worker()
            worker.start()
            stack.callback(worker.stop)
        customers = ReadyCustomers(
            Endpoints(platform=_http(ports.api), payments=urls.payments, factory=urls.factory),
            catcher=catcher,
            cars=cars,
            screens=urls.cars,
            console=console,
            progress=progress,
            on_change=lambda: _write_state(
                data_dir / STATE_FILE, settings, ports, urls, logins, customers.state()
            ),
        )
        customers.delivered.update(delivered)

        def ready() -> None:
            _write_state(data_dir / STATE_FILE, settings, ports, urls, logins, customers.state())
            stack.callback(_remove_state, data_dir / STATE_FILE)
            stack.callback(customers.stop)  # before demo.json is removed
            print_welcome(console, urls, logins, data_dir)
            customers.start()

        servers = {name: (_server_for(app, settings), sockets[name]) for name, app in apps.items()}
        try:
            asyncio.run(_serve(servers, on_ready=ready, on_stop=customers.stop))
        except SystemExit:  # uvicorn exits this way when an app's startup fails
            raise StartupError("a server failed to start (see the log above)") from None
        progress.print("Stopping…")


def demo_settings(
    ports: DemoPorts, *, database_url: str, data_dir: Path, broker: LocalBroker
) -> Settings:
    """The platform's settings pointed at this demo's own simulators, mail catcher and broker."""
    return read_settings(
        database_url=database_url,
        data_dir=data_dir,
        public_url=_http(ports.api),
        factory_url=_http(ports.factory),
        registry_url=_http(ports.registry),
        payment_url=_http(ports.payments),
        payment_public_url=_http(ports.payments),
        smtp_url=f"smtp://{HOST}:{ports.smtp}",
        mqtt_url=broker.service_url,
        mqtt_admin_username=broker.admin_username,
        mqtt_admin_password=broker.admin_password,
        vehicle_sim_url=_http(ports.cars),
    )


def print_welcome(
    console: Console, urls: DemoUrls, logins: list[DemoLogin], data_dir: Path
) -> None:
    places = Table(title="caas demo is running: press Ctrl-C to stop", title_justify="left")
    places.add_column("What", style="bold")
    places.add_column("Where", no_wrap=True)
    places.add_row("Portal and intranet (log in here)", urls.portal)
    places.add_row("Operator's finance: revenue, refunds, CSV (as the operator)", urls.finance)
    places.add_row(
        "Operator's software releases: publish the draft, roll it out to the cars", urls.releases
    )
    places.add_row("API documentation (OpenAPI)", urls.api_docs)
    places.add_row("Mail inbox (customers' e-mails)", urls.mail_inbox)
    places.add_row("Factory simulator (OpenAPI)", f"{urls.factory}/docs")
    places.add_row("Registry simulator, ES FR DE IT PT (OpenAPI)", f"{urls.registry}/docs")
    places.add_row("Payment sandbox (OpenAPI)", f"{urls.payments}/docs")
    places.add_row("Simulated cars: their screens", urls.cars)
    places.add_row("SMTP (mail catcher)", urls.smtp)
    console.print(places)

    console.print(logins_table(logins, with_customers=True))
    cards = ", ".join(f"{number} {outcome}" for number, outcome in TEST_CARDS)
    console.print(f"Test cards: {cards}.", soft_wrap=True)
    console.print(
        f"Data stays in {data_dir}; ports and settings are in {data_dir / STATE_FILE}.",
        soft_wrap=True,
    )


def logins_table(logins: list[DemoLogin], *, with_customers: bool = False) -> Table:
    table = Table(title="Demo logins", title_justify="left")
    table.add_column("Role", style="bold")
    table.add_column("E-mail", no_wrap=True)
    table.add_column("Password", no_wrap=True)
    table.add_column("Who")
    for login in logins:
        table.add_row(login.role, login.email, login.password, login.note)
    if with_customers:
        table.add_row(
            "customer",
            "a new buyer's e-mail",
            "chosen on activation",
            "sell a car, then open the activation e-mail",
        )
    return table


class ReadyCustomers:
    """Walks the demo's ready customers through the journey in the background, with a live
    progress line, and says when each car is delivered and online."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        catcher: MailCatcher,
        cars: DemoCars,
        screens: str,
        console: Console,
        progress: Console,
        on_change: Callable[[], None],
    ) -> None:
        self.endpoints = endpoints
        self.catcher = catcher
        self.cars = cars
        self.screens = screens
        self.console = console
        self.progress = progress
        self.on_change = on_change
        self.delivered: dict[str, str] = {}
        self.online: set[str] = set()
        self.journeys = {customer.email: Progress(customer) for customer in DEMO_CUSTOMERS}
        self.lock = threading.Lock()
        self.writing = threading.Lock()  # one writer of demo.json at a time
        self.stopped = False

    def stop(self) -> None:
        """The demo stops: demo.json is no longer written, failures no longer reported."""
        with self.writing:
            self.stopped = True

    def _changed(self) -> None:
        with self.writing:
            if not self.stopped:
                self.on_change()

    def state(self) -> list[dict[str, Any]]:
        """The ready customers for demo.json: login, country, and the car once delivered."""
        with self.lock:
            return [
                {
                    "email": customer.email,
                    "password": customer.password,
                    "name": customer.name,
                    "country": customer.country,
                    "platform": customer.platform,
                    "plan_features": list(customer.features),
                    "vin": self.delivered.get(customer.email),
                    "online": self.delivered.get(customer.email) in self.online,
                    "screen": f"{self.screens}/{self.delivered[customer.email]}"
                    if customer.email in self.delivered
                    else None,
                    "store": f"/portal/cars/{self.delivered[customer.email]}/store"
                    if customer.email in self.delivered
                    else None,
                }
                for customer in DEMO_CUSTOMERS
            ]

    def start(self) -> None:
        threading.Thread(target=self._run, name="demo-customers", daemon=True).start()

    def _run(self) -> None:
        walkers = [
            threading.Thread(target=self._walk, args=(customer,), daemon=True)
            for customer in DEMO_CUSTOMERS
        ]
        for walker in walkers:
            walker.start()
        with self.progress.status(self._line()) as status:
            while any(walker.is_alive() for walker in walkers):
                status.update(self._line())
                time.sleep(0.2)

    def _line(self) -> str:
        parts = []
        for journey in self.journeys.values():
            where = "ready" if journey.customer.email in self.online else journey.state
            parts.append(f"{journey.customer.name}: {where.replace('_', ' ')}")
        return "Preparing the demo customers' cars… " + " · ".join(parts)

    def _walk(self, customer: DemoCustomer) -> None:
        journey = self.journeys[customer.email]
        try:
            vin = prepare(
                customer, self.endpoints, activation_link=self._activation_link, progress=journey
            )
        except Exception as error:  # noqa: BLE001 - one line for a person, the demo goes on
            journey.state = "not ready"
            if self.stopped:
                return
            self.console.print(
                f"[red]✗[/] {customer.name}'s car could not be prepared: {error}", soft_wrap=True
            )
            return
        with self.lock:
            self.delivered[customer.email] = vin
        self._changed()
        journey.state = "delivered, waiting for the car to come online"
        deadline = time.monotonic() + ONLINE_SECONDS
        while not self._online(vin) and time.monotonic() < deadline:
            time.sleep(0.2)
        online = self._online(vin)
        if online:
            with self.lock:
                self.online.add(vin)
            self._changed()
        self.console.print(
            f"[green]✓[/] Customer {customer.email} (password {customer.password}), "
            f"car delivered: {vin}{'' if online else ' (not online yet)'}; "
            f"its screen: {self.screens}/{vin}",
            soft_wrap=True,
        )

    def _online(self, vin: str) -> bool:
        fleet = self.cars.fleet
        return vin in fleet and fleet.agent(vin).online

    def _activation_link(self, email: str) -> str | None:
        for message in reversed(self.catcher.to(email)):
            for link in message.links:
                if "/activate?token=" in link:
                    return link
        return None


def _listen_on_ports(options: DemoOptions, stack: ExitStack) -> dict[str, socket.socket]:
    """Bind every HTTP port now: a taken port fails before anything starts, and a free one
    chosen by the system cannot be taken by someone else meanwhile."""
    wanted = {
        "api": (options.port, "--port"),
        "factory": (options.factory_port, "--factory-port"),
        "registry": (options.registry_port, "--registry-port"),
        "payments": (options.payment_port, "--payment-port"),
        "mail": (options.mail_port, "--mail-port"),
        "cars": (options.cars_port, "--cars-port"),
    }
    sockets: dict[str, socket.socket] = {}
    for name, (port, option) in wanted.items():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stack.callback(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as error:
            raise StartupError(
                f"port {port} on {HOST} is not free ({error.strerror}): "
                f"choose another with {option}"
            ) from None
        sock.listen(128)
        sockets[name] = sock
    return sockets


def _start_embedded_database(pgdata: Path, stack: ExitStack) -> str:
    """Start (or reuse) the PostgreSQL under `pgdata`; stopped when the demo stops."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; pgserver copes.
        warnings.simplefilter("ignore")
        import pgserver  # noqa: F401

    from caas.core.embedded import start_embedded_postgres

    _forget_dead_handles(pgdata)
    try:
        server, uri = start_embedded_postgres(pgdata)
    except Exception as error:  # noqa: BLE001 - any failure here is reported in one line
        raise StartupError(
            f"the embedded PostgreSQL did not start ({type(error).__name__}: {error}); "
            f"see {pgdata / 'log'} or set CAAS_DATABASE_URL"
        ) from None
    stack.callback(server.cleanup)
    with psycopg.connect(uri, autocommit=True) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
        ).fetchone()
        if exists is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE)))
    url: str = make_url(uri).set(database=EMBEDDED_DATABASE).render_as_string(hide_password=False)
    return url


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops its server when the last process using it exits, counting processes in
    a file; one killed outright stays listed forever. Forget those so Ctrl-C stops it again."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _process_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_second_demo_on(data_dir: Path) -> None:
    state = data_dir / STATE_FILE
    if not state.exists():
        return
    try:
        running = json.loads(state.read_text())
        pid = int(running["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if pid != os.getpid() and _process_alive(pid):
        raise StartupError(
            f"a demo (pid {pid}, {running.get('urls', {}).get('portal', '?')}) already runs on "
            f"{data_dir}: stop it, or use another --data-dir (delete {state} if it is stale)"
        )


def _build_apps(
    runtime: Runtime,
    options: DemoOptions,
    ports: DemoPorts,
    data_dir: Path,
    stack: ExitStack,
    broker: LocalBroker,
) -> tuple[dict[str, FastAPI], MailCatcher, DemoCars]:
    from caas.ota.service import signing_material
    from caas_sim import factory, mail, payments, registry

    settings = runtime.settings
    # Loaded (made, the first time) from this demo's data directory: the platform signs with
    # it and the cars pin its root.
    signing = signing_material(settings)
    catcher = mail.MailCatcher(host=HOST, smtp_port=ports.smtp, directory=data_dir / "mail")
    catcher.start()
    stack.callback(catcher.stop)
    cars = DemoCars(runtime, broker, signing.root_public_key)
    apps = {
        "api": runtime.create_app(),
        "factory": factory.create_app(
            webhook_url=settings.public_url + FACTORY_EVENTS_PATH,
            webhook_secret=settings.factory_webhook_secret,
            api_key=settings.factory_api_key,
            stage_seconds=options.stage_seconds,
            auto_advance=True,
            state_file=data_dir / "factory.json",
        ),
        "registry": registry.create_app(
            api_key=settings.registry_api_key,
            rejection_rate=options.registry_rejection_rate,
        ),
        "payments": payments.create_app(
            api_key=settings.payment_api_key,
            webhook_url=settings.public_url + PAYMENT_EVENTS_PATH,
            webhook_secret=settings.payment_webhook_secret,
        ),
        "mail": mail.create_app(catcher),
        "cars": cars.create_app(),
    }
    return apps, catcher, cars


def _server_for(app: FastAPI, settings: Settings) -> DemoServer:
    """A server of the demo; like `caas api`, it believes forwarded addresses only from the
    proxies of `CAAS_TRUSTED_PROXIES` (none by default)."""
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="auto",
        timeout_graceful_shutdown=3,
        server_header=False,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return DemoServer(config)


async def _serve(
    servers: dict[str, tuple[DemoServer, socket.socket]],
    *,
    on_ready: Callable[[], None],
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve until SIGINT or SIGTERM, or until one server stops; then stop them all."""
    loop = asyncio.get_running_loop()
    interrupted = False

    def stop_all() -> None:
        on_stop()
        for server, _ in servers.values():
            server.should_exit = True

    def on_signal() -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: do not wait for open connections
            for server, _ in servers.values():
                server.force_exit = True
        interrupted = True
        stop_all()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        tasks = {
            name: asyncio.create_task(server.serve(sockets=[sock]), name=f"serve-{name}")
            for name, (server, sock) in servers.items()
        }
        while not all(server.started for server, _ in servers.values()) and not interrupted:
            failed = [name for name, task in tasks.items() if task.done()]
            if failed:
                stop_all()
                await asyncio.gather(*tasks.values(), return_exceptions=True)
                raise StartupError(f"the {failed[0]} server did not start (see the log above)")
            await asyncio.sleep(0.02)
        if not interrupted:
            on_ready()
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            stop_all()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _write_state(
    path: Path,
    settings: Settings,
    ports: DemoPorts,
    urls: DemoUrls,
    logins: list[DemoLogin],
    customers: list[dict[str, Any]],
) -> None:
    """demo.json: where this demo listens, so a second terminal (or a test) can find it."""
    chosen = settings.model_dump(
        mode="json",
        include={
            "env",
            "public_url",
            "factory_url",
            "registry_url",
            "payment_url",
            "payment_public_url",
            "smtp_url",
            "data_dir",
        },
    )
    chosen["database_url"] = display_url(settings.database_url or "")
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(),
        "ports": asdict(ports),
        "urls": asdict(urls),
        "settings": chosen,
        "logins": [asdict(login) for login in logins],
        "customers": customers,
    }
    temporary = path.with_suffix(f".{threading.get_ident()}.tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(path)


def _remove_state(path: Path) -> None:
    path.unlink(missing_ok=True)


def _quiet_startup_logs() -> None:
    """The demo prints its own progress; these libraries' routine chatter would drown it."""
    for name in ("uvicorn.error", "alembic", "pgserver", "mail.log"):
        logging.getLogger(name).setLevel(logging.WARNING)
