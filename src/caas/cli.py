"""The `caas` command: demo, api, worker, migrate, seed."""

from __future__ import annotations

import csv
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

# Typer carries its own copy of click: these are the exceptions its parser raises.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from caas import __version__

if TYPE_CHECKING:  # the platform is imported by the command that needs it: `--help` stays fast
    from caas.core.settings import Settings

# Bad input exits with 2, like a usage error: the person must change the command, not retry.
BAD_INPUT = 2
INTERRUPTED = 130

Port = Annotated[int, typer.Option(min=1, max=65535, help="TCP port on 127.0.0.1")]
FreePort = Annotated[int, typer.Option(min=0, max=65535)]


class CommandFailed(ClickException):
    """Our own check failed (bad setting, unreachable database): one line, exit code 2."""

    exit_code = BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        context = get_current_context(silent=True)
        self.command_path = context.command_path if context else "caas"


class OneLineErrors(TyperGroup):
    """Every error the person can fix is one line on stderr and exit code 2, never a panel
    or a traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )
        except NoArgsIsHelpError as error:  # the help is already printed
            sys.exit(error.exit_code)
        except UsageError as error:
            where = error.ctx.command_path if error.ctx else prog_name or "caas"
            _fail(f"{where}: {error.format_message()} (see `{where} --help`)", error.exit_code)
        except CommandFailed as error:
            _fail(f"{error.command_path}: {error.format_message()}", error.exit_code)
        except ClickException as error:
            _fail(f"caas: {error.format_message()}", error.exit_code)
        except typer.Abort:
            _fail("caas: aborted", 1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(message, markup=False)
    sys.exit(code)


app = typer.Typer(
    cls=OneLineErrors,
    name="caas",
    help="Car-as-a-Service: the platform (api, worker), its database (migrate, seed) and "
    "`caas demo`, everything in one process.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"caas {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Settings come from CAAS_* environment variables (see README)."""


def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:  # a file or a pipe: keep URLs and e-mails whole in the tables
        console.width = max(console.width, 160)
    return console


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _startup_checks() -> Iterator[None]:
    """A `StartupError` becomes the command's one-line error."""
    from caas.runtime import StartupError

    try:
        yield
    except StartupError as error:
        raise CommandFailed(str(error)) from None


def _settings() -> Settings:
    from caas.core.logging import configure_logging
    from caas.runtime import read_settings

    with _startup_checks():
        settings = read_settings()
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM unwind as KeyboardInterrupt, so every cleanup runs; SIGINT too when
    the shell started us with it ignored (`caas demo &` in a script)."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


@app.command()
def migrate() -> None:
    """Bring the database at CAAS_DATABASE_URL to the newest schema (alembic upgrade head)."""
    from caas.runtime import display_url, require_database_url
    from caas.runtime import migrate as upgrade_database

    settings = _settings()
    with _startup_checks():
        url = require_database_url(settings)
        with _stderr().status(f"Migrating {display_url(url)}…"):
            upgrade_database(url)
    _stdout().print(f"Database {display_url(url)} is at the newest schema.")


@app.command()
def seed() -> None:
    """Load the demo data (countries, dealerships, platforms, staff) and print the logins.

    Safe to run again: what exists is kept, nothing is duplicated.
    """
    from caas.runtime import Runtime

    settings = _settings()
    with _startup_checks():
        runtime = Runtime.connect(settings)
    try:
        with _stderr().status("Loading the demo data…"):
            logins = runtime.load_demo_data()
    finally:
        runtime.close()
    from caas.demo import logins_table

    _stdout().print(logins_table(logins))


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Port = 8000,
) -> None:
    """Serve the HTTP API and web pages on CAAS_DATABASE_URL (stateless: run many)."""
    import uvicorn

    from caas.runtime import Runtime

    settings = _settings()
    with _startup_checks():
        runtime = Runtime.connect(settings)
    try:
        uvicorn.run(runtime.create_app(), **api_server_options(host, port, settings))
    finally:
        runtime.close()


