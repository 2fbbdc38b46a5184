"""The customer corrects their own data: name, address, phone and language.

The national id and the country are not theirs to change (the registry and the invoices hang
on them): the dealer corrects those. Each correction leaves one history row with the fields'
old and new values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy.orm import Session

from caas.accounts import service as accounts
from caas.accounts.models import User
from caas.core.errors import InvalidInput
from caas.core.history import Actor, record
from caas.sales import identity
from caas.sales.models import Customer

# The fields a customer corrects, in the order the page shows them.
EDITABLE: Final = ("first_name", "last_name", "phone", "street", "postal_code", "city", "language")
LANGUAGES: Final = ("es", "en", "fr", "de", "it", "pt")


@dataclass(frozen=True, slots=True)
class Correction:
    """The fields the customer sends; None keeps the field as it is."""

    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    street: str | None = None
    postal_code: str | None = None
    city: str | None = None
    language: str | None = None


def _clean(customer: Customer, field: str, value: str) -> str:
    """The value as it is kept, or InvalidInput naming the field."""
    value = value.strip()
    try:
        if field == "phone":
            return identity.normalise_phone(customer.country, value)
        if field == "postal_code":
            return identity.normalise_postal_code(customer.country, value)
    except ValueError as error:
        raise InvalidInput(str(error), field=field) from None
    if field == "language" and value not in LANGUAGES:
        raise InvalidInput(f"one of {', '.join(LANGUAGES)}", field=field)
    if not value:
        raise InvalidInput("must not be blank", field=field)
    return value


def correct_profile(
    session: Session,
    *,
    customer: Customer,
    user: User,
    correction: Correction,
    actor: Actor,
    now: datetime,
) -> dict[str, tuple[str, str]]:
    """Apply the customer's corrections; returns the changed fields as (old, new). Every value
    is checked before any is written, so a bad one leaves everything as it was. The login's
    name and language follow the customer's."""
    wanted = {
        field: _clean(customer, field, value)
        for field in EDITABLE
        if (value := getattr(correction, field)) is not None
    }
    changes = {
        field: (str(getattr(customer, field)), value)
        for field, value in wanted.items()
        if getattr(customer, field) != value
    }
    if not changes:
        return {}
    for field, (_, value) in changes.items():
        setattr(customer, field, value)
    accounts.follow_customer(user, full_name=customer.full_name, language=customer.language)
    record(
        session,
        at=now,
        actor=actor,
        subject_type="customer",
        subject_id=customer.id,
        customer_id=customer.id,
        event="profile.corrected",
        details={
            "changes": {field: {"from": old, "to": new} for field, (old, new) in changes.items()}
        },
    )
    session.flush()
    return changes
