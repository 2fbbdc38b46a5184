"""Routes of the operator's upkeep marks per model: read them, set them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from caas.accounts.deps import Operator, actor_of
from caas.catalog import service as catalog
from caas.catalog.models import Platform
from caas.core.api import ClockDep, DbSession, answer_once, error_responses
from caas.upkeep import thresholds
from caas.upkeep.thresholds import Threshold, ThresholdChange

router = APIRouter(prefix="/api/v1/upkeep", tags=["upkeep"])

PlatformCode = Annotated[
    str, Path(max_length=20, description="The model's platform code", examples=["AURA"])
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended change; a retry with the same key acts once",
    ),
]


class MarkRead(BaseModel):
    """One mark of a model: the reading, the need it trips, its levels (null: not watched)."""

    mark: str = Field(description="The mark's code", examples=["washer_fluid"])
    need: str = Field(description="What a crossing proposes", examples=["washer_fluid"])
    signal: str = Field(
        description="The reading's name in the car's telemetry",
        examples=["Vehicle.Body.Windshield.Front.WasherFluid.Level"],
    )
    vss: bool = Field(description="Whether the signal is a COVESA VSS signal")
    unit: str = Field(description="Unit of the levels", examples=["%"])
    direction: Literal["below", "above"] = Field(
        description="The mark trips when the reading goes below (or above) the trip level"
    )
    trip_level: float | None = Field(description="Where it trips", examples=[15])
    rearm_level: float | None = Field(
        description="Where it re-arms after a fill or a service (the hysteresis)", examples=[40]
    )
    updated_at: datetime | None = Field(description="When the operator last set it")


class ThresholdsRead(BaseModel):
    """Every mark of one model."""

    platform: str = Field(description="The model's platform code", examples=["AURA"])
    marks: list[MarkRead] = Field(description="Every mark the platform knows, set or not")


class MarkUpdate(BaseModel):
    """New levels of one mark."""

    model_config = ConfigDict(extra="forbid")

    mark: str = Field(max_length=30, description="The mark's code", examples=["washer_fluid"])
    trip_level: float = Field(
        allow_inf_nan=False, description="Where it trips, in the mark's unit", examples=[15]
    )
    rearm_level: float = Field(
        allow_inf_nan=False,
        description="Where it re-arms: above the trip level for a mark that trips below it, "
        "below for one that trips above",
        examples=[40],
    )


class ThresholdsUpdate(BaseModel):
    """The marks to set; marks not listed stay as they are."""

    model_config = ConfigDict(extra="forbid")

    marks: list[MarkUpdate] = Field(
        min_length=1,
        max_length=len(thresholds.MARKS),
        description="The marks to set",
        examples=[[{"mark": "washer_fluid", "trip_level": 15, "rearm_level": 40}]],
    )


def thresholds_read(platform: Platform, shown: list[Threshold]) -> ThresholdsRead:
    return ThresholdsRead(
        platform=platform.code,
        marks=[
            MarkRead(
                mark=t.mark.code,
                need=t.mark.need,
                signal=t.mark.signal,
                vss=t.mark.vss,
                unit=t.mark.unit,
                direction=t.mark.direction,
                trip_level=t.trip_level,
                rearm_level=t.rearm_level,
                updated_at=t.updated_at,
            )
            for t in shown
        ],
    )


@router.get(
    "/thresholds/{platform}",
    response_model=ThresholdsRead,
    summary="The upkeep marks of a model (operator)",
    description="Each reading the platform watches on the model's cars, where it trips a "
    "need and where it re-arms; null levels: not watched on this model.",
    responses=error_responses(401, 403, 404, 422),
)
def get_thresholds(platform: PlatformCode, session: DbSession, _: Operator) -> ThresholdsRead:
    found = catalog.platform_or_404(session, platform)
    return thresholds_read(found, thresholds.thresholds_of(session, found))


@router.put(
    "/thresholds/{platform}",
    response_model=ThresholdsRead,
    summary="Set upkeep marks of a model (operator)",
    description="Sets the listed marks (others stay). 422 names the field at fault: an "
    "unknown mark, a level out of range, or a re-arm level not beyond the trip level in the "
    "mark's direction (no hysteresis); one invalid mark sets none.",
    responses=error_responses(401, 403, 404, 422),
)
def put_thresholds(
    platform: PlatformCode,
    body: ThresholdsUpdate,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    found = catalog.platform_or_404(session, platform)

    def act() -> dict[str, Any]:
        changes = [ThresholdChange(m.mark, m.trip_level, m.rearm_level) for m in body.marks]
        shown = thresholds.set_thresholds(session, found, changes, actor=actor_of(user), now=now)
        return thresholds_read(found, shown).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"upkeep.thresholds:{found.code}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