def api_server_options(host: str, port: int, settings: Settings) -> dict[str, Any]:
    """uvicorn's options for `caas api`. The client's address is the connection's, or the one
    a proxy of `CAAS_TRUSTED_PROXIES` forwards, never what anyone else's `X-Forwarded-For`
    claims (local callers' included, which uvicorn believes by default): the login and
    activation limits count it."""
    return {
        "host": host,
        "port": port,
        "log_config": None,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }


@app.command()
def worker() -> None:
    """Deliver the outbox (e-mails, factory orders, registrations) until SIGINT or SIGTERM.

    Run as many as you like: they never take the same message twice.
    """
    from caas.runtime import Runtime

    settings = _settings()
    with _startup_checks():
        runtime = Runtime.connect(settings)
    relay_worker = runtime.create_worker()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        relay_worker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        relay_worker.run_forever()
    finally:
        runtime.close()


@app.command()
def demo(
    port: Port = 8000,
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="CAAS_DATA_DIR",
            file_okay=False,
            help="Where the embedded database and the simulators' state live.",
        ),
    ] = Path(".caas"),
    factory_port: Annotated[
        int, typer.Option(min=0, max=65535, envvar="CAAS_FACTORY_PORT", help="0: any free port")
    ] = 0,
    registry_port: Annotated[
        int, typer.Option(min=0, max=65535, envvar="CAAS_REGISTRY_PORT", help="0: any free port")
    ] = 0,
    payment_port: Annotated[
        int, typer.Option(min=0, max=65535, envvar="CAAS_PAYMENT_PORT", help="0: any free port")
    ] = 0,
    mail_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, envvar="CAAS_MAIL_PORT", help="Mail inbox page; 0: any free port"
        ),
    ] = 0,
    smtp_port: Annotated[
        int, typer.Option(min=0, max=65535, envvar="CAAS_SMTP_PORT", help="0: any free port")
    ] = 0,
    stage_seconds: Annotated[
        float,
        typer.Option(
            min=0.1, envvar="CAAS_FACTORY_STAGE_SECONDS", help="Seconds per manufacturing stage."
        ),
    ] = 5.0,
) -> None:
    """Run the platform, its worker and simulators in one process, with an embedded database.

    On 127.0.0.1: the portal, intranet and API on --port; the factory, registry and payment
    simulators and a mail catcher on free ports; PostgreSQL under --data-dir unless
    CAAS_DATABASE_URL is set. Prints every URL and login; Ctrl-C stops it all.
    """
    from caas.demo import DemoOptions, run_demo

    _settings()
    _interrupt_on_signals()
    options = DemoOptions(
        port=port,
        data_dir=data_dir,
        factory_port=factory_port,
        registry_port=registry_port,
        payment_port=payment_port,
        mail_port=mail_port,
        smtp_port=smtp_port,
        stage_seconds=stage_seconds,
    )
    progress = _stderr()
    try:
        with _startup_checks():
            run_demo(options, console=_stdout(), progress=progress)
    except KeyboardInterrupt:
        progress.print("Interrupted; everything started so far was stopped.")
        raise typer.Exit(INTERRUPTED) from None
    progress.print("Demo stopped.")


