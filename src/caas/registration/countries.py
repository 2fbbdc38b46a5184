"""The registry adapter of each country we sell in."""

from __future__ import annotations

from caas.core.errors import Conflict
from caas.registration.base import RegistrationAdapter
from caas.registration.de import GermanyZulassung
from caas.registration.es import SpainDgt
from caas.registration.fr import FranceSiv
from caas.registration.it import ItalyPra
from caas.registration.pt import PortugalImt

ADAPTERS: dict[str, RegistrationAdapter] = {
    adapter.country: adapter
    for adapter in (SpainDgt(), FranceSiv(), GermanyZulassung(), ItalyPra(), PortugalImt())
}


def adapter_for(country: str) -> RegistrationAdapter:
    adapter = ADAPTERS.get(country)
    if adapter is None:
        raise Conflict(f"no registry adapter for {country}", code="registration.no_registry")
    return adapter
