"""The store's pages in the customer's portal: prices and reasons, the cart and its quote, paying
with a card token (one purchase per form, whatever the clicks), the live status, switching the
car's options, subscriptions and planned options; owner only."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.models import ConfigurationVersion
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from caas.store.models import Entitlement, Purchase, Schedule
from caas.vehicles.models import Vehicle
from tests.billing.conftest import PaymentSandbox, payment_sandbox, settings
from tests.store.conftest import Owner, answer, offer, owner_of, run_relay, subscribed
from tests.store.engine import Delivered, delivered, engine_keys, signing
from tests.vehicles.support import born_car, deliver
from tests.web.support import csrf_token, log_in, text_of

__all__ = ["delivered", "engine_keys", "payment_sandbox", "settings", "signing"]


@pytest.fixture
def owner(db: Session, delivered: Delivered, clock: FixedClock) -> Owner:
    return owner_of(db, delivered.car, clock.now())


@pytest.fixture
def client(app_client: TestClient, owner: Owner) -> TestClient:
    log_in(app_client, owner.customer.email)
    return app_client


def store_url(owner: Owner) -> str:
    return f"/portal/cars/{owner.vehicle.vin}/store"


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert found is not None, f"no field {name} on the page"
    return unescape(found.group(1))


def quote(client: TestClient, owner: Owner, choices: dict[str, str]) -> httpx.Response:
    """Post the store's cart form as the browser does."""
    page = client.get(store_url(owner)).text
    return client.post(
        f"{store_url(owner)}/quote",
        data={"csrf_token": csrf_token(page), **choices},
        follow_redirects=False,
    )


def pay(client: TestClient, owner: Owner, checkout: str, token: str) -> httpx.Response:
    """Post the checkout's form as pay.js does: the cart, the form's key, the card's token."""
    return client.post(
        f"{store_url(owner)}/purchase",
        data={
            "csrf_token": csrf_token(checkout),
            "idempotency_key": hidden(checkout, "idempotency_key"),
            "cart": hidden(checkout, "cart"),
            "card_token": token,
        },
        follow_redirects=False,
    )


def purchases_of(db: Session, owner: Owner) -> list[Purchase]:
    db.expire_all()
    return list(db.scalars(select(Purchase).where(Purchase.vehicle_id == owner.vehicle.id)))


def versions(db: Session, owner: Owner) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(ConfigurationVersion)
            .where(ConfigurationVersion.vehicle_id == owner.vehicle.id)
        )
        or 0
    )


def test_the_store_shows_every_option_with_its_prices_and_why_the_car_cannot_get_some(
    client: TestClient, owner: Owner
) -> None:
    page = client.get(store_url(owner))
    assert page.status_code == 200, page.text
    html = page.text
    shown = text_of(html)
    # Ana reads Spanish: the power boost's day costs 9 EUR + 21 % VAT.
    boost = html[html.index('data-option="power_boost"') :]
    boost = boost[: boost.index("</article>")]
    assert "Un 50 % más de potencia" in text_of(boost)
    prices = text_of(boost)
    for expected in (
        "Prueba gratuita, 1 mes Gratis",
        "1 día 10,89 €",
        "7 días 35,09 €",
        "Suscripción mensual 59,29 € al mes",
        "Suscripción anual 592,90 € al año",
        "Tus propias fechas 9,68 € al día",
        "Para toda la vida del coche 4.719,00 €",
        "Pago por uso 1,82 € por hora",
    ):
        assert expected in prices.replace("\xa0", " "), expected
    # The rear screens were not fitted at the factory: the reason, and nothing to choose.
    screens = html[html.index('data-option="entertainment"') :]
    screens = screens[: screens.index("</article>")]
    assert 'data-refusal="hardware_missing"' in screens
    assert "Este coche no salió de fábrica con el hardware que necesita." in text_of(screens)
    assert 'name="offer.entertainment"' not in screens
    # What the car has: driver assistance from the dealer's plan, with its end date.
    assert 'data-owned-option="driver_assist" data-source="plan"' in html
    assert "Asistencia a la conducción en tu plan activa hasta el 15 ene 2030, 10:00" in shown
    assert '<script src="/static/store.js" defer></script>' in html

    english = client.post(
        "/language",
        data={"csrf_token": csrf_token(html), "lang": "en", "next": store_url(owner)},
        follow_redirects=True,
    ).text
    assert "€10.89" in english
    assert "store." not in text_of(english) and "store." not in shown  # every text written
    assert "Its hardware was not fitted to this car at the factory." in text_of(english)


