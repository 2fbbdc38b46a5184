"""Turning a delivery into its API shape (kept apart so the routes stay thin)."""

from __future__ import annotations

from caas.delivery.models import Delivery
from caas.delivery.schemas import AddressRead, DeliveryRead
from caas.sales.models import Sale
from caas.sales.rules import STATE_LABELS


def delivery_read(delivery: Delivery, sale: Sale) -> DeliveryRead:
    return DeliveryRead(
        sale_id=sale.id,
        state=delivery.state,
        order_state=sale.state,
        order_state_label=STATE_LABELS[sale.state],
        scheduled_for=delivery.scheduled_for,
        carrier=delivery.carrier,
        tracking_number=delivery.tracking_number,
        address=AddressRead(
            recipient=delivery.recipient,
            street=delivery.street,
            postal_code=delivery.postal_code,
            city=delivery.city,
            country=delivery.country,
        ),
        scheduled_at=delivery.scheduled_at,
        dispatched_at=delivery.dispatched_at,
        delivered_at=delivery.delivered_at,
    )
