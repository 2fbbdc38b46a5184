"""The store's rules that need no database: kinds of offers, states, reasons, durations, prices.

Shared by every part of the store (eligibility, purchases, entitlements, time); the pure
functions here are what the property-based tests exercise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from caas.core.money import percent_of
from caas.core.state_machine import StateMachine
from caas.ota.rules import Entitlement as OtaEntitlement
from caas.ota.rules import add_months

OfferKind = Literal["trial", "window", "custom", "subscription", "permanent", "metered"]
OFFER_KINDS: Final[tuple[OfferKind, ...]] = (
    "trial",
    "window",
    "custom",
    "subscription",
    "permanent",
    "metered",
)
# Durations an offer may have, per kind ("" where the kind has none).
DURATIONS: Final[dict[str, tuple[str, ...]]] = {
    "trial": ("7D", "14D", "1M"),
    "window": ("1D", "7D", "1M", "1Y", "3Y"),
    "custom": ("",),
    "subscription": ("1M", "1Y"),
    "permanent": ("",),
    "metered": ("",),
}
METERED_UNITS: Final = ("hour", "km", "activation")
DEFAULT_TRIAL: Final = "1M"

# What the customer gets back when an option stops early, part of each offer:
# - none: nothing once the window has started (default for windows and custom dates);
# - end_of_period: a subscription runs to the end of the paid period, then stops (default);
# - unused_days: the days not used, pro rata (permanent options within their cooling-off);
# - full: everything, whatever was used.
# Before the car has applied a purchase, the authorisation is always voided in full.
RefundPolicy = Literal["none", "end_of_period", "unused_days", "full"]
REFUND_POLICIES: Final[tuple[RefundPolicy, ...]] = ("none", "end_of_period", "unused_days", "full")
DEFAULT_REFUND_POLICY: Final[dict[str, RefundPolicy]] = {
    "trial": "none",
    "window": "none",
    "custom": "none",
    "subscription": "end_of_period",
    "permanent": "unused_days",
    "metered": "none",
}

# An entitlement: `delivering` (paid, on its way to the car; captured when the car applies
# it), `active`, `ended` (its window is over or the owner ended it), `revoked` (refunded,
# voided, or taken back: it never counted or counts no more).
ENTITLEMENT = StateMachine(
    "entitlement",
    {
        "delivering": {"active", "revoked"},
        "active": {"ended", "revoked"},
        "ended": set(),
        "revoked": set(),
    },
)
# States in which an entitlement is part of the car's configuration (when enabled).
COUNTING_STATES: Final = frozenset({"delivering", "active"})

PURCHASE = StateMachine(
    "purchase",
    {
        # Payment being authorised.
        "authorising": {"delivering", "failed"},
        # Authorised, configuration on its way to the car.
        "delivering": {"active", "refunded"},
        # The car applied it and the payment was captured; a later refund (policy) moves it.
        "active": {"refunded"},
        "failed": set(),
        "refunded": set(),
    },
)

SUBSCRIPTION = StateMachine(
    "subscription",
    {
        "active": {"past_due", "cancelled", "lapsed"},
        "past_due": {"active", "cancelled", "lapsed"},
        "cancelled": set(),
        "lapsed": set(),
    },
)

OCCURRENCE = StateMachine(
    "occurrence",
    {
        "planned": {"started", "failed", "cancelled"},
        "started": set(),
        "failed": set(),
        "cancelled": set(),
    },
)

# Why a car cannot get an option now: every refusal has one of these codes (prefixed
# `store.not_eligible.` in API errors) and a human message in the customer's language.
Reason = Literal[
    "not_delivered",  # the car is not the customer's yet, or not delivered
    "withdrawn",  # the option or offer is not on sale any more
    "hardware_missing",
    "software_too_old",
    "requires_feature",  # needs another option active (details: which)
    "conflicts_with",  # cannot run beside an active option (details: which)
    "not_sold_in_country",
    "maintenance_overdue",  # requires compliance and the car does not follow the plan
    "trial_used",  # this car already had its trial of this option
    "already_permanent",  # the car owns it for life already
]
REASONS: Final[tuple[str, ...]] = (
    "not_delivered",
    "withdrawn",
    "hardware_missing",
    "software_too_old",
    "requires_feature",
    "conflicts_with",
    "not_sold_in_country",
    "maintenance_overdue",
    "trial_used",
    "already_permanent",
)


@dataclass(frozen=True)
class Refusal:
    """One reason why a car cannot get an option; `details` e.g. {"feature": "driver_assist"}."""

    reason: Reason
    details: dict[str, str]


_DURATION = re.compile(r"^(?P<count>[1-9][0-9]{0,2})(?P<unit>[DMY])$")


def add_duration(moment: datetime, duration: str) -> datetime:
    """`moment` plus "7D", "1M", "1Y", "3Y"... (calendar months and years, clamped to the
    month's last day)."""
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not a duration: {duration!r}")
    count, unit = int(match["count"]), match["unit"]
    if unit == "D":
        return moment + timedelta(days=count)
    return add_months(moment, count if unit == "M" else 12 * count)


@dataclass(frozen=True)
class PricedLine:
    net_minor: int
    vat_rate_bp: int
    vat_minor: int
    gross_minor: int


def price_line(net_minor: int, vat_rate_bp: int) -> PricedLine:
    """A line's VAT on its net, rounded half up; gross = net + VAT."""
    vat = percent_of(net_minor, vat_rate_bp)
    return PricedLine(net_minor, vat_rate_bp, vat, net_minor + vat)


# --- windows: from entitlements to what the car runs ---------------------------------------

Window = tuple[datetime, datetime | None]  # [from, until); until None: open-ended


@dataclass(frozen=True)
class EntitlementTerms:
    """What the configuration needs to know of one entitlement (a row of `entitlements`)."""

    code: str
    source: str
    state: str
    enabled: bool
    valid_from: datetime
    valid_until: datetime | None


def counts(terms: EntitlementTerms) -> bool:
    """Whether the entitlement is part of the car's configuration: delivering or active,
    switched on by its owner, and a window that is not empty (an option ended before it
    started). A switched-off entitlement leaves a gap: the feature is off there unless
    another entitlement covers it."""
    return (
        terms.state in COUNTING_STATES
        and terms.enabled
        and (terms.valid_until is None or terms.valid_until > terms.valid_from)
    )


def counting_windows(entitlements: Iterable[EntitlementTerms]) -> list[OtaEntitlement]:
    """The windows the car's configuration is computed from (`caas.ota.rules.feature_states`
    merges the overlapping and touching ones per feature)."""
    return [
        OtaEntitlement(terms.code, terms.valid_from, terms.valid_until, terms.source)
        for terms in entitlements
        if counts(terms)
    ]


def merge_windows(windows: Iterable[Window]) -> list[Window]:
    """Overlapping and touching windows merged into one (a window bought to start where the
    current one ends chains it); sorted, disjoint, with gaps between them."""
    merged: list[Window] = []
    for start, end in sorted(windows, key=lambda window: window[0]):
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None or start <= last_end:
                if last_end is not None and (end is None or end > last_end):
                    merged[-1] = (last_start, end)
                continue
        merged.append((start, end))
    return merged


def covering_window(windows: Iterable[Window], at: datetime) -> Window | None:
    """The merged window that contains `at` (from <= at < until), or None."""
    for start, end in merge_windows(windows):
        if start <= at and (end is None or at < end):
            return start, end
    return None