def test_the_car_list_and_the_menu_lead_to_the_store(client: TestClient, owner: Owner) -> None:
    cars = client.get("/portal/cars").text
    assert f'href="/portal/cars/{owner.vehicle.vin}/store"' in cars
    assert 'href="/portal/store"' in cars  # the menu
    car = client.get(f"/portal/cars/{owner.vehicle.vin}").text
    assert f'href="/portal/cars/{owner.vehicle.vin}/store"' in car
    one_car = client.get("/portal/store", follow_redirects=False)
    assert (one_car.status_code, one_car.headers["location"]) == (303, store_url(owner))


def test_with_two_cars_the_menu_asks_which_one(
    db: Session, client: TestClient, owner: Owner, settings: Settings, clock: FixedClock
) -> None:
    second = born_car(db, settings=settings, now=clock.now())
    db.get_one(Vehicle, second.vehicle_id).owner_customer_id = owner.customer.id
    db.commit()
    page = client.get("/portal/store", follow_redirects=False)
    assert page.status_code == 200
    assert f'href="/portal/cars/{owner.vehicle.vin}/store"' in page.text
    assert f'href="/portal/cars/{second.vin}/store"' in page.text
    assert "¿Para qué coche?" in text_of(page.text)


def test_a_cart_is_quoted_paid_once_and_followed_until_active(
    db: Session,
    client: TestClient,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    day = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=900)
    trial = offer(db, owner.vehicle, "winter_traction", "trial", "1M")
    checkout = quote(
        client, owner, {"offer.power_boost": str(day.id), "offer.winter_traction": str(trial.id)}
    )
    assert checkout.status_code == 200, checkout.text
    shown = text_of(checkout.text).replace("\xa0", " ")
    assert "Sin IVA 9,00 €" in shown and "IVA 1,89 €" in shown and "Total 10,89 €" in shown
    assert "store." not in shown
    assert 'id="pay-form"' in checkout.text and "/static/pay.js" in checkout.text
    assert len(re.findall(r"<input[^>]*data-card=", checkout.text)) == 3
    assert all(
        " name=" not in tag for tag in re.findall(r"<input[^>]*data-card=[^>]*>", checkout.text)
    )
    assert purchases_of(db, owner) == []  # a quote writes nothing

    token = payment_sandbox.token(CARD_SUCCEEDS)
    bought = pay(client, owner, checkout.text, token)
    assert bought.status_code == 303, bought.text
    (purchase,) = purchases_of(db, owner)
    assert purchase.state == "delivering"
    page_url = f"/portal/cars/{owner.vehicle.vin}/purchases/{purchase.id}"
    assert bought.headers["location"] == page_url
    # A double click: the same form again, even with a second token, is the same purchase.
    assert pay(client, owner, checkout.text, token).headers["location"] == page_url
    again = pay(client, owner, checkout.text, payment_sandbox.token(CARD_SUCCEEDS))
    assert again.headers["location"] == page_url
    assert len(purchases_of(db, owner)) == 1

    page = client.get(page_url).text
    assert "Pagada: en camino a tu coche" in text_of(page)
    assert f'data-status-url="{page_url}/status"' in page
    status = client.get(f"{page_url}/status").json()
    assert (status["phase"], status["final"]) == ("delivering", False)
    assert [step["status"] for step in status["steps"]] == ["done", "current", "todo", "todo"]
    assert {line["code"]: line["entitlement_state"] for line in status["lines"]} == {
        "power_boost": "delivering",
        "winter_traction": "delivering",
    }

    assert purchase.configuration_version is not None
    answer(db, owner, purchase.configuration_version, "deferred", clock)
    assert client.get(f"{page_url}/status").json()["status"] == (
        "Pagada: esperando a que el coche esté aparcado"
    )
    answer(db, owner, purchase.configuration_version, "applied", clock)
    assert client.get(f"{page_url}/status").json()["phase"] == "applied"
    run_relay(settings, client.app.state.sessions, clock, db)  # type: ignore[attr-defined]
    status = client.get(f"{page_url}/status").json()
    assert (status["phase"], status["status"], status["final"]) == (
        "active",
        "Activa en tu coche",
        True,
    )
    assert all(step["status"] == "done" for step in status["steps"])
    page = client.get(page_url).text
    assert "data-status-url" not in page  # nothing left to follow
    assert "Factura ES-" in text_of(page)
    assert "store." not in text_of(page)

    options = client.get(store_url(owner)).text
    assert 'data-owned-option="power_boost" data-source="purchase"' in options
    assert 'data-owned-option="winter_traction" data-source="trial"' in options
    # 15 January 10:00 in Madrid, plus a day; the trial one month.
    assert "hasta el 16 ene 2026, 10:00" in text_of(options)
    assert "hasta el 15 feb 2026, 10:00" in text_of(options)


