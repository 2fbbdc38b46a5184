"""Spain: matriculación with the DGT (Dirección General de Tráfico)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from caas.accounts.models import Dealership
from caas.protocol import registry as wire
from caas.registration.base import MAKE, RegistrationAdapter
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle


class SpainDgt(RegistrationAdapter):
    country = "ES"
    authority = wire.AUTHORITIES["ES"]
    path = wire.PATHS["ES"]
    plate_format = wire.PLATE_FORMATS["ES"]
    customer_fields: ClassVar[Mapping[str, str]] = {
        "titular_nif": "national_id",
        "titular_nombre": "first_name",
        "titular_apellidos": "last_name",
        "domicilio": "street",
        "codigo_postal": "postal_code",
        "provincia": "postal_code",
        "municipio": "city",
    }

    def build_request(
        self, customer: Customer, vehicle: Vehicle, dealership: Dealership
    ) -> dict[str, Any]:
        return wire.DgtMatriculacion.model_construct(
            bastidor=vehicle.vin,
            marca=MAKE,
            titular_nif=customer.national_id,
            titular_nombre=customer.first_name,
            titular_apellidos=customer.last_name,
            domicilio=customer.street,
            codigo_postal=customer.postal_code,
            municipio=customer.city,
            # The first two digits of a Spanish postal code are the province's INE code.
            provincia=customer.postal_code[:2],
            concesionario=dealership.code,
        ).model_dump(mode="json")

    def plate_in(self, body: Any) -> str:
        return wire.DgtMatricula.model_validate(body).matricula

    def refusal_in(self, body: Any) -> tuple[str, str | None]:
        refusal = wire.DgtRechazo.model_validate(body)
        return refusal.motivo, refusal.campo
