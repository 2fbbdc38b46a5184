"""The payment provider's sandbox: tokens, authorisations, captures, voids, refunds, events.

It speaks `caas.protocol.payments` and keeps everything in memory. Test cards decide what
happens: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined, 4000 0000 0000 0119
fails with a provider error (HTTP 500), 4000 0000 0000 0259 answers its authorisation only
after `late_seconds` (the caller has usually given up by then and learns the result from the
signed `authorization.succeeded` event). Any other valid card number succeeds.

A caller that never got its answer asks by its own reference (`GET /v1/authorizations?
reference=`); the card's bank disputing a captured payment is played by the simulator control
`POST /sim/authorizations/{id}/chargeback` (a signed `chargeback.created` event follows).

The card number is checked and forgotten at tokenisation: a token keeps the brand, the last
four digits and the test behaviour, nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from stdnum import luhn

from caas.protocol import webhooks
from caas.protocol.payments import (
    API_KEY_HEADER,
    CARD_ANSWERS_LATE,
    CARD_DECLINED,
    CARD_PROVIDER_ERROR,
    Authorization,
    AuthorizationCreate,
    CaptureCreate,
    CardDetails,
    CardSummary,
    CardToken,
    Chargeback,
    ChargebackCreate,
    Event,
    EventType,
    ProviderErrorBody,
    Refund,
    RefundCreate,
    Settlement,
)

WEBHOOK_ATTEMPTS = 5


class Behaviour(Enum):
    SUCCEEDS = "succeeds"
    DECLINED = "declined"
    PROVIDER_ERROR = "provider_error"
    LATE = "late"


TEST_CARDS = {
    CARD_DECLINED: Behaviour.DECLINED,
    CARD_PROVIDER_ERROR: Behaviour.PROVIDER_ERROR,
    CARD_ANSWERS_LATE: Behaviour.LATE,
}


class ProviderError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = ProviderErrorBody(code=code, message=message).model_dump()


@dataclass
class _Token:
    card: CardSummary
    behaviour: Behaviour


@dataclass
class _Answer:
    fingerprint: str
    status: int
    body: dict[str, Any]


Outcome = tuple[int, dict[str, Any]]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    return "card"


@dataclass
class Sandbox:
    """The provider's books: every token, authorisation, refund and answer it gave."""

    webhook_url: str | None
    webhook_secret: str
    late_seconds: float
    tokens: dict[str, _Token] = field(default_factory=dict)
    authorizations: dict[str, Authorization] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    chargebacks: dict[str, Chargeback] = field(default_factory=dict)
    settlements: list[Settlement] = field(default_factory=list)
    answers: dict[str, _Answer] = field(default_factory=dict)
    running: dict[str, tuple[str, asyncio.Task[Outcome]]] = field(default_factory=dict)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    http: httpx.AsyncClient | None = None

    # Idempotency: one answer per key, even while the first request is still running.

    async def once(
        self, key: str | None, fingerprint: str, act: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        if not key:
            raise ProviderError(400, "idempotency_key_required", "send an Idempotency-Key")
        stored = self.answers.get(key)
        if stored is not None:
            self._same_request(stored.fingerprint, fingerprint)
            return stored.status, stored.body
        if key in self.running:
            first_fingerprint, task = self.running[key]
            self._same_request(first_fingerprint, fingerprint)
        else:
            # A task of its own: a caller that hangs up does not stop the payment half-way.
            task = asyncio.create_task(self._answer(key, fingerprint, act))
            self.running[key] = (fingerprint, task)
        return await asyncio.shield(task)

    @staticmethod
    def _same_request(first: str, again: str) -> None:
        if first != again:
            raise ProviderError(
                409, "idempotency_key_reused", "this Idempotency-Key was used with another request"
            )

    async def _answer(
        self, key: str, fingerprint: str, act: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        try:
            try:
                status, body = await act()
            except ProviderError as error:
                status, body = error.status, error.body
            if status < 500:  # a provider failure changed nothing: a retry may try again
                self.answers[key] = _Answer(fingerprint, status, body)
            return status, body
        finally:
            self.running.pop(key, None)

    # The business.

    def tokenise(self, card: CardDetails) -> CardToken:
        number = "".join(ch for ch in card.number if ch.isdigit())
        if len(number) < 12 or not luhn.is_valid(number):
            raise ProviderError(400, "invalid_number", "the card number is not valid")
        today = _now()
        if (card.exp_year, card.exp_month) < (today.year, today.month):
            raise ProviderError(400, "expired_card", "the card has expired")
        summary = CardSummary(
            brand=_brand(number),
            last4=number[-4:],
            exp_month=card.exp_month,
            exp_year=card.exp_year,
        )
        token = _new_id("tok")
        self.tokens[token] = _Token(summary, TEST_CARDS.get(number, Behaviour.SUCCEEDS))
        return CardToken(id=token, card=summary)

    def token(self, token_id: str) -> CardToken:
        found = self.tokens.get(token_id)
        if found is None:
            raise ProviderError(404, "unknown_token", "no such card token")
        return CardToken(id=token_id, card=found.card)

    def change_card(self, token: str, number: str) -> None:
        """From now on the card behind `token` behaves as the test card `number`: a card that
        paid the first period and is declined at renewal (tests of what happens over time)."""
        self.tokens[token].behaviour = TEST_CARDS.get(number, Behaviour.SUCCEEDS)

    async def authorise(self, request: AuthorizationCreate) -> Outcome:
        token = self.tokens.get(request.token)
        if token is None:
            raise ProviderError(400, "invalid_token", "no such card token")
        if token.behaviour is Behaviour.PROVIDER_ERROR:
            raise ProviderError(500, "processing_error", "the card network did not answer")
        if token.behaviour is Behaviour.LATE:
            await asyncio.sleep(self.late_seconds)
        declined = token.behaviour is Behaviour.DECLINED
        authorization = Authorization(
            id=_new_id("auth"),
            status="declined" if declined else "authorised",
            amount_minor=request.amount_minor,
            currency=request.currency,
            reference=request.reference,
            card=token.card,
            decline_code="card_declined" if declined else None,
            created_at=_now(),
        )
        self.authorizations[authorization.id] = authorization
        self.emit(
            "authorization.declined" if declined else "authorization.succeeded", authorization
        )
        return 201, authorization.model_dump(mode="json")

    def authorization(self, authorization_id: str) -> Authorization:
        authorization = self.authorizations.get(authorization_id)
        if authorization is None:
            raise ProviderError(404, "unknown_authorization", "no such authorisation")
        return authorization

    async def capture(self, authorization_id: str, request: CaptureCreate) -> Outcome:
        authorization = self.authorization(authorization_id)
        if authorization.status != "authorised":
            raise ProviderError(
                409, "invalid_state", f"the authorisation is {authorization.status}"
            )
        amount = request.amount_minor or authorization.amount_minor
        if amount > authorization.amount_minor:
            raise ProviderError(400, "amount_too_large", "more than was authorised")
        authorization.status = "captured"
        authorization.captured_minor = amount
        self.settlements.append(
            Settlement(
                kind="capture",
                id=authorization.id,
                authorization=authorization.id,
                reference=authorization.reference,
                amount_minor=amount,
                currency=authorization.currency,
                at=_now(),
            )
        )
        self.emit("capture.succeeded", authorization)
        return 200, authorization.model_dump(mode="json")

    async def void(self, authorization_id: str) -> Outcome:
        authorization = self.authorization(authorization_id)
        if authorization.status != "authorised":
            raise ProviderError(
                409, "invalid_state", f"the authorisation is {authorization.status}"
            )
        authorization.status = "voided"
        self.emit("void.succeeded", authorization)
        return 200, authorization.model_dump(mode="json")

    async def refund(self, request: RefundCreate) -> Outcome:
        authorization = self.authorization(request.authorization)
        if authorization.status != "captured":
            raise ProviderError(409, "invalid_state", "only a captured payment can be refunded")
        if authorization.refunded_minor + request.amount_minor > authorization.captured_minor:
            raise ProviderError(400, "amount_too_large", "more than is left to refund")
        authorization.refunded_minor += request.amount_minor
        refund = Refund(
            id=_new_id("re"),
            authorization=authorization.id,
            amount_minor=request.amount_minor,
            currency=authorization.currency,
            reference=authorization.reference,
            created_at=_now(),
        )
        self.refunds[refund.id] = refund
        self.settlements.append(
            Settlement(
                kind="refund",
                id=refund.id,
                authorization=authorization.id,
                reference=authorization.reference,
                amount_minor=refund.amount_minor,
                currency=refund.currency,
                at=refund.created_at,
            )
        )
        self.emit("refund.succeeded", authorization, refund)
        return 201, refund.model_dump(mode="json")

    def by_reference(self, reference: str) -> Authorization:
        """The authorisation made with the merchant's `reference` (the newest, should there be
        several); 404 while none has been made (a late card is still on its way)."""
        found = [a for a in self.authorizations.values() if a.reference == reference]
        if not found:
            raise ProviderError(404, "unknown_reference", "no authorisation with this reference")
        return max(found, key=lambda authorization: authorization.created_at)

    def dispute(self, authorization_id: str, request: ChargebackCreate) -> Chargeback:
        """The card's bank takes captured money back (all that is left, or `amount_minor`)."""
        authorization = self.authorization(authorization_id)
        if authorization.status != "captured":
            raise ProviderError(409, "invalid_state", "only a captured payment can be disputed")
        left = (
            authorization.captured_minor
            - authorization.refunded_minor
            - authorization.charged_back_minor
        )
        amount = request.amount_minor or left
        if not 0 < amount <= left:
            raise ProviderError(400, "amount_too_large", "more than is left to take back")
        authorization.charged_back_minor += amount
        chargeback = Chargeback(
            id=_new_id("cb"),
            authorization=authorization.id,
            amount_minor=amount,
            currency=authorization.currency,
            reason=request.reason,
            created_at=_now(),
        )
        self.chargebacks[chargeback.id] = chargeback
        self.settlements.append(
            Settlement(
                kind="chargeback",
                id=chargeback.id,
                authorization=authorization.id,
                reference=authorization.reference,
                amount_minor=chargeback.amount_minor,
                currency=chargeback.currency,
                at=chargeback.created_at,
            )
        )
        self.emit("chargeback.created", authorization, chargeback=chargeback)
        return chargeback

    # Events to the merchant, signed, retried a few times.

    def emit(
        self,
        kind: EventType,
        authorization: Authorization,
        refund: Refund | None = None,
        *,
        chargeback: Chargeback | None = None,
    ) -> None:
        if self.webhook_url is None:
            return
        event = Event(
            id=_new_id("evt"),
            type=kind,
            created_at=_now(),
            authorization=authorization.model_copy(deep=True),
            refund=refund,
            chargeback=chargeback,
        )
        self._spawn(self._deliver(event.model_dump_json().encode()))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _deliver(self, body: bytes) -> None:
        assert self.webhook_url is not None and self.http is not None
        for attempt in range(WEBHOOK_ATTEMPTS):
            headers = {
                "Content-Type": "application/json",
                webhooks.SIGNATURE_HEADER: webhooks.sign(body, self.webhook_secret),
            }
            try:
                response = await self.http.post(self.webhook_url, content=body, headers=headers)
                if response.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * 2**attempt)


def _fingerprint(request: Request, body: Any) -> str:
    text = json.dumps(
        {"method": request.method, "path": request.url.path, "body": body}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _reply(outcome: Outcome) -> JSONResponse:
    status, body = outcome
    return JSONResponse(body, status_code=status)


def create_app(
    *, api_key: str, webhook_url: str | None, webhook_secret: str, late_seconds: float = 3.0
) -> FastAPI:
    """The sandbox as an ASGI app; events go to `webhook_url` (none when it is None)."""
    sandbox = Sandbox(
        webhook_url=webhook_url, webhook_secret=webhook_secret, late_seconds=late_seconds
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            sandbox.http = http
            yield
            for task in list(sandbox.background):
                task.cancel()

    app = FastAPI(
        title="caas payment sandbox",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    # The customer's browser tokenises the card here directly, from the platform's pages.
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]
    )

    @app.exception_handler(ProviderError)
    async def provider_error(_: Request, error: ProviderError) -> JSONResponse:
        return JSONResponse(error.body, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        body = ProviderErrorBody(code="invalid_request", message=f"{where}: {first['msg']}")
        return JSONResponse(body.model_dump(), status_code=400)

    def secret_key(key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None) -> None:
        if key is None or not hmac.compare_digest(key, api_key):
            raise ProviderError(401, "invalid_api_key", f"send the secret key in {API_KEY_HEADER}")

    authenticated = Depends(secret_key)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/tokens", status_code=201, response_model=CardToken)
    async def create_token(card: CardDetails) -> CardToken:
        return sandbox.tokenise(card)

    @app.get("/v1/tokens/{token_id}", dependencies=[authenticated], response_model=CardToken)
    async def get_token(token_id: str) -> CardToken:
        return sandbox.token(token_id)

    @app.post("/v1/authorizations", dependencies=[authenticated], response_model=Authorization)
    async def create_authorization(
        body: AuthorizationCreate, request: Request, key: IdempotencyKey = None
    ) -> JSONResponse:
        fingerprint = _fingerprint(request, body.model_dump())
        return _reply(await sandbox.once(key, fingerprint, lambda: sandbox.authorise(body)))

    @app.post(
        "/v1/authorizations/{authorization_id}/capture",
        dependencies=[authenticated],
        response_model=Authorization,
    )
    async def capture(
        authorization_id: str, body: CaptureCreate, request: Request, key: IdempotencyKey = None
    ) -> JSONResponse:
        fingerprint = _fingerprint(request, body.model_dump())
        return _reply(
            await sandbox.once(key, fingerprint, lambda: sandbox.capture(authorization_id, body))
        )

    @app.post(
        "/v1/authorizations/{authorization_id}/void",
        dependencies=[authenticated],
        response_model=Authorization,
    )
    async def void(
        authorization_id: str, request: Request, key: IdempotencyKey = None
    ) -> JSONResponse:
        fingerprint = _fingerprint(request, None)
        return _reply(await sandbox.once(key, fingerprint, lambda: sandbox.void(authorization_id)))

    @app.post("/v1/refunds", dependencies=[authenticated], response_model=Refund, status_code=201)
    async def create_refund(
        body: RefundCreate, request: Request, key: IdempotencyKey = None
    ) -> JSONResponse:
        fingerprint = _fingerprint(request, body.model_dump())
        return _reply(await sandbox.once(key, fingerprint, lambda: sandbox.refund(body)))

    @app.get(
        "/v1/authorizations/{authorization_id}",
        dependencies=[authenticated],
        response_model=Authorization,
    )
    async def get_authorization(authorization_id: str) -> Authorization:
        return sandbox.authorization(authorization_id)

    @app.get(
        "/v1/authorizations",
        dependencies=[authenticated],
        response_model=Authorization,
        responses={404: {"model": ProviderErrorBody}},
    )
    async def authorization_by_reference(
        reference: Annotated[
            str, Query(max_length=100, description="The merchant's reference of the payment")
        ],
    ) -> Authorization:
        """What became of the payment the merchant sent with `reference`: for a caller whose
        request never got its answer (404 `unknown_reference`: it never arrived, or is still
        being processed)."""
        return sandbox.by_reference(reference)

    @app.post(
        "/sim/authorizations/{authorization_id}/chargeback",
        status_code=201,
        response_model=Chargeback,
        tags=["simulator controls"],
    )
    async def chargeback(authorization_id: str, body: ChargebackCreate) -> Chargeback:
        """The card's bank disputes a captured payment and takes the money back; the merchant
        gets a signed `chargeback.created` event."""
        return sandbox.dispute(authorization_id, body)

    @app.get("/v1/settlements", dependencies=[authenticated], response_model=list[Settlement])
    async def settlements(
        day: Annotated[
            date | None, Query(alias="date", description="UTC day; all when omitted")
        ] = None,
    ) -> list[Settlement]:
        """Every movement of the merchant's money: captures, refunds and chargebacks."""
        return [s for s in sandbox.settlements if day is None or s.at.date() == day]

    return app