keys_app = typer.Typer(
    help="The manifest keys, offline: the maker's root key certifies the signing key that the "
    "platform signs cars' configuration with. The API and the worker never read the root key.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

KeysOut = Annotated[
    Path,
    typer.Option("--out", file_okay=False, help="Directory to write to (created if missing)."),
]


@contextmanager
def _key_files() -> Iterator[None]:
    """A missing, unreadable or mismatched key file becomes the command's one-line error."""
    from caas.ota.keys import KeyMaterialError

    try:
        yield
    except KeyMaterialError as error:
        raise CommandFailed(str(error)) from None
    except OSError as error:
        raise CommandFailed(f"{error.filename or 'key file'}: {error.strerror}") from None


@keys_app.command("init-root")
def keys_init_root(out: KeysOut) -> None:
    """Create the maker's root key: `root.key` (keep it offline) and `root.pub` (pin it in every
    car). Never overwrites an existing root key."""
    from caas.ota.keys import ROOT_KEY_FILE, ROOT_PUBLIC_KEY_FILE, init_root
    from caas.protocol.manifest import public_key_b64

    with _key_files():
        public_key = init_root(out)
    console = _stdout()
    console.print(f"Root key written to {out / ROOT_KEY_FILE}: keep it offline.")
    console.print(f"Its public key, in {out / ROOT_PUBLIC_KEY_FILE}, is pinned in every car:")
    console.print(public_key_b64(public_key))


@keys_app.command("issue-signing")
def keys_issue_signing(
    root: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="The root's private key (`root.key`)."),
    ],
    out: KeysOut,
    days: Annotated[
        int, typer.Option(min=1, max=3650, help="How long the certificate is valid.")
    ] = 90,
    key_id: Annotated[
        str | None, typer.Option(help="Name of the new key; default: signing-DATE-RANDOM.")
    ] = None,
) -> None:
    """Create a new online signing key in --out, certified by the root key for --days days.

    Writes `signing.key`, `signing.cert.json` and `root.pub` (replacing an older signing key):
    give that directory to the platform as CAAS_OTA_KEYS_DIR.
    """
    from datetime import UTC, datetime

    from caas.ota.keys import issue_signing

    with _key_files():
        certificate = issue_signing(root, out, now=datetime.now(UTC), days=days, key_id=key_id)
    console = _stdout()
    console.print(f"Signing key {certificate.key_id} written to {out}.")
    console.print(
        f"Valid from {certificate.not_before:%Y-%m-%d %H:%M} to "
        f"{certificate.not_after:%Y-%m-%d %H:%M} UTC; issue the next one before it ends."
    )


@keys_app.command("show")
def keys_show(
    directory: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="A key directory.")
    ],
) -> None:
    """What a key directory holds (public parts only) and whether its files agree."""
    from caas.ota.keys import read_key_directory

    with _key_files():
        found = read_key_directory(directory)
    if found.problems:
        raise CommandFailed("; ".join(found.problems))
    console = _stdout()
    console.print(f"Key directory {directory}")
    console.print(f"  root public key: {found.root_public_key or 'none'}")
    if found.has_root_private_key or found.has_demo_root_key:
        console.print("  root private key: present (keep this directory offline)")
    certificate = found.certificate
    if certificate is None:
        console.print("  signing certificate: none")
    else:
        console.print(f"  signing key: {certificate.key_id} ({certificate.public_key})")
        console.print(
            f"  valid: {certificate.not_before:%Y-%m-%d %H:%M} to "
            f"{certificate.not_after:%Y-%m-%d %H:%M} UTC"
        )
        console.print(f"  signing key file: {'present' if found.has_signing_key else 'missing'}")


sim_app = typer.Typer(
    help="Simulators of the world outside the maker, run on their own.", no_args_is_help=True
)
app.add_typer(sim_app, name="sim")


class MqttVersion(StrEnum):
    AUTO = "auto"
    V5 = "5"
    V311 = "3.1.1"


