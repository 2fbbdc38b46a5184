"""The window sweep takes its batch's cars' rows (by id) before ending their entitlements, in
the one lock order (`caas.ota.service.lock_vehicle`). Before, it ended the entitlements whose
window was over first and locked each car last, when re-signing it: against the owner
switching that option at the same moment (the car's row, then the entitlement's) the two
waited for each other and PostgreSQL rolled one back.

The transactions run for real in threads on their own connections, held after their first
lock of the car's rows until the other holds its own or waits
(`tests.store.test_lock_order.FirstLocks`).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store import entitlements, sweep
from caas.store.models import Entitlement, SweepCursor
from tests.billing.conftest import PaymentSandbox
from tests.store.conftest import answer, buy, delivered_owner, item, offer
from tests.store.engine import engine_keys, signing
from tests.store.test_lock_order import CAR_LOCK, FirstLocks
from tests.store.test_lock_order_metering import METERING_LOCK, no_deadlock
from tests.vehicles.support import CommittedDatabase, committed

__all__ = ["committed", "engine_keys", "signing"]


@pytest.mark.usefixtures("signing")
def test_the_sweep_ending_a_window_and_the_owner_switching_that_option_both_go_through(
    committed: CommittedDatabase, settings: Settings, payment_sandbox: PaymentSandbox
) -> None:
    clock = FixedClock()
    session = committed.sessions()
    try:
        owner = delivered_owner(session, settings, clock)
        day = offer(session, owner.vehicle, "power_boost", "window", "1D")
        purchase = buy(
            session,
            owner,
            [item(day)],
            token=payment_sandbox.token(CARD_SUCCEEDS),
            key=f"lock-order-sweep-{owner.vehicle.vin}",
            settings=settings,
            clock=clock,
        )
        answer(session, owner, purchase.configuration_version or 0, "applied", clock)
        right = session.scalars(
            select(Entitlement).where(Entitlement.purchase_id == purchase.id)
        ).one()
        assert right.state == "active" and right.valid_until is not None
        entitlement_id, window_end = right.id, right.valid_until
    finally:
        session.close()
    now = window_end + timedelta(minutes=1)
    # A cursor of this test's own (never stored): this car's minute, this car first.
    cursor = SweepCursor(
        name="lock-order-test",
        swept_until=window_end - timedelta(minutes=1),
        pass_until=None,
        after_vehicle_id=owner.vehicle.id - 1,
        runs=0,
    )

    def switch(session: Session) -> object:
        return entitlements.switch(
            session,
            user=owner.user,
            vin=owner.vehicle.vin,
            entitlement_id=entitlement_id,
            enabled=False,
            now=now,
        )

    locks = FirstLocks(committed, {"sweep": METERING_LOCK, "switch": CAR_LOCK})
    locks.all_at_once(
        {
            "sweep": lambda s: sweep.sweep_batch(s, cursor, now=now, batch=1),
            "switch": switch,
        }
    )

    no_deadlock(locks)
    done = locks.results["sweep"]
    assert (done.cars, done.ended, done.signed) == (1, 1, 1)
    assert committed.run(lambda s: s.get_one(Entitlement, entitlement_id).state) == "ended"
