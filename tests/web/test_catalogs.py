"""Languages beyond English and Spanish come from `.po` catalogs: French is built in, and a
catalog dropped in `CAAS_LOCALES_DIR` adds a language with no code change; dates, numbers and
money read as the language writes them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.money import Money
from caas.core.settings import Settings
from caas.web import catalogs, strings
from caas.web.pages import _environment
from caas.web.site import include_web  # noqa: F401 - every page's texts, as in the app
from tests.web.support import log_in, submit, text_of

ITALIAN = """\
msgid ""
msgstr ""
"Language: it\\n"
"Content-Type: text/plain; charset=utf-8\\n"

msgid "login.title"
msgstr "Accedi"

msgid "login.submit"
msgstr "Entra"
"""


@pytest.fixture(autouse=True)
def _catalogs_as_they_were() -> Iterator[None]:
    """A language a test installs is gone for the next test."""
    languages, texts = set(strings.LANGUAGES), set(strings.TEXTS)
    yield
    for language in set(strings.LANGUAGES) - languages:
        del strings.LANGUAGES[language]
    for language in set(strings.TEXTS) - texts:
        del strings.TEXTS[language]


def choose(client: TestClient, language: str) -> None:
    response = submit(client, "/login", "/language", {"lang": language, "next": "/login"})
    assert response.status_code == 303, response.text


def test_french_is_offered_and_the_login_page_reads_in_french(app_client: TestClient) -> None:
    page = app_client.get("/login").text
    assert 'value="fr"' in page
    assert "Français" in text_of(page)

    choose(app_client, "fr")

    page = app_client.get("/login")
    assert '<html lang="fr">' in page.text
    assert "Connexion" in text_of(page.text)
    assert "Se connecter" in text_of(page.text)


def test_a_text_a_catalog_lacks_falls_back_to_english(tmp_path: Path) -> None:
    (tmp_path / "it.po").write_text(ITALIAN, encoding="utf-8")
    assert catalogs.install(tmp_path) == ["fr", "it"]
    assert "store.error.offer" not in strings.TEXTS["it"]
    assert strings.translate("it", "store.error.offer") == strings.translate(
        "en", "store.error.offer"
    )
    assert strings.translate("it", "login.title") == "Accedi"
    assert strings.translate("fr", "nav.my_cars") == "Mes voitures"


def test_every_text_of_the_pages_has_its_french() -> None:
    """Every key any page registers in English (strings.py and each page module's own texts)
    is in fr.po, so a staff page never falls back to English in French."""
    french = catalogs.read_catalog(catalogs.BUILT_IN_DIR / "fr.po")
    assert french is not None
    missing = sorted(set(strings.TEXTS["en"]) - set(french.texts))
    assert missing == [], f"fr.po lacks {len(missing)} texts: {missing[:20]}"
    untranslated = [key for key, text in french.texts.items() if not text.strip()]
    assert untranslated == []


def test_a_catalog_dropped_in_the_locales_dir_adds_a_language(
    tmp_path: Path, settings: Settings, sessions: sessionmaker[Session], clock: FixedClock
) -> None:
    (tmp_path / "it.po").write_text(ITALIAN, encoding="utf-8")
    (tmp_path / "not-a-language.po").write_text(ITALIAN, encoding="utf-8")
    assert "it" not in strings.LANGUAGES
    app = create_app(
        settings=settings.model_copy(update={"locales_dir": tmp_path}),
        sessions=sessions,
        clock=clock,
    )
    with TestClient(app) as client:
        assert "Italiano" in text_of(client.get("/login").text)
        choose(client, "it")
        page = client.get("/login").text
    assert '<html lang="it">' in page
    assert "Accedi" in text_of(page)
    # What the catalog leaves out reads in English.
    assert strings.translate("en", "login.intro") in text_of(page)
    assert list(strings.LANGUAGES) == ["en", "es", "fr", "it"]


def test_money_and_dates_read_as_french_writes_them() -> None:
    assert Money(123_456, "EUR").format("fr") == "1\u202f234,56\u00a0€"
    template = _environment.from_string("{{ moment|when }} · {{ moment|day }}")
    moment = datetime(2026, 3, 5, 16, 30, tzinfo=UTC)
    assert template.render(lang="fr", zone="Europe/Paris", moment=moment) == (
        "5 mars 2026, 17:30 · 5 mars 2026"
    )


def test_every_french_text_is_a_known_key_with_the_english_placeholders() -> None:
    french = catalogs.read_catalog(catalogs.BUILT_IN_DIR / "fr.po")
    assert french is not None
    assert len(french.texts) > 250
    placeholder = re.compile(r"\{(\w+)\}")
    english = strings.TEXTS["en"]
    for key, text in french.texts.items():
        assert key in english, key
        assert set(placeholder.findall(text)) == set(placeholder.findall(english[key])), key


def test_the_operators_pages_read_in_french(app_client: TestClient) -> None:
    choose(app_client, "fr")
    log_in(app_client, "operator@caas.example")
    fleet = text_of(app_client.get("/operator/fleet").text)
    assert "Flotte" in fleet and "Envois" in fleet and "Journal d'audit" in fleet
    assert "Fleet" not in fleet and "Audit trail" not in fleet
    pushes = text_of(app_client.get("/operator/pushes").text)
    assert "Envois de configuration" in pushes
