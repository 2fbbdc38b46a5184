"""The country adapters without a database: plate formats, requests in each registry's own
fields, and how each registry's answers are read."""

from __future__ import annotations

from typing import Any

import pytest

from caas.accounts.models import Dealership
from caas.protocol import registry as wire
from caas.registration.base import Registered, RegistryFault, RegistryUnavailable, Rejected
from caas.registration.countries import ADAPTERS, adapter_for
from caas.registration.de import district_of
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle
from tests.factories import IDENTITIES

VIN = "1M8GDM9AXKP042788"

# Compact national ids as the sale stores them.
NATIONAL_IDS = {
    "ES": "12345678Z",
    "FR": "295109912611193",
    "DE": "36574261809",
    "IT": "RCCMNL83S18D969H",
    "PT": "123456789",
}


def customer(country: str, **overrides: Any) -> Customer:
    identity = IDENTITIES[country]
    fields: dict[str, Any] = {
        "first_name": "Ana",
        "last_name": "García López",
        "national_id": NATIONAL_IDS[country],
        "street": identity["street"],
        "postal_code": identity["postal_code"],
        "city": identity["city"],
        "country": country,
        **overrides,
    }
    return Customer(**fields)


def build(country: str, **overrides: Any) -> dict[str, Any]:
    return adapter_for(country).build_request(
        customer(country, **overrides), Vehicle(vin=VIN), Dealership(code="MAD01")
    )


@pytest.mark.parametrize(
    ("country", "good", "bad"),
    [
        ("ES", ["1234 BCD", "0000 ZZZ"], ["1234 BCA", "1234-BCD", "123 BCD", "1234 bcd"]),
        ("FR", ["AB-123-CD", "ZZ-001-HJ"], ["AI-123-CD", "AB-123-CO", "AB123CD", "AB-12-CD"]),
        ("DE", ["M-AB 1234", "WÜ-F 8", "HRO-X 77"], ["M AB 1234", "M-ABC 1", "M-AB 12345"]),
        ("IT", ["AB 123 CD", "ZZ 000 TV"], ["AB123CD", "AI 123 CD", "AB 123 CU", "AB 12 CD"]),
        ("PT", ["AA-00-AA", "ZX-99-KW"], ["AA-000-AA", "00-AA-00", "aa-00-aa"]),
    ],
)
def test_each_country_has_its_plate_format(country: str, good: list[str], bad: list[str]) -> None:
    plate_format = adapter_for(country).plate_format
    assert all(plate_format.match(plate) for plate in good)
    assert not any(plate_format.match(plate) for plate in bad)


def test_every_country_we_sell_in_has_an_adapter_at_its_own_path() -> None:
    assert sorted(ADAPTERS) == sorted(wire.COUNTRIES)
    assert len({adapter.path for adapter in ADAPTERS.values()}) == 5


@pytest.mark.parametrize(
    ("country", "expected"),
    [
        (
            "ES",
            {
                "bastidor": VIN,
                "titular_nif": "12345678Z",
                "domicilio": "Calle Mayor 1",
                "codigo_postal": "28013",
                "municipio": "Madrid",
                "provincia": "28",
            },
        ),
        (
            "FR",
            {
                "vin": VIN,
                "titulaire_nom": "García López",
                "titulaire_prenom": "Ana",
                "titulaire_nir": "295109912611193",
                "commune": "Lyon",
            },
        ),
        (
            "DE",
            {
                "FIN": VIN,
                "Steuer-IdNr": "36574261809",
                "Zulassungsbezirk": "München",
                "Halter": {
                    "Vorname": "Ana",
                    "Nachname": "García López",
                    "Straße": "Leopoldstraße 10",
                    "PLZ": "80802",
                    "Ort": "München",
                },
            },
        ),
        ("IT", {"telaio": VIN, "codice_fiscale": "RCCMNL83S18D969H", "comune": "Milano"}),
        ("PT", {"quadro": VIN, "nif": "123456789", "morada": "Rua de Santa Catarina 20"}),
    ],
)
def test_request_speaks_the_registrys_own_fields(country: str, expected: dict[str, Any]) -> None:
    request = build(country)
    assert request.items() >= expected.items()
    # And it is a valid request by that registry's contract.
    wire.REQUESTS[country].model_validate(request)


