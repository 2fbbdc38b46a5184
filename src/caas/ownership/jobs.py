"""Background work of a change of owner or an end of life: telling the registry, refunding
the previous owner."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Dealership
from caas.billing import service as billing
from caas.billing.models import Payment
from caas.billing.provider import PaymentProvider, SandboxProvider
from caas.core.clock import Clock
from caas.core.history import Actor
from caas.core.outbox import Handler, RetryLater
from caas.core.settings import Settings
from caas.ownership.models import Scrapping, Transfer
from caas.ownership.service import REFUND_TOPIC, REGISTRY_TOPIC, record_event, registry_refused
from caas.registration.base import Registered, RegistrationAdapter, RegistryUnavailable
from caas.registration.client import RegistryClient
from caas.registration.countries import adapter_for
from caas.sales.models import Customer, Sale
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

ACTOR: Final = Actor.system("ownership")
Post = Callable[[RegistrationAdapter, str, dict[str, Any]], tuple[int, Any]]


def _dealership(session: Session, vehicle: Vehicle, transfer: Transfer) -> Dealership:
    """Who presents the change: the dealership of a resale, else the one that sold the car."""
    if transfer.dealership_id is not None:
        return session.get_one(Dealership, transfer.dealership_id)
    dealership_id = session.scalar(select(Sale.dealership_id).where(Sale.id == vehicle.sale_id))
    if dealership_id is None:
        dealership_id = session.scalars(select(Dealership.id).order_by(Dealership.id)).first()
    return session.get_one(Dealership, dealership_id)


def _answered(
    session: Session,
    row: Transfer | Scrapping,
    vehicle: Vehicle,
    adapter: RegistrationAdapter,
    status: int,
    body: Any,
    *,
    customer_id: int | None,
    now: datetime,
) -> None:
    outcome = adapter.parse(status, body)  # RegistryUnavailable / RegistryFault: retried
    row.registry_answer = body if isinstance(body, dict) else {"body": body}
    row.registry_state = "recorded" if isinstance(outcome, Registered) else "refused"
    details: dict[str, Any] = {"authority": adapter.authority}
    if not isinstance(outcome, Registered):
        details["reason"] = outcome.reason
    kind = "holder_change" if isinstance(row, Transfer) else "deregistration"
    record_event(
        session,
        vehicle,
        f"ownership.registry_{kind}_{row.registry_state}",
        customer_id=customer_id,
        actor=Actor(kind="registry", label=adapter.authority),
        now=now,
        details=details,
    )
    if not isinstance(outcome, Registered):
        registry_refused(session, vehicle, row, reason=outcome.reason, now=now)
    log.info("ownership.registry_answered", vin=vehicle.vin, kind=kind, state=row.registry_state)


def tell_registry(session: Session, payload: dict[str, Any], *, post: Post, now: datetime) -> None:
    """Send the registry the new holder (a transfer) or the deregistration (a scrapping) and
    keep its answer; while it is down the job is retried (nothing is written)."""
    if "transfer_id" in payload:
        transfer = session.get(Transfer, int(payload["transfer_id"]), with_for_update=True)
        if transfer is None or transfer.registry_state != "pending":
            return
        vehicle = session.get_one(Vehicle, transfer.vehicle_id)
        adapter = adapter_for(vehicle.registered_country or "")
        buyer = session.get_one(Customer, transfer.buyer_customer_id)
        path, request = adapter.holder_change(
            buyer, vehicle, _dealership(session, vehicle, transfer)
        )
        status, body = post(adapter, path, request)
        _answered(session, transfer, vehicle, adapter, status, body, customer_id=buyer.id, now=now)
        return
    scrapping = session.get(Scrapping, int(payload["scrapping_id"]), with_for_update=True)
    if scrapping is None or scrapping.registry_state != "pending":
        return
    vehicle = session.get_one(Vehicle, scrapping.vehicle_id)
    adapter = adapter_for(vehicle.registered_country or "")
    path, request = adapter.deregistration(
        vehicle, certificate_number=scrapping.certificate_number, reason=scrapping.reason
    )
    status, body = post(adapter, path, request)
    _answered(
        session,
        scrapping,
        vehicle,
        adapter,
        status,
        body,
        customer_id=scrapping.owner_customer_id,
        now=now,
    )


def refund(
    session: Session, payload: dict[str, Any], *, provider: PaymentProvider, now: datetime
) -> None:
    """Give the previous owner back what their offer's policy says (billing issues the credit
    note); what was refunded since then caps it."""
    payment = session.get_one(Payment, int(payload["payment_id"]))
    amount = min(int(payload["amount_minor"]), payment.amount_minor - payment.refunded_minor)
    if payment.state != "captured" or amount <= 0:
        return
    billing.refund_payment(
        session, payment, amount_minor=amount, provider=provider, actor=ACTOR, now=now
    )


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    client = RegistryClient(base_url=settings.registry_url, api_key=settings.registry_api_key)

    def registry(session: Session, payload: dict[str, Any]) -> None:
        try:
            tell_registry(session, payload, post=client.post, now=clock.now())
        except RegistryUnavailable as error:
            raise RetryLater(str(error)) from error

    def give_back(session: Session, payload: dict[str, Any]) -> None:
        with SandboxProvider.from_settings(settings) as provider:
            refund(session, payload, provider=provider, now=clock.now())

    return {REGISTRY_TOPIC: registry, REFUND_TOPIC: give_back}
