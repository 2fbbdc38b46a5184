"""Background work of upkeep, delivered by the worker's relay (`caas.core.outbox`): the
reminder of an unanswered proposal, the charge of a done order, and the new configuration
that shows a booking on the car's screen."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.history import Actor
from caas.core.outbox import Handler
from caas.core.settings import Settings
from caas.upkeep import orders
from caas.vehicles.models import Vehicle


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    from caas.billing.provider import SandboxProvider

    def remind(session: Session, payload: dict[str, Any]) -> None:
        orders.remind(session, order_id=int(payload["order_id"]), now=clock.now())

    def charge(session: Session, payload: dict[str, Any]) -> None:
        with SandboxProvider.from_settings(settings) as provider:
            orders.charge(
                session,
                order_id=int(payload["order_id"]),
                payment_id=int(payload["payment_id"]),
                card=str(payload["card"]),
                provider=provider,
                now=clock.now(),
            )

    def tell_car(session: Session, payload: dict[str, Any]) -> None:
        from caas.ota.service import request_configuration

        vehicle = session.get_one(Vehicle, int(payload["vehicle_id"]))
        if vehicle.state == "archived":
            return
        request_configuration(
            session, vehicle, reason="upkeep booking", actor=Actor.system("upkeep"), now=clock.now()
        )

    return {
        orders.REMIND_TOPIC: remind,
        orders.CHARGE_TOPIC: charge,
        orders.TELL_CAR_TOPIC: tell_car,
    }
