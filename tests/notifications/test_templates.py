"""Every notified order state has its message in English and Spanish, written for the reader."""

from __future__ import annotations

import pytest

from caas.notifications.templates import LANGUAGES, render, template_language
from caas.sales.service import NOTIFIED_STATES

ORDER = {
    "name": "Ana",
    "order_number": "S2026-000042",
    "model": "Aura",
    "dealership": "caas Madrid Castellana",
    "dealership_city": "Madrid",
    "dealership_address": "Paseo de la Castellana 100, 28046 Madrid",
}
PORTAL = "https://caas.example/portal"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("state", sorted(NOTIFIED_STATES))
def test_every_notified_state_is_written_in_every_language_without_optional_details(
    state: str, language: str
) -> None:
    message = render(f"order.{state}", language, ORDER, portal_url=PORTAL)
    assert template_language(f"order.{state}", language) == language
    assert message.subject
    assert "Ana" in message.text
    assert PORTAL in message.text
    assert "{{" not in message.text and "None" not in message.text


def test_activation_and_payment_received_are_written_in_every_language() -> None:
    for language in LANGUAGES:
        assert template_language("activation", language) == language
        assert template_language("payment.received", language) == language


def test_car_at_dealer_names_the_dealership_its_town_and_the_portal() -> None:
    message = render("order.at_dealer", "en", ORDER, portal_url=PORTAL)
    assert message.subject == "Your Aura is available at caas Madrid Castellana in Madrid"
    assert "Paseo de la Castellana 100" in message.text
    assert "pay the rest" in message.text
    spanish = render("order.at_dealer", "es", ORDER, portal_url=PORTAL)
    assert "disponible en caas Madrid Castellana" in spanish.subject
    assert "pague el resto" in spanish.text


def test_details_passed_by_the_caller_appear_in_the_message() -> None:
    registered = render("order.registered", "es", {**ORDER, "plate": "1234 BCD"})
    assert "1234 BCD" in registered.subject and "matrícula 1234 BCD" in registered.text
    rejected = render("order.registration_rejected", "en", {**ORDER, "reason": "bad id"})
    assert "bad id" in rejected.text
    shipped = render("order.shipped", "en", {**ORDER, "carrier": "TransAuto"})
    assert "Carrier: TransAuto." in shipped.text
    ordered = render("order.ordered", "en", {**ORDER, "factory_reference": "F-77"})
    assert "(factory reference F-77)" in ordered.text
    built = render("order.assembly", "es", {**ORDER, "vin": "1M8GDM9AXKP042788"})
    assert "(VIN): 1M8GDM9AXKP042788" in built.text
    moving = render("order.in_transit", "fr", {**ORDER, "tracking_number": "TA-123"})
    assert "Numéro de suivi : TA-123." in moving.text


def test_dates_and_money_are_formatted_for_the_readers_locale_and_clock() -> None:
    details = {**ORDER, "scheduled_for": "2026-03-05T14:30:00+00:00"}
    assert "5 de marzo de 2026, 15:30" in render("order.delivery_scheduled", "es", details).text
    assert "March 5, 2026, 3:30" in render("order.delivery_scheduled", "en", details).text
    assert "5. März 2026" in render("order.delivery_scheduled", "de", details).text
    lisbon = render("order.delivery_scheduled", "pt", {**details, "country": "PT"})
    assert "5 de março de 2026 14:30" in lisbon.text
    paid = {**ORDER, "amount_minor": 350_000, "currency": "EUR"}
    assert "3.500,00\xa0€" in render("payment.received", "es", paid).text
    assert "€3,500.00" in render("payment.received", "en", paid).text


def test_a_language_without_templates_falls_back_to_english() -> None:
    message = render("order.shipped", "nl", ORDER)
    assert message.subject.startswith("Order S2026-000042")
    assert template_language("order.shipped", "nl") == "en"


def test_html_alternative_has_clickable_links_and_escapes_the_values() -> None:
    message = render("order.paint", "en", {**ORDER, "name": "<b>Ana</b>"}, portal_url=PORTAL)
    assert f'<a href="{PORTAL}">{PORTAL}</a>' in message.html
    assert "&lt;b&gt;Ana&lt;/b&gt;" in message.html
    assert "<b>Ana</b>" not in message.html
    assert '<html lang="en">' in message.html


def test_in_app_messages_link_to_the_portal_relatively() -> None:
    assert "\n/portal\n" in render("order.body", "en", ORDER).text


def test_payment_received_names_the_deposit_or_the_final_payment() -> None:
    paid = {**ORDER, "kind": "deposit", "amount_minor": 394_460, "currency": "EUR"}
    assert (
        render("payment.received", "en", paid).subject == "Deposit received for order S2026-000042"
    )
    assert (
        render("payment.received", "es", paid).subject == "Señal recibida del pedido S2026-000042"
    )
    final = {**paid, "kind": "final"}
    assert render("payment.received", "de", final).subject.startswith("Restzahlung erhalten")
    assert render("payment.received", "en", ORDER).subject.startswith("Payment received")
