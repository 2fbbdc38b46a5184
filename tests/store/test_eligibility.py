"""The eligibility matrix: every reason a car cannot get an option, one case each, with its
details and its message in the customer's language; and the cases where it can."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import get_args

import pytest
from sqlalchemy.orm import Session

from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.sales.models import Customer
from caas.store import eligibility
from caas.store.models import Offer
from caas.store.rules import REASONS, Reason, Refusal
from tests.store.conftest import Owner, feature_of, offer, owner_of
from tests.store.engine import Delivered, delivered, engine_keys, give, signing
from tests.vehicles.support import born_car, deliver

__all__ = ["delivered", "engine_keys", "signing"]


@dataclass
class Case:
    """One car, one option (power_boost unless the case says), one offer."""

    db: Session
    owner: Owner
    feature: Feature
    offer: Offer
    customer: Customer
    clock: FixedClock
    delivered: Delivered
    cart: tuple[str, ...] = ()

    @property
    def now(self) -> datetime:
        return self.clock.now()


@pytest.fixture
def case(db: Session, delivered: Delivered, clock: FixedClock) -> Case:
    owner = owner_of(db, delivered.car, clock.now())
    window = offer(db, owner.vehicle, "power_boost", "window", "1M")
    return Case(
        db=db,
        owner=owner,
        feature=feature_of(db, owner.vehicle, "power_boost"),
        offer=window,
        customer=owner.customer,
        clock=clock,
        delivered=delivered,
    )


def _refusals(case: Case) -> list[Refusal]:
    case.db.flush()
    return eligibility.refusals(
        case.db,
        vehicle=case.owner.vehicle,
        feature=case.feature,
        offer=case.offer,
        customer=case.customer,
        at=case.now,
        cart=case.cart,
    )


def _not_delivered(case: Case) -> dict[str, str]:
    case.owner.vehicle.delivered_at = None
    return {}


def _withdrawn(case: Case) -> dict[str, str]:
    case.offer.active = False
    return {}


def _hardware_missing(case: Case) -> dict[str, str]:
    # The car was built without rear screens.
    case.feature = feature_of(case.db, case.owner.vehicle, "entertainment")
    case.offer = offer(case.db, case.owner.vehicle, "entertainment", "window", "1M")
    return {}


def _software_too_old(case: Case) -> dict[str, str]:
    case.feature.min_software_version = "7.10.0"  # the car runs 7.2.0
    return {"version": "7.10.0", "running": "7.2.0"}


def _requires_feature(case: Case) -> dict[str, str]:
    case.feature.requires = ["winter_traction"]
    return {"feature": "winter_traction"}


def _conflicts_with(case: Case) -> dict[str, str]:
    # Declared on the other side: the plan's driver assistance, active on the car.
    feature_of(case.db, case.owner.vehicle, "driver_assist").conflicts = ["power_boost"]
    return {"feature": "driver_assist"}


def _not_sold_in_country(case: Case) -> dict[str, str]:
    case.feature.countries = ["FR", "DE"]
    return {"country": "ES"}


def _maintenance_overdue(case: Case) -> dict[str, str]:
    case.feature.requires_maintenance = True
    # Delivered two years ago, never serviced: the yearly service is long overdue.
    case.owner.vehicle.delivered_at = case.now - timedelta(days=730)
    return {}


def _trial_used(case: Case) -> dict[str, str]:
    give(
        case.db,
        case.delivered,
        "power_boost",
        case.now - timedelta(days=60),
        case.now - timedelta(days=30),
        source="trial",
        now=case.now,
    )
    case.offer = offer(case.db, case.owner.vehicle, "power_boost", "trial", "1M")
    return {}


def _already_permanent(case: Case) -> dict[str, str]:
    give(case.db, case.delivered, "power_boost", case.now, None, source="permanent", now=case.now)
    return {}


SETUPS: dict[str, Callable[[Case], dict[str, str]]] = {
    "not_delivered": _not_delivered,
    "withdrawn": _withdrawn,
    "hardware_missing": _hardware_missing,
    "software_too_old": _software_too_old,
    "requires_feature": _requires_feature,
    "conflicts_with": _conflicts_with,
    "not_sold_in_country": _not_sold_in_country,
    "maintenance_overdue": _maintenance_overdue,
    "trial_used": _trial_used,
    "already_permanent": _already_permanent,
}


def test_the_matrix_covers_every_reason() -> None:
    assert set(SETUPS) == set(REASONS) == set(get_args(Reason))


def test_a_delivered_car_can_get_a_software_option(case: Case) -> None:
    assert _refusals(case) == []


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_refuses_with_its_details(case: Case, reason: str) -> None:
    details = SETUPS[reason](case)
    refused = _refusals(case)
    assert [refusal.reason for refusal in refused] == [reason]
    assert refused[0].details == details


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("language", ["en", "es", "fr", "de", "it", "pt"])
def test_each_reason_has_a_message_in_each_language(reason: Reason, language: str) -> None:
    texts = eligibility.MESSAGES[reason]
    assert texts[language]
    message = eligibility.explain(
        Refusal(reason, {"feature": "winter_traction", "version": "8.0.0", "running": "7.2.0"}),
        language,
        names={"winter_traction": "Winter traction modes"},
    )
    assert "{" not in message


def test_messages_name_the_option_in_the_customers_language(case: Case) -> None:
    SETUPS["requires_feature"](case)
    (refusal,) = _refusals(case)
    names = {"winter_traction": "Modos de tracción de invierno"}
    assert eligibility.explain(refusal, "es", names=names) == (
        "Necesita Modos de tracción de invierno activa en el coche (o en la misma compra)."
    )
    assert eligibility.explain(refusal, "en") == (
        "It needs winter_traction active on the car (or in the same purchase)."
    )
    assert (
        eligibility.explain(
            Refusal("software_too_old", {"version": "8.0.0", "running": "7.2.0"}), "xx"
        )
        == "It needs software 8.0.0 or newer; the car runs 7.2.0."
    )


def test_a_requirement_in_the_same_cart_is_enough(case: Case) -> None:
    SETUPS["requires_feature"](case)
    case.cart = ("winter_traction",)
    assert _refusals(case) == []


def test_a_conflict_in_the_same_cart_refuses(case: Case) -> None:
    case.feature.conflicts = ["winter_traction"]
    case.cart = ("winter_traction",)
    assert [(r.reason, r.details) for r in _refusals(case)] == [
        ("conflicts_with", {"feature": "winter_traction"})
    ]


def test_an_option_that_runs_does_not_conflict_with_itself_and_can_be_extended(
    case: Case,
) -> None:
    give(
        case.db, case.delivered, "power_boost", case.now, case.now + timedelta(days=7), now=case.now
    )
    case.feature.conflicts = ["power_boost"]
    assert _refusals(case) == []


def test_another_customers_car_is_refused(
    db: Session, case: Case, settings: Settings, clock: FixedClock
) -> None:
    other = born_car(db, settings=settings, now=clock.now())
    deliver(db, other, now=clock.now())
    case.customer = db.get_one(Customer, other.customer_id)
    assert [r.reason for r in _refusals(case)] == ["not_delivered"]


def test_a_withdrawn_feature_is_refused_whatever_the_offer(case: Case) -> None:
    case.feature.active = False
    assert [r.reason for r in _refusals(case)] == ["withdrawn"]
    assert (
        eligibility.refusals(
            case.db,
            vehicle=case.owner.vehicle,
            feature=case.feature,
            offer=None,
            customer=case.customer,
            at=case.now,
        )[0].reason
        == "withdrawn"
    )


def test_an_offer_of_another_country_is_not_sold_to_this_customer(case: Case) -> None:
    case.offer = offer(case.db, case.owner.vehicle, "power_boost", "window", "1M", country="FR")
    assert [(r.reason, r.details) for r in _refusals(case)] == [
        ("not_sold_in_country", {"country": "ES"})
    ]


def test_a_car_serviced_on_time_may_buy_options_that_require_maintenance(case: Case) -> None:
    case.feature.requires_maintenance = True
    assert _refusals(case) == []


def test_an_ended_window_leaves_the_trial_used_but_not_the_option_owned(case: Case) -> None:
    SETUPS["trial_used"](case)
    case.offer = offer(case.db, case.owner.vehicle, "power_boost", "window", "1M")
    assert _refusals(case) == []