@sim_app.command("vehicles")
def sim_vehicles(
    fleet_file: Annotated[
        Path,
        typer.Option(
            dir_okay=False,
            help="JSON written at provisioning: each car's VIN, broker password, own private "
            "key and the maker's root public key.",
        ),
    ],
    broker: Annotated[
        str,
        typer.Option(
            envvar="CAAS_MQTT_URL",
            help="mqtt://host:port, or mqtts://host:port for TLS; credentials in it are "
            "ignored (each car has its own).",
        ),
    ] = "mqtt://127.0.0.1:1883",
    mqtt_ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar="CAAS_MQTT_CA_FILE",
            exists=True,
            dir_okay=False,
            help="With mqtts://, the CA certificates (PEM) the broker's certificate must be "
            "signed by; default: the system's CAs.",
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="Run the first N cars of the file; default: all.")
    ] = None,
    mqtt_version: Annotated[
        MqttVersion, typer.Option(help="auto: 5 when the broker speaks it, else 3.1.1.")
    ] = MqttVersion.AUTO,
    host: Annotated[str, typer.Option(help="Interface of the cars' screens.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the cars' screens and key endpoints.")
    ] = 8100,
    telemetry_seconds: Annotated[
        float, typer.Option(min=0.1, help="Each car sends telemetry this often.")
    ] = 10.0,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Cars connecting at once (the next batch waits).")
    ] = 50,
    platform_url: Annotated[
        str,
        typer.Option(
            envvar="CAAS_PUBLIC_URL", help="The platform's HTTP address (software downloads)."
        ),
    ] = "http://127.0.0.1:8000",
    install_failure_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of software installs that fail and roll back."),
    ] = 0.0,
    drive_speed: Annotated[
        float,
        typer.Option(
            min=0.0, max=300.0, help="Every car drives by itself at this speed (km/h); 0: parked."
        ),
    ] = 0.0,
    pace: Annotated[
        float,
        typer.Option(
            min=1.0,
            max=1_000_000.0,
            help="The cars' lives (distance, wear, ageing) go this many times faster than "
            "their clocks: a demo car needs its service within minutes.",
        ),
    ] = 1.0,
) -> None:
    """Run simulated cars, each a real MQTT client with its own credentials, in one process;
    their screens (`/cars`) and local key endpoints on --port. Ctrl-C disconnects them."""
    import uvicorn
    from aiomqtt import ProtocolVersion

    from caas.core.logging import configure_logging
    from caas_sim.vehicle.agent import BrokerEndpoint
    from caas_sim.vehicle.fleet import Fleet, FleetFile
    from caas_sim.vehicle.screen import create_app

    protocols = {MqttVersion.V5: ProtocolVersion.V5, MqttVersion.V311: ProtocolVersion.V311}
    try:
        loaded = FleetFile.read(fleet_file)
        endpoint = BrokerEndpoint.from_url(
            broker, protocol=protocols.get(mqtt_version), ca_file=mqtt_ca_file
        )
    except ValueError as error:
        raise CommandFailed(str(error)) from None
    if count is not None and count > len(loaded.cars):
        raise CommandFailed(f"--count {count}, but the fleet file has {len(loaded.cars)} cars")
    configure_logging(None)
    fleet = Fleet.from_file(
        loaded,
        endpoint,
        count=count,
        batch_size=batch_size,
        platform_url=platform_url,
        install_failure_rate=install_failure_rate,
    )
    if drive_speed > 0:
        for agent in fleet:
            agent.cruise(drive_speed, pace=pace)
    _stderr().print(
        f"{len(fleet)} cars connecting to {endpoint.host}:{endpoint.port}; "
        f"their screens on http://{host}:{port}/cars"
    )
    screens = create_app(fleet, run_fleet=True, telemetry_seconds=telemetry_seconds)
    uvicorn.run(screens, host=host, port=port, log_config=None)


bench_app = typer.Typer(
    help="Benchmarks of the connected car: figures beside a baseline of the same run, never "
    "pass/fail. Each starts what it needs (embedded PostgreSQL and a private broker, or "
    "CAAS_DATABASE_URL's server and CAAS_MQTT_URL's broker) and cleans up after itself.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")

BenchCars = Annotated[int, typer.Option(min=1, max=20_000, help="Simulated cars.")]
BenchJson = Annotated[
    bool, typer.Option("--json", help="The last line printed is the result as one JSON object.")
]


def _bench_settings() -> None:
    """Settings checked, quiet logs, and SIGTERM unwinding like Ctrl-C: a benchmark stopped
    from outside still stops the broker, the worker and the cars it started."""
    from caas.core.logging import configure_logging

    _interrupt_on_signals()
    with _startup_checks():
        _settings()
    configure_logging("console", "WARNING")  # the progress bar and the figures, not every step


