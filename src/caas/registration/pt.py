"""Portugal: matrícula from the IMT (Instituto da Mobilidade e dos Transportes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from caas.accounts.models import Dealership
from caas.protocol import registry as wire
from caas.registration.base import MAKE, RegistrationAdapter
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle


class PortugalImt(RegistrationAdapter):
    country = "PT"
    authority = wire.AUTHORITIES["PT"]
    path = wire.PATHS["PT"]
    plate_format = wire.PLATE_FORMATS["PT"]
    customer_fields: ClassVar[Mapping[str, str]] = {
        "nif": "national_id",
        "nome": "first_name",
        "apelido": "last_name",
        "morada": "street",
        "codigo_postal": "postal_code",
        "localidade": "city",
    }

    def build_request(
        self, customer: Customer, vehicle: Vehicle, dealership: Dealership
    ) -> dict[str, Any]:
        return wire.ImtPedido.model_construct(
            quadro=vehicle.vin,
            marca=MAKE,
            nif=customer.national_id,
            nome=customer.first_name,
            apelido=customer.last_name,
            morada=customer.street,
            codigo_postal=customer.postal_code,
            localidade=customer.city,
            entidade=dealership.code,
        ).model_dump(mode="json")

    def plate_in(self, body: Any) -> str:
        return wire.ImtMatricula.model_validate(body).matricula

    def refusal_in(self, body: Any) -> tuple[str, str | None]:
        refusal = wire.ImtRecusa.model_validate(body)
        return refusal.motivo, refusal.campo
