"""Chargebacks: captured money the card's bank took back, applied once from the provider's event.

The provider tells with a signed `chargeback.created` event (`service.apply_provider_event`
brings the payment up to date first, so a chargeback arriving before its capture's event
still finds the payment captured). The chargeback is posted to the ledger under the
provider's id of it, which is what makes a repeated event change nothing; the payment becomes
`charged_back` (a second, partial chargeback is only recorded), the customer's history shows
it and the customer is told. Money taken back for the store takes back what it paid for
(`caas.store.purchases.payment_taken_back`): a purchase ends as a refunded one does, a renewed
period or an occurrence's window is revoked, and the car gets a configuration without it.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.orm import Session

from caas.billing import ledger, service
from caas.billing.models import Payment
from caas.core.history import record
from caas.notifications.service import notify_user
from caas.protocol.payments import Chargeback
from caas.sales.models import Customer

log = structlog.get_logger(__name__)

# States a payment can be charged back in: captured money (partly refunded or not), or a
# payment charged back in part already.
DISPUTABLE = frozenset({"captured", "charged_back"})


def apply_chargeback(
    session: Session, payment: Payment, chargeback: Chargeback, *, now: datetime
) -> bool:
    """Apply the chargeback to the locked `payment`, once; False when it was applied before
    (or the payment holds no captured money, which is logged for an operator)."""
    if payment.state not in DISPUTABLE:
        log.error(
            "payment.chargeback_unexpected",
            payment_id=payment.id,
            state=payment.state,
            chargeback_id=chargeback.id,
        )
        return False
    if not ledger.post_chargeback(
        session,
        payment,
        amount_minor=chargeback.amount_minor,
        provider_ref=chargeback.id,
        now=now,
    ):
        return False
    details: dict[str, object] = {
        "chargeback_id": chargeback.id,
        "charged_back_minor": chargeback.amount_minor,
        "reason": chargeback.reason,
    }
    if payment.state == "captured":
        service.move_payment(
            session, payment, "charged_back", actor=service.PROVIDER, now=now, details=details
        )
    else:
        payment.updated_at = now
        record(
            session,
            at=now,
            actor=service.PROVIDER,
            subject_type="payment",
            subject_id=payment.id,
            customer_id=payment.customer_id,
            event="payment.charged_back_again",
            details={**details, "currency": payment.currency},
        )
    log.warning(
        "payment.charged_back",
        payment_id=payment.id,
        amount_minor=chargeback.amount_minor,
        reason=chargeback.reason,
    )
    _tell(session, payment, chargeback, now=now)
    if payment.sale_id is None:
        # Imported here: the store imports billing, not the other way round.
        from caas.store import purchases

        purchases.payment_taken_back(
            session, payment.id, reason=f"chargeback: {chargeback.reason}", now=now
        )
    return True


def _tell(session: Session, payment: Payment, chargeback: Chargeback, *, now: datetime) -> None:
    customer = session.get_one(Customer, payment.customer_id)
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind="payment.charged_back",
        context={
            "name": customer.first_name,
            "amount_minor": chargeback.amount_minor,
            "currency": chargeback.currency,
            "reason": chargeback.reason,
            "store": payment.sale_id is None,
            "country": customer.country,
        },
        dedupe_key=f"payment.charged_back:{chargeback.id}",
        now=now,
    )
