"""A double click: two requests with one Idempotency-Key at the same moment, each in its own
transaction against a database whose commits are real, charge once and make one purchase."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing.models import Payment
from caas.billing.provider import SandboxProvider
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.ota.models import ConfigurationVersion
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store import purchases
from caas.store.models import Entitlement, Purchase
from caas.store.schemas import PurchaseItem
from tests.billing.conftest import PaymentSandbox
from tests.store.conftest import offer, owner_of
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import CommittedDatabase, born_car, committed, deliver

__all__ = ["committed", "engine_keys", "signing"]


def test_two_concurrent_requests_with_one_key_make_one_purchase_and_charge_once(
    committed: CommittedDatabase,
    settings: Settings,
    payment_sandbox: PaymentSandbox,
    signing: object,
) -> None:
    now = datetime.now(UTC)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))
    committed.run(lambda session: deliver(session, car, now=now))

    def prepare(session: Session) -> tuple[int, int]:
        owner = owner_of(session, car, now)
        return owner.user.id, offer(session, owner.vehicle, "power_boost", "window", "1D").id

    user_id, offer_id = committed.run(prepare)

    def versions(session: Session) -> int:
        return (
            session.scalar(
                select(func.count())
                .select_from(ConfigurationVersion)
                .where(ConfigurationVersion.vehicle_id == car.vehicle_id)
            )
            or 0
        )

    versions_before = committed.run(versions)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    items = [PurchaseItem(offer_id=offer_id)]
    start = threading.Barrier(2)
    answers: list[tuple[int, str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def request() -> None:
        session = committed.sessions()
        try:
            user = session.get_one(User, user_id)
            actor = Actor(kind="customer", label=user.email, user_id=user.id)
            start.wait()
            purchase = purchases.begin_purchase(
                session,
                user=user,
                vin=car.vin,
                items=items,
                payment_method=token,
                idempotency_key="double-click-concurrent",
                now=datetime.now(UTC),
            )
            session.commit()
            with SandboxProvider.from_settings(settings) as provider:
                purchase = purchases.drive_purchase(
                    session,
                    purchase,
                    provider=provider,
                    actor=actor,
                    now=datetime.now(UTC),
                )
            session.commit()
            with lock:
                answers.append((purchase.id, purchase.state))
        except BaseException as error:  # noqa: BLE001 - reported below
            session.rollback()
            with lock:
                failures.append(error)
        finally:
            session.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    (first, second) = answers
    assert first[0] == second[0]
    assert {first[1], second[1]} == {"delivering"}

    def settled(session: Session) -> tuple[int, int, str, int, int]:
        made = session.scalar(
            select(func.count()).select_from(Purchase).where(Purchase.vehicle_id == car.vehicle_id)
        )
        (payment,) = session.scalars(
            select(Payment).where(Payment.customer_id == car.customer_id, Payment.kind == "option")
        )
        rights = session.scalar(
            select(func.count()).select_from(Entitlement).where(Entitlement.purchase_id == first[0])
        )
        return made or 0, rights or 0, payment.reference, payment.amount_minor, versions(session)

    made, rights, reference, amount, versions_after = committed.run(settled)
    assert (made, rights) == (1, 1)
    assert payment_sandbox.authorisations(reference) == 1
    assert amount == 1_210
    # One configuration for the purchase, not one per request.
    assert versions_after == versions_before + 1
