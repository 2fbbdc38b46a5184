"""France: immatriculation in the SIV (Système d'immatriculation des véhicules, ANTS)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from caas.accounts.models import Dealership
from caas.protocol import registry as wire
from caas.registration.base import MAKE, RegistrationAdapter
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle


class FranceSiv(RegistrationAdapter):
    country = "FR"
    authority = wire.AUTHORITIES["FR"]
    path = wire.PATHS["FR"]
    plate_format = wire.PLATE_FORMATS["FR"]
    customer_fields: ClassVar[Mapping[str, str]] = {
        "titulaire_nir": "national_id",
        "titulaire_prenom": "first_name",
        "titulaire_nom": "last_name",
        "adresse": "street",
        "code_postal": "postal_code",
        "commune": "city",
    }

    def build_request(
        self, customer: Customer, vehicle: Vehicle, dealership: Dealership
    ) -> dict[str, Any]:
        return wire.SivDemande.model_construct(
            vin=vehicle.vin,
            marque=MAKE,
            genre_national="VP",
            titulaire_nom=customer.last_name,
            titulaire_prenom=customer.first_name,
            titulaire_nir=customer.national_id,
            adresse=customer.street,
            code_postal=customer.postal_code,
            commune=customer.city,
            professionnel_habilite=dealership.code,
        ).model_dump(mode="json")

    def plate_in(self, body: Any) -> str:
        return wire.SivCertificat.model_validate(body).numero_immatriculation

    def refusal_in(self, body: Any) -> tuple[str, str | None]:
        refusal = wire.SivRefus.model_validate(body)
        return refusal.motif, refusal.champ
