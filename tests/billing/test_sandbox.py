"""The payment sandbox on the wire: tokens, idempotency, test cards, events, settlements."""

from __future__ import annotations

import httpx
import pytest

from caas.billing.provider import ProviderError, ProviderTimeout, SandboxProvider
from caas.core.money import Money
from caas.protocol.payments import (
    API_KEY_HEADER,
    CARD_ANSWERS_LATE,
    CARD_DECLINED,
    CARD_PROVIDER_ERROR,
    CARD_SUCCEEDS,
)
from caas.protocol.webhooks import verify
from tests.billing.conftest import API_KEY, PLATFORM_TIMEOUT, WEBHOOK_SECRET, PaymentSandbox

EUR = Money(10_000, "EUR")


@pytest.fixture
def provider(payment_sandbox: PaymentSandbox) -> SandboxProvider:
    return SandboxProvider(payment_sandbox.url, API_KEY, timeout_seconds=PLATFORM_TIMEOUT)


def test_tokenising_forgets_the_card_number(payment_sandbox: PaymentSandbox) -> None:
    response = httpx.post(
        f"{payment_sandbox.url}/v1/tokens",
        json={"number": "4242 4242 4242 4242", "exp_month": 1, "exp_year": 2040, "cvc": "999"},
        headers={"Origin": "http://portal.example"},
    )
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == "*"
    assert "4242424242424242" not in response.text
    assert response.json()["id"].startswith("tok_")
    assert response.json()["card"] == {
        "brand": "visa",
        "last4": "4242",
        "exp_month": 1,
        "exp_year": 2040,
    }


@pytest.mark.parametrize(
    ("card", "code"),
    [({"number": "4242424242424241"}, "invalid_number"), ({"exp_year": 2001}, "expired_card")],
)
def test_bad_cards_are_refused_at_tokenisation(
    payment_sandbox: PaymentSandbox, card: dict[str, object], code: str
) -> None:
    body = {"number": CARD_SUCCEEDS, "exp_month": 12, "exp_year": 2040, "cvc": "123", **card}
    response = httpx.post(f"{payment_sandbox.url}/v1/tokens", json=body)
    assert (response.status_code, response.json()["code"]) == (400, code)


def test_same_key_and_body_get_the_same_authorisation(
    payment_sandbox: PaymentSandbox, provider: SandboxProvider
) -> None:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = provider.authorise(EUR, token, "sandbox-same-key", "ref-same-key")
    again = provider.authorise(EUR, token, "sandbox-same-key", "ref-same-key")
    assert first.status == "authorised"
    assert first == again
    assert payment_sandbox.authorisations("ref-same-key") == 1
    other = httpx.post(
        f"{payment_sandbox.url}/v1/authorizations",
        json={"amount_minor": 1, "currency": "EUR", "token": token, "reference": "ref-same-key"},
        headers={API_KEY_HEADER: API_KEY, "Idempotency-Key": "sandbox-same-key"},
    )
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")


def test_capture_void_and_refund_move_the_authorisation(
    payment_sandbox: PaymentSandbox, provider: SandboxProvider
) -> None:
    held = provider.authorise(EUR, payment_sandbox.token(CARD_SUCCEEDS), "cvr-auth", "ref-cvr")
    assert held.provider_ref is not None
    captured = provider.capture(held.provider_ref, EUR, "cvr-capture")
    assert captured.status == "captured"
    assert provider.capture(held.provider_ref, EUR, "cvr-capture") == captured
    assert provider.capture(held.provider_ref, EUR, "cvr-capture-2").status == "error"
    refunded = provider.refund(held.provider_ref, Money(4_000, "EUR"), "cvr-refund")
    assert refunded.status == "refunded"
    kinds = [(s.kind, s.amount_minor) for s in payment_sandbox.settlements("ref-cvr")]
    assert kinds == [("capture", 10_000), ("refund", 4_000)]
    too_much = provider.refund(held.provider_ref, Money(7_000, "EUR"), "cvr-refund-2")
    assert (too_much.status, too_much.reason) == ("error", "amount_too_large")

    other = provider.authorise(EUR, payment_sandbox.token(CARD_SUCCEEDS), "cvr-auth-2", "ref-v")
    assert other.provider_ref is not None
    assert provider.void(other.provider_ref, "cvr-void").status == "voided"
    assert provider.capture(other.provider_ref, EUR, "cvr-capture-3").status == "error"


def test_test_cards_decline_fail_and_answer_late(
    payment_sandbox: PaymentSandbox, provider: SandboxProvider
) -> None:
    declined = provider.authorise(EUR, payment_sandbox.token(CARD_DECLINED), "cards-1", "ref-d")
    assert (declined.status, declined.reason) == ("declined", "card_declined")
    with pytest.raises(ProviderError):
        provider.authorise(EUR, payment_sandbox.token(CARD_PROVIDER_ERROR), "cards-2", "ref-e")
    late = payment_sandbox.token(CARD_ANSWERS_LATE)
    with pytest.raises(ProviderTimeout):
        provider.authorise(EUR, late, "cards-3", "ref-late")
    received = payment_sandbox.inbox.wait_for("ref-late", "authorization.succeeded")
    verify(received.body, received.signature, WEBHOOK_SECRET)
    # Asked again with the same key once it has finished: the same authorisation, at once.
    again = provider.authorise(EUR, late, "cards-3", "ref-late")
    assert again.status == "authorised"
    assert again.provider_ref == received.event.authorization.id


def test_unknown_key_and_unreachable_provider_are_provider_errors(
    payment_sandbox: PaymentSandbox,
) -> None:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    with (
        SandboxProvider(payment_sandbox.url, "wrong-key") as wrong,
        pytest.raises(ProviderError),
    ):
        wrong.authorise(EUR, token, "wrong-key-1", "ref-wrong")
    with (
        SandboxProvider("http://127.0.0.1:9", API_KEY, timeout_seconds=0.5) as nowhere,
        pytest.raises(ProviderError),
    ):
        nowhere.authorise(EUR, token, "nowhere-1", "ref-nowhere")


def test_missing_idempotency_key_is_refused(payment_sandbox: PaymentSandbox) -> None:
    response = httpx.post(
        f"{payment_sandbox.url}/v1/authorizations",
        json={"amount_minor": 1, "currency": "EUR", "token": "tok_x", "reference": "r"},
        headers={API_KEY_HEADER: API_KEY},
    )
    assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_required")
