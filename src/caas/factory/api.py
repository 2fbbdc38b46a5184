"""The receiver of the factory's signed stage events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from caas.core.api import ClockDep, DbSession, SettingsDep, error_responses
from caas.core.errors import NotAuthenticated
from caas.factory import service
from caas.factory.schemas import FactoryEventReceipt
from caas.protocol.factory import StageEvent
from caas.protocol.webhooks import SIGNATURE_HEADER, SignatureError, verify

router = APIRouter(prefix="/api/v1/factory", tags=["factory"])


async def _raw_body(request: Request) -> bytes:
    # The signature covers the exact bytes sent, so the body is read before any parsing.
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]

RESPONSES = error_responses(401, 404, 409, 422)
RESPONSES[401]["description"] = (
    "Unsigned (`factory.signature_missing`), or wrongly signed or stale "
    "(`factory.signature_invalid`): nothing changed"
)
RESPONSES[404]["description"] = "No order with this `order_id` (`factory.order_unknown`)"
RESPONSES[409]["description"] = (
    "The order is not in production: no deposit yet, or cancelled "
    "(`factory.order_not_in_production`)"
)


@router.post(
    "/events",
    response_model=FactoryEventReceipt,
    summary="Receive a manufacturing stage from the factory (signed webhook)",
    description=(
        "The factory POSTs each stage of an order as a `StageEvent`, signed with "
        f"`{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>` and the "
        "secret shared with the factory. Each event is applied once: a repeated `event_id` "
        "answers `duplicate`, an event older than the last applied (by `sequence`) answers "
        "`ignored`; both are 200 so the factory stops retrying. From the production stage "
        "(`assembly`) on, events carry the car's VIN and public key and the car's record "
        "is created."
    ),
    responses=RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": StageEvent.model_json_schema()}},
        }
    },
)
def receive_event(
    body: RawBody,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    signature: Annotated[
        str | None,
        Header(alias=SIGNATURE_HEADER, description="`t=<unix seconds>,v1=<hex HMAC-SHA256>`"),
    ] = None,
) -> FactoryEventReceipt:
    if not signature:
        raise NotAuthenticated("the event is not signed", code="factory.signature_missing")
    try:
        # Freshness is checked against real time: it guards the wire, not business time.
        verify(body, signature, settings.factory_webhook_secret)
    except SignatureError as error:
        raise NotAuthenticated(
            f"the event's signature is not valid: {error}", code="factory.signature_invalid"
        ) from None
    try:
        event = StageEvent.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None
    outcome = service.receive_stage_event(session, event, now=clock.now())
    return FactoryEventReceipt(status=outcome, order_id=event.order_id, sequence=event.sequence)
