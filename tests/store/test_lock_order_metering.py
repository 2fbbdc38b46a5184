"""The spending cap and the month's dunning take a car's rows in the one order
(`caas.ota.service.lock_vehicle`): the car's row before its entitlements. Before, they cut the
metered option's entitlement (and added next month's) first and locked the car last, when
issuing its configuration: against the owner switching that option, which locks the car and
then the entitlement, the two waited for each other and PostgreSQL rolled one back.

The transactions run for real in threads on their own connections, held after their first
lock until the other holds its own or waits (`tests.store.test_lock_order.FirstLocks`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing.models import Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.errors import Conflict
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.ota import pushes
from caas.protocol.mqtt import UsageEvent
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from caas.store import entitlements, metering
from caas.store.models import Entitlement
from caas.vehicles.ingest import store_usage_events
from tests.billing.conftest import PaymentSandbox
from tests.store.conftest import Owner, answer, buy, delivered_owner, item, offer
from tests.store.engine import engine_keys, signing
from tests.store.test_lock_order import CAR_LOCK, FirstLocks
from tests.vehicles.support import CommittedDatabase, committed

__all__ = ["committed", "engine_keys", "signing"]

# The metering side's first lock of the car's rows: the car's row now, the entitlement's before
# (the month's payment, locked before the car as every payment is, is not one of them).
ACTOR = Actor.system("lock-order test")
METERING_LOCK = re.compile(r"FROM vehicles\b.*FOR UPDATE|^UPDATE entitlements\b", re.DOTALL)


@dataclass(frozen=True)
class MeteredCar:
    """A car whose owner pays per use for power boost, with a cap, already over it (committed)."""

    owner: Owner
    entitlement_id: int


def metered_car(
    committed: CommittedDatabase, settings: Settings, clock: FixedClock, token: str
) -> MeteredCar:
    session = committed.sessions()
    try:
        owner = delivered_owner(session, settings, clock)
        hourly = offer(session, owner.vehicle, "power_boost", "metered", net_minor=150, unit="hour")
        purchase = buy(
            session,
            owner,
            [item(hourly, spending_cap_minor=1_000)],
            token=token,
            key=f"lock-order-metered-{owner.vehicle.vin}",
            settings=settings,
            clock=clock,
        )
        answer(session, owner, purchase.configuration_version or 0, "applied", clock)
        usage = UsageEvent(
            vin=owner.vehicle.vin,
            seq=1,
            at=clock.now(),
            feature="power_boost",
            unit="hour",
            quantity=20,  # 30.00 net: over the 10.00 cap
        )
        store_usage_events(session, [usage], now=clock.now())
        session.commit()
        right = session.scalars(
            select(Entitlement.id).where(Entitlement.purchase_id == purchase.id)
        ).one()
        return MeteredCar(owner, right)
    finally:
        session.close()


def owner_switches_it_off(car: MeteredCar, clock: FixedClock) -> Callable[[Session], Any]:
    """The owner switches the metered option off in the app (the car's row, then the
    entitlement's)."""
    return lambda session: entitlements.switch(
        session,
        user=car.owner.user,
        vin=car.owner.vehicle.vin,
        entitlement_id=car.entitlement_id,
        enabled=False,
        now=clock.now(),
    )


def no_deadlock(locks: FirstLocks) -> None:
    """Each transaction went through, or the owner's switch was refused as a business rule
    (the cap ended the option first): nothing rolled back by PostgreSQL."""
    switch = locks.errors.pop("switch", None)
    assert switch is None or (
        isinstance(switch, Conflict) and switch.code == "entitlement.not_switchable.over"
    ), repr(switch)
    assert locks.errors == {}


@pytest.mark.usefixtures("signing")
def test_the_cap_check_and_the_owner_switching_the_option_both_go_through(
    committed: CommittedDatabase, settings: Settings, payment_sandbox: PaymentSandbox
) -> None:
    clock = FixedClock()
    car = metered_car(committed, settings, clock, payment_sandbox.token(CARD_SUCCEEDS))
    later = clock.now() + timedelta(minutes=10)
    locks = FirstLocks(committed, {"caps": METERING_LOCK, "switch": CAR_LOCK})

    locks.all_at_once(
        {
            "caps": lambda s: metering.enforce_caps(s, [car.owner.vehicle.id], now=later),
            "switch": owner_switches_it_off(car, clock),
        }
    )

    no_deadlock(locks)
    assert locks.results["caps"] == 1
    ended = committed.run(lambda s: s.get_one(Entitlement, car.entitlement_id).state)
    assert ended == "ended"


@pytest.mark.usefixtures("signing")
def test_the_months_last_failed_try_and_the_owner_switching_the_option_both_go_through(
    committed: CommittedDatabase, settings: Settings, payment_sandbox: PaymentSandbox
) -> None:
    """The dunning's last try fails (the card declines): the car's metered options are paused,
    while the owner switches the option off."""
    clock = FixedClock()
    car = metered_car(committed, settings, clock, payment_sandbox.token(CARD_SUCCEEDS))
    card = payment_sandbox.token(CARD_DECLINED)
    month = clock.now().strftime("%Y-%m")

    def begin(session: Session) -> int:
        payment = metering.begin_month_charge(
            session,
            vehicle_id=car.owner.vehicle.id,
            customer_id=car.owner.customer.id,
            month=month,
            now=clock.now(),
        )
        assert payment is not None
        return payment.id

    payment_id = committed.run(begin)
    last_try = metering.Dunning(
        car.owner.vehicle.id, len(metering.RETRY_AFTER_DAYS), clock.now(), ()
    )

    def settle(session: Session) -> str:
        with SandboxProvider.from_settings(settings) as provider:
            payment = metering.settle_month_charge(
                session,
                session.get_one(Payment, payment_id),
                card=card,
                month=month,
                provider=provider,
                now=clock.now(),
                dunning=last_try,
            )
        return payment.state

    locks = FirstLocks(committed, {"dunning": METERING_LOCK, "switch": CAR_LOCK})
    locks.all_at_once({"dunning": settle, "switch": owner_switches_it_off(car, clock)})

    no_deadlock(locks)
    assert locks.results["dunning"] == "failed"


@pytest.mark.usefixtures("signing")
def test_the_cap_check_over_several_cars_and_a_fleet_re_sign_take_them_in_one_order(
    committed: CommittedDatabase, settings: Settings, payment_sandbox: PaymentSandbox
) -> None:
    """Cars whose usage arrived, in whatever order the query gave them, against the fleet-wide
    re-sign (cars by id): both take the cars by id, so neither waits for the other in a circle."""
    clock = FixedClock()
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first, second = (metered_car(committed, settings, clock, token) for _ in range(2))
    later = clock.now() + timedelta(minutes=10)
    push_id = committed.run(
        lambda s: pushes.open_push(s, kind="fleet.resign", label="test", actor=ACTOR, now=later).id
    )
    batch = {
        "push_id": push_id,
        "after": first.owner.vehicle.id - 1,
        "actor": {"kind": ACTOR.kind, "label": ACTOR.label, "user_id": None},
    }
    newest_first = [second.owner.vehicle.id, first.owner.vehicle.id]
    locks = FirstLocks(committed, {"caps": CAR_LOCK, "resign": CAR_LOCK})

    locks.all_at_once(
        {
            "caps": lambda s: metering.enforce_caps(s, newest_first, now=later),
            "resign": lambda s: pushes.resign_batch(s, batch, now=later, batch=2),
        }
    )

    assert locks.errors == {}
    assert locks.results == {"caps": 2, "resign": 2}