@bench_app.command("ota")
def bench_ota(
    cars: BenchCars = 1000,
    changes: Annotated[int, typer.Option(min=1, help="Configuration changes to make.")] = 400,
    rate: Annotated[
        float, typer.Option(min=0.1, help="Changes a second, one car after the other.")
    ] = 50.0,
    json_output: BenchJson = False,
) -> None:
    """From the commit of a configuration change to the car's `applied` stored: p50/p95/p99,
    beside a raw MQTT QoS 1 round trip platform -> car -> platform on the same broker."""
    from caas.bench import ota
    from caas.bench.report import Reporter, figures_table, ota_rows, print_json, print_table

    _bench_settings()
    with _startup_checks(), Reporter.on_stderr() as reporter:
        result = ota.run(cars, changes, rate=rate, reporter=reporter).as_json()
    if json_output:
        print_json(result)
    else:
        print_table(figures_table("caas bench ota", ota_rows(result)))


@bench_app.command("telemetry")
def bench_telemetry(
    cars: BenchCars = 200,
    seconds: Annotated[float, typer.Option(min=0.5, help="How long the cars send.")] = 10.0,
    rate: Annotated[
        float, typer.Option(min=0, help="Samples a second per car; 0: as fast as it can.")
    ] = 0.0,
    json_output: BenchJson = False,
) -> None:
    """Telemetry rows stored per second beside what a bare subscriber receives per second."""
    from caas.bench import telemetry
    from caas.bench.report import Reporter, figures_table, print_json, print_table, telemetry_rows

    _bench_settings()
    with _startup_checks(), Reporter.on_stderr() as reporter:
        result = telemetry.run(cars, seconds, rate=rate, reporter=reporter).as_json()
    if json_output:
        print_json(result)
    else:
        print_table(figures_table("caas bench telemetry", telemetry_rows(result)))


@bench_app.command("scheduler")
def bench_scheduler(
    entitlements: Annotated[
        int, typer.Option(min=1, help="Entitlements loaded, across N/5 cars.")
    ] = 1_000_000,
    json_output: BenchJson = False,
) -> None:
    """One day's window boundaries swept from N entitlements in PostgreSQL: seconds,
    boundaries per second, peak memory (and where the time went)."""
    import json

    from caas.bench.scheduler import run_scheduler_bench

    _bench_settings()
    with _startup_checks():
        result = run_scheduler_bench(
            entitlements, progress=lambda step: print(step, file=sys.stderr)
        )
    for name, value in result.items():
        print(f"{name:>24}  {value:,}")
    if json_output:
        print(json.dumps(result))


@bench_app.command("invoicing")
def bench_invoicing(
    cars: Annotated[int, typer.Option(min=1, help="Cars with metered use in the month.")] = 100_000,
    events: Annotated[int, typer.Option(min=1, help="Usage events per car.")] = 10,
    threads: Annotated[int, typer.Option(min=1, max=64, help="The worker's relay threads.")] = 4,
    json_output: BenchJson = False,
) -> None:
    """One month of metered use invoiced for N cars as the worker does it on the 1st (payments
    through the sandbox over HTTP): seconds, invoices per second, peak memory, beside the
    sandbox's round trips alone."""
    from caas.bench.invoicing import run_invoicing_bench
    from caas.bench.report import figures_table, invoicing_rows, print_json, print_table

    _bench_settings()
    with _startup_checks():
        result = run_invoicing_bench(
            cars, events=events, threads=threads, progress=lambda step: print(step, file=sys.stderr)
        )
    print_table(figures_table("caas bench invoicing", invoicing_rows(result)))
    if json_output:
        print_json(result)


@bench_app.command("api")
def bench_api(
    requests: Annotated[
        int, typer.Option(min=1, help="Purchases made (and as many trivial requests).")
    ] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Clients sending at once.")] = 16,
    json_output: BenchJson = False,
) -> None:
    """Purchases per second through HTTP (`caas api` in its own process, the payment sandbox,
    PostgreSQL) beside /healthz of the same server: requests/s, p50/p95/p99 and their ratio."""
    from caas.bench import api
    from caas.bench.report import Reporter, api_rows, figures_table, print_json, print_table

    _bench_settings()
    with _startup_checks(), Reporter.on_stderr() as reporter:
        result = api.run(requests, concurrency=concurrency, progress=reporter.phase)
    if json_output:
        print_json(result)
    else:
        print_table(figures_table("caas bench api", api_rows(result)))


