"""The authorisation matrix: every route of the OpenAPI document, called by every kind of
principal with its path parameters pointing at customer A's objects.

For each route, `ROUTES` says who must get through (the owner, the salesperson who sold the
car, the workshop the order is booked at, the operator, or a role as a whole); everyone else
must be refused (401, 403 or 404, or the route's own refusal, such as 422 for a guessed code).
Whatever a stranger to A (anonymous, customer B, a salesperson of another dealership, another
workshop) is answered never carries A's VIN, e-mail, national id, name or A's ids.

A route added to the application without an entry in `ROUTES` (or in `NOT_PROBED`, with the
reason) fails the test, so nobody adds a door without saying who may open it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.keys import ensure_demo_keys
from caas.ota.service import use_signing_material
from caas.seed import DEMO_PASSWORD
from tests.billing.conftest import API_KEY, WEBHOOK_SECRET, PaymentSandbox, payment_sandbox
from tests.conftest import SmtpInbox
from tests.factories import customer_payload, sale_payload
from tests.security.authz_world import PHONE_PUBLIC_KEY, PRINCIPALS, STRANGERS, World, build_world

__all__ = ["payment_sandbox"]

Body = Callable[[World, str], Any]

ALL = frozenset(PRINCIPALS)
SIGNED_IN = ALL - {"anonymous"}
CUSTOMERS = frozenset({"customer_a", "customer_b"})
DEALERS = frozenset({"dealer_a", "dealer_b"})
WORKSHOPS = frozenset({"workshop_a", "workshop_b"})
OWNER = frozenset({"customer_a"})
OPERATOR = frozenset({"operator"})
# The order's people: its customer, the salesperson of its dealership, the maker's operator.
ORDER_PEOPLE = frozenset({"customer_a", "dealer_a", "operator"})
NOBODY: frozenset[str] = frozenset()
REFUSED = frozenset({401, 403, 404})


@dataclass(frozen=True)
class Probe:
    """How to call one route and who must get through."""

    allowed: frozenset[str]
    body: Body | None = None
    form: Body | None = None  # a multipart upload: fields, and the files under "files"
    query: Body | None = None
    # Statuses that count as a refusal here besides 401/403/404 (a wrong code: 422).
    refusals: frozenset[int] = REFUSED
    # Strangers who may still see A's data here, and why (see NOT_SECRET_FROM).
    sees_a: frozenset[str] = NOBODY


def _sale_body(world: World, principal: str) -> dict[str, Any]:
    return sale_payload()


def _quote_body(world: World, principal: str) -> dict[str, Any]:
    return {"country": "ES", "plan": sale_payload()["plan"]}


def _card(world: World, principal: str) -> dict[str, Any]:
    token = world.card_token if principal == "customer_a" else world.card_token_b
    return {"card_token": token}


def _items(world: World, principal: str) -> dict[str, Any]:
    return {"items": [{"offer_id": world.params["offer_id"]}]}


def _purchase(world: World, principal: str) -> dict[str, Any]:
    return {**_items(world, principal), "payment_method": _card(world, principal)["card_token"]}


def _schedule(world: World, principal: str) -> dict[str, Any]:
    return {
        "offer_id": world.params["custom_offer_id"],
        "recurrence": "once",
        "start_date": "2026-04-04",
        "start_time": "08:00",
        "end_date": "2026-04-05",
        "end_time": "22:00",
        "card_token": _card(world, principal)["card_token"],
    }


def _constant(value: Any) -> Body:
    return lambda _world, _principal: value


def _release_form(world: World, principal: str) -> dict[str, Any]:
    return {
        "platform": "AURA",
        "version": "9.9.2",
        "models": "AURA",
        "min_version": "99.0.0",
        "files": {"image": ("image.bin", b"\0" * 512)},
    }


def _image_query(world: World, principal: str) -> dict[str, Any]:
    # Every principal presents car B's own token for A's VIN; the car's own token is
    # checked in test_only_the_cars_own_token_fetches_its_image.
    return {"vin": world.params["vin"], "token": world.car_tokens["car_b"]}


def _transfer_new(world: World, principal: str) -> dict[str, Any]:
    return {"vin": world.params["vin"], "code": "AAAA-AAAA", "buyer": customer_payload()}


def _resale(world: World, principal: str) -> dict[str, Any]:
    return {
        "vin": world.params["vin"],
        "seller_national_id": "00000000T",
        "buyer": customer_payload(),
    }


FEATURE = {
    "code": "authz_probe_feature",
    "names": {"en": "Probe", "es": "Sonda"},
    "descriptions": {"en": "A probe.", "es": "Una sonda."},
    "category": "comfort",
}
SERVICE = {
    "performed_at": "2026-01-15T09:00:00+00:00",
    "odometer_km": 1200,
    "work_description": "Washer fluid topped up",
}
WRONG_LOGIN = {"email": "", "password": "wrong-password-guess"}

# Who may call each route (method and path as in the OpenAPI document), and with what.
ROUTES: dict[str, Probe] = {
    "GET /healthz": Probe(ALL),
    "GET /readyz": Probe(ALL),
    "GET /metrics": Probe(ALL),
    # Logging in with A's e-mail and a wrong password is refused to everyone.
    "POST /api/v1/auth/login": Probe(
        NOBODY, body=lambda w, _p: {**WRONG_LOGIN, "email": w.a_strings[1]}, refusals=REFUSED
    ),
    "POST /api/v1/auth/logout": Probe(ALL),
    "POST /api/v1/auth/tokens": Probe(
        NOBODY, body=lambda w, _p: {**WRONG_LOGIN, "email": w.a_strings[1]}, refusals=REFUSED
    ),
    "GET /api/v1/me": Probe(SIGNED_IN),
    "POST /api/v1/auth/activate": Probe(
        NOBODY,
        body=_constant({"token": "a-guessed-activation-token", "password": "a-long-passphrase"}),
        refusals=frozenset({422}),
    ),
    # The same answer whether or not the e-mail is known (and nothing about the account).
    "POST /api/v1/auth/activation-resend": Probe(ALL, body=lambda w, _p: {"email": w.a_strings[1]}),
    "POST /api/v1/quotes": Probe(DEALERS, body=_quote_body),
    "POST /api/v1/sales": Probe(DEALERS, body=_sale_body),
    "GET /api/v1/sales": Probe(SIGNED_IN),
    "GET /api/v1/sales/{sale_id}": Probe(ORDER_PEOPLE),
    "GET /api/v1/sales/{sale_id}/history": Probe(ORDER_PEOPLE),
    "POST /api/v1/sales/{sale_id}/payments": Probe(
        OWNER, body=lambda w, p: {"kind": "deposit", **_card(w, p)}
    ),
    "GET /api/v1/sales/{sale_id}/payments": Probe(ORDER_PEOPLE),
    # Signed by the provider: without its signature nobody gets in.
    "POST /api/v1/webhooks/payments": Probe(NOBODY, body=_constant({"type": "x"})),
    "GET /api/v1/invoices": Probe(CUSTOMERS | OPERATOR),
    "GET /api/v1/invoices/{invoice_id}": Probe(OWNER | OPERATOR),
    "GET /api/v1/invoices/{invoice_id}/pdf": Probe(OWNER | OPERATOR),
    "GET /api/v1/me/payment-methods": Probe(CUSTOMERS),
    "POST /api/v1/me/payment-methods": Probe(CUSTOMERS, body=_card),
    "POST /api/v1/me/payment-methods/{method_id}/default": Probe(OWNER),
    "DELETE /api/v1/me/payment-methods/{method_id}": Probe(OWNER),
    "GET /api/v1/notifications": Probe(SIGNED_IN),
    "POST /api/v1/notifications/{notification_id}/read": Probe(OWNER),
    "POST /api/v1/notifications/read-all": Probe(SIGNED_IN),
    # Signed by the factory: without its signature nobody gets in.
    "POST /api/v1/factory/events": Probe(NOBODY, body=_constant({"type": "x"})),
    "GET /api/v1/sales/{sale_id}/registration": Probe(ORDER_PEOPLE),
    "POST /api/v1/sales/{sale_id}/registration/retry": Probe(frozenset({"dealer_a"})),
    "PATCH /api/v1/sales/{sale_id}/customer": Probe(
        frozenset({"dealer_a"}), body=_constant({"city": "Madrid"})
    ),
    "POST /api/v1/sales/{sale_id}/delivery": Probe(
        frozenset({"dealer_a"}),
        body=_constant({"scheduled_for": "2026-02-02", "carrier": "TransAuto Iberia"}),
    ),
    "GET /api/v1/sales/{sale_id}/delivery": Probe(ORDER_PEOPLE),
    "POST /api/v1/sales/{sale_id}/delivery/dispatch": Probe(
        frozenset({"dealer_a"}), body=_constant({"tracking_number": "TAI-2026-004211"})
    ),
    "POST /api/v1/sales/{sale_id}/delivery/complete": Probe(frozenset({"dealer_a"})),
    "POST /api/v1/vehicles/{vin}/phones": Probe(
        OWNER, body=_constant({"public_key": PHONE_PUBLIC_KEY, "label": "another phone"})
    ),
    "GET /api/v1/vehicles/{vin}/phones": Probe(OWNER),
    "DELETE /api/v1/vehicles/{vin}/phones/{key_id}": Probe(OWNER),
    "GET /api/v1/vehicles/{vin}/twin": Probe(OWNER | OPERATOR),
    "GET /api/v1/fleet": Probe(OPERATOR),
    "POST /api/v1/vehicles/{vin}/transfer": Probe(OWNER),
    "GET /api/v1/vehicles/{vin}/transfer": Probe(OWNER),
    "DELETE /api/v1/vehicles/{vin}/transfer": Probe(OWNER),
    # A guessed code takes nobody's car.
    "POST /api/v1/transfers/receive": Probe(
        NOBODY,
        body=lambda w, _p: {"vin": w.params["vin"], "code": "AAAA-AAAA"},
        refusals=REFUSED | {409, 422},
    ),
    "POST /api/v1/transfers/receive-new": Probe(
        NOBODY, body=_transfer_new, refusals=REFUSED | {409, 422}
    ),
    # A dealer records a resale only with the seller's national id as proof.
    "POST /api/v1/resales": Probe(NOBODY, body=_resale, refusals=REFUSED | {422}),
    "POST /api/v1/vehicles/{vin}/scrap": Probe(
        frozenset({"dealer_a", "operator"}),
        body=_constant({"reason": "Total loss", "certificate_number": "CD-2026-000123"}),
    ),
    "POST /api/v1/vehicles/{vin}/registry/retry": Probe(frozenset({"dealer_a", "operator"})),
    "GET /api/v1/me/consents": Probe(CUSTOMERS),
    "PUT /api/v1/me/consents": Probe(CUSTOMERS, body=_constant({"driving_style": True})),
    "GET /api/v1/me/consents/history": Probe(CUSTOMERS),
    "GET /api/v1/me/export": Probe(CUSTOMERS),
    "PATCH /api/v1/me/profile": Probe(CUSTOMERS, body=_constant({"city": "Madrid"})),
    "GET /api/v1/me/profile": Probe(CUSTOMERS),
    "POST /api/v1/me/erasure": Probe(CUSTOMERS, body=_constant({"password": DEMO_PASSWORD})),
    "GET /api/v1/me/vehicles/{vin}/suggestions": Probe(OWNER),
    "GET /api/v1/product-improvement/usage": Probe(OPERATOR, query=_constant({"month": "2026-01"})),
    "GET /api/v1/platforms": Probe(ALL),
    "GET /api/v1/platforms/{code}/manual.pdf": Probe(SIGNED_IN),
    "GET /api/v1/platforms/{code}/features": Probe(SIGNED_IN),
    "POST /api/v1/platforms/{code}/features": Probe(OPERATOR, body=_constant(FEATURE)),
    "PATCH /api/v1/platforms/{code}/features/{feature_code}": Probe(
        OPERATOR, body=_constant({"active": True})
    ),
    # Any workshop may service any car, so any workshop reads a car's services by its VIN.
    "POST /api/v1/vehicles/{vin}/services": Probe(WORKSHOPS, body=_constant(SERVICE)),
    "GET /api/v1/vehicles/{vin}/services": Probe(
        OWNER | WORKSHOPS | OPERATOR, sees_a=frozenset({"workshop_b"})
    ),
    "GET /api/v1/me/file": Probe(CUSTOMERS),
    "GET /api/v1/me/timeline": Probe(CUSTOMERS),
    "GET /api/v1/customers/{customer_id}/file": Probe(ORDER_PEOPLE),
    "GET /api/v1/vehicles/{vin}/store": Probe(OWNER),
    "POST /api/v1/vehicles/{vin}/store/quote": Probe(OWNER, body=_items),
    "POST /api/v1/vehicles/{vin}/purchases": Probe(OWNER, body=_purchase),
    "GET /api/v1/vehicles/{vin}/purchases": Probe(OWNER),
    "GET /api/v1/purchases/{purchase_id}": Probe(OWNER),
    "GET /api/v1/vehicles/{vin}/options": Probe(OWNER),
    "PUT /api/v1/vehicles/{vin}/options/{entitlement_id}": Probe(
        OWNER, body=_constant({"enabled": False})
    ),
    "GET /api/v1/platforms/{code}/features/{feature_code}/offers": Probe(SIGNED_IN),
    "POST /api/v1/platforms/{code}/features/{feature_code}/offers": Probe(
        OPERATOR,
        body=_constant({"country": "PT", "kind": "window", "duration": "7D", "net_minor": 500}),
    ),
    "GET /api/v1/offers/{offer_id}": Probe(SIGNED_IN),
    "PATCH /api/v1/offers/{offer_id}": Probe(OPERATOR, body=_constant({"net_minor": 1100})),
    "GET /api/v1/vehicles/{vin}/subscriptions": Probe(OWNER),
    "POST /api/v1/subscriptions/{subscription_id}/cancel": Probe(OWNER),
    "POST /api/v1/subscriptions/{subscription_id}/resume": Probe(OWNER),
    "POST /api/v1/vehicles/{vin}/schedules": Probe(OWNER, body=_schedule),
    "GET /api/v1/vehicles/{vin}/schedules": Probe(OWNER),
    "DELETE /api/v1/schedules/{schedule_id}": Probe(OWNER),
    "GET /api/v1/vehicles/{vin}/usage": Probe(OWNER),
    "GET /api/v1/me/upcoming-charges": Probe(CUSTOMERS),
    "GET /api/v1/vehicles/{vin}/upcoming-charges": Probe(OWNER),
    "POST /api/v1/software/releases": Probe(OPERATOR, form=_release_form),
    "GET /api/v1/software/releases": Probe(OPERATOR),
    "GET /api/v1/software/releases/{release_id}": Probe(OPERATOR),
    "PATCH /api/v1/software/releases/{release_id}": Probe(
        OPERATOR, body=_constant({"notes": "Probe."})
    ),
    "DELETE /api/v1/software/releases/{release_id}": Probe(OPERATOR),
    "POST /api/v1/software/releases/{release_id}/publish": Probe(OPERATOR),
    "POST /api/v1/software/releases/{release_id}/withdraw": Probe(OPERATOR),
    # Only the car offered the release, with its own token, downloads the image.
    "GET /api/v1/software/releases/{release_id}/image": Probe(NOBODY, query=_image_query),
    "POST /api/v1/software/releases/{release_id}/rollouts": Probe(
        OPERATOR, body=_constant({"start": False})
    ),
    "GET /api/v1/software/rollouts/{rollout_id}": Probe(OPERATOR),
    "POST /api/v1/software/rollouts/{rollout_id}/pause": Probe(OPERATOR),
    "POST /api/v1/software/rollouts/{rollout_id}/resume": Probe(OPERATOR),
    "POST /api/v1/software/rollouts/{rollout_id}/cancel": Probe(OPERATOR),
    "GET /api/v1/me/vehicles/{vin}/software-update": Probe(OWNER),
    "POST /api/v1/me/vehicles/{vin}/software-update/accept": Probe(OWNER),
    "GET /api/v1/finance/revenue": Probe(OPERATOR),
    "GET /api/v1/finance/refunds": Probe(OPERATOR),
    "GET /api/v1/finance/failed-payments": Probe(OPERATOR),
    "GET /api/v1/finance/invoices.csv": Probe(OPERATOR),
    "GET /api/v1/finance/ledger.csv": Probe(OPERATOR),
    "GET /api/v1/upkeep/orders": Probe(CUSTOMERS),
    "GET /api/v1/upkeep/orders/{order_id}": Probe(frozenset({"customer_a", "workshop_a"})),
    "POST /api/v1/upkeep/orders/{order_id}/confirm": Probe(
        OWNER, body=_constant({"slot_start": "2026-01-16T08:00:00+00:00"})
    ),
    "POST /api/v1/upkeep/orders/{order_id}/cancel": Probe(
        frozenset({"customer_a", "workshop_a"}), body=_constant({"reason": "Sold the car"})
    ),
    "POST /api/v1/upkeep/orders/{order_id}/parts-reserved": Probe(frozenset({"workshop_a"})),
    "POST /api/v1/upkeep/orders/{order_id}/done": Probe(
        frozenset({"workshop_a"}), body=_constant({"odometer_km": 21500})
    ),
    "GET /api/v1/upkeep/workshop/bookings": Probe(WORKSHOPS),
    "GET /api/v1/upkeep/preferences": Probe(CUSTOMERS),
    "PUT /api/v1/upkeep/preferences": Probe(
        CUSTOMERS, body=_constant({"auto_order": False, "auto_limit_minor": 0})
    ),
    "GET /api/v1/upkeep/workshops": Probe(CUSTOMERS),
    "GET /api/v1/upkeep/thresholds/{platform}": Probe(OPERATOR),
    "PUT /api/v1/upkeep/thresholds/{platform}": Probe(
        OPERATOR,
        body=_constant({"marks": [{"mark": "washer_fluid", "trip_level": 15, "rearm_level": 40}]}),
    ),
}

# Routes the matrix does not call, each with the reason. None so far: every route is probed.
NOT_PROBED: dict[str, str] = {}

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def world(
    engine: Engine,
    smtp_server: SmtpInbox,
    payment_sandbox: PaymentSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """A's objects and the principals, in one outer transaction rolled back at the end."""
    root = tmp_path_factory.mktemp("authz")
    use_signing_material(ensure_demo_keys(root / "keys"))
    settings = Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
        public_url="http://testserver",
        payment_url=payment_sandbox.url,
        payment_api_key=API_KEY,
        payment_webhook_secret=WEBHOOK_SECRET,
        data_dir=root / "data",
    )
    clock = FixedClock()
    with engine.connect() as connection:
        outer = connection.begin()
        sessions = sessionmaker(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        app = create_app(settings=settings, sessions=sessions, clock=clock)
        with TestClient(app) as client:
            yield build_world(
                client=client,
                connection=connection,
                sessions=sessions,
                settings=settings,
                clock=clock,
                sandbox=payment_sandbox,
            )
        outer.rollback()
    use_signing_material(None)


def _document_routes(world: World) -> list[str]:
    app = world.client.app
    document = app.openapi()  # type: ignore[attr-defined]
    return [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]


def test_every_route_is_in_the_matrix_or_excluded_with_a_reason(world: World) -> None:
    routes = _document_routes(world)
    missing = [route for route in routes if route not in ROUTES and route not in NOT_PROBED]
    assert not missing, f"say who may call these routes (ROUTES) or why not (NOT_PROBED): {missing}"
    stale = [route for route in ROUTES if route not in routes]
    assert not stale, f"no longer in the OpenAPI document: {stale}"
    unknown = {
        name
        for route in ROUTES
        for name in re.findall(r"\{(\w+)\}", route)
        if name not in world.params
    }
    assert not unknown, f"no object of A for these path parameters: {unknown}"
    print(f"authorisation matrix: {len(ROUTES)} routes x {len(PRINCIPALS)} principals")


def _url(route: str, world: World) -> tuple[str, str]:
    method, path = route.split(" ", 1)
    return method, re.sub(r"\{(\w+)\}", lambda m: str(world.params[m.group(1)]), path)


def _call(world: World, route: str, probe: Probe, principal: str) -> httpx.Response:
    method, url = _url(route, world)
    form = probe.form(world, principal) if probe.form else None
    return world.call(
        principal,
        method,
        url,
        json=probe.body(world, principal) if probe.body else None,
        data={k: v for k, v in form.items() if k != "files"} if form else None,
        files=form["files"] if form else None,
        params=probe.query(world, principal) if probe.query else None,
    )


def _ids_of_a(node: Any, world: World, found: list[str]) -> None:
    """Every `key: value` in a JSON answer that is one of A's ids under that key."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, int) and value in world.a_ids.get(key, ()):
                found.append(f"{key}={value}")
            _ids_of_a(value, world, found)
    elif isinstance(node, list):
        for value in node:
            _ids_of_a(value, world, found)


def _leaks(world: World, response: httpx.Response, asked: str) -> list[str]:
    """What of A's the answer shows that the caller did not send (a VIN in the caller's own
    path, echoed back in an error, tells the caller nothing new)."""
    text = response.text
    found = [value for value in world.a_strings if value in text and value not in asked]
    if response.headers.get("content-type", "").startswith("application/json") and text:
        _ids_of_a(response.json(), world, found)
    return found


def _asked(response: httpx.Response) -> str:
    request = response.request
    body = request.content.decode(errors="replace") if request.content is not None else ""
    return str(request.url) + body


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_route_lets_in_only_whom_it_should_and_shows_strangers_nothing_of_a(
    world: World, route: str
) -> None:
    probe = ROUTES[route]
    problems: list[str] = []
    for principal in PRINCIPALS:
        response = _call(world, route, probe, principal)
        status = response.status_code
        if status >= 500:
            problems.append(f"{principal}: server error {status}")
        elif principal in probe.allowed:
            schema_error = status == 422 and response.json().get("code") == "invalid_input"
            if status in REFUSED or schema_error:
                problems.append(f"{principal} should get through, got {status} {response.text}")
        elif status not in probe.refusals:
            problems.append(f"{principal} must be refused, got {status} {response.text[:200]}")
        if principal in STRANGERS and principal not in probe.sees_a:
            leaked = _leaks(world, response, _asked(response))
            if leaked:
                problems.append(f"{principal} sees A's {leaked} ({status})")
    assert not problems, "\n".join(problems)


def test_the_leak_check_sees_a_in_the_answers_a_is_entitled_to(world: World) -> None:
    """The check that strangers see nothing of A can fail: A's own order, file and twin, as
    A reads them, show A's VIN, e-mail, name and ids."""
    for route in (
        "GET /api/v1/sales/{sale_id}",
        "GET /api/v1/customers/{customer_id}/file",
        "GET /api/v1/vehicles/{vin}/twin",
    ):
        method, url = _url(route, world)
        response = world.call("customer_a", method, url)
        assert response.status_code == 200, response.text
        assert _leaks(world, response, asked=""), route


def test_only_the_cars_own_token_fetches_its_image(world: World) -> None:
    """A's car, offered the release in a running rollout, downloads it with its token; car B's
    token (valid for B's VIN) and no token at all fetch nothing for A's VIN."""
    release = world.params["release_id"]
    url = f"/api/v1/software/releases/{release}/image"
    vin = world.params["vin"]
    own = world.call(
        "anonymous", "GET", url, params={"vin": vin, "token": world.car_tokens["car_a"]}
    )
    assert own.status_code == 200, own.text
    for token in (world.car_tokens["car_b"], "", "0" * 64):
        other = world.call("anonymous", "GET", url, params={"vin": vin, "token": token})
        assert other.status_code in (404, 422), other.text
