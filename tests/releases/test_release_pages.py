"""The operator's pages of releases: upload a release with its image, publish it, start a
rollout, follow it live per wave and pause it; the car's twin shows its update; other roles
are kept out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from tests.conftest import SmtpInbox
from tests.releases.conftest import OPERATOR
from tests.vehicles.support import Car, born_car, signing
from tests.web.support import csrf_token, form_key, log_in, text_of

from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.releases import rules
from caas.vehicles.models import Vehicle

__all__ = ["signing"]


@pytest.fixture
def page_settings(smtp: SmtpInbox, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        data_dir=tmp_path / "data",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        public_url="http://testserver",
    )


@pytest.fixture
def browser(
    page_settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    signing: SigningMaterial,
) -> Iterator[TestClient]:
    app = create_app(settings=page_settings, sessions=sessions, clock=clock)
    with TestClient(app) as client:
        yield client


def _cars(db: Session, settings: Settings, version: str, count: int) -> list[Car]:
    cars = [born_car(db, settings=settings, now=FixedClock().now()) for _ in range(count)]
    db.execute(
        update(Vehicle)
        .where(Vehicle.id.in_([car.vehicle_id for car in cars]))
        .values(software_version=version)
    )
    db.commit()
    return sorted(cars, key=lambda car: rules.order_key(car.vin))


def _post(browser: TestClient, page: str, action: str, **data: str) -> str:
    html = browser.get(page).text
    response = browser.post(
        action,
        data={"csrf_token": csrf_token(html), "idempotency_key": form_key(html), **data},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def test_the_operator_uploads_publishes_and_rolls_out_a_release_from_the_console(
    browser: TestClient, db: Session, page_settings: Settings
) -> None:
    first, second = _cars(db, page_settings, "9300.0.0", 2)
    log_in(browser, OPERATOR)
    listing = browser.get("/operator/releases")
    assert listing.status_code == 200 and 'href="/operator/releases"' in listing.text

    form = browser.get("/operator/releases/new").text
    refused = browser.post(
        "/operator/releases",
        data={
            "csrf_token": csrf_token(form),
            "idempotency_key": form_key(form),
            "platform": "AURA",
            "version": "not a version",
        },
        files={"image": ("aura.img", b"image bytes")},
    )
    assert refused.status_code == 422
    assert "not a version such as 8.1.0" in text_of(refused.text)

    created = browser.post(
        "/operator/releases",
        data={
            "csrf_token": csrf_token(form),
            "idempotency_key": form_key(form),
            "platform": "AURA",
            "version": "9300.1.0",
            "notes": "Faster maps.",
            "models": "AURA",
            "min_version": "9300.0.0",
        },
        files={"image": ("aura.img", b"image bytes")},
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    release_page = created.headers["location"]
    page = text_of(browser.get(release_page).text)
    assert "Draft" in page and "Compatible cars now 2" in page

    _post(browser, release_page, f"{release_page}/publish")
    assert "Published" in text_of(browser.get(release_page).text)
    rollout_page = _post(
        browser,
        release_page,
        f"{release_page}/rollouts",
        waves="50, 100",
        success_percent="100",
        failure_percent="10",
    )
    live = browser.get(rollout_page)
    assert live.headers["Refresh"] == "3"
    assert 'data-wave="1" aria-current="step"' in live.text
    assert first.vin in live.text and second.vin in live.text
    assert "Running" in text_of(live.text)

    twin = text_of(browser.get(f"/operator/fleet/{first.vin}").text)
    assert "Software update 9300.1.0: Offered" in twin

    _post(browser, rollout_page, f"{rollout_page}/pause")
    paused = browser.get(rollout_page)
    assert "Paused" in text_of(paused.text)
    assert 'data-action="resume"' in paused.text and 'data-action="pause"' not in paused.text


def test_other_roles_cannot_open_the_releases_pages(browser: TestClient) -> None:
    log_in(browser, "workshop@caas.example")
    assert browser.get("/operator/releases", follow_redirects=False).status_code in (403, 303)
    assert browser.get("/operator/releases/new", follow_redirects=False).status_code in (403, 303)