@bench_app.command("memory")
def bench_memory(
    cars: BenchCars = 10_000,
    seconds: Annotated[
        float, typer.Option(min=0.5, help="How long the cars send telemetry once a second.")
    ] = 5.0,
    json_output: BenchJson = False,
) -> None:
    """Peak resident memory of `caas worker` (its own process) with N cars connected, beside
    the same worker's with 0 cars: ratio and MB per 1,000 cars."""
    from caas.bench import memory
    from caas.bench.report import Reporter, figures_table, memory_rows, print_json, print_table

    _bench_settings()
    with _startup_checks(), Reporter.on_stderr() as reporter:
        result = memory.run(cars, seconds=seconds, progress=reporter.phase).as_json()
    if json_output:
        print_json(result)
    else:
        print_table(figures_table("caas bench memory", memory_rows(result)))


@bench_app.command("all")
def bench_all(
    ota_cars: Annotated[int, typer.Option("--ota", min=1, help="N cars for ota.")] = 100,
    telemetry_cars: Annotated[
        int, typer.Option("--telemetry", min=1, help="N cars for telemetry.")
    ] = 100,
    api_requests: Annotated[int, typer.Option("--api", min=1, help="N purchases for api.")] = 200,
    scheduler_entitlements: Annotated[
        int, typer.Option("--scheduler", min=1, help="N entitlements for scheduler.")
    ] = 10_000,
    invoicing_cars: Annotated[
        int, typer.Option("--invoicing", min=1, help="N cars for invoicing.")
    ] = 300,
    memory_cars: Annotated[int, typer.Option("--memory", min=1, help="N cars for memory.")] = 100,
    factor: Annotated[
        int, typer.Option(min=2, help="Each benchmark runs at N and N x factor (growth).")
    ] = 10,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run only these benchmarks (repeat the option); default: all."),
    ] = None,
    out: Annotated[
        Path, typer.Option(dir_okay=False, help="Where every figure is written as JSON.")
    ] = Path("bench/results/latest.json"),
) -> None:
    """Every benchmark at two sizes, N and 10 N (`make bench`): one summary table (figure,
    baseline of the same run, ratio, growth 10 N cost / N cost), every figure in `out`."""
    from caas.bench.report import Reporter, print_table
    from caas.bench.suite import run_all
    from caas.bench.summary import BENCHMARKS, UNITS, summary_rows, summary_table

    chosen = list(dict.fromkeys(only or BENCHMARKS))
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        _fail(f"no benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}", 2)
    sizes = {
        "ota": ota_cars,
        "telemetry": telemetry_cars,
        "api": api_requests,
        "scheduler": scheduler_entitlements,
        "invoicing": invoicing_cars,
        "memory": memory_cars,
    }
    _bench_settings()
    plan = ", ".join(
        f"{name} {sizes[name]:,}/{sizes[name] * factor:,} {UNITS[name]}" for name in chosen
    )
    _stderr().print(f"caas bench all: {plan}")
    with _startup_checks():
        document = run_all(
            sizes,
            only=chosen,
            factor=factor,
            out=out,
            reporter=Reporter.on_stderr,
            say=lambda line: _stderr().print(line, highlight=False),
        )
    runs = {
        name: [(item["size"], item) for item in items]
        for name, items in document["results"].items()
    }
    print_table(summary_table(summary_rows(runs, factor=factor)))
    _stderr().print(f"Every figure written to {out}")
    failed = [
        f"{name} {item['size']:,}"
        for name, items in document["results"].items()
        for item in items
        if "error" in item
    ]
    if failed:
        _fail(f"failed: {', '.join(failed)} (see {out})", 1)


