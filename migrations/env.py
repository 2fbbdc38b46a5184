"""Alembic environment: the URL comes from the caller or CAAS_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from caas.core.db import Base, import_all_models, make_engine
from caas.core.settings import get_settings

import_all_models()
config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        url = get_settings().database_url
    if not url:
        raise SystemExit("set CAAS_DATABASE_URL or pass a URL")
    return str(url)


def run_migrations_online() -> None:
    engine = make_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
