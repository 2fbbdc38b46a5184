"""What a car must run and what it can run: pure rules over entitlements and the catalog.

`feature_states` turns what the owner is entitled to into every feature's state for the
manifest; `capability` says whether a car could run a feature and, if not, why; the delivery
of a configuration version follows `CONFIGURATION` (pending until the car reports).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from caas.core.state_machine import StateMachine
from caas.protocol.mqtt import FeatureState

# Categories whose features change how the car drives: switched only while parked.
DRIVING_CATEGORIES: Final = frozenset({"performance", "safety", "autonomy", "traction"})

# A configuration version from its signing to the car's answer. `superseded`: a newer version
# was issued before the car answered; the car may still answer it late (it got it before the
# newer one), and its answer is the truth about what it ran.
CONFIGURATION = StateMachine(
    "configuration",
    {
        "pending": {"applied", "rejected", "deferred", "superseded"},
        "deferred": {"applied", "rejected", "superseded"},
        "superseded": {"applied", "rejected", "deferred"},
        "applied": set(),
        "rejected": set(),
    },
)
ConfigurationState = Literal["pending", "applied", "rejected", "deferred", "superseded"]
# The car still has to act on these: the platform waits (and re-sends while pending).
WAITING_STATES: Final = frozenset({"pending", "deferred"})

# The car's reason when it already runs the version (a re-sent manifest it had applied).
STALE_VERSION = "stale_version"

# The car's reasons (`caas.protocol.manifest.REJECTION_REASONS`) that say the manifest it
# refused was not genuinely this car's from the platform: unreadable, certified by another
# root, signed by another key, or the platform's manifest for another car. Anyone on the
# broker can put such a message on the car's topic under any version number, so such a report
# says nothing about the platform's own manifest of that number unless that manifest itself
# fails the same check (`ota.service.record_report` verifies it). The other reasons
# (`stale_version`, `certificate_expired`, a reason a newer car may give) are about a manifest
# the car could read as the platform's, and settle the version as before.
NOT_GENUINE_REASONS: Final = frozenset(
    {"malformed", "bad_certificate", "bad_signature", "wrong_vin"}
)

Capability = Literal["hardware_missing", "software_too_old"]
CAPABILITY_CODES: Final[dict[Capability, str]] = {
    "hardware_missing": "feature.not_eligible.hardware_missing",
    "software_too_old": "feature.not_eligible.software_too_old",
}


@dataclass(frozen=True)
class CatalogFeature:
    """A feature of the car's platform as the catalog describes it."""

    code: str
    name: str
    category: str
    needs_hardware: bool = False
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # The oldest software that runs it; None: any (the catalog does not say yet).
    min_software_version: str | None = None


@dataclass(frozen=True)
class Entitlement:
    """The owner's right to have a feature on in a window (none: open on that side)."""

    code: str
    valid_from: datetime | None
    valid_until: datetime | None
    source: str  # "plan" (included in the sale); the store adds "purchase", "trial", ...


def affects_driving(category: str) -> bool:
    return category in DRIVING_CATEGORIES


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus calendar months; the day is clamped to the month's last (31 Jan + 1 = 28/29
    Feb)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def plan_entitlements(
    codes: Iterable[str], *, delivered_at: datetime | None, service_period_months: int
) -> list[Entitlement]:
    """The sale's included features: on from delivery for the service period; none before."""
    if delivered_at is None:
        return []
    until = add_months(delivered_at, service_period_months)
    return [Entitlement(code, delivered_at, until, "plan") for code in codes]


def _window(
    entitlements: Sequence[Entitlement], at: datetime
) -> tuple[datetime | None, datetime | None] | None:
    """The one window to put in the manifest: the current or next one, merged with every window
    overlapping or touching it; None when every window is over."""
    live = [e for e in entitlements if e.valid_until is None or e.valid_until > at]
    if not live:
        return None
    live.sort(key=lambda e: (e.valid_from is not None, e.valid_from or at))
    start, end = live[0].valid_from, live[0].valid_until
    for entitlement in live[1:]:
        if end is None:
            break
        if entitlement.valid_from is not None and entitlement.valid_from > end:
            break  # a later, separate window: the next version will carry it
        if entitlement.valid_until is None or entitlement.valid_until > end:
            end = entitlement.valid_until
    return start, end


def feature_states(
    features: Sequence[CatalogFeature], entitlements: Sequence[Entitlement], *, at: datetime
) -> list[FeatureState]:
    """Every feature of the platform, on inside the owner's window, off otherwise (by code)."""
    by_code: dict[str, list[Entitlement]] = {}
    for entitlement in entitlements:
        by_code.setdefault(entitlement.code, []).append(entitlement)
    states = []
    for feature in sorted(features, key=lambda f: f.code):
        window = _window(by_code.get(feature.code, []), at)
        states.append(
            FeatureState(
                code=feature.code,
                enabled=window is not None,
                valid_from=window[0] if window else None,
                valid_until=window[1] if window else None,
                parameters=dict(feature.parameters),
                affects_driving=affects_driving(feature.category),
            )
        )
    return states


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def software_at_least(running: str, wanted: str) -> bool:
    """Whether software `running` is `wanted` or newer (dotted numbers: 7.10.0 > 7.9.3)."""
    return _version_key(running) >= _version_key(wanted)


def capability(
    feature: CatalogFeature, *, fitted_hardware: frozenset[str], software_version: str
) -> Capability | None:
    """Why the car cannot run `feature` (its hardware was not fitted, its software is too
    old), or None when it can."""
    if feature.needs_hardware and feature.code not in fitted_hardware:
        return "hardware_missing"
    if feature.min_software_version is not None and not software_at_least(
        software_version, feature.min_software_version
    ):
        return "software_too_old"
    return None


def state_after_report(
    current: str, status: str, reason: str | None, *, newest: bool
) -> str | None:
    """The version's state after the car's report, or None when the report changes nothing
    (a duplicate, or a late answer to a version already settled).

    A `stale_version` rejection of the newest version means the car already runs it (a
    re-sent manifest it had applied, its first answer lost): that is `applied`.
    """
    target = status
    if status == "rejected" and reason == STALE_VERSION and newest:
        target = "applied"
    if target == current or not CONFIGURATION.allows(current, target):
        return None
    return target


def questions_authenticity(status: str, reason: str | None) -> bool:
    """Whether the car's report is a refusal of a manifest as not genuinely the platform's for
    this car (`NOT_GENUINE_REASONS`), rather than a refusal of its content or timing."""
    return status == "rejected" and reason in NOT_GENUINE_REASONS


def features_switched(
    before: Sequence[str] | None, after: Sequence[str]
) -> tuple[list[str], list[str]] | None:
    """What the car switched off and on by itself under a version it had applied (a window
    that ended or began by its own clock), or None when its features are the same (a true
    duplicate of its report)."""
    was, now = set(before or ()), set(after)
    if was == now:
        return None
    return sorted(was - now), sorted(now - was)
