"""Each adapter against the registry simulator served over HTTP: plates in each country's
format, refusals in each registry's words, outages, and the simulator's rules."""

from __future__ import annotations

from functools import cache

import pytest

from caas.accounts.models import Dealership
from caas.protocol.registry import PLATE_FORMATS
from caas.registration.base import Registered, RegistryFault, RegistryUnavailable, Rejected
from caas.registration.client import RegistryClient
from caas.registration.countries import adapter_for
from caas.vehicles.models import Vehicle
from tests.registration.support import REGISTRY_API_KEY, RegistrySim, serve_registries
from tests.registration.test_adapters import customer

VINS = ["1M8GDM9AXKP042788", "WC9AURA10TM000017", "WC9AURA12TM000018", "WC9AURA14TM000019"]


def register(
    registry: RegistrySim,
    country: str,
    vin: str = VINS[0],
    *,
    key: str = REGISTRY_API_KEY,
    **c: str,
) -> Registered | Rejected:
    adapter = adapter_for(country)
    request = adapter.build_request(customer(country, **c), Vehicle(vin=vin), Dealership(code="X1"))
    client = _client(registry.url, key)
    return adapter.parse(*client.send(adapter, request))


@cache
def _client(url: str, key: str) -> RegistryClient:
    return RegistryClient(base_url=url, api_key=key)


@pytest.mark.parametrize("country", ["ES", "FR", "DE", "IT", "PT"])
def test_each_registry_returns_a_plate_in_its_countrys_format(
    registry: RegistrySim, country: str
) -> None:
    outcome = register(registry, country)
    assert isinstance(outcome, Registered)
    assert PLATE_FORMATS[country].match(outcome.plate)


def test_german_plate_starts_with_the_holders_district(registry: RegistrySim) -> None:
    munich = register(registry, "DE", VINS[0], city="Muenchen")
    wuerzburg = register(registry, "DE", VINS[1], city="Würzburg", postal_code="97070")
    assert isinstance(munich, Registered) and munich.plate.startswith("M-")
    assert isinstance(wuerzburg, Registered) and wuerzburg.plate.startswith("WÜ-")


def test_plates_are_unique_and_the_same_car_sent_again_keeps_its_plate(
    registry: RegistrySim,
) -> None:
    plates = [register(registry, "PT", vin) for vin in VINS]
    assert len(set(plates)) == len(VINS)
    assert register(registry, "PT", VINS[0]) == plates[0]


@pytest.mark.parametrize(
    ("country", "words", "field"),
    [
        ("ES", "domicilio incompleto: falta el número de la vía", "domicilio"),
        ("FR", "adresse incomplète : numéro de voie manquant", "adresse"),
        ("DE", "Anschrift des Halters unvollständig: Hausnummer fehlt", "Halter.Straße"),
        ("IT", "indirizzo incompleto: manca il numero civico", "indirizzo"),
        ("PT", "morada incompleta: falta o número de polícia", "morada"),
    ],
)
def test_an_address_without_house_number_is_refused_in_the_registrys_words(
    registry: RegistrySim, country: str, words: str, field: str
) -> None:
    outcome = register(registry, country, street="Calle Mayor")
    assert outcome == Rejected(reason=words, field="street", registry_field=field)


def test_a_missing_field_is_refused_naming_it(registry: RegistrySim) -> None:
    outcome = register(registry, "IT", city="")
    assert outcome == Rejected("campo comune mancante o non valido", "city", "comune")


def test_a_district_missing_from_the_table_gets_a_sign_from_its_name(
    registry: RegistrySim,
) -> None:
    outcome = register(registry, "DE", city="Garching")
    assert isinstance(outcome, Registered) and outcome.plate.startswith("GAR-")


def test_a_german_district_without_a_name_is_refused(registry: RegistrySim) -> None:
    outcome = register(registry, "DE", city="80802")
    assert isinstance(outcome, Rejected)
    assert outcome.registry_field == "Zulassungsbezirk"
    assert outcome.field == "city"


def test_reject_next_refuses_once_then_registers(registry: RegistrySim) -> None:
    registry.reject_next("FR", "titulaire inconnu du fichier", "titulaire_nom")
    assert register(registry, "FR") == Rejected(
        "titulaire inconnu du fichier", "last_name", "titulaire_nom"
    )
    assert isinstance(register(registry, "FR"), Registered)


def test_an_outage_is_unavailable_until_it_ends(registry: RegistrySim) -> None:
    registry.outage(down=True)
    with pytest.raises(RegistryUnavailable):
        register(registry, "ES")
    registry.outage(down=False)
    assert isinstance(register(registry, "ES"), Registered)


def test_an_unreachable_registry_is_unavailable() -> None:
    with pytest.raises(RegistryUnavailable):
        register(RegistrySim("http://127.0.0.1:9"), "ES")


def test_a_wrong_api_key_is_a_fault_not_a_refusal(registry: RegistrySim) -> None:
    with pytest.raises(RegistryFault, match="401"):
        register(registry, "ES", key="wrong-key")


def test_random_refusals_follow_the_rate_and_repeat_with_the_seed() -> None:
    def outcomes() -> list[bool]:
        results = []
        for sim in serve_registries(rejection_rate=0.5, seed=42):
            for serial in range(40):
                vin = f"WC9AURA10TM{serial:06d}"
                results.append(isinstance(register(sim, "IT", vin), Rejected))
        return results

    first = outcomes()
    assert 5 < sum(first) < 35
    assert outcomes() == first
