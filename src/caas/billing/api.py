"""Routes of billing: paying an order, its payments, invoices and their PDF, provider events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import CurrentUser, CustomerUser, actor_of
from caas.billing import invoices, service
from caas.billing.models import Payment
from caas.billing.pdf import render_invoice_pdf
from caas.billing.provider import PaymentProvider, ProviderError, SandboxProvider
from caas.billing.read import invoice_read, invoice_summary, payment_read
from caas.billing.schemas import InvoiceRead, InvoiceSummary, PaymentCreate, PaymentRead, WebhookAck
from caas.core.api import ClockDep, DbSession, SettingsDep, error_responses
from caas.core.errors import CaasError, InvalidInput, NotAuthenticated, PaymentFailed
from caas.core.idempotency import check_key
from caas.protocol.payments import Event
from caas.protocol.webhooks import SIGNATURE_HEADER, SignatureError, verify
from caas.sales import service as sales

router = APIRouter(prefix="/api/v1", tags=["billing"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended payment; a retry with the same key pays once and "
        "gets the first answer",
    ),
]


def _provider(settings: SettingsDep) -> Iterator[PaymentProvider]:
    with SandboxProvider.from_settings(settings) as provider:
        yield provider


Provider = Annotated[PaymentProvider, Depends(_provider)]
SaleId = Annotated[int, Path(description="Database id of the order", examples=[1])]
InvoiceId = Annotated[int, Path(description="Database id of the invoice", examples=[3])]


async def _raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]


def _answer(session: Session, payment: Payment, locale: str) -> JSONResponse:
    """The HTTP answer a payment's state gives: the same for the first call and its retries."""
    body = payment_read(session, payment, locale).model_dump(mode="json")
    if payment.state in ("captured", "refunded"):
        return JSONResponse(body, status_code=201)
    if payment.state in ("pending", "authorised"):
        return JSONResponse(body, status_code=202)
    error: CaasError
    if payment.failure_code == "provider_error":
        error = ProviderError(payment.failure_reason or "the payment provider failed")
    elif payment.failure_code == "invalid_token":
        error = InvalidInput(
            "the card token is not valid; tokenise the card again",
            field="card_token",
            code="payment.invalid_card_token",
        )
    elif payment.failure_code == "card_declined":
        error = PaymentFailed("the card was declined", code="payment.declined")
    else:
        error = PaymentFailed(payment.failure_reason or "the payment failed")
    error.extra["payment"] = body
    return JSONResponse(error.to_dict(), status_code=error.status)


@router.post(
    "/sales/{sale_id}/payments",
    response_model=PaymentRead,
    status_code=201,
    summary="Pay the deposit or the rest of your order by card (authorised, then captured)",
    description="201 when the money is captured (the invoice is issued and the order moves "
    "on); 202 when the provider has not confirmed yet: the payment settles by itself when it "
    "does, and a retry with the same Idempotency-Key returns its state without paying again. "
    "A declined card answers 402 `payment.declined` and changes nothing but the payment's "
    "record; a provider failure answers 503.",
    responses={
        202: {"model": PaymentRead, "description": "Pending: the provider has not confirmed yet"},
        **error_responses(401, 402, 403, 404, 409, 422, 503),
    },
)
def pay_sale(
    sale_id: SaleId,
    body: PaymentCreate,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    provider: Provider,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    key = check_key(idempotency_key)
    payment = service.begin_sale_payment(
        session,
        user=user,
        sale_id=sale_id,
        kind=body.kind,
        card_token=body.card_token,
        idempotency_key=key,
        now=clock.now(),
    )
    # The payment is on record before any money moves, so whatever happens next (a timeout,
    # a crash) a retry with this key finds it and the provider sees the same keys again.
    session.commit()
    payment = service.drive_payment(
        session,
        payment,
        card_token=body.card_token,
        provider=provider,
        actor=actor_of(user),
        now=clock.now(),
    )
    return _answer(session, payment, user.language)


@router.get(
    "/sales/{sale_id}/payments",
    response_model=list[PaymentRead],
    summary="The payments of an order, failed attempts included",
    responses=error_responses(401, 404),
)
def sale_payments(sale_id: SaleId, session: DbSession, user: CurrentUser) -> list[PaymentRead]:
    sale = sales.get_sale_for(session, user, sale_id)
    return [
        payment_read(session, payment, user.language)
        for payment in service.payments_for_sale(session, sale.id)
    ]


@router.post(
    "/webhooks/payments",
    response_model=WebhookAck,
    summary="Signed events of the payment provider (settles pending payments)",
    description=f"Signed with `{SIGNATURE_HEADER}` (see `caas.protocol.webhooks`). A repeated "
    "or stale event changes nothing.",
    responses=error_responses(401, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": Event.model_json_schema()}},
        }
    },
)
def payment_webhook(
    body: RawBody,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    provider: Provider,
    signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description="`t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>` with the "
            "secret shared with the provider",
        ),
    ] = None,
) -> WebhookAck:
    try:
        verify(body, signature, settings.payment_webhook_secret)
    except SignatureError as error:
        raise NotAuthenticated(f"webhook refused: {error}", code="webhook.bad_signature") from None
    try:
        event = Event.model_validate_json(body)
    except ValidationError:
        raise InvalidInput(
            "not a payment provider event", field="body", code="webhook.malformed"
        ) from None
    state = service.apply_provider_event(session, event, provider=provider, now=clock.now())
    return WebhookAck(state=state)


@router.get(
    "/invoices",
    response_model=list[InvoiceSummary],
    summary="Invoices: a customer's own, or all of them for an operator",
    responses=error_responses(401, 403),
)
def list_invoices(
    session: DbSession,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many")] = 50,
    offset: Annotated[int, Query(ge=0, description="Skip this many first (paging)")] = 0,
) -> list[InvoiceSummary]:
    found = service.list_invoices_for(session, user, limit=limit, offset=offset)
    return [invoice_summary(invoice, user.language) for invoice in found]


@router.get(
    "/invoices/{invoice_id}",
    response_model=InvoiceRead,
    summary="One invoice with its seller, buyer, lines and totals",
    responses=error_responses(401, 404),
)
def get_invoice(invoice_id: InvoiceId, session: DbSession, user: CurrentUser) -> InvoiceRead:
    invoice = service.get_invoice_for(session, user, invoice_id)
    return invoice_read(session, invoice, user.language)


@router.get(
    "/invoices/{invoice_id}/pdf",
    response_class=Response,
    summary="The invoice as a PDF, in the customer's language",
    responses={
        200: {"content": {"application/pdf": {}}, "description": "The PDF"},
        **error_responses(401, 404),
    },
)
def invoice_pdf(invoice_id: InvoiceId, session: DbSession, user: CurrentUser) -> Response:
    invoice = service.get_invoice_for(session, user, invoice_id)
    document = render_invoice_pdf(invoice, invoices.invoice_lines(session, invoice.id))
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{invoice.number}.pdf"'},
    )
