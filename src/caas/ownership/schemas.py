"""Requests and answers of a change of owner and of an end of life."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from caas.ownership.models import Scrapping, Transfer
from caas.sales.schemas import CustomerIdentity

VIN_EXAMPLE = "VCAAURA02TM000001"


class TransferRead(BaseModel):
    """A change of owner and where it stands."""

    id: int = Field(description="The transfer's id", examples=[12])
    vin: str = Field(description="The car's VIN", examples=[VIN_EXAMPLE])
    kind: str = Field(description="`private` (a code) or `dealer` (a resale at a dealership)")
    state: str = Field(description="`open`, `completed` or `cancelled`", examples=["open"])
    code_expires_at: datetime | None = Field(description="Until when the code works (private)")
    created_at: datetime = Field(description="When it was opened")
    completed_at: datetime | None = Field(description="When the car changed hands")
    registry_state: str = Field(
        description="The registry's record of the new holder: `none` (not registered), "
        "`pending`, `recorded` or `refused`",
        examples=["pending"],
    )

    @classmethod
    def of(cls, transfer: Transfer, vin: str) -> TransferRead:
        return cls(
            id=transfer.id,
            vin=vin,
            kind=transfer.kind,
            state=transfer.state,
            code_expires_at=transfer.code_expires_at,
            created_at=transfer.created_at,
            completed_at=transfer.completed_at,
            registry_state=transfer.registry_state,
        )


class TransferOpenedRead(TransferRead):
    """A private transfer just opened, with the code to give the buyer."""

    code: str | None = Field(
        description="The code the buyer types with the VIN, shown once (null on a retry with "
        "the same Idempotency-Key: cancel and open again for a new one)",
        examples=["7K3M-Q9XD"],
    )


class TransferAccept(BaseModel):
    """The buyer receives the car: its VIN and the seller's code."""

    model_config = ConfigDict(str_strip_whitespace=True)

    vin: str = Field(
        min_length=17, max_length=17, description="The car's VIN", examples=[VIN_EXAMPLE]
    )
    code: str = Field(
        min_length=4,
        max_length=20,
        description="The seller's code (case, dashes and spaces do not matter)",
        examples=["7K3M-Q9XD"],
    )


class TransferAcceptNew(TransferAccept):
    """A person without an account receives the car: who they are, as in a sale."""

    buyer: CustomerIdentity = Field(
        description="The new owner; their account is activated by e-mail"
    )


class ResaleCreate(BaseModel):
    """A resale at a dealership, both parties present."""

    model_config = ConfigDict(str_strip_whitespace=True)

    vin: str = Field(
        min_length=17, max_length=17, description="The car's VIN", examples=[VIN_EXAMPLE]
    )
    seller_national_id: str = Field(
        min_length=1,
        max_length=40,
        description="The owner's national id, from their document",
        examples=["12345678Z"],
    )
    buyer: CustomerIdentity = Field(description="The buyer, found or created as in a new sale")


class ScrappingCreate(BaseModel):
    """A car's end of life."""

    model_config = ConfigDict(str_strip_whitespace=True)

    reason: str = Field(
        min_length=1,
        max_length=300,
        description="Why it was scrapped",
        examples=["Total loss after an accident"],
    )
    certificate_number: str = Field(
        min_length=1,
        max_length=40,
        description="The authorised facility's certificate of destruction",
        examples=["CD-2026-000123"],
    )


class ScrappingRead(BaseModel):
    """A scrapped car's record."""

    vin: str = Field(description="The car's VIN", examples=[VIN_EXAMPLE])
    reason: str = Field(description="Why it was scrapped")
    certificate_number: str = Field(description="Certificate of destruction")
    scrapped_at: datetime = Field(description="When it was recorded")
    registry_state: str = Field(
        description="The registry's deregistration: `none` (never registered), `pending`, "
        "`recorded` or `refused`"
    )

    @classmethod
    def of(cls, scrapping: Scrapping, vin: str) -> ScrappingRead:
        return cls(
            vin=vin,
            reason=scrapping.reason,
            certificate_number=scrapping.certificate_number,
            scrapped_at=scrapping.scrapped_at,
            registry_state=scrapping.registry_state,
        )


class RegistryRetryRead(BaseModel):
    """A refused registry request sent again."""

    vin: str = Field(description="The car's VIN", examples=[VIN_EXAMPLE])
    request: str = Field(description="holder_change or deregistration", examples=["holder_change"])
    refused: str = Field(description="Why the registry refused it last time")
    registry_state: str = Field(description="pending: the job sends it again", examples=["pending"])
