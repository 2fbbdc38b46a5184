"""The `caas` command: its commands, migrate and seed on a fresh database, one-line errors."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caas.cli import app
from caas.core.net import free_port
from caas.core.settings import Settings
from caas.seed import COUNTRIES, DEALERSHIPS, DEMO_PASSWORD, STAFF
from tests.scratch import count_rows, scratch_database

runner = CliRunner()


@pytest.fixture(autouse=True)
def keep_process_state() -> Iterator[None]:
    """The commands set up logging and signals for a whole process; give pytest its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    on_sigterm = signal.getsignal(signal.SIGTERM)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGTERM, on_sigterm)


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, prefix="caas_cli") as url:
        yield url


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "api", "worker", "migrate", "seed"):
        assert command in result.stdout


def test_migrate_then_seed_builds_the_demo_database_once(fresh_database: str) -> None:
    env = {"CAAS_DATABASE_URL": fresh_database, "CAAS_ENV": "demo"}

    migrated = runner.invoke(app, ["migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert "newest schema" in migrated.stdout
    assert count_rows(fresh_database, "users") == 0

    seeded = runner.invoke(app, ["seed"], env=env)
    assert seeded.exit_code == 0, seeded.output
    assert "sales.madrid@caas.example" in seeded.stdout
    assert "operator@caas.example" in seeded.stdout
    assert DEMO_PASSWORD in seeded.stdout
    users = len(DEALERSHIPS) + len(STAFF)
    assert count_rows(fresh_database, "users") == users

    again = runner.invoke(app, ["seed"], env=env)
    assert again.exit_code == 0, again.output
    assert count_rows(fresh_database, "users") == users
    assert count_rows(fresh_database, "countries") == len(COUNTRIES)
    assert count_rows(fresh_database, "dealerships") == len(DEALERSHIPS)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["demo", "--port", "70000"], "caas demo: Invalid value for '--port'"),
        (["api", "--port", "eighty"], "caas api: Invalid value for '--port'"),
        (["demo", "--colour"], "caas demo: No such option: --colour"),
        (["deploy"], "caas: No such command 'deploy'"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(args: list[str], says: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().startswith(says)
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_on_a_taken_port_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["demo", "--port", str(port), "--data-dir", str(tmp_path)]
        result = runner.invoke(app, args, env={"CAAS_ENV": "demo"})
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"caas demo: port {port} on 127.0.0.1 is not free")
    assert "--port" in line


@pytest.mark.parametrize("command", ["migrate", "seed", "api", "worker"])
def test_unreachable_database_is_one_line_and_exit_code_2(command: str) -> None:
    env = {"CAAS_DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/caas", "CAAS_ENV": "demo"}
    result = runner.invoke(app, [command], env=env)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"caas {command}: cannot reach the database")
    assert "Connection refused" in line


def test_missing_database_url_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAAS_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["migrate"], env={"CAAS_ENV": "demo"})
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "CAAS_DATABASE_URL is not set" in line


def test_default_secrets_outside_the_demo_are_refused_in_one_line() -> None:
    env = {"CAAS_ENV": "production", "CAAS_DATABASE_URL": "postgresql://127.0.0.1/caas"}
    result = runner.invoke(app, ["api"], env=env)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "CAAS_SECRET_KEY must be set" in line


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CAAS_{name.upper()}`" not in readme]
    assert missing == []
