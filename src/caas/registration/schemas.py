"""Shapes of the registration API: the registration's state and the dealer's corrections."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RejectionRead(BaseModel):
    """Why the registry refused the last request."""

    reason: str = Field(
        description="The registry's reason, in its own words",
        examples=["domicilio incompleto: falta el número de la vía"],
    )
    field: str | None = Field(
        description="The customer's field to correct (`PATCH .../customer`), when known",
        examples=["street"],
    )
    registry_field: str | None = Field(
        description="The registry's own name for that field", examples=["domicilio"]
    )


class RegistrationRead(BaseModel):
    """The car's registration with the authority of the customer's country."""

    sale_id: int = Field(description="Database id of the order", examples=[1])
    country: str = Field(description="Country of the registry", examples=["ES"])
    authority: str = Field(description="The registration authority", examples=["DGT"])
    state: Literal["submitted", "registered", "rejected"] = Field(
        description="submitted: waiting for the registry's answer; registered: plate issued; "
        "rejected: correct the data and retry"
    )
    order_state: str = Field(
        description="The order's state (machine name)", examples=["registered"]
    )
    order_state_label: str = Field(
        description="The order's state as people read it", examples=["Registered"]
    )
    attempts: int = Field(description="How many times the request was submitted", examples=[1])
    plate: str | None = Field(
        description="Number plate the registry issued; null until registered",
        examples=["1234 BCD"],
    )
    rejection: RejectionRead | None = Field(
        description="Why the last attempt was refused (only while `state` is rejected)"
    )
    submitted_at: datetime = Field(
        description="When the request was last sent to the registry, with UTC offset"
    )
    registered_at: datetime | None = Field(
        description="When the plate was issued, with UTC offset; null until then"
    )
    rejected_at: datetime | None = Field(
        description="When the registry refused the last request, with UTC offset; null otherwise"
    )


class CustomerCorrection(BaseModel):
    """The holder's data a registry may refuse, corrected by the dealer. Send only the fields
    to change; each is checked as at the sale (the postal code for the customer's country)."""

    model_config = ConfigDict(extra="forbid")

    first_name: str | None = Field(
        default=None, min_length=1, max_length=100, description="Given name", examples=["Ana"]
    )
    last_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Family name(s), as on the identity document",
        examples=["García López"],
    )
    street: str | None = Field(
        default=None,
        min_length=3,
        max_length=200,
        description="Street, number, floor and door",
        examples=["Calle Mayor 1, 3º B"],
    )
    postal_code: str | None = Field(
        default=None,
        max_length=20,
        description="Postal code in the format of the customer's country",
        examples=["28013"],
    )
    city: str | None = Field(
        default=None, min_length=1, max_length=120, description="Town or city", examples=["Madrid"]
    )

    @field_validator("first_name", "last_name", "street", "postal_code", "city", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Only sent fields reach a validator: an explicit null is a mistake, not "unchanged".
        if value is None:
            raise ValueError("must not be null; leave the field out to keep it")
        return value

    @field_validator("first_name", "last_name", "street", "city")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _something(self) -> CustomerCorrection:
        if not self.model_fields_set:
            raise ValueError("send at least one field to correct")
        return self

    def changes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in self.model_fields_set}
