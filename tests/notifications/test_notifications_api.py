"""The in-app notification list: each person sees and marks only their own."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.sales.service import transition_order
from tests.files.customers import login, sold_customer


def test_customer_sees_own_notifications_newest_first_with_unread_count(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    sold = sold_customer(db, settings=settings, now=clock.now())
    transition_order(db, sold.sale, "waiting_for_factory", actor=Actor.system(), now=clock.now())
    clock.advance(timedelta(hours=1))
    transition_order(db, sold.sale, "ordered", actor=Actor.system(), now=clock.now())
    db.commit()
    login(app_client, sold.email)
    page = app_client.get("/api/v1/notifications").json()
    assert page["total"] == 2 and page["unread"] == 2
    kinds = [item["kind"] for item in page["items"]]
    assert kinds == ["order.ordered", "order.waiting_for_factory"]
    first = page["items"][0]
    assert first["title"].startswith(f"Pedido {sold.sale.number}")
    assert first["details"]["order_number"] == sold.sale.number
    assert first["read_at"] is None


def test_marking_read_one_then_all(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    sold = sold_customer(db, settings=settings, now=clock.now())
    transition_order(db, sold.sale, "waiting_for_factory", actor=Actor.system(), now=clock.now())
    clock.advance(timedelta(minutes=5))
    transition_order(db, sold.sale, "accepted", actor=Actor.system(), now=clock.now())
    db.commit()
    login(app_client, sold.email)
    newest, oldest = app_client.get("/api/v1/notifications").json()["items"]
    read = app_client.post(f"/api/v1/notifications/{newest['id']}/read")
    assert read.status_code == 200 and read.json()["read_at"] is not None
    again = app_client.post(f"/api/v1/notifications/{newest['id']}/read")
    assert again.json()["read_at"] == read.json()["read_at"]
    unread = app_client.get("/api/v1/notifications", params={"unread_only": True}).json()
    assert unread["unread"] == 1 and [n["id"] for n in unread["items"]] == [oldest["id"]]
    assert app_client.post("/api/v1/notifications/read-all").json()["marked"] == 1
    assert app_client.get("/api/v1/notifications").json()["unread"] == 0


def test_a_customer_never_sees_or_marks_another_customers_notifications(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    ana = sold_customer(db, settings=settings, now=clock.now())
    ben = sold_customer(db, settings=settings, now=clock.now(), country="FR")
    transition_order(db, ana.sale, "waiting_for_factory", actor=Actor.system(), now=clock.now())
    db.commit()
    login(app_client, ana.email)
    (mine,) = app_client.get("/api/v1/notifications").json()["items"]
    login(app_client, ben.email)
    assert app_client.get("/api/v1/notifications").json() == {
        "total": 0,
        "unread": 0,
        "items": [],
    }
    response = app_client.post(f"/api/v1/notifications/{mine['id']}/read")
    assert response.status_code == 404
    assert response.json()["code"] == "notification.not_found"
    assert app_client.post("/api/v1/notifications/read-all").json()["marked"] == 0
    login(app_client, ana.email)
    assert app_client.get("/api/v1/notifications").json()["unread"] == 1


def test_notifications_need_a_login_and_valid_paging(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/notifications").status_code == 401
    login(app_client, "operator@caas.example")
    response = app_client.get("/api/v1/notifications", params={"limit": 0})
    assert response.status_code == 422 and response.json()["field"] == "limit"
