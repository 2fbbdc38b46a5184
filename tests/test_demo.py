"""`caas demo` as a real process: starts everything, says where, stops cleanly, keeps its data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from caas.core.net import free_port
from caas.demo_customers import DEMO_CUSTOMERS, Endpoints, Progress, prepare
from caas.seed import COUNTRIES, DEALERSHIPS, DEMO_PASSWORD, STAFF
from tests.e2e.conftest import World, world
from tests.scratch import count_rows, scratch_database
from tests.servers import wait_until

__all__ = ["world"]

CAAS = Path(sys.executable).with_name("caas")
START_SECONDS = 90.0  # a deadline for busy machines; a quiet one starts in a few seconds
STOP_SECONDS = 15.0
HTTP_SECONDS = 15.0


def count_rows_in(world: World, table: str) -> int:
    with world.sessions() as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@dataclass
class DemoProcess:
    process: subprocess.Popen[bytes]
    data_dir: Path
    stdout: Path
    stderr: Path

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.data_dir / "demo.json").read_text())
        return state

    def printed(self) -> str:
        return self.stdout.read_text()

    def log(self) -> str:
        return self.stderr.read_text()

    def wait_for_customers(self) -> None:
        started = time.monotonic()
        """Every ready customer's car delivered and online, as demo.json says."""

        def ready() -> bool:
            customers = self.state["customers"]
            return bool(customers) and all(c["vin"] and c["online"] for c in customers)

        try:
            wait_until(ready, timeout=START_SECONDS, interval=0.2)
        except AssertionError:
            raise AssertionError(
                f"customers not ready after {time.monotonic() - started:.0f} s: "
                f"{self.state['customers']}\n{self.printed()}\n{self.log()[-3000:]}"
            ) from None

    def wait_until_ready(self) -> None:
        """Poll: the demo writes demo.json once every server listens, then /readyz answers."""
        deadline = time.monotonic() + START_SECONDS
        while not (self.data_dir / "demo.json").exists():
            if self.process.poll() is not None:
                raise AssertionError(f"demo exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"demo not ready within {START_SECONDS} s:\n{self.log()}")
            time.sleep(0.1)
        api = self.state["urls"]["api_docs"].removesuffix("/docs")
        assert httpx.get(f"{api}/readyz", timeout=HTTP_SECONDS).json() == {"status": "ready"}

    def stop(self, signum: signal.Signals = signal.SIGINT) -> None:
        """Stop it as a person would; it must exit 0 in a few seconds without a traceback."""
        self.process.send_signal(signum)
        code = self.process.wait(timeout=STOP_SECONDS)
        assert code == 0, self.log()
        assert "Traceback" not in self.log(), self.log()
        assert not (self.data_dir / "demo.json").exists()


def demo_environment(database_url: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CAAS_")}
    env.update(CAAS_ENV="demo", CAAS_LOG_FORMAT="json")
    if database_url is not None:
        env["CAAS_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Any]:
    """Start `caas demo` on a free port; every process started is stopped at the end."""
    started: list[DemoProcess] = []

    def start(data_dir: Path, *, port: int, database_url: str | None) -> DemoProcess:
        run = len(started)
        stdout, stderr = tmp_path / f"stdout-{run}.txt", tmp_path / f"stderr-{run}.txt"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [str(CAAS), "demo", "--port", str(port), "--data-dir", str(data_dir)],
                stdout=out,
                stderr=err,
                env=demo_environment(database_url),
            )
        demo = DemoProcess(process, data_dir, stdout, stderr)
        started.append(demo)
        return demo

    yield start
    for demo in started:  # after a failure: stop politely, so an embedded database stops too
        if demo.process.poll() is None:
            demo.process.terminate()
            try:
                demo.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                demo.process.kill()
                demo.process.wait()


@pytest.mark.timeout(240)  # two demos, one started twice, each preparing its customers
def test_two_demos_run_side_by_side_stop_cleanly_and_keep_their_data(
    start_demo: Any, database_url: str, tmp_path: Path
) -> None:
    with (
        scratch_database(database_url, prefix="caas_demo") as first_db,
        scratch_database(database_url, prefix="caas_demo") as second_db,
    ):
        port = free_port()
        first = start_demo(tmp_path / "one", port=port, database_url=first_db)
        second = start_demo(tmp_path / "two", port=free_port(), database_url=second_db)
        first.wait_until_ready()
        second.wait_until_ready()

        urls = first.state["urls"]
        assert urls["portal"] == f"http://127.0.0.1:{port}/login"
        printed = first.printed()
        for url in urls.values():
            assert url in printed
        for login in ["sales.madrid@caas.example", "operator@caas.example", DEMO_PASSWORD]:
            assert login in printed
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=HTTP_SECONDS).json() == {
            "status": "ok"
        }
        assert httpx.get(urls["mail_inbox"], timeout=HTTP_SECONDS).status_code == 200
        settings = first.state["settings"]
        assert settings["public_url"] == f"http://127.0.0.1:{port}"
        assert settings["factory_url"] == urls["factory"]
        assert set(first.state["ports"].values()).isdisjoint(second.state["ports"].values())
        # The ready customers' cars go through the whole journey in the background.
        first.wait_for_customers()
        vins = {c["email"]: c["vin"] for c in first.state["customers"]}
        for customer in DEMO_CUSTOMERS:
            assert f"{customer.email} (password {customer.password}), car delivered" in (
                first.printed()
            )
        assert {c["country"] for c in first.state["customers"]} >= {"ES", "FR"}
        users = count_rows(first_db, "users")
        assert users == len(DEALERSHIPS) + len(STAFF) + len(DEMO_CUSTOMERS)
        sales = count_rows(first_db, "sales")
        assert sales == len(DEMO_CUSTOMERS)
        # Each paid a deposit and the rest: revenue for the operator's finance page.
        assert count_rows(first_db, "invoices") == 2 * len(DEMO_CUSTOMERS)

        first.stop(signal.SIGINT)

        again = start_demo(first.data_dir, port=free_port(), database_url=first_db)
        again.wait_until_ready()
        for vin in vins.values():
            assert f"car delivered: {vin}" in again.printed()  # in the logins table at once
        again.wait_for_customers()
        assert {c["email"]: c["vin"] for c in again.state["customers"]} == vins
        assert count_rows(first_db, "users") == users
        assert count_rows(first_db, "sales") == sales
        assert count_rows(first_db, "countries") == len(COUNTRIES)
        assert count_rows(first_db, "dealerships") == len(DEALERSHIPS)

        again.stop(signal.SIGINT)
        second.stop(signal.SIGTERM)


@pytest.fixture
def outside_pytest_tmp() -> Iterator[Path]:
    """As root, pgserver runs PostgreSQL as its own user, which must reach the data; pytest keeps
    its temporary root private (and makes it so again when another session starts)."""
    path = Path(tempfile.mkdtemp(prefix="caas-demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(find_spec("pgserver") is None, reason="needs the pgserver wheel")
def test_demo_without_database_url_runs_and_stops_its_embedded_postgres(
    start_demo: Any, outside_pytest_tmp: Path
) -> None:
    data_dir = outside_pytest_tmp / "demo"
    demo = start_demo(data_dir, port=free_port(), database_url=None)
    demo.wait_until_ready()
    assert (data_dir / "pg" / "PG_VERSION").exists()
    assert (data_dir / "pg" / "postmaster.pid").exists()
    assert "sales.madrid@caas.example" in demo.printed()

    demo.stop()
    assert not (data_dir / "pg" / "postmaster.pid").exists()


def test_the_ready_customers_journey_is_walked_over_http_and_a_second_run_adds_nothing(
    world: World,
) -> None:
    """The demo's journey driver against the suite's servers: the sale, the activation from the
    e-mail, both payments, the factory at the express pace, a refused registration sent again
    by the dealer, the delivery; then a second run finds the car delivered and does nothing."""
    customer = DEMO_CUSTOMERS[0]
    endpoints = Endpoints(platform=world.platform, payments=world.payments, factory=world.factory)

    def activation_link(email: str) -> str | None:
        for message in world.smtp.to(email):
            found = re.search(r"\S+/activate\?token=[\w-]+", world.smtp.text_of(message))
            if found:
                return found.group(0)
        return None

    refusal = {"country": "ES", "reason": "domicilio no verificado", "field": "domicilio"}
    httpx.post(f"{world.registry}/sim/reject-next", json=refusal).raise_for_status()
    progress = Progress(customer)
    vin = prepare(customer, endpoints, activation_link=activation_link, progress=progress)

    assert len(vin) == 17
    assert progress.done and progress.vin == vin
    assert progress.registration_attempts == 1
    assert "registration_rejected" in progress.steps
    assert progress.steps[-4:] == ["registered", "delivery_scheduled", "in_transit", "delivered"]
    with httpx.Client(base_url=world.platform) as client:
        login = {"email": customer.email, "password": customer.password}
        assert client.post("/api/v1/auth/login", json=login).status_code == 200
        (purchase,) = client.get("/api/v1/me/file").json()["purchases"]
        assert purchase["vin"] == vin and purchase["state"] == "delivered"
        assert purchase["features"] == list(customer.features)
        upkeep = client.get("/api/v1/upkeep/preferences").json()
        assert upkeep["auto_order"] and upkeep["auto_limit_minor"] == customer.auto_limit_minor
        assert upkeep["preferred_workshop_id"] is not None
    assert count_rows_in(world, "sales") == 1

    again = Progress(customer)
    assert prepare(customer, endpoints, activation_link=lambda _: None, progress=again) == vin
    assert again.steps == ["delivered"]
    assert count_rows_in(world, "sales") == 1
    assert count_rows_in(world, "payments") == 2
