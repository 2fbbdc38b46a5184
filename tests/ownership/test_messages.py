"""What the seller, the buyer and the owner of a scrapped car are told, in every language."""

from __future__ import annotations

import pytest

from caas.notifications.templates import LANGUAGES, render, template_language

FACTS = {
    "name": "Ana",
    "vin": "VCAAURA02TM000001",
    "plate": "1234 BCD",
    "ended": ["winter_traction"],
    "kept": ["power_boost"],
    "refunds": [{"amount_minor": 2459, "currency": "EUR"}],
    "phones": 1,
    "certificate_number": "CD-2026-0042",
    "country": "ES",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    ("kind", "facts"),
    [
        ("ownership.car_sold", ("winter_traction",)),
        ("ownership.car_received", ("power_boost", "1234 BCD")),
        ("ownership.car_scrapped", ("CD-2026-0042", "1234 BCD")),
    ],
)
def test_each_message_is_written_in_every_language_with_its_facts(
    kind: str, facts: tuple[str, ...], language: str
) -> None:
    message = render(kind, language, FACTS, portal_url="https://caas.example/portal")
    assert template_language(kind, language) == language
    assert "VCAAURA02TM000001" in message.subject
    for fact in ("Ana", "https://caas.example/portal", *facts):
        assert fact in message.text
    assert "{{" not in message.text and "None" not in message.text


def test_the_seller_reads_the_refund_in_their_money() -> None:
    assert "24,59" in render("ownership.car_sold", "es", FACTS).text
    assert "€24.59" in render("ownership.car_sold", "en", FACTS).text
