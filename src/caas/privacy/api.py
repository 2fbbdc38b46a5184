"""Routes of consent: the customer reads and changes their own answers."""

from __future__ import annotations

from fastapi import APIRouter

from caas.accounts.deps import CustomerUser, actor_of
from caas.core.api import ClockDep, DbSession, error_responses
from caas.privacy import service
from caas.privacy.schemas import ConsentRead, ConsentsUpdate
from caas.sales.service import customer_of_user

router = APIRouter(prefix="/api/v1", tags=["privacy"])


@router.get(
    "/me/consents",
    response_model=list[ConsentRead],
    summary="What the customer lets the maker keep of their car's data",
    description="Every purpose with its answer; off until the customer turns it on.",
    responses=error_responses(401, 403, 404),
)
def read_consents(session: DbSession, user: CustomerUser) -> list[ConsentRead]:
    customer = customer_of_user(session, user)
    return [ConsentRead.of(state) for state in service.consents_of(session, customer.id)]


@router.put(
    "/me/consents",
    response_model=list[ConsentRead],
    summary="Give or withdraw consent to keeping location history or driving style",
    description="Send the purposes to change. Each change is kept in the customer's file; "
    "withdrawing stops the storing from the next message the car sends. Sending the same "
    "answers again changes nothing, so a retry is harmless (no Idempotency-Key needed).",
    responses=error_responses(401, 403, 404, 422),
)
def update_consents(
    body: ConsentsUpdate, session: DbSession, clock: ClockDep, user: CustomerUser
) -> list[ConsentRead]:
    customer = customer_of_user(session, user)
    states = service.set_consents(
        session,
        customer_id=customer.id,
        choices=body.choices(),
        actor=actor_of(user),
        now=clock.now(),
    )
    return [ConsentRead.of(state) for state in states]
