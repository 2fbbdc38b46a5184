"""Run Alembic from code: `caas migrate`, the demo and the test suite all use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from caas.core.db import normalise_url

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["url"] = normalise_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
