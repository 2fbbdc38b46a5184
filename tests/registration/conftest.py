"""The registry simulator served for real, and a relay whose handlers talk to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.outbox import Relay
from caas.core.settings import Settings
from caas.worker import build_relay
from tests.registration.support import REGISTRY_API_KEY, RegistrySim, serve_registries


@pytest.fixture
def registry() -> Iterator[RegistrySim]:
    yield from serve_registries(seed=7)


@pytest.fixture
def relay(
    settings: Settings, registry: RegistrySim, sessions: sessionmaker[Session], clock: FixedClock
) -> Relay:
    wired = settings.model_copy(
        update={"registry_url": registry.url, "registry_api_key": REGISTRY_API_KEY}
    )
    return build_relay(wired, sessions, clock)
