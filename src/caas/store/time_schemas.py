"""Shapes of the store's time API: subscriptions, planned and recurring options."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Literal

from pydantic import BaseModel, Field


class SubscriptionRead(BaseModel):
    """A monthly or yearly option that renews until cancelled."""

    id: int = Field(description="Database id of the subscription", examples=[7])
    vin: str = Field(description="The car's VIN", examples=["1M8GDM9AXKP042788"])
    code: str = Field(description="The option's code", examples=["power_boost"])
    offer_id: int = Field(description="The subscription offer it renews at", examples=[31])
    state: Literal["active", "past_due", "cancelled", "lapsed"] = Field(
        description="active; past_due (a renewal failed and is tried again); cancelled (by "
        "the customer, at the end of the paid period); lapsed (renewal failed for good)",
        examples=["active"],
    )
    current_period_start: datetime = Field(description="Start of the paid period (UTC)")
    current_period_end: datetime = Field(
        description="End of the paid period (UTC): the option runs until then whatever happens"
    )
    cancel_at_period_end: bool = Field(
        description="Cancelled by the customer: stops at the period's end, can be resumed "
        "until then",
        examples=[False],
    )
    renews: bool = Field(
        description="Whether it will try to renew at the period's end (or at the next retry)",
        examples=[True],
    )
    attempts: int = Field(description="Failed renewal attempts of this period", examples=[0])
    next_attempt_at: datetime | None = Field(
        description="When a failed renewal is tried again (UTC); null unless past_due",
        examples=[None],
    )


class ScheduleCreate(BaseModel):
    """Plan an option once, every year or every week, in the customer's local time."""

    offer_id: int = Field(
        description="The option's own-dates (custom) offer in your country: priced per "
        "started day of each window",
        examples=[12],
    )
    recurrence: Literal["once", "yearly", "weekly"] = Field(
        description="once; yearly (the same dates every year); weekly (the same weekdays and "
        "times every week, at most 7 days long)",
        examples=["weekly"],
    )
    start_date: date = Field(
        description="Local date of the first window's start (for weekly: its weekday too)",
        examples=["2026-03-28"],
    )
    start_time: time = Field(description="Local time of each window's start", examples=["08:00"])
    end_date: date = Field(
        description="Local date of the first window's end", examples=["2026-03-29"]
    )
    end_time: str = Field(
        pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
        description='Local time of each window\'s end, "HH:MM"; "24:00" is the end of that day',
        examples=["22:00"],
    )
    timezone: str | None = Field(
        default=None,
        max_length=40,
        description="IANA time zone of the times above; by default your country's",
        examples=["Europe/Madrid"],
    )
    charge: Literal["each", "upfront"] = Field(
        default="each",
        description="each: every occurrence is charged when it starts (a failed charge means "
        "it does not start); upfront: paid now, once-only schedules",
        examples=["each"],
    )
    card_token: str = Field(
        min_length=3,
        max_length=80,
        description="The payment provider's reusable card token, charged for each occurrence",
        examples=["tok_3f9c2a7e5b1d4c8a"],
    )


class OccurrenceRead(BaseModel):
    """One window of a schedule, planned or running."""

    id: int | None = Field(
        description="Database id of the occurrence; null while it is still only on the rule",
        examples=[3],
    )
    starts_at: datetime = Field(description="Start (UTC)")
    ends_at: datetime = Field(description="End (UTC)")
    starts_local: datetime = Field(description="Start on the schedule's clock, with its offset")
    ends_local: datetime = Field(description="End on the schedule's clock, with its offset")
    state: Literal["planned", "started", "failed", "cancelled"] = Field(
        description="planned; started (paid, the option runs); failed (not paid: it did not "
        "start); cancelled",
        examples=["planned"],
    )
    failure_reason: str | None = Field(
        description="Why it did not start: card_declined, maintenance_overdue, missed...",
        examples=[None],
    )


class ScheduleRead(BaseModel):
    """A planned or recurring option of a car, with its next occurrences."""

    id: int = Field(description="Database id of the schedule", examples=[4])
    vin: str = Field(description="The car's VIN", examples=["1M8GDM9AXKP042788"])
    code: str = Field(description="The option's code", examples=["power_boost"])
    offer_id: int = Field(description="The custom offer it is charged at", examples=[12])
    recurrence: Literal["once", "yearly", "weekly"] = Field(
        description="How it repeats", examples=["weekly"]
    )
    timezone: str = Field(description="IANA zone of its local times", examples=["Europe/Madrid"])
    start_date: date = Field(description="Local date of the first window's start")
    start_time: str = Field(
        description="Local time of each window's start, HH:MM (a wall-clock time, no offset)",
        examples=["08:00"],
    )
    end_date: date = Field(description="Local date of the first window's end")
    end_time: str = Field(description='Local time of each window\'s end ("24:00": midnight)')
    charge: Literal["each", "upfront"] = Field(description="When it is paid", examples=["each"])
    state: Literal["active", "cancelled", "finished"] = Field(
        description="active; cancelled by the customer; finished (no occurrence left)",
        examples=["active"],
    )
    upcoming: list[OccurrenceRead] = Field(
        description="The next occurrences, running ones first (up to three)"
    )
