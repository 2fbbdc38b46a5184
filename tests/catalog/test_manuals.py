"""Owner's manuals: a deterministic PDF per platform model, in English and Spanish."""

from __future__ import annotations

import io

from pypdf import PdfReader

from caas.catalog.manuals import (
    ManualModel,
    ManualOption,
    manual_language,
    owner_manual_pdf,
    render_owner_manual,
)

AURA = ManualModel(
    code="AURA",
    name="Aura",
    description="Compact electric hatchback for the city and beyond.",
    service_every_km=20000,
    service_every_months=12,
    software_version="7.2.0",
    options=(
        ManualOption(
            "power_boost", "+50 % power", "+50 % power for the Aura.", "performance", False
        ),
        ManualOption("driver_assist", "Driver assistance", "For the Aura.", "safety", True),
        ManualOption("jetpack", "Jetpack", "Flies over traffic jams.", "autonomy", True),
    ),
)


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_the_manual_is_the_same_bytes_every_time() -> None:
    assert render_owner_manual(AURA, "es") == render_owner_manual(AURA, "es")
    assert owner_manual_pdf(AURA, "es") == render_owner_manual(AURA, "es")
    assert owner_manual_pdf(AURA, "en") != owner_manual_pdf(AURA, "es")


def test_english_manual_has_title_description_plan_options_and_safety() -> None:
    pdf = owner_manual_pdf(AURA, "en")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 6
    assert reader.metadata is not None and reader.metadata.title == "Aura owner's manual"
    text = text_of(pdf)
    assert "Compact electric hatchback for the city and beyond." in text
    assert "every 20,000 km or every 12 months, whichever comes first" in text
    assert "Service 3 60,000 km 36 months" in text
    for option in ("+50 % power", "Driver assistance", "Jetpack", "Flies over traffic jams."):
        assert option in text
    assert "Safety" in text and "orange cables" in text


def test_spanish_manual_is_written_in_spanish() -> None:
    text = text_of(owner_manual_pdf(AURA, "es"))
    assert "Manual del propietario del Aura" in text
    assert "cada 20.000 km o cada 12 meses, lo que ocurra primero" in text
    assert "Control de crucero adaptativo" in text and "Seguridad" in text
    assert "Compacto eléctrico para la ciudad" in text


def test_languages_without_a_manual_get_the_english_one() -> None:
    assert manual_language("fr") == "en"
    assert owner_manual_pdf(AURA, "fr") == owner_manual_pdf(AURA, "en")
