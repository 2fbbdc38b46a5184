"""How things read on a page: money, times in the reader's zone, order states and progress."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from jinja2 import pass_context
from jinja2.runtime import Context

from caas.core.money import Money
from caas.sales.rules import FACTORY_STAGES
from caas.web.strings import lookup, translate

# Where the customers and dealerships of each country read their clocks.
COUNTRY_ZONES = {
    "ES": "Europe/Madrid",
    "FR": "Europe/Paris",
    "DE": "Europe/Berlin",
    "IT": "Europe/Rome",
    "PT": "Europe/Lisbon",
}
STAFF_ZONE = "Europe/Madrid"

# The colour of a state's badge: what it asks of the reader.
_TONES = {
    "awaiting_deposit": "warn",
    "at_dealer": "warn",
    "registration_rejected": "danger",
    "registered": "ok",
    "delivered": "ok",
    "cancelled": "muted",
}

# The customer's journey in six steps, each with the order states that belong to it.
JOURNEY: tuple[tuple[str, frozenset[str]], ...] = (
    ("deposit", frozenset({"awaiting_deposit"})),
    ("manufacturing", frozenset({"waiting_for_factory", "ordered", *FACTORY_STAGES[:-1]})),
    ("final_payment", frozenset({"at_dealer"})),
    ("registration", frozenset({"registering", "registration_rejected", "registered"})),
    ("delivery", frozenset({"delivery_scheduled", "in_transit"})),
    ("delivered", frozenset({"delivered"})),
)

_AFTER_FACTORY = frozenset(
    {
        "registering",
        "registration_rejected",
        "registered",
        "delivery_scheduled",
        "in_transit",
        "delivered",
    }
)


@dataclass(frozen=True)
class Step:
    """One step of a progress bar: `done`, `current` or `todo`."""

    key: str
    status: str


_PAYMENT_TONES = {"captured": "ok", "failed": "danger", "voided": "muted", "refunded": "muted"}
_REGISTRATION_TONES = {"registered": "ok", "rejected": "danger"}


def payment_tone(state: str) -> str:
    return _PAYMENT_TONES.get(state, "info")


def registration_tone(state: str) -> str:
    return _REGISTRATION_TONES.get(state, "info")


def new_key() -> str:
    """A fresh idempotency key for a form: posting the same form twice acts once."""
    return uuid.uuid4().hex


def zone_of_country(country: str | None) -> str:
    return COUNTRY_ZONES.get(country or "", STAFF_ZONE)


def state_tone(state: str) -> str:
    return _TONES.get(state, "info")


def next_step_key(state: str) -> str:
    """The text that tells the customer what happens next with an order in `state`."""
    own_text = ("awaiting_deposit", "at_dealer", "registration_rejected", "registered")
    if state in (*own_text, "delivered", "cancelled"):
        return f"portal.next.{state}"
    step = next((key for key, states in JOURNEY if state in states), "manufacturing")
    return f"portal.next.{step}"


def factory_steps(state: str) -> list[Step]:
    """The eight manufacturing stages as a progress bar for an order in `state`."""
    if state in _AFTER_FACTORY:
        reached = len(FACTORY_STAGES) - 1
    elif state in FACTORY_STAGES:
        reached = FACTORY_STAGES.index(state)
    else:
        reached = -1
    steps = []
    for index, stage in enumerate(FACTORY_STAGES):
        if index < reached or (index == reached and stage == FACTORY_STAGES[-1]):
            status = "done"
        elif index == reached:
            status = "current"
        else:
            status = "todo"
        steps.append(Step(stage, status))
    return steps


def factory_percent(state: str) -> int:
    done = sum(1 for step in factory_steps(state) if step.status != "todo")
    return round(100 * done / len(FACTORY_STAGES))


def journey_steps(state: str) -> list[Step]:
    """The customer's six steps, from the deposit to the car at the door."""
    current = next((index for index, (_, states) in enumerate(JOURNEY) if state in states), -1)
    steps = []
    for index, (key, _) in enumerate(JOURNEY):
        if index < current or (index == current and key == "delivered"):
            status = "done"
        elif index == current:
            status = "current"
        else:
            status = "todo"
        steps.append(Step(key, status))
    return steps


@pass_context
def money_filter(context: Context, amount_minor: int, currency: str) -> str:
    return Money(int(amount_minor), currency).format(context.get("lang", "en"))


@pass_context
def when_filter(context: Context, moment: datetime | None, style: str = "medium") -> str:
    if moment is None:
        return ""
    local = moment.astimezone(ZoneInfo(context.get("zone") or STAFF_ZONE))
    language = context.get("lang", "en")
    # A date and its hour and minute: seconds say nothing to a reader.
    day = format_date(local, style, locale=language)
    return f"{day}, {format_time(local, 'short', locale=language)}"


@pass_context
def day_filter(context: Context, day: date | datetime | None) -> str:
    if day is None:
        return ""
    if isinstance(day, datetime):
        day = day.astimezone(ZoneInfo(context.get("zone") or STAFF_ZONE)).date()
    return format_date(day, "medium", locale=context.get("lang", "en"))


@pass_context
def state_label(context: Context, state: str) -> str:
    return translate(context.get("lang", "en"), f"state.{state}")


@pass_context
def event_label(context: Context, event: str) -> str:
    """What a history row says: its own text when the catalogue has one, else the event."""
    language = context.get("lang", "en")
    if event.startswith("order."):
        return translate(language, f"state.{event.removeprefix('order.')}")
    text = lookup(language, f"event.{event}")
    if text is not None:
        return text
    return event.replace("_", " ").replace(".", ": ").capitalize()


FILTERS = {
    "money": money_filter,
    "when": when_filter,
    "day": day_filter,
    "state_label": state_label,
    "event_label": event_label,
    "tone": state_tone,
}

GLOBALS = {
    "payment_tone": payment_tone,
    "registration_tone": registration_tone,
    "new_key": new_key,
    "next_step_key": next_step_key,
    "factory_steps": factory_steps,
    "factory_percent": factory_percent,
    "journey_steps": journey_steps,
}