def test_a_declined_card_shows_the_checkout_again_with_a_new_key_and_charges_nothing(
    db: Session, client: TestClient, owner: Owner, payment_sandbox: PaymentSandbox
) -> None:
    day = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=900)
    checkout = quote(client, owner, {"offer.power_boost": str(day.id)}).text
    declined = pay(client, owner, checkout, payment_sandbox.token(CARD_DECLINED))
    assert declined.status_code == 402
    assert "El pago no se ha completado" in text_of(declined.text)
    assert hidden(declined.text, "idempotency_key") != hidden(checkout, "idempotency_key")
    (failed,) = purchases_of(db, owner)
    assert failed.state == "failed"
    paid = pay(client, owner, declined.text, payment_sandbox.token(CARD_SUCCEEDS))
    assert paid.status_code == 303
    assert sorted(p.state for p in purchases_of(db, owner)) == ["delivering", "failed"]


def test_a_free_trial_needs_no_card_and_a_car_that_refuses_it_is_shown_with_the_reason(
    db: Session, client: TestClient, owner: Owner, clock: FixedClock
) -> None:
    trial = offer(db, owner.vehicle, "winter_traction", "trial", "1M")
    checkout = quote(client, owner, {"offer.winter_traction": str(trial.id)})
    assert checkout.status_code == 200, checkout.text
    assert 'id="pay-form"' not in checkout.text and "data-card=" not in checkout.text
    assert "Conseguirla gratis" in text_of(checkout.text)
    got = pay(client, owner, checkout.text, "")
    assert got.status_code == 303, got.text
    (purchase,) = purchases_of(db, owner)
    assert (purchase.state, purchase.payment_id) == ("delivering", None)

    assert purchase.configuration_version is not None
    answer(
        db, owner, purchase.configuration_version, "rejected", clock, reason="certificate_expired"
    )
    status = client.get(f"{got.headers['location']}/status").json()
    assert (status["phase"], status["final"]) == ("refunded", True)
    assert (
        status["status"]
        == "Reembolsada: el coche la rechazó (el certificado de firma no es válido ahora)"
    )
    assert status["lines"][0]["entitlement_state"] == "revoked"
    assert status["note"] == "No se ha cobrado nada."
    page = text_of(client.get(got.headers["location"]).text)
    assert "Reembolsada: el coche la rechazó (el certificado de firma no es válido ahora)" in page
    assert "No se ha cobrado nada." in page


def test_pay_per_use_takes_a_monthly_cap_and_a_card_for_the_invoices_to_come(
    db: Session, client: TestClient, owner: Owner, payment_sandbox: PaymentSandbox
) -> None:
    metered = offer(db, owner.vehicle, "power_boost", "metered", net_minor=150, unit="hour")
    bad_cap = quote(
        client, owner, {"offer.power_boost": str(metered.id), "cap.power_boost": "fifty"}
    )
    assert bad_cap.status_code == 422 and 'id="cap.power_boost-error"' in bad_cap.text
    checkout = quote(
        client, owner, {"offer.power_boost": str(metered.id), "cap.power_boost": "49,90"}
    )
    assert checkout.status_code == 200, checkout.text
    shown = text_of(checkout.text).replace("\xa0", " ")
    assert "Total 0,00 €" in shown and "cada uso se factura al mes" in shown
    assert 'id="pay-form"' in checkout.text  # a card, for the monthly invoices
    assert (
        pay(client, owner, checkout.text, payment_sandbox.token(CARD_SUCCEEDS)).status_code == 303
    )
    (purchase,) = purchases_of(db, owner)
    granted = db.scalars(select(Entitlement).where(Entitlement.purchase_id == purchase.id)).one()
    assert (granted.source, granted.spending_cap_minor) == ("metered", 4_990)
    store = client.get(f"/portal/cars/{owner.vehicle.vin}/store")
    assert "como máximo 49,90 € al mes" in text_of(store.text).replace("\xa0", " ")


