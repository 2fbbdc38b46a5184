"""Fixtures: a real PostgreSQL database per run (schema built by Alembic), a fixed clock,
the application over that database, and an SMTP receiver that keeps every message."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from caas.accounts.security import use_fast_hashing
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.migrate import upgrade
from caas.core.net import free_port, port_open
from caas.core.settings import Settings
from caas.seed import load_demo_data

LOCAL_ADMIN_URL = "postgresql://127.0.0.1:5432/test"

use_fast_hashing()


def _admin_url(tmp_root: Path) -> tuple[str, Any]:
    """The local server when it answers (CI), else an embedded one from pgserver."""
    explicit = os.environ.get("CAAS_TEST_ADMIN_URL")
    if explicit:
        return explicit, None
    if port_open("127.0.0.1", 5432):
        return LOCAL_ADMIN_URL, None
    from caas.core.embedded import start_embedded_postgres

    server, uri = start_embedded_postgres(tmp_root / "pg")
    return uri, server


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server where the suite may create and drop its own databases."""
    url, server = _admin_url(tmp_path_factory.mktemp("db"))
    yield url
    if server is not None:
        server.cleanup()


class ScratchDatabases:
    """Creates databases with the schema (and demo data) for one run, and drops them after."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def create(self, *, migrate: bool = True, demo_data: bool = True) -> str:
        name = f"caas_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        url = _with_database(self.admin_url, name)
        if migrate:
            upgrade(url)
        if migrate and demo_data:
            _load_demo_data(url)
        return url

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            for name in self.names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def scratch_databases(admin_url: str) -> Iterator[ScratchDatabases]:
    databases = ScratchDatabases(admin_url)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def database_url(scratch_databases: ScratchDatabases) -> str:
    """The run's main database: schema from Alembic and demo data, shared by most tests."""
    return scratch_databases.create()


def _load_demo_data(url: str) -> None:
    """Reference data and demo staff, committed once: every test's transaction starts from it."""
    engine = make_engine(url, poolclass=NullPool)
    with unit_of_work(make_session_factory(engine)) as session:
        load_demo_data(session, now=FixedClock().now())
    engine.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """One connection in an outer transaction that is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


@pytest.fixture
def sessions(connection: Connection) -> sessionmaker[Session]:
    """Sessions whose commits only release a savepoint of the test's transaction."""
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def settings(smtp: SmtpInbox) -> Settings:
    return Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        public_url="http://testserver",
    )


@pytest.fixture
def app_client(
    settings: Settings, sessions: sessionmaker[Session], clock: FixedClock
) -> Iterator[TestClient]:
    app = create_app(settings=settings, sessions=sessions, clock=clock)
    with TestClient(app) as client:
        yield client


class SmtpInbox:
    """A real SMTP server on a free port; every message it receives is kept, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @staticmethod
    def text_of(message: Message) -> str:
        """The plain-text body of a message, multipart or not."""
        for part in message.walk():
            if part.get_content_type() == "text/plain":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                return payload.decode(part.get_content_charset() or "utf-8")
        raise AssertionError("the message has no text/plain part")

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if address in (m.get("To") or "")]


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox()
    inbox.start()
    yield inbox
    inbox.stop()


@pytest.fixture
def smtp(smtp_server: SmtpInbox) -> SmtpInbox:
    smtp_server.messages.clear()
    return smtp_server
