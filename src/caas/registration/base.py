"""The one interface every country's registry adapter implements, and what a registry answers."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ValidationError

from caas.accounts.models import Dealership
from caas.protocol import registry as wire
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle

# The make as the registries know it.
MAKE = "CAAS"


@dataclass(frozen=True, slots=True)
class Registered:
    """The registry registered the car under `plate` (already checked against its format)."""

    plate: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The registry refused the request, in its own words.

    `field` is the customer's field the dealer corrects (`street`, `postal_code`, `city`,
    `first_name`, `last_name`, `national_id`), when the registry named one we know;
    `registry_field` is the registry's own name for it (`domicilio`, `Halter.Straße`...).
    """

    reason: str
    field: str | None
    registry_field: str | None


class RegistryUnavailable(Exception):
    """The registry is down or overloaded: the same request is worth sending again later."""


class RegistryFault(Exception):
    """The registry answered something we cannot accept (a malformed plate, an unknown shape,
    a refused credential): an error to retry with backoff and look into, never a success."""


class RegistrationAdapter(ABC):
    """How the platform talks to one country's registry."""

    country: ClassVar[str]
    authority: ClassVar[str]
    path: ClassVar[str]
    plate_format: ClassVar[re.Pattern[str]]
    # The registry's field names -> the customer field a dealer corrects.
    customer_fields: ClassVar[Mapping[str, str]]

    @abstractmethod
    def build_request(
        self, customer: Customer, vehicle: Vehicle, dealership: Dealership
    ) -> dict[str, Any]:
        """The registry's own request body for registering `vehicle` to `customer`.

        Built as it is, not validated here: when our data miss a registry's rule, the
        registry's refusal (in its words, naming its field) is what the dealer needs to read.
        """

    @abstractmethod
    def plate_in(self, body: Any) -> str:
        """The plate in a success answer (pydantic ValidationError if the shape is wrong)."""

    @abstractmethod
    def refusal_in(self, body: Any) -> tuple[str, str | None]:
        """(reason, registry field) of a refusal (ValidationError if the shape is wrong)."""

    def holder_change(
        self, customer: Customer, vehicle: Vehicle, dealership: Dealership
    ) -> tuple[str, dict[str, Any]]:
        """Path and body recording `customer` as the registered car's new holder: the
        registration request for them, sent to the car's own resource (`parse` reads the
        answer: the same plate, or a refusal naming the field)."""
        path = wire.holder_change_path(self.country, vehicle.vin)
        return path, self.build_request(customer, vehicle, dealership)

    def deregistration(
        self, vehicle: Vehicle, *, certificate_number: str, reason: str
    ) -> tuple[str, dict[str, Any]]:
        """Path and body closing the car's registration for good (scrapped)."""
        body = wire.Deregistration(certificate_number=certificate_number, reason=reason)
        return wire.deregistration_path(self.country, vehicle.vin), body.model_dump(mode="json")

    def parse(self, status_code: int, body: Any) -> Registered | Rejected:
        """Read the registry's answer; raise when it is neither a valid plate nor a refusal."""
        if status_code >= 500 or status_code == 429:
            raise RegistryUnavailable(f"{self.authority} answered {status_code}")
        try:
            if 200 <= status_code < 300:
                plate = self.plate_in(body)
            elif status_code == 422:
                reason, registry_field = self.refusal_in(body)
                return self.rejected(reason, registry_field)
            else:
                raise RegistryFault(f"{self.authority} answered {status_code}: {body!r:.300}")
        except ValidationError as error:
            raise RegistryFault(f"{self.authority} answered an unknown shape: {error}") from None
        if not self.plate_format.match(plate):
            raise RegistryFault(f"{self.authority} returned {plate!r}, not a {self.country} plate")
        return Registered(plate)

    def rejected(self, reason: str, registry_field: str | None) -> Rejected:
        field = self.customer_fields.get(registry_field) if registry_field else None
        return Rejected(reason=reason, field=field, registry_field=registry_field)
