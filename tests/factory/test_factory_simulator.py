"""The factory simulator speaks the Factory Order API and really delivers signed webhooks."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient

from caas.protocol import vin as vin_rules
from caas.protocol.factory import API_KEY_HEADER, ORDERS_PATH, STAGES, StageEvent
from caas.protocol.webhooks import verify
from caas_sim.factory import create_app
from tests.factory.conftest import FACTORY_API_KEY, FACTORY_SECRET, WebhookInbox
from tests.servers import wait_until

KEY = {API_KEY_HEADER: FACTORY_API_KEY}


def order(order_id: str = "S2026-000101", **changes: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "platform": "BOREAL",
        "hardware_features": ["climate_plus"],
        "software_version": "7.2.0",
        "destination": {
            "dealership_code": "LYS01",
            "name": "caas Lyon Part-Dieu",
            "address": "12 rue Garibaldi, 69003 Lyon",
            "city": "Lyon",
            "country": "FR",
        },
        "callback": {"url": "http://127.0.0.1:1/api/v1/factory/events"},
        **changes,
    }


def simulator(inbox: WebhookInbox, **options: Any) -> TestClient:
    app = create_app(
        webhook_url=inbox.url,
        webhook_secret=FACTORY_SECRET,
        api_key=FACTORY_API_KEY,
        **{"auto_advance": False, **options},
    )
    return TestClient(app)


@pytest.fixture
def factory(inbox: WebhookInbox) -> Iterator[TestClient]:
    with simulator(inbox) as client:
        yield client


def events(inbox: WebhookInbox) -> list[StageEvent]:
    return [StageEvent.model_validate_json(hook.body) for hook in inbox.received]


def test_auto_advance_walks_an_order_through_every_stage_with_signed_webhooks(
    inbox: WebhookInbox,
) -> None:
    with simulator(inbox, auto_advance=True, stage_seconds=0.02) as factory:
        assert factory.post(ORDERS_PATH, json=order(), headers=KEY).status_code == 201
        wait_until(lambda: len(inbox.received) >= len(STAGES))

        for hook in inbox.received:
            verify(hook.body, hook.signature, FACTORY_SECRET)
        sent = events(inbox)
        assert [event.stage for event in sent] == list(STAGES)
        assert [event.sequence for event in sent] == list(range(1, len(STAGES) + 1))
        assert len({event.event_id for event in sent}) == len(STAGES)
        assert all(event.vin is None for event in sent[: STAGES.index("assembly")])
        built = sent[STAGES.index("assembly")]
        assert built.vin is not None and vin_rules.is_valid(built.vin)
        assert {event.vin for event in sent[STAGES.index("assembly") :]} == {built.vin}
        status = factory.get(f"{ORDERS_PATH}/S2026-000101", headers=KEY).json()
        assert (status["status"], status["last_sequence"], status["vin"]) == (
            "at_dealer",
            len(STAGES),
            built.vin,
        )

        # The car's private key matches the public key the platform was given.
        key = factory.get(f"/sim/cars/{built.vin}/private-key").json()
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(key["private_key"]))
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert base64.b64encode(public).decode() == built.public_key


def test_events_are_retried_until_the_platform_answers_2xx(inbox: WebhookInbox) -> None:
    inbox.fail_next = 3
    with simulator(inbox, retry_base_seconds=0.01, retry_max_seconds=0.05) as factory:
        factory.post(ORDERS_PATH, json=order(), headers=KEY)
        delivery = factory.post("/sim/orders/S2026-000101/advance").json()
        assert (delivery["delivered"], delivery["platform_status"]) == (False, 503)

        wait_until(lambda: len(inbox.received) == 4)
        assert {json.loads(hook.body)["event_id"] for hook in inbox.received} == {
            delivery["event"]["event_id"]
        }
        # Once the platform answers again, the next stage is delivered at once, in order.
        assert factory.post("/sim/orders/S2026-000101/advance").json()["delivered"] is True
        assert [event.sequence for event in events(inbox)] == [1, 1, 1, 1, 2]


def test_a_repeated_order_id_is_the_same_order(factory: TestClient) -> None:
    first = factory.post(ORDERS_PATH, json=order(), headers=KEY)
    again = factory.post(
        ORDERS_PATH, json=order(), headers={**KEY, "Idempotency-Key": "S2026-000101"}
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert len(factory.get("/sim/orders").json()) == 1

    different = factory.post(ORDERS_PATH, json=order(platform="AURA"), headers=KEY)
    assert different.status_code == 409
    assert different.json()["code"] == "order.id_reused"


def test_orders_need_the_api_key(factory: TestClient) -> None:
    missing = factory.post(ORDERS_PATH, json=order())
    wrong = factory.post(ORDERS_PATH, json=order(), headers={API_KEY_HEADER: "guess"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert wrong.json()["code"] == "factory.unauthorized"
    assert factory.get("/sim/orders").json() == []


def test_malformed_order_is_422(factory: TestClient) -> None:
    response = factory.post(ORDERS_PATH, json=order(order_id="has spaces"), headers=KEY)
    assert response.status_code == 422
    assert response.json()["message"].startswith("order_id")


def test_outage_answers_503_until_the_factory_is_back(factory: TestClient) -> None:
    factory.post("/sim/outage", json={"down": True})
    down = factory.post(ORDERS_PATH, json=order(), headers=KEY)
    assert down.status_code == 503
    assert down.json()["code"] == "factory.unavailable"
    factory.post("/sim/outage", json={"down": False})
    assert factory.post(ORDERS_PATH, json=order(), headers=KEY).status_code == 201


def test_replay_resends_the_last_event_with_the_same_id(
    factory: TestClient, inbox: WebhookInbox
) -> None:
    factory.post(ORDERS_PATH, json=order(), headers=KEY)
    sent = factory.post("/sim/orders/S2026-000101/advance").json()
    replayed = factory.post("/sim/replay/S2026-000101").json()
    assert replayed["event"] == sent["event"]
    assert replayed["delivered"] is True
    assert [event.event_id for event in events(inbox)] == [
        events(inbox)[0].event_id,
        events(inbox)[0].event_id,
    ]


def test_advancing_past_the_dealer_or_an_unknown_order_is_refused(factory: TestClient) -> None:
    assert factory.post("/sim/orders/S-NONE/advance").status_code == 404
    assert factory.get(f"{ORDERS_PATH}/S-NONE", headers=KEY).status_code == 404
    factory.post(ORDERS_PATH, json=order(), headers=KEY)
    for _ in STAGES:
        assert factory.post("/sim/orders/S2026-000101/advance").status_code == 200
    finished = factory.post("/sim/orders/S2026-000101/advance")
    assert finished.status_code == 409
    assert finished.json()["code"] == "order.finished"


def test_state_file_keeps_orders_and_cars_across_a_restart(
    inbox: WebhookInbox, tmp_path: Path
) -> None:
    state = tmp_path / "factory.json"
    with simulator(inbox, state_file=state) as factory:
        placed = factory.post(ORDERS_PATH, json=order(), headers=KEY).json()
        for _ in range(STAGES.index("assembly") + 1):
            factory.post("/sim/orders/S2026-000101/advance")
        vin = factory.get(f"{ORDERS_PATH}/S2026-000101", headers=KEY).json()["vin"]
        key = factory.get(f"/sim/cars/{vin}/private-key").json()

    with simulator(inbox, state_file=state) as restarted:
        again = restarted.post(ORDERS_PATH, json=order(), headers=KEY)
        assert again.status_code == 200
        assert again.json()["factory_reference"] == placed["factory_reference"]
        assert restarted.get(f"/sim/cars/{vin}/private-key").json() == key
        nxt = restarted.post("/sim/orders/S2026-000101/advance").json()["event"]
        assert (nxt["stage"], nxt["sequence"], nxt["vin"]) == ("quality_check", 6, vin)


def test_the_factory_documents_its_api(factory: TestClient) -> None:
    paths = factory.get("/openapi.json").json()["paths"]
    assert {"/v1/orders", "/v1/orders/{order_id}"} <= set(paths)
    assert "FactoryOrderCreate" in json.dumps(paths["/v1/orders"])
