"""Shapes of the platform's factory endpoints (the wire contract itself is caas.protocol)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FactoryEventReceipt(BaseModel):
    """What the platform answers a stage event; any 2xx tells the factory to stop retrying."""

    status: Literal["applied", "duplicate", "ignored"] = Field(
        description="`applied`: the order moved; `duplicate`: this event id was received "
        "before; `ignored`: older than what the order already knows (kept, changes nothing)",
        examples=["applied"],
    )
    order_id: str = Field(
        description="The order the event is about (the sale number)", examples=["S2026-000042"]
    )
    sequence: int = Field(description="The event's sequence number, as sent", examples=[5])
