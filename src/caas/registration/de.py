"""Germany: Zulassung at the holder's Zulassungsstelle (reported to the KBA)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar

from caas.accounts.models import Dealership
from caas.protocol import registry as wire
from caas.registration.base import MAKE, RegistrationAdapter
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle

# Other spellings of a district's city that customers type.
_ALIASES = {
    "munich": "München",
    "cologne": "Köln",
    "frankfurt": "Frankfurt am Main",
    "frankfurt/main": "Frankfurt am Main",
    "frankfurt a. m.": "Frankfurt am Main",
    "nuremberg": "Nürnberg",
    "hanover": "Hannover",
    "freiburg": "Freiburg im Breisgau",
}


def _fold(city: str) -> str:
    """Case, umlauts and ß folded away, so `MUENCHEN`, `Muenchen` and `München` meet."""
    text = " ".join(city.split()).casefold()
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(umlaut, spelled)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


_DISTRICT_BY_CITY = {
    **{_fold(name): name for name in wire.DE_DISTRICTS},
    **{_fold(alias): name for alias, name in _ALIASES.items()},
}


def district_of(city: str) -> str:
    """The Zulassungsbezirk of a holder living in `city`; the city itself when we do not know
    it, so the registry (not a guess of ours) says whether it has a Zulassungsstelle there."""
    return _DISTRICT_BY_CITY.get(_fold(city), " ".join(city.split()))


class GermanyZulassung(RegistrationAdapter):
    country = "DE"
    authority = wire.AUTHORITIES["DE"]
    path = wire.PATHS["DE"]
    plate_format = wire.PLATE_FORMATS["DE"]
    customer_fields: ClassVar[Mapping[str, str]] = {
        "Steuer-IdNr": "national_id",
        "Halter.Vorname": "first_name",
        "Halter.Nachname": "last_name",
        "Halter.Straße": "street",
        "Halter.PLZ": "postal_code",
        "Halter.Ort": "city",
        "Zulassungsbezirk": "city",
    }

    def build_request(
        self, customer: Customer, vehicle: Vehicle, dealership: Dealership
    ) -> dict[str, Any]:
        return wire.Zulassungsantrag.model_construct(
            fin=vehicle.vin,
            hersteller=MAKE,
            halter=wire.Halter.model_construct(
                vorname=customer.first_name,
                nachname=customer.last_name,
                strasse=customer.street,
                plz=customer.postal_code,
                ort=customer.city,
            ),
            steuer_idnr=customer.national_id,
            zulassungsbezirk=district_of(customer.city),
            haendler=dealership.code,
        ).model_dump(mode="json", by_alias=True)

    def plate_in(self, body: Any) -> str:
        return wire.Zulassung.model_validate(body).kennzeichen

    def refusal_in(self, body: Any) -> tuple[str, str | None]:
        refusal = wire.Ablehnung.model_validate(body)
        return refusal.ablehnungsgrund, refusal.feld
