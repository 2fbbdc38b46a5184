"""The entitlements engine against PostgreSQL: granting, revoking, ending, extending and
switching options, and the configuration the car gets from them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.core.clock import FixedClock
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.ota import service as ota
from caas.ota.rules import add_months
from caas.store import entitlements
from caas.store.models import Entitlement
from tests.store.engine import (
    SHOP,
    Delivered,
    delivered,
    engine_keys,
    give,
    newest_features,
    signing,
    versions,
)
from tests.vehicles.support import born_car

__all__ = ["delivered", "engine_keys", "signing"]

DAY = timedelta(days=1)


def _resign(db: Session, delivered: Delivered, clock: FixedClock) -> None:
    ota.request_configuration(db, delivered.vehicle, reason="test", actor=SHOP, now=clock.now())


def test_delivery_turns_the_plans_options_into_entitlements_for_the_service_period(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    (plan,) = db.scalars(
        select(Entitlement).where(Entitlement.vehicle_id == delivered.vehicle.id)
    ).all()
    assert (plan.code, plan.source, plan.state, plan.enabled) == (
        "driver_assist",
        "plan",
        "active",
        True,
    )
    assert (plan.valid_from, plan.valid_until) == (clock.now(), add_months(clock.now(), 48))
    assert plan.customer_id == delivered.car.customer_id
    on = newest_features(db, delivered.vehicle)
    assert list(on) == ["driver_assist"]
    assert on["driver_assist"].valid_until == plan.valid_until
    assert [e.event for e in subject_history(db, "entitlement", plan.id)] == ["entitlement.granted"]


def test_a_bought_window_is_on_in_the_next_configuration_beside_the_plan(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    give(db, delivered, "power_boost", now, now + 7 * DAY, now=now)
    _resign(db, delivered, clock)
    on = newest_features(db, delivered.vehicle)
    assert sorted(on) == ["driver_assist", "power_boost"]
    assert (on["power_boost"].valid_from, on["power_boost"].valid_until) == (now, now + 7 * DAY)


def test_a_plan_option_bought_again_runs_on_past_the_service_period(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    plan_end = add_months(now, 48)
    extension = entitlements.coverage_end(
        db, delivered.vehicle.id, _feature_id(db, delivered, "driver_assist"), at=now
    )
    assert extension == plan_end
    give(db, delivered, "driver_assist", plan_end, add_months(plan_end, 12), now=now)
    _resign(db, delivered, clock)
    window = newest_features(db, delivered.vehicle)["driver_assist"]
    assert (window.valid_from, window.valid_until) == (now, add_months(plan_end, 12))


def _feature_id(db: Session, delivered: Delivered, code: str) -> int:
    (entitlement,) = db.scalars(
        select(Entitlement).where(
            Entitlement.vehicle_id == delivered.vehicle.id, Entitlement.code == code
        )
    ).all()
    return entitlement.feature_id


def test_coverage_chains_touching_windows_and_stops_at_a_gap(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    first = give(db, delivered, "power_boost", now, now + 7 * DAY, now=now)
    give(db, delivered, "power_boost", now + 7 * DAY, now + 14 * DAY, now=now)
    give(db, delivered, "power_boost", now + 15 * DAY, now + 20 * DAY, now=now)
    feature_id = first.feature_id
    vehicle_id = delivered.vehicle.id
    assert entitlements.coverage_end(db, vehicle_id, feature_id, at=now) == now + 14 * DAY
    assert entitlements.coverage_end(db, vehicle_id, feature_id, at=now + 14 * DAY) is None
    assert (
        entitlements.coverage_end(db, vehicle_id, feature_id, at=now + 16 * DAY) == now + 20 * DAY
    )
    give(db, delivered, "power_boost", now + 3 * DAY, None, source="permanent", now=now)
    with pytest.raises(Conflict) as refused:
        entitlements.coverage_end(db, vehicle_id, feature_id, at=now + 5 * DAY)
    assert refused.value.code == "store.not_eligible.already_permanent"


def test_a_switched_off_option_does_not_cover_its_window(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    window = give(db, delivered, "power_boost", now, now + 7 * DAY, now=now)
    window.enabled = False
    assert entitlements.coverage_end(db, delivered.vehicle.id, window.feature_id, at=now) is None


def test_a_second_trial_of_the_same_option_is_refused(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    give(db, delivered, "winter_traction", now, now + 30 * DAY, source="trial", now=now)
    with pytest.raises(Conflict) as refused:
        give(
            db,
            delivered,
            "winter_traction",
            now + 60 * DAY,
            now + 90 * DAY,
            source="trial",
            now=now,
        )
    assert refused.value.code == "store.not_eligible.trial_used"
    # The transaction goes on: the first trial is still there.
    assert [e.source for e in entitlements.owned_options(db, delivered.vehicle, at=now)] == [
        "plan",
        "trial",
    ]


def test_a_window_that_ends_before_it_starts_is_refused(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    with pytest.raises(InvalidInput):
        give(db, delivered, "power_boost", now, now, now=now)


def test_a_revoked_option_counts_no_more(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    boost = give(db, delivered, "power_boost", now, now + 7 * DAY, state="delivering", now=now)
    _resign(db, delivered, clock)
    assert "power_boost" in newest_features(db, delivered.vehicle)
    entitlements.revoke(db, boost, reason="car rejected it", actor=SHOP, now=now)
    _resign(db, delivered, clock)
    assert "power_boost" not in newest_features(db, delivered.vehicle)
    history = subject_history(db, "entitlement", boost.id)
    assert [(e.event, e.from_state, e.to_state) for e in history] == [
        ("entitlement.granted", None, "delivering"),
        ("entitlement.revoked", "delivering", "revoked"),
    ]
    assert history[-1].details["reason"] == "car rejected it"
    with pytest.raises(Conflict):
        entitlements.activate(db, boost, actor=SHOP, now=now)


def test_activation_of_a_window_already_over_ends_it(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    late = give(db, delivered, "power_boost", now, now + DAY, state="delivering", now=now)
    on_time = give(db, delivered, "entertainment", now, now + DAY, state="delivering", now=now)
    entitlements.activate(db, on_time, actor=SHOP, now=now)
    entitlements.activate(db, late, actor=SHOP, now=now + 2 * DAY)
    assert (on_time.state, late.state) == ("active", "ended")


def test_end_cuts_the_window_and_ends_the_option_when_the_cut_has_come(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    subscription = give(db, delivered, "entertainment", now, now + 30 * DAY, now=now)
    entitlements.end(db, subscription, at=now + 10 * DAY, actor=SHOP, now=now)
    assert (subscription.state, subscription.valid_until) == ("active", now + 10 * DAY)
    entitlements.end(db, subscription, at=now + 20 * DAY, actor=SHOP, now=now)  # never longer
    assert subscription.valid_until == now + 10 * DAY
    entitlements.end(db, subscription, at=now, actor=SHOP, now=now)
    assert (subscription.state, subscription.valid_until) == ("ended", now)
    _resign(db, delivered, clock)
    assert "entertainment" not in newest_features(db, delivered.vehicle)
    events = [e.event for e in subject_history(db, "entitlement", subscription.id)]
    assert events == [
        "entitlement.granted",
        "entitlement.cut",
        "entitlement.cut",
        "entitlement.ended",
    ]


def test_an_option_planned_ahead_and_cut_before_it_starts_never_counts(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    winter = give(db, delivered, "winter_traction", now + 10 * DAY, now + 40 * DAY, now=now)
    entitlements.end(db, winter, at=now + 5 * DAY, actor=SHOP, now=now)
    assert winter.valid_until == winter.valid_from
    codes = [w.code for w in entitlements.car_entitlements(db, delivered.vehicle)]
    assert codes == ["driver_assist"]


def test_owned_options_show_current_and_future_options_not_past_ones(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    give(db, delivered, "power_boost", now - 10 * DAY, now - DAY, now=now - 10 * DAY)
    give(db, delivered, "winter_traction", now + 10 * DAY, now + 40 * DAY, now=now)
    trial = give(db, delivered, "entertainment", now, now + 30 * DAY, source="trial", now=now)
    options = entitlements.owned_options(db, delivered.vehicle, at=now)
    assert [(o.code, o.source, o.switchable) for o in options] == [
        ("driver_assist", "plan", True),
        ("entertainment", "trial", False),
        ("winter_traction", "purchase", True),
    ]
    assert options[1].entitlement_id == trial.id


def test_the_owner_switches_an_option_off_and_on_and_the_car_follows(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    owner = db.get_one(User, delivered.car.customer_user_id)
    (plan,) = entitlements.owned_options(db, delivered.vehicle, at=clock.now())
    before = len(versions(db, delivered.vehicle))

    switched = entitlements.switch(
        db,
        user=owner,
        vin=delivered.car.vin,
        entitlement_id=plan.entitlement_id,
        enabled=False,
        now=clock.advance(timedelta(hours=1)),
    )
    assert not switched.enabled
    newest = versions(db, delivered.vehicle)[-1]
    assert (newest.version, newest.reason) == (before + 1, "option.switched_off")
    assert newest_features(db, delivered.vehicle) == {}

    entitlements.switch(  # a retry of the same switch changes nothing
        db,
        user=owner,
        vin=delivered.car.vin,
        entitlement_id=plan.entitlement_id,
        enabled=False,
        now=clock.now(),
    )
    assert len(versions(db, delivered.vehicle)) == before + 1

    entitlements.switch(
        db,
        user=owner,
        vin=delivered.car.vin.lower(),
        entitlement_id=plan.entitlement_id,
        enabled=True,
        now=clock.advance(timedelta(hours=1)),
    )
    assert list(newest_features(db, delivered.vehicle)) == ["driver_assist"]
    history = subject_history(db, "entitlement", plan.entitlement_id)
    assert [(e.event, e.actor_kind, e.details["enabled"]) for e in history] == [
        ("entitlement.granted", "factory", True),
        ("entitlement.switched_off", "customer", False),
        ("entitlement.switched_on", "customer", True),
    ]


def test_only_the_owner_switches_and_only_options_that_can_be(
    db: Session, delivered: Delivered, clock: FixedClock, settings: Settings
) -> None:
    now = clock.now()
    owner = db.get_one(User, delivered.car.customer_user_id)
    (plan,) = entitlements.owned_options(db, delivered.vehicle, at=now)
    stranger_car = born_car(db, settings=settings, now=now)
    stranger = db.get_one(User, stranger_car.customer_user_id)

    def switch(user: User, entitlement_id: int, vin: str = delivered.car.vin) -> None:
        entitlements.switch(
            db, user=user, vin=vin, entitlement_id=entitlement_id, enabled=False, now=now
        )

    with pytest.raises(NotFound) as not_yours:
        switch(stranger, plan.entitlement_id)
    assert not_yours.value.code == "vehicle.not_found"
    with pytest.raises(NotFound) as not_this_car:
        switch(stranger, plan.entitlement_id, vin=stranger_car.vin)
    assert not_this_car.value.code == "entitlement.not_found"

    trial = give(db, delivered, "entertainment", now, now + 30 * DAY, source="trial", now=now)
    on_its_way = give(db, delivered, "power_boost", now, now + DAY, state="delivering", now=now)
    over = give(db, delivered, "winter_traction", now, now + DAY, now=now)
    entitlements.end(db, over, at=now, actor=SHOP, now=now)
    refusals = {}
    for entitlement in (trial, on_its_way, over):
        with pytest.raises(Conflict) as refused:
            switch(owner, entitlement.id)
        refusals[entitlement.code] = refused.value.code
    assert refusals == {
        "entertainment": "entitlement.not_switchable.trial",
        "power_boost": "entitlement.not_switchable.delivering",
        "winter_traction": "entitlement.not_switchable.over",
    }


def test_ending_a_revoked_or_delivering_option_only_cuts_its_window(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    refunded = give(db, delivered, "power_boost", now, now + DAY, state="delivering", now=now)
    entitlements.revoke(db, refunded, reason="refunded", actor=SHOP, now=now)
    on_its_way = give(db, delivered, "entertainment", now, now + DAY, state="delivering", now=now)
    for entitlement in (refunded, on_its_way):
        entitlements.end(db, entitlement, at=now, actor=SHOP, now=now)
    assert [(e.state, e.valid_until) for e in (refunded, on_its_way)] == [
        ("revoked", now),
        ("delivering", now),
    ]
    assert "entertainment" not in [
        w.code for w in entitlements.car_entitlements(db, delivered.vehicle)
    ]
