"""What the releases API reads and writes: releases, rollouts and their progress per wave."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from caas.releases import rules


class ReleaseUpdate(BaseModel):
    """A change to a draft release: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    notes: str | None = Field(
        default=None,
        max_length=5000,
        description="What changes for the driver",
        examples=["Faster maps."],
    )
    models: list[str] | None = Field(
        default=None,
        max_length=20,
        description="Platform codes it is built for",
        examples=[["AURA"]],
    )
    hardware: list[str] | None = Field(
        default=None,
        max_length=20,
        description="Features whose hardware a car must have fitted to take it",
        examples=[["driver_assist"]],
    )
    min_version: str | None = Field(
        default=None,
        max_length=20,
        description="The oldest software a car may run to take it; empty text: any",
        examples=["7.0.0"],
    )


class ReleaseRead(BaseModel):
    """A software release of a platform."""

    id: int = Field(description="Database id", examples=[3])
    platform: str = Field(description="Code of the platform", examples=["AURA"])
    version: str = Field(description="Semantic version", examples=["8.1.0"])
    notes: str = Field(description="What changes for the driver")
    state: str = Field(description="draft, published or withdrawn", examples=["published"])
    image_size: int = Field(description="Size of the image in bytes", examples=[1048576])
    image_sha256: str = Field(description="SHA-256 of the image, hex")
    signature: str | None = Field(
        description="The manifest signing key's signature over version, sha256, size and "
        "models (base64); none while a draft"
    )
    models: list[str] = Field(description="Platform codes it is built for")
    hardware: list[str] = Field(description="Features whose hardware must be fitted")
    min_version: str | None = Field(description="The oldest software a car may run to take it")
    created_at: datetime = Field(description="When it was uploaded")
    published_at: datetime | None = Field(description="When it was signed and published")


class RolloutCreate(BaseModel):
    """A rollout of a published release over its compatible fleet."""

    model_config = ConfigDict(extra="forbid")

    waves: list[int] = Field(
        default_factory=lambda: list(rules.DEFAULT_WAVES),
        min_length=1,
        max_length=10,
        description="Cumulative percentages of the compatible cars reached by each wave, "
        "growing, the last 100",
        examples=[[1, 10, 50, 100]],
    )
    success_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Share of a wave's cars that must have installed it before the next wave",
        examples=[90],
    )
    failure_percent: int = Field(
        default=10,
        ge=0,
        le=100,
        description="The rollout halts by itself when more than this share of the cars offered "
        "so far failed or rolled back",
        examples=[10],
    )
    start: bool = Field(default=True, description="Start at once (false: planned until resumed)")
    ask_owner: bool = Field(
        default=False,
        description="Ask each car's owner first: the car gets the update only once they accept "
        "it in the app (or after `auto_install_days`); cars waiting for an answer neither hold "
        "the next wave back nor count as failures",
    )
    auto_install_days: int | None = Field(
        default=None,
        ge=1,
        le=rules.MAX_AUTO_INSTALL_DAYS,
        description="With `ask_owner`: days after asking when the car gets it without an "
        "answer (none: only on acceptance)",
        examples=[14],
    )


class WaveRead(BaseModel):
    """One wave of a rollout and where its cars are."""

    number: int = Field(description="1 for the first wave", examples=[1])
    percent: int = Field(description="Share of the fleet reached by the end of this wave")
    cars: int = Field(description="Cars in this wave", examples=[12])
    by_state: dict[str, int] = Field(
        description="Cars per state: pending, offered, downloading, installing, installed, "
        "failed, rolled_back",
        examples=[{"installed": 11, "rolled_back": 1}],
    )
    success_percent: float = Field(description="Share of its cars that installed it")


class RolloutTargetRead(BaseModel):
    """One car of a rollout."""

    vin: str = Field(description="The car's VIN")
    wave: int = Field(description="Its wave")
    state: str = Field(description="How far its update went")
    last_step_at: datetime | None = Field(description="When it last moved")
    error: str | None = Field(description="Why it failed or rolled back")


class RolloutRead(BaseModel):
    """A rollout with its progress per wave."""

    id: int = Field(description="Database id", examples=[1])
    release_id: int = Field(description="The release rolled out")
    version: str = Field(description="Its version", examples=["8.1.0"])
    state: str = Field(
        description="planned, running, paused, halted, cancelled or completed",
        examples=["running"],
    )
    current_wave: int = Field(description="The wave offered last; 0 before the start")
    success_percent: int = Field(description="Share of a wave needed before the next")
    failure_percent: int = Field(description="Share of failures that halts it")
    halt_reason: str | None = Field(description="Why it halted by itself")
    ask_owner: bool = Field(description="Whether each owner is asked first")
    auto_install_days: int | None = Field(
        description="Days after asking when the car gets it without an answer"
    )
    created_at: datetime = Field(description="When it was created")
    started_at: datetime | None = Field(description="When it started")
    completed_at: datetime | None = Field(description="When every wave was done")
    waves: list[WaveRead] = Field(description="Progress per wave")
    targets: list[RolloutTargetRead] = Field(description="Every car, in its order")


class AwaitedUpdateRead(BaseModel):
    """A new software version the car's owner is asked to accept."""

    version: str = Field(description="The version offered", examples=["7.4.0"])
    notes: str = Field(description="What it brings, as the maker wrote it")
    asked_at: datetime | None = Field(description="When the owner was asked")
    install_by: datetime | None = Field(
        description="When the car gets it anyway without an answer (none: only on acceptance)"
    )
    state: str = Field(
        description="awaiting_owner, or offered once accepted (the car installs it when "
        "connected and parked)",
        examples=["awaiting_owner"],
    )