@bench_app.command("table")
def bench_table(
    files: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="JSON files `caas bench all` wrote."),
    ],
    out: Annotated[
        Path, typer.Option(dir_okay=False, help="Where the merged figures are written.")
    ] = Path("bench/results/latest.json"),
) -> None:
    """The summary table of `caas bench all` runs split over several invocations (`--only`,
    `--out`): their results merged (a later file's benchmark and size replace an earlier's),
    printed and written to `out`."""
    import json

    from caas.bench.report import print_table
    from caas.bench.suite import merge
    from caas.bench.summary import summary_rows, summary_table

    try:
        documents = [json.loads(file.read_text()) for file in files]
    except json.JSONDecodeError as error:
        _fail(f"not a result of caas bench all: {error}", 2)
    document = merge(documents)
    runs = {
        name: [(item["size"], item) for item in items]
        for name, items in document["results"].items()
    }
    print_table(summary_table(summary_rows(runs)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    _stderr().print(f"Every figure written to {out}")


billing_app = typer.Typer(
    help="The maker's money: the ledger beside the provider.", no_args_is_help=True
)
app.add_typer(billing_app, name="billing")

RECONCILE_DIFFERENCES = 1


@billing_app.command("reconcile")
def billing_reconcile(
    day: Annotated[
        datetime | None,
        typer.Option(
            "--date", formats=["%Y-%m-%d"], help="UTC day (YYYY-MM-DD); every day when omitted."
        ),
    ] = None,
) -> None:
    """Compare the ledger's captures, refunds and chargebacks with the payment provider's
    settlement report; print every difference, one per line. Exit code 0 when they match, 1
    when they differ."""
    import httpx

    from caas.billing.reconcile import fetch_settlements, reconcile
    from caas.core.db import unit_of_work
    from caas.runtime import Runtime

    settings = _settings()
    when = day.date() if day is not None else None
    try:
        settlements = fetch_settlements(settings, day=when)
    except httpx.HTTPError as error:
        raise CommandFailed(f"the payment provider's settlement report: {error}") from None
    with _startup_checks():
        runtime = Runtime.connect(settings)
    try:
        with unit_of_work(runtime.sessions) as session:
            found = reconcile(session, settlements, day=when)
    finally:
        runtime.close()
    for difference in found:
        typer.echo(difference.describe())
    if found:
        raise typer.Exit(RECONCILE_DIFFERENCES)
    typer.echo(f"The ledger matches the provider's {len(settlements)} settlements.")


class Export(StrEnum):
    invoices = "invoices"
    ledger = "ledger"


@billing_app.command("export")
def billing_export(
    what: Annotated[Export, typer.Argument(help="invoices (with credit notes) or ledger")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="The CSV file to write.")],
    start: Annotated[
        datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First day included (YYYY-MM-DD)."),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Last day included (YYYY-MM-DD)."),
    ] = None,
) -> None:
    """Write the invoices of a range (days of issue) or the ledger's lines (UTC days of
    posting) as CSV, amounts as decimals; a progress bar on stderr while it runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from caas.billing import finance
    from caas.core.db import unit_of_work
    from caas.core.errors import InvalidInput
    from caas.runtime import Runtime

    try:
        filters = finance.FinanceFilter(
            start=start.date() if start else None, end=end.date() if end else None
        )
    except InvalidInput as error:
        raise CommandFailed(f"--to: {error.message}") from None
    if what is Export.invoices:
        header, count, rows = finance.INVOICE_COLUMNS, finance.count_invoices, finance.invoice_rows
        label = "invoices"
    else:
        header, count, rows = (
            finance.LEDGER_COLUMNS,
            finance.count_ledger_entries,
            finance.ledger_rows,
        )
        label = "ledger lines"
    settings = _settings()
    with _startup_checks():
        runtime = Runtime.connect(settings)
    written = 0
    try:
        with unit_of_work(runtime.sessions) as session:
            total = count(session, filters)
            try:
                file = out.open("w", newline="", encoding="utf-8")
            except OSError as error:
                raise CommandFailed(f"cannot write {out}: {error.strerror}") from None
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            with file, Progress(*columns, console=_stderr(), transient=True) as progress:
                task = progress.add_task(f"Exporting {label}", total=total)
                writer = csv.writer(file, lineterminator="\n")
                writer.writerow(header)
                for row in rows(session, filters):
                    writer.writerow(row)
                    written += 1
                    if written % finance.BATCH == 0:
                        progress.update(task, completed=written)
                progress.update(task, completed=written)
    finally:
        runtime.close()
    typer.echo(f"{written} {label} written to {out}")