def test_a_cart_with_something_to_pay_is_not_bought_without_a_card(
    db: Session, client: TestClient, owner: Owner
) -> None:
    day = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=900)
    checkout = quote(client, owner, {"offer.power_boost": str(day.id)}).text
    refused = pay(client, owner, checkout, "")
    assert refused.status_code == 422
    assert "Esta compra necesita una tarjeta." in text_of(refused.text)
    assert purchases_of(db, owner) == []


def test_the_cart_says_what_is_wrong_next_to_the_option(
    db: Session, client: TestClient, owner: Owner
) -> None:
    nothing = quote(client, owner, {})
    assert nothing.status_code == 422
    assert "Elige al menos una opción." in text_of(nothing.text)
    own = offer(db, owner.vehicle, "winter_traction", "custom", net_minor=200)
    no_end = quote(client, owner, {"offer.winter_traction": str(own.id)})
    assert no_end.status_code == 422
    assert 'id="end.winter_traction-error"' in no_end.text
    assert "Las fechas propias necesitan un último día." in text_of(no_end.text)
    assert f'value="{own.id}" data-kind="custom" checked' in no_end.text  # kept as chosen
    past = quote(
        client, owner, {"offer.winter_traction": str(own.id), "start.winter_traction": "2026-01-01"}
    )
    assert past.status_code == 422 and "Ese día ya ha pasado." in text_of(past.text)
    # Own dates from 20 to 22 January: three days, the last one included.
    dated = quote(
        client,
        owner,
        {
            "offer.winter_traction": str(own.id),
            "start.winter_traction": "2026-01-20",
            "end.winter_traction": "2026-01-22",
        },
    )
    assert dated.status_code == 200, dated.text
    shown = text_of(dated.text).replace("\xa0", " ")
    assert "desde el 20 ene 2026, 0:00" in shown and "hasta el 23 ene 2026, 0:00" in shown
    assert "Sin IVA 6,00 €" in shown


def test_switching_an_option_off_and_on_costs_nothing_and_the_car_follows(
    db: Session, client: TestClient, owner: Owner
) -> None:
    html = client.get(store_url(owner)).text
    plan = db.scalars(
        select(Entitlement).where(
            Entitlement.vehicle_id == owner.vehicle.id, Entitlement.code == "driver_assist"
        )
    ).one()
    action = f"/portal/cars/{owner.vehicle.vin}/options/{plan.id}"
    assert f'action="{action}"' in html
    before = versions(db, owner)

    def switch(enabled: str) -> httpx.Response:
        page = client.get(store_url(owner)).text
        form = page[page.index(f'action="{action}"') :]
        return client.post(
            action,
            data={
                "csrf_token": csrf_token(page),
                "idempotency_key": hidden(form, "idempotency_key"),
                "enabled": enabled,
            },
            follow_redirects=False,
        )

    off = switch("off")
    assert off.status_code == 303 and off.headers["location"].endswith("/store#options")
    db.expire_all()
    assert db.get_one(Entitlement, plan.id).enabled is False
    assert versions(db, owner) == before + 1
    page = client.get(store_url(owner)).text
    assert "Apagada: el coche lo aplica en segundos." in text_of(page)
    assert 'data-owned-option="driver_assist" data-source="plan" ' in page
    assert 'data-switch="on"' in page
    assert switch("on").status_code == 303
    db.expire_all()
    assert db.get_one(Entitlement, plan.id).enabled is True
    assert versions(db, owner) == before + 2
    assert db.scalar(select(func.count()).select_from(Purchase)) == 0  # no charge

    no_form = client.post(action, data={"enabled": "off"}, follow_redirects=False)
    assert no_form.status_code == 403  # no CSRF token


