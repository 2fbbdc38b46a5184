"""A service's refusal reads in the page's language: the page says it with its own text for the
error's code (the services, whose messages the API returns, speak English), with its details
(the minutes to wait) filled in; a code no page text covers keeps the service's message."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import caas
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.errors import Conflict, InvalidInput, TooManyRequests
from caas.core.settings import Settings
from caas.ownership import rules
from caas.web import catalogs, strings
from caas.web.forms import FormErrors, refusal_text
from tests.ownership.conftest import Person, buyer
from tests.vehicles.support import CommittedDatabase, committed
from tests.web.support import log_in, submit, text_of

__all__ = ["committed"]

SOURCE = Path(caas.__file__).parent

# The services behind the pages that show their refusals in a form or on an error page:
# receiving, selling, reselling and scrapping a car, logging in and activating an account, the
# customer's orders, privacy page, phone keys and payment cards.
PAGE_SERVICES = (
    "ownership/service.py",
    "accounts/service.py",
    "sales/service.py",
    "privacy/service.py",
    "privacy/erasure.py",
    "vehicles/keys.py",
    "billing/methods.py",
)

# The scrap form's generic `invalid_input`, told apart by its field.
OTHER_CODES = ("invalid_input.reason", "invalid_input.certificate_number")

VIN = "WCAAS000000000042"


def codes_pages_can_show() -> list[str]:
    written = {
        code
        for path in PAGE_SERVICES
        for code in re.findall(r'code="([a-z_.]+)"', (SOURCE / path).read_text())
    }
    return sorted(written | set(OTHER_CODES))


def choose(client: TestClient, language: str, page: str) -> None:
    chosen = submit(client, page, "/language", {"lang": language, "next": page})
    assert chosen.status_code == 303, chosen.text


@pytest.fixture
def bruno(db: Session, clock: FixedClock) -> Person:
    return buyer(db, clock.now())


@dataclass
class Receiving:
    """A buyer logged in on `client` who tries codes for a car (wrong codes are counted in
    their own transaction, so this runs over a database whose commits are real)."""

    client: TestClient
    clock: FixedClock
    vin: str

    def try_code(self, code: str) -> httpx.Response:
        form = {"vin": self.vin, "code": code}
        return submit(self.client, "/portal/receive", "/portal/receive", form, with_key=True)


@pytest.fixture
def receiving(committed: CommittedDatabase, settings: Settings) -> Iterator[Receiving]:
    clock = FixedClock()
    email = f"buyer-{uuid.uuid4().hex[:8]}@example.es"
    committed.run(lambda session: buyer(session, clock.now(), email=email))
    app = create_app(settings=settings, sessions=committed.sessions, clock=clock)
    with TestClient(app) as client:
        log_in(client, email)
        yield Receiving(client, clock, f"WCAAS{uuid.uuid4().hex[:12].upper()}")


def test_every_code_a_page_can_show_has_its_text_in_english_spanish_and_french() -> None:
    french = catalogs.read_catalog(catalogs.BUILT_IN_DIR / "fr.po")
    assert french is not None
    codes = codes_pages_can_show()
    assert "transfer.rate_limited" in codes and "auth.invalid_credentials" in codes
    for language, texts in (("en", strings.TEXTS["en"]), ("es", strings.TEXTS["es"])):
        missing = [code for code in codes if f"refusal.{code}" not in texts]
        assert missing == [], f"no {language} text for {missing}"
    missing = [code for code in codes if f"refusal.{code}" not in french.texts]
    assert missing == [], f"no French text for {missing}"
    for language in ("en", "es", "fr"):
        assert strings.lookup(language, "refusal.transfer.rate_limited.one")


@pytest.mark.parametrize(
    ("language", "wrong", "wait", "last_minute"),
    [
        (
            "en",
            "this code does not transfer this car",
            "too many wrong codes; try again in 15 minutes",
            "too many wrong codes; try again in a minute",
        ),
        (
            "es",
            "Este código no transfiere este coche",
            "Demasiados códigos incorrectos; vuelva a intentarlo dentro de 15 minutos",
            "Demasiados códigos incorrectos; vuelva a intentarlo dentro de un minuto",
        ),
        (
            "fr",
            "Ce code ne transfère pas cette voiture",
            "Trop de codes erronés ; réessayez dans 15 minutes",
            "Trop de codes erronés ; réessayez dans une minute",
        ),
    ],
)
def test_receiving_a_car_says_the_wrong_code_and_the_wait_in_the_pages_language(
    receiving: Receiving, language: str, wrong: str, wait: str, last_minute: str
) -> None:
    choose(receiving.client, language, "/portal/receive")

    for attempt in range(rules.MAX_FAILED_CODES):
        refused = receiving.try_code(f"ZZZZ-ZZZ{attempt}")
        assert refused.status_code == 422
        assert wrong in text_of(refused.text)

    limited = receiving.try_code("ZZZZ-ZZZZ")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == str(15 * 60)
    assert f'<html lang="{language}">' in limited.text
    assert wait in text_of(limited.text)

    receiving.clock.advance(timedelta(minutes=14, seconds=30))
    again = receiving.try_code("ZZZZ-ZZZZ")
    assert again.headers["Retry-After"] == "30"
    assert last_minute in text_of(again.text)


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "wrong e-mail or password"),
        ("es", "Correo electrónico o contraseña incorrectos"),
        ("fr", "Adresse e-mail ou mot de passe incorrect"),
    ],
)
def test_a_wrong_password_is_said_in_the_pages_language(
    app_client: TestClient, language: str, message: str
) -> None:
    choose(app_client, language, "/login")
    refused = submit(
        app_client, "/login", "/login", {"email": "operator@caas.example", "password": "not-it"}
    )
    assert refused.status_code == 401
    assert f'<html lang="{language}">' in refused.text
    assert message in text_of(refused.text)


def test_an_error_page_says_the_refusal_in_the_pages_language(
    app_client: TestClient, bruno: Person
) -> None:
    log_in(app_client, bruno.user.email)
    choose(app_client, "fr", "/portal/receive")
    missing = app_client.get(f"/portal/cars/{VIN}/sell")
    assert missing.status_code == 404
    assert "Aucune voiture avec ce VIN" in text_of(missing.text)


def test_a_code_without_a_page_text_keeps_the_services_message() -> None:
    catalogs.install()  # French, as the app installs it
    unknown = Conflict("the moon is in the way", code="launch.moon")
    assert refusal_text(unknown, "fr") == "the moon is in the way"
    generic = InvalidInput("bad reason", field="reason")
    assert refusal_text(generic, "es") == "Indique por qué se desguaza el coche"
    errors = FormErrors.of(generic, aliases={"reason": "scrap.reason"})
    assert errors.fields == {"scrap.reason": "bad reason"}
    assert errors.in_language("fr").fields == {
        "scrap.reason": "Indiquez pourquoi la voiture est mise à la casse"
    }
    blocked = Conflict("still yours", code="erasure.owns_car", vins=["VIN1", "VIN2"])
    assert refusal_text(blocked, "fr") == (
        "Vous possédez encore la voiture VIN1, VIN2 : vendez-la ou transférez-la d'abord"
    )
    throttled = TooManyRequests("wait", code="transfer.rate_limited", retry_after_seconds=61)
    assert FormErrors.of(throttled).in_language("es").general == [
        "Demasiados códigos incorrectos; vuelva a intentarlo dentro de 2 minutos"
    ]


def test_a_text_naming_a_detail_the_refusal_lacks_keeps_the_services_message() -> None:
    catalogs.install()
    # The page's text says the minutes to wait; this refusal does not give them.
    untimed = TooManyRequests("too many wrong codes", code="transfer.rate_limited")
    assert refusal_text(untimed, "es") == "too many wrong codes"
