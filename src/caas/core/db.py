"""Database engine, the declarative base and the unit of work."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import psycopg
import structlog
from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

log = structlog.get_logger(__name__)

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and always drive psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# A pooled connection used this recently is taken as alive; an older one is pinged first.
PING_AFTER_IDLE_SECONDS = 5.0


# The pool of a process unless its settings say otherwise (`CAAS_DATABASE_POOL_SIZE`,
# `CAAS_DATABASE_MAX_OVERFLOW`).
POOL_SIZE = 10
MAX_OVERFLOW = 20


def make_engine(
    url: str, *, pool_size: int = POOL_SIZE, max_overflow: int = MAX_OVERFLOW, **kwargs: Any
) -> Engine:
    """An engine keeping `pool_size` connections, and opening up to `max_overflow` more under
    load, whose pool pings a connection before handing it out only when it has been
    idle for `PING_AFTER_IDLE_SECONDS` (a server restarted meanwhile has dropped it): a busy
    worker does not pay a round trip per transaction for it (`pool_pre_ping` would)."""
    options: dict[str, Any] = {}
    if "poolclass" not in kwargs:
        options.update(pool_size=pool_size, max_overflow=max_overflow)
    options.update(kwargs)
    engine = create_engine(normalise_url(url), **options)
    if not options.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    def fresh(_: Any, record: ConnectionPoolEntry) -> None:
        record.info[_LAST_USED] = time.monotonic()

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _: Any) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(str(error)) from error  # the pool connects anew
        if not alive:
            raise DisconnectionError("the connection did not answer a ping")

    event.listen(engine, "connect", fresh)
    event.listen(engine, "checkin", fresh)
    event.listen(engine, "checkout", checkout)


_LAST_USED = "caas_last_used"


# SQLSTATE classes of a database that cannot be reached or is going away: 08 connection
# exception, 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now (starting up).
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03")


def database_unreachable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached now (down, restarting, the
    connection dropped), as opposed to a statement it refused: the first is worth a "retry
    later", the second is a bug or a conflict. The pool has already dropped such a connection
    (SQLAlchemy invalidates every pooled connection on a disconnect), so the next transaction
    connects anew once the server is back."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    state = getattr(original, "sqlstate", None)
    if state is None:
        # psycopg's errors raised before the server said anything (connection refused, the
        # connection closed) carry no SQLSTATE.
        return isinstance(original, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(state, str) and state.startswith(_UNREACHABLE_STATES)


# SQLSTATEs of a transaction the server rolled back because it collided with another one:
# 40P01 deadlock detected, 40001 serialization failure. Running it again normally succeeds.
_CONFLICT_STATES = ("40P01", "40001")
# How often `retry_on_conflict` runs a transaction that keeps colliding before giving up.
CONFLICT_ATTEMPTS = 3


def lock_conflict(error: BaseException) -> bool:
    """Whether `error` is PostgreSQL rolling a transaction back for colliding with another
    (a deadlock, or a serialization failure): nothing was written, and the same work run again
    in a new transaction normally goes through."""
    original = error.orig if isinstance(error, DBAPIError) else error
    return getattr(original, "sqlstate", None) in _CONFLICT_STATES


def retry_on_conflict(
    factory: sessionmaker[Session],
    work: Callable[[Session], T],
    *,
    attempts: int = CONFLICT_ATTEMPTS,
    what: str = "transaction",
) -> T:
    """Run `work` in its own transaction (`unit_of_work`), again in a new one when PostgreSQL
    rolled it back for a deadlock or a serialization failure, up to `attempts` times in all
    (the last conflict is raised). `work` must be safe to run again: it only sees the database
    of its own transaction, which the conflict has rolled back."""
    for attempt in range(1, attempts + 1):
        try:
            with unit_of_work(factory) as session:
                return work(session)
        except DBAPIError as error:
            if attempt == attempts or not lock_conflict(error):
                raise
            log.info(
                "db.conflict_retried",
                what=what,
                attempt=attempt,
                error=type(error.orig).__name__,
            )
    raise AssertionError("unreachable: the loop returns or raises")


_LISTEN_URL = "caas_listen_url"


def make_session_factory(engine: Engine, *, listen_url: str | None = None) -> sessionmaker[Session]:
    """Sessions on `engine`; `listen_url`, when given, is where the LISTEN connections of
    whoever holds them go (see `listen_url`)."""
    info = {_LISTEN_URL: listen_url} if listen_url is not None else {}
    return sessionmaker(bind=engine, expire_on_commit=False, info=info)


def listen_url(sessions: sessionmaker[Session]) -> str | None:
    """Where a connection that waits for `NOTIFY` goes, as a libpq URL: the `listen_url` the
    factory was made with, else its engine's database. `LISTEN` needs a session of its own,
    which a PgBouncer in transaction mode in front of the pools does not keep
    (`CAAS_DATABASE_LISTEN_URL`). None when the sessions are bound to a single connection
    (tests), whose transactions never commit, so nothing would be heard."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        return None
    given = sessions.kw.get("info", {}).get(_LISTEN_URL)
    if isinstance(given, str):
        return libpq_url(given)
    return bind.url.set(drivername="postgresql").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """`url` as psycopg's own `connect` takes it: SQLAlchemy's `postgresql+psycopg://` is not
    a scheme libpq knows."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction per command: commit once at the end, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def import_all_models() -> None:
    """Import every domain's tables so the metadata (and Alembic) sees them all."""
    import caas.models  # noqa: F401