@pytest.mark.parametrize(
    ("city", "district"),
    [
        ("München", "München"),
        ("MUENCHEN", "München"),
        ("Munich", "München"),
        ("  frankfurt ", "Frankfurt am Main"),
        ("Würzburg", "Würzburg"),
        ("Kleinkleckersdorf", "Kleinkleckersdorf"),
    ],
)
def test_german_district_comes_from_the_holders_city(city: str, district: str) -> None:
    assert district_of(city) == district
    assert build("DE", city=city)["Zulassungsbezirk"] == district


# Each registry's success answer: its names for the plate, the file number and the date.
SUCCESS_FIELDS = {
    "ES": ("matricula", "numero_expediente", "fecha_matriculacion"),
    "FR": ("numero_immatriculation", "numero_dossier", "date_immatriculation"),
    "DE": ("Kennzeichen", "Vorgangsnummer", "Zulassungsdatum"),
    "IT": ("targa", "numero_pratica", "data_immatricolazione"),
    "PT": ("matricula", "numero_processo", "data_matricula"),
}


def success(country: str, plate: str) -> dict[str, str]:
    plate_field, number_field, date_field = SUCCESS_FIELDS[country]
    return {plate_field: plate, number_field: "2026-000001", date_field: "2026-01-15"}


@pytest.mark.parametrize(
    ("country", "plate"),
    [("ES", "1234 BCD"), ("FR", "AB-123-CD"), ("DE", "M-AB 1234"), ("IT", "AB 123 CD"),
     ("PT", "AA-00-AA")],
)  # fmt: skip
def test_a_plate_in_format_is_a_registration(country: str, plate: str) -> None:
    assert adapter_for(country).parse(201, success(country, plate)) == Registered(plate)


def test_a_plate_out_of_format_is_an_error_not_a_success() -> None:
    with pytest.raises(RegistryFault, match="not a ES plate"):
        adapter_for("ES").parse(201, success("ES", "AB-123-CD"))


@pytest.mark.parametrize(
    ("country", "body", "expected"),
    [
        ("ES", {"codigo": "DGT-R20", "motivo": "domicilio incompleto", "campo": "domicilio"},
         Rejected("domicilio incompleto", "street", "domicilio")),
        ("FR", {"code_erreur": "SIV-R30", "motif": "code postal faux", "champ": "code_postal"},
         Rejected("code postal faux", "postal_code", "code_postal")),
        ("DE", {"Fehlercode": "KBA-R21", "Ablehnungsgrund": "kein Bezirk",
                "Feld": "Zulassungsbezirk"},
         Rejected("kein Bezirk", "city", "Zulassungsbezirk")),
        ("IT", {"esito": "respinta", "codice": "PRA-R10", "motivo": "pratica sospesa",
                "campo": None},
         Rejected("pratica sospesa", None, None)),
        ("PT", {"codigo_erro": "IMT-R10", "motivo": "apelido ilegível", "campo": "apelido"},
         Rejected("apelido ilegível", "last_name", "apelido")),
    ],
)  # fmt: skip
def test_a_refusal_names_the_customer_field_to_correct(
    country: str, body: dict[str, Any], expected: Rejected
) -> None:
    assert adapter_for(country).parse(422, body) == expected


def test_a_registry_that_is_down_is_unavailable_and_odd_answers_are_faults() -> None:
    adapter = adapter_for("PT")
    with pytest.raises(RegistryUnavailable):
        adapter.parse(503, {"error": "service unavailable"})
    with pytest.raises(RegistryFault):
        adapter.parse(401, {"error": "unauthorized"})
    with pytest.raises(RegistryFault, match="unknown shape"):
        adapter.parse(201, {"plate": "AA-00-AA"})
    with pytest.raises(RegistryFault, match="unknown shape"):
        adapter.parse(422, "refused")
