"""The finance views name a store purchase's revenue by its option's code, as the ledger does,
and its refund's credit note subtracts from that same option."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from caas.billing import finance, ledger, service
from caas.billing.finance import FinanceFilter
from caas.billing.models import Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from tests.billing.conftest import PaymentSandbox
from tests.store.conftest import Owner, answer, buy, item, offer, owner_of, run_relay
from tests.store.engine import Delivered, delivered, engine_keys, signing

__all__ = ["delivered", "engine_keys", "signing"]


@pytest.fixture
def owner(db: Session, delivered: Delivered, clock: FixedClock) -> Owner:
    return owner_of(db, delivered.car, clock.now())


def test_a_purchase_is_revenue_of_its_option_code_and_its_refund_subtracts_there(
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    month = offer(db, owner.vehicle, "winter_traction", "window", "1M", net_minor=1_000)
    purchase = buy(
        db,
        owner,
        [item(month)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="finance-winter-0001",
        settings=settings,
        clock=clock,
    )
    clock.advance(timedelta(seconds=2))
    answer(db, owner, purchase.configuration_version or 0, "applied", clock)
    run_relay(settings, sessions, clock, db)
    assert purchase.payment_id is not None
    payment = db.get_one(Payment, purchase.payment_id)
    assert payment.state == "captured"

    by_feature = finance.revenue(db, FinanceFilter(), "feature")
    options = {cell.keys[0]: cell.net_minor for cell in by_feature.cells}
    assert options.get("winter_traction") == 1_000
    balances = ledger.balances(db)
    assert -balances[ledger.revenue("winter_traction")] == 1_000

    with SandboxProvider.from_settings(settings) as provider:
        service.refund_payment(
            db,
            payment,
            amount_minor=605,  # half of 12.10
            provider=provider,
            actor=Actor(kind="operator", label="finance-test"),
            now=clock.now(),
        )
    db.commit()
    after = finance.revenue(db, FinanceFilter(), "feature")
    options = {cell.keys[0]: cell.net_minor for cell in after.cells}
    assert options["winter_traction"] == 500