def test_a_subscription_is_cancelled_and_resumed_from_the_options(
    db: Session,
    client: TestClient,
    owner: Owner,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    monthly = offer(db, owner.vehicle, "power_boost", "subscription", "1M", net_minor=4_900)
    sub = subscribed(db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock)
    page = client.get(store_url(owner)).text
    assert "se renueva el 15 feb 2026, 10:00" in text_of(page)
    for command, text in (
        ("cancel", "cancelada: termina el 15 feb 2026, 10:00"),
        ("resume", "se renueva el 15 feb 2026, 10:00"),
    ):
        action = f"/portal/cars/{owner.vehicle.vin}/subscriptions/{sub.id}/{command}"
        form = page[page.index(f'action="{action}"') :]
        done = client.post(
            action,
            data={
                "csrf_token": csrf_token(page),
                "idempotency_key": hidden(form, "idempotency_key"),
            },
            follow_redirects=False,
        )
        assert done.status_code == 303, done.text
        page = client.get(store_url(owner)).text
        assert text in text_of(page)


def test_an_option_is_planned_every_week_and_cancelled(
    db: Session, client: TestClient, owner: Owner, payment_sandbox: PaymentSandbox
) -> None:
    own = offer(db, owner.vehicle, "power_boost", "custom", net_minor=800)
    plan_url = f"/portal/cars/{owner.vehicle.vin}/plan"
    form = client.get(plan_url).text
    assert 'id="pay-form"' in form and f'<option value="{own.id}"' in form
    assert "store." not in text_of(form)
    fields = {
        "csrf_token": csrf_token(form),
        "idempotency_key": hidden(form, "idempotency_key"),
        "offer_id": str(own.id),
        "recurrence": "weekly",
        "start_date": "2026-01-17",  # Saturday 08:00 to Sunday 22:00, Madrid time
        "start_time": "08:00",
        "end_date": "2026-01-18",
        "end_time": "22:00",
        "charge": "each",
        "card_token": payment_sandbox.token(CARD_SUCCEEDS),
    }
    too_long = client.post(plan_url, data={**fields, "end_date": "2026-01-30"})
    assert too_long.status_code == 422
    assert 'id="end_date-error"' in too_long.text
    planned = client.post(plan_url, data=fields, follow_redirects=False)
    assert planned.status_code == 303, planned.text
    page = client.get(store_url(owner)).text
    assert 'data-schedule="power_boost"' in page
    shown = text_of(page)
    assert "cada semana" in shown
    assert "17 ene 2026, 8:00 – 18 ene 2026, 22:00" in shown
    assert "24 ene 2026, 8:00 – 25 ene 2026, 22:00" in shown

    (schedule,) = db.scalars(select(Schedule).where(Schedule.vehicle_id == owner.vehicle.id))
    action = f"/portal/cars/{owner.vehicle.vin}/schedules/{schedule.id}/cancel"
    cancel_form = page[page.index(f'action="{action}"') :]
    cancelled = client.post(
        action,
        data={
            "csrf_token": csrf_token(page),
            "idempotency_key": hidden(cancel_form, "idempotency_key"),
        },
        follow_redirects=False,
    )
    assert cancelled.status_code == 303
    db.expire_all()
    assert db.get_one(Schedule, schedule.id).state == "cancelled"


def test_another_customers_car_and_purchase_are_not_found(
    db: Session,
    client: TestClient,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    day = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=900)
    checkout = quote(client, owner, {"offer.power_boost": str(day.id)}).text
    pay(client, owner, checkout, payment_sandbox.token(CARD_SUCCEEDS))
    (purchase,) = purchases_of(db, owner)
    plan = db.scalars(select(Entitlement).where(Entitlement.vehicle_id == owner.vehicle.id)).first()
    assert plan is not None

    other_car = born_car(db, settings=settings, now=clock.now())
    deliver(db, other_car, now=clock.now())
    other = owner_of(db, other_car, clock.now())
    log_in(client, other.customer.email)
    vin = owner.vehicle.vin
    assert client.get(f"/portal/cars/{vin}/store").status_code == 404
    assert client.get(f"/portal/cars/{vin}/plan").status_code == 404
    assert client.get(f"/portal/cars/{vin}/purchases/{purchase.id}").status_code == 404
    assert client.get(f"/portal/cars/{vin}/purchases/{purchase.id}/status").status_code == 404
    theirs = f"/portal/cars/{other.vehicle.vin}/purchases/{purchase.id}"
    assert client.get(theirs).status_code == 404  # their own car, not their purchase
    page = client.get(f"/portal/cars/{other.vehicle.vin}/store").text
    switched = client.post(
        f"/portal/cars/{vin}/options/{plan.id}",
        data={"csrf_token": csrf_token(page), "idempotency_key": "k" * 16, "enabled": "off"},
        follow_redirects=False,
    )
    assert switched.status_code == 404
    db.expire_all()
    assert db.get_one(Entitlement, plan.id).enabled is True
