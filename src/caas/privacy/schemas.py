"""Shapes of the consent API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from caas.privacy.rules import DESCRIPTIONS, Purpose
from caas.privacy.service import ConsentState


class ConsentRead(BaseModel):
    """The customer's answer for one purpose."""

    purpose: Purpose = Field(
        description="`location_history`: keep where the car has been; `driving_style`: keep "
        "speed and the car's further readings"
    )
    description: str = Field(
        description="What consenting lets the maker keep, for a person",
        examples=[DESCRIPTIONS["location_history"]],
    )
    granted: bool = Field(description="On: the data is kept from now on; off by default")
    changed_at: datetime | None = Field(
        description="When the customer last changed it, with UTC offset; null: never chosen"
    )

    @classmethod
    def of(cls, state: ConsentState) -> ConsentRead:
        return cls(
            purpose=state.purpose,
            description=DESCRIPTIONS[state.purpose],
            granted=state.granted,
            changed_at=state.changed_at,
        )


class ConsentsUpdate(BaseModel):
    """The customer's answers; a purpose left out keeps its answer."""

    model_config = ConfigDict(extra="forbid")

    location_history: bool | None = Field(
        default=None,
        description="Keep where the car has been (its position in every telemetry sample)",
        examples=[True],
    )
    driving_style: bool | None = Field(
        default=None,
        description="Keep how the car is driven (speed and the car's further readings)",
        examples=[False],
    )

    @model_validator(mode="after")
    def _says_something(self) -> ConsentsUpdate:
        if self.location_history is None and self.driving_style is None:
            raise ValueError("send location_history, driving_style or both")
        return self

    def choices(self) -> dict[Purpose, bool]:
        chosen: dict[Purpose, bool] = {}
        if self.location_history is not None:
            chosen["location_history"] = self.location_history
        if self.driving_style is not None:
            chosen["driving_style"] = self.driving_style
        return chosen
