"""How the platform's processes are assembled from settings: database, web app and worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from caas.core.clock import Clock, SystemClock
from caas.core.db import make_engine, make_session_factory, normalise_url, unit_of_work
from caas.core.migrate import upgrade
from caas.core.settings import Settings
from caas.seed import DemoLogin, load_demo_data
from caas.worker import Worker, build_worker

CONNECT_TIMEOUT_SECONDS = 5


class StartupError(Exception):
    """What stops a command before it serves anything; its message is one line for a person."""


def read_settings(**overrides: Any) -> Settings:
    """Settings from CAAS_* variables (`overrides` win); a bad value is a `StartupError`."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            message = str(item["msg"]).removeprefix("Value error, ")
            name = ".".join(str(part) for part in item["loc"])
            problems.append(f"CAAS_{name.upper()}: {message}" if name else message)
        raise StartupError("invalid settings: " + "; ".join(problems)) from None


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise StartupError(
            "CAAS_DATABASE_URL is not set (e.g. postgresql://user:pass@127.0.0.1:5432/caas); "
            "`caas demo` starts an embedded database instead"
        )
    return settings.database_url


def display_url(url: str) -> str:
    """The database URL without its password, fit to print."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return "<unparseable URL>"
    return parsed.render_as_string(hide_password=bool(parsed.password))


def check_database(url: str, *, name: str = "CAAS_DATABASE_URL") -> None:
    """Connect once, briefly; a database that does not answer is a `StartupError`."""
    try:
        engine = make_engine(
            url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        )
    except (ArgumentError, SQLAlchemyError, ValueError) as error:
        raise StartupError(f"{name} is not a database URL: {error}") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        reason = _first_line(str(getattr(error, "orig", None) or error))
        raise StartupError(f"cannot reach the database {display_url(url)}: {reason}") from None
    finally:
        engine.dispose()


def migrate(url: str) -> None:
    """`alembic upgrade head`, after checking the database answers."""
    check_database(url)
    upgrade(url)


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


@dataclass
class Runtime:
    """One process's view of the platform: settings, a database pool and the clock."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def connect(cls, settings: Settings, *, database_url: str | None = None) -> Runtime:
        """A runtime on `database_url` (default: the settings'), checked to answer."""
        url = database_url or require_database_url(settings)
        check_database(url)
        if settings.database_listen_url is not None:
            check_database(settings.database_listen_url, name="CAAS_DATABASE_LISTEN_URL")
        engine = make_engine(
            url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        sessions = make_session_factory(engine, listen_url=settings.database_listen_url)
        return cls(settings=settings, engine=engine, sessions=sessions)

    def create_app(self) -> FastAPI:
        from caas.app import create_app

        return create_app(settings=self.settings, sessions=self.sessions, clock=self.clock)

    def create_worker(self) -> Worker:
        return build_worker(self.settings, self.sessions, self.clock)

    def load_demo_data(self) -> list[DemoLogin]:
        """The demo data, committed; loading it again adds nothing."""
        with unit_of_work(self.sessions) as session:
            return load_demo_data(session, now=self.clock.now())

    def close(self) -> None:
        self.engine.dispose()
