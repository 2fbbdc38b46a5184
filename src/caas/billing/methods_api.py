"""Routes of the customer's saved cards: list, add, make default, remove."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import JSONResponse

from caas.accounts.deps import CustomerUser, actor_of
from caas.billing import methods
from caas.billing.methods_schemas import PaymentMethodCreate, PaymentMethodRead
from caas.billing.provider import PaymentProvider, SandboxProvider
from caas.core.api import ClockDep, DbSession, SettingsDep, answer_once, error_responses

router = APIRouter(prefix="/api/v1/me/payment-methods", tags=["billing"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended change; a retry with the same key acts once and gets "
        "the first answer",
    ),
]
MethodId = Annotated[int, Path(description="Database id of the saved card", examples=[5])]


def _provider(settings: SettingsDep) -> Iterator[PaymentProvider]:
    with SandboxProvider.from_settings(settings) as provider:
        yield provider


Provider = Annotated[PaymentProvider, Depends(_provider)]


@router.get(
    "",
    response_model=list[PaymentMethodRead],
    summary="Your saved cards, the default first",
    responses=error_responses(401, 403),
)
def list_methods(session: DbSession, user: CustomerUser) -> list[PaymentMethodRead]:
    return [PaymentMethodRead.of(method) for method in methods.my_methods(session, user=user)]


@router.post(
    "",
    response_model=PaymentMethodRead,
    status_code=201,
    summary="Save a card tokenised at the payment provider",
    description="The provider is asked whether it knows the token and which card it is (brand, "
    "last four digits, expiry); an unknown token is 422 on `card_token`. Your first card "
    "becomes the default, which pays renewals, planned options and monthly use. Saving the "
    "same token again returns the same card; a removed card must be tokenised again (409 "
    "`payment_method.removed`).",
    responses=error_responses(401, 403, 409, 422, 503),
)
def add_method(
    body: PaymentMethodCreate,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    provider: Provider,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        method = methods.add(
            session,
            user=user,
            card_token=body.card_token,
            provider=provider,
            actor=actor_of(user),
            now=now,
        )
        return PaymentMethodRead.of(method).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation="payment_method.add",
        request=body.model_dump(),
        now=now,
        act=act,
        status_code=201,
    )


@router.post(
    "/{method_id}/default",
    response_model=PaymentMethodRead,
    summary="Make a saved card the default (it pays renewals from now on)",
    description="Your subscriptions and planned options are charged to it from now on. "
    "Another customer's card is 404.",
    responses=error_responses(401, 403, 404, 422),
)
def make_default(
    method_id: MethodId,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        method = methods.set_default(
            session, user=user, method_id=method_id, actor=actor_of(user), now=now
        )
        return PaymentMethodRead.of(method).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"payment_method.default:{method_id}",
        request={},
        now=now,
        act=act,
    )


@router.delete(
    "/{method_id}",
    response_model=PaymentMethodRead,
    summary="Remove a saved card (it is never charged again)",
    description="Removing the default makes your newest remaining card the default, and what "
    "was charged to the removed card moves to it. With no card left, the next renewal fails "
    "and is retried as for a declined card. Another customer's card is 404.",
    responses=error_responses(401, 403, 404, 422),
)
def remove_method(
    method_id: MethodId,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        method = methods.remove(
            session, user=user, method_id=method_id, actor=actor_of(user), now=now
        )
        return PaymentMethodRead.of(method).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"payment_method.remove:{method_id}",
        request={},
        now=now,
        act=act,
    )
