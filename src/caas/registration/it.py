"""Italy: immatricolazione with the Motorizzazione civile and the PRA."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from caas.accounts.models import Dealership
from caas.protocol import registry as wire
from caas.registration.base import MAKE, RegistrationAdapter
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle


class ItalyPra(RegistrationAdapter):
    country = "IT"
    authority = wire.AUTHORITIES["IT"]
    path = wire.PATHS["IT"]
    plate_format = wire.PLATE_FORMATS["IT"]
    customer_fields: ClassVar[Mapping[str, str]] = {
        "codice_fiscale": "national_id",
        "nome": "first_name",
        "cognome": "last_name",
        "indirizzo": "street",
        "cap": "postal_code",
        "comune": "city",
    }

    def build_request(
        self, customer: Customer, vehicle: Vehicle, dealership: Dealership
    ) -> dict[str, Any]:
        return wire.PraImmatricolazione.model_construct(
            telaio=vehicle.vin,
            marca=MAKE,
            codice_fiscale=customer.national_id,
            cognome=customer.last_name,
            nome=customer.first_name,
            indirizzo=customer.street,
            cap=customer.postal_code,
            comune=customer.city,
            concessionario=dealership.code,
        ).model_dump(mode="json")

    def plate_in(self, body: Any) -> str:
        return wire.PraTarga.model_validate(body).targa

    def refusal_in(self, body: Any) -> tuple[str, str | None]:
        refusal = wire.PraEsitoNegativo.model_validate(body)
        return refusal.motivo, refusal.campo
