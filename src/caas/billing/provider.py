"""The payment provider behind one interface, and its implementation over the sandbox's HTTP API.

Every call carries an idempotency key that the caller derives from its own payment (see
`rules.provider_key`), so a call repeated after a timeout or a crash is answered with the
first result and never moves money twice.

Failures come in two kinds, and the difference matters:

- `ProviderError`: the provider answered with a failure of its own, or could not be reached
  at all. Nothing happened; the payment can be marked failed.
- `ProviderTimeout`: the request left but no answer came back in time. The money may or may
  not have moved: the payment stays pending until the provider's signed webhook (or a retry
  with the same key) tells, or the platform asks (`lookup`, by our own reference: see
  `caas.billing.resolve`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
import structlog

from caas.core.errors import UpstreamUnavailable
from caas.core.money import Money
from caas.core.settings import Settings
from caas.protocol.payments import (
    API_KEY_HEADER,
    IDEMPOTENCY_HEADER,
    Authorization,
    AuthorizationCreate,
    CaptureCreate,
    CardToken,
    Refund,
    RefundCreate,
)

log = structlog.get_logger(__name__)

ResultStatus = Literal["authorised", "declined", "error", "captured", "voided", "refunded"]


@dataclass(frozen=True)
class ProviderResult:
    """The provider's definitive answer to one call.

    `declined` (the card was refused) and `error` (the provider refused the request, e.g. an
    unknown token) carry a `reason` code; the others carry the provider's reference.
    """

    status: ResultStatus
    provider_ref: str | None = None
    reason: str | None = None
    message: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None

    @property
    def ok(self) -> bool:
        return self.status not in ("declined", "error")


class ProviderError(UpstreamUnavailable):
    """The provider failed or could not be reached: nothing happened; try again later."""

    code = "payment.provider_error"


class ProviderTimeout(UpstreamUnavailable):
    """No answer in time: the outcome is unknown until the webhook or a retry tells."""

    code = "payment.provider_timeout"


class PaymentProvider(Protocol):
    """What the platform needs from a card payment provider."""

    def authorise(
        self, amount: Money, card_token: str, idempotency_key: str, reference: str
    ) -> ProviderResult:
        """Hold `amount` on the card: `authorised`, `declined` or `error`."""
        ...

    def lookup(self, reference: str) -> Authorization | None:
        """The authorisation made with our `reference` as the provider has it now (captured,
        refunded and charged-back amounts included); None when no such request reached it.
        Raises `ProviderError` when the provider cannot say now."""
        ...

    def capture(self, ref: str, amount: Money, idempotency_key: str) -> ProviderResult:
        """Take the held money (all of it, or less): `captured` or `error`."""
        ...

    def void(self, ref: str, idempotency_key: str) -> ProviderResult:
        """Release a hold that will not be captured: `voided` or `error`."""
        ...

    def refund(self, ref: str, amount: Money, idempotency_key: str) -> ProviderResult:
        """Give back captured money: `refunded` (with the refund's reference) or `error`."""
        ...

    def card_token(self, token: str) -> CardToken | None:
        """The card behind a reusable token (brand, last four, expiry), None if no such
        token exists; raises `ProviderError` when the provider cannot say."""
        ...


def _from_authorization(authorization: Authorization) -> ProviderResult:
    declined = authorization.status == "declined"
    return ProviderResult(
        status=authorization.status,
        provider_ref=authorization.id,
        reason=authorization.decline_code if declined else None,
        message="the card was declined" if declined else None,
        card_brand=authorization.card.brand,
        card_last4=authorization.card.last4,
    )


class SandboxProvider:
    """`PaymentProvider` over the sandbox's HTTP API (`caas.protocol.payments`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={API_KEY_HEADER: api_key},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxProvider:
        return cls(
            settings.payment_url,
            settings.payment_api_key,
            timeout_seconds=settings.payment_timeout_seconds,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxProvider:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _post(self, path: str, body: dict[str, Any], idempotency_key: str) -> httpx.Response:
        try:
            response = self._http.post(
                path, json=body, headers={IDEMPOTENCY_HEADER: idempotency_key}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            log.warning("payment_provider.unreachable", path=path, error=str(error))
            raise ProviderError("the payment provider cannot be reached; try again later") from None
        except httpx.HTTPError as error:
            # Sent, but the answer never came: the provider may have acted on it.
            log.warning("payment_provider.no_answer", path=path, error=repr(error))
            raise ProviderTimeout(
                "the payment provider did not answer in time; the payment is pending "
                "and will be settled as soon as the provider confirms it"
            ) from None
        if response.status_code >= 500 or response.status_code in (401, 403):
            log.warning("payment_provider.failed", path=path, status=response.status_code)
            raise ProviderError(
                "the payment provider failed to process the payment; try again later",
                provider_status=response.status_code,
                provider_code=self._error_code(response),
            )
        return response

    @staticmethod
    def _error_code(response: httpx.Response) -> str:
        try:
            return str(response.json().get("code", "unknown"))
        except ValueError:
            return "unknown"

    def _refused(self, response: httpx.Response) -> ProviderResult:
        try:
            body = response.json()
        except ValueError:
            body = {}
        return ProviderResult(
            status="error",
            reason=str(body.get("code", f"http_{response.status_code}")),
            message=str(body.get("message", "the payment provider refused the request")),
        )

    def authorise(
        self, amount: Money, card_token: str, idempotency_key: str, reference: str
    ) -> ProviderResult:
        request = AuthorizationCreate(
            amount_minor=amount.amount_minor,
            currency=amount.currency,
            token=card_token,
            reference=reference,
        )
        response = self._post("/v1/authorizations", request.model_dump(), idempotency_key)
        if response.is_error:
            return self._refused(response)
        return _from_authorization(Authorization.model_validate_json(response.content))

    def lookup(self, reference: str) -> Authorization | None:
        try:
            response = self._http.get("/v1/authorizations", params={"reference": reference})
        except httpx.HTTPError as error:
            log.warning("payment_provider.lookup_failed", reference=reference, error=repr(error))
            raise ProviderError(
                "the payment provider cannot be asked now; try again later"
            ) from None
        if response.status_code == 404:
            return None
        if response.is_error:
            log.warning(
                "payment_provider.failed", path="/v1/authorizations", status=response.status_code
            )
            raise ProviderError(
                "the payment provider could not say what became of the payment",
                provider_status=response.status_code,
                provider_code=self._error_code(response),
            )
        return Authorization.model_validate_json(response.content)

    def capture(self, ref: str, amount: Money, idempotency_key: str) -> ProviderResult:
        body = CaptureCreate(amount_minor=amount.amount_minor).model_dump()
        response = self._post(f"/v1/authorizations/{ref}/capture", body, idempotency_key)
        if response.is_error:
            return self._refused(response)
        return _from_authorization(Authorization.model_validate_json(response.content))

    def void(self, ref: str, idempotency_key: str) -> ProviderResult:
        response = self._post(f"/v1/authorizations/{ref}/void", {}, idempotency_key)
        if response.is_error:
            return self._refused(response)
        return _from_authorization(Authorization.model_validate_json(response.content))

    def refund(self, ref: str, amount: Money, idempotency_key: str) -> ProviderResult:
        request = RefundCreate(authorization=ref, amount_minor=amount.amount_minor)
        response = self._post("/v1/refunds", request.model_dump(), idempotency_key)
        if response.is_error:
            return self._refused(response)
        refund = Refund.model_validate_json(response.content)
        return ProviderResult(status="refunded", provider_ref=refund.id)

    def card_token(self, token: str) -> CardToken | None:
        try:
            response = self._http.get(f"/v1/tokens/{quote(token, safe='')}")
        except httpx.HTTPError as error:
            log.warning("payment_provider.unreachable", path="/v1/tokens", error=repr(error))
            raise ProviderError("the payment provider cannot be reached; try again later") from None
        if response.status_code in (400, 404):
            return None
        if response.is_error:
            log.warning("payment_provider.failed", path="/v1/tokens", status=response.status_code)
            raise ProviderError(
                "the payment provider could not check the card; try again later",
                provider_status=response.status_code,
                provider_code=self._error_code(response),
            )
        return CardToken.model_validate_json(response.content)


class SharedProvider:
    """One `SandboxProvider` for every job of a set of worker handlers, made when first asked
    for and kept open (its connections with it): building a client per payment cost more than
    the payment's two round trips, its TLS context alone (measured on the monthly metered run).
    httpx's client is thread-safe, so the relay's threads share it; the jobs never close it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: SandboxProvider | None = None
        self._making = threading.Lock()

    def __call__(self) -> SandboxProvider:
        with self._making:
            if self._client is None:
                self._client = SandboxProvider.from_settings(self._settings)
            return self._client
