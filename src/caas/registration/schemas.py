"""Shapes of the registration API: the registration's state and the dealer's corrections."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RejectionRead(BaseModel):
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
    sale_id: int
    country: str = Field(description="Country of the registry", examples=["ES"])
    authority: str = Field(description="The registration authority", examples=["DGT"])
    state: Literal["submitted", "registered", "rejected"] = Field(
        description="submitted: waiting for the registry's answer; registered: plate issued; "
        "rejected: correct the data and retry"
    )
    order_state: str = Field(examples=["registered"])
    order_state_label: str = Field(examples=["Registered"])
    attempts: int = Field(description="How many times the request was submitted", examples=[1])
    plate: str | None = Field(examples=["1234 BCD"])
    rejection: RejectionRead | None = Field(
        description="Why the last attempt was refused (only while `state` is rejected)"
    )
    submitted_at: datetime
    registered_at: datetime | None
    rejected_at: datetime | None


class CustomerCorrection(BaseModel):
    """The holder's data a registry may refuse, corrected by the dealer. Send only the fields
    to change; each is checked as at the sale (the postal code for the customer's country)."""

    model_config = ConfigDict(extra="forbid")

    first_name: str | None = Field(default=None, min_length=1, max_length=100, examples=["Ana"])
    last_name: str | None = Field(
        default=None, min_length=1, max_length=100, examples=["García López"]
    )
    street: str | None = Field(
        default=None, min_length=3, max_length=200, examples=["Calle Mayor 1, 3º B"]
    )
    postal_code: str | None = Field(default=None, max_length=20, examples=["28013"])
    city: str | None = Field(default=None, min_length=1, max_length=120, examples=["Madrid"])

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
