"""Turning a registration into its API shape (kept apart so the routes stay thin)."""

from __future__ import annotations

from caas.protocol.registry import AUTHORITIES
from caas.registration.models import Registration
from caas.registration.schemas import RegistrationRead, RejectionRead
from caas.sales.models import Sale
from caas.sales.rules import STATE_LABELS


def registration_read(registration: Registration, sale: Sale) -> RegistrationRead:
    rejection = None
    if registration.state == "rejected" and registration.rejection_reason is not None:
        rejection = RejectionRead(
            reason=registration.rejection_reason,
            field=registration.rejection_field,
            registry_field=registration.registry_field,
        )
    return RegistrationRead(
        sale_id=sale.id,
        country=registration.country,
        authority=AUTHORITIES.get(registration.country, registration.country),
        state=registration.state,
        order_state=sale.state,
        order_state_label=STATE_LABELS[sale.state],
        attempts=registration.attempts,
        plate=registration.plate,
        rejection=rejection,
        submitted_at=registration.submitted_at,
        registered_at=registration.registered_at,
        rejected_at=registration.rejected_at,
    )
