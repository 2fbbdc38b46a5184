"""The operator's audit trail: every recorded change, searchable by customer, subject, event,
actor and date; only the operator opens it."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import HistoryEntry
from caas.core.settings import Settings
from caas.web.display import STAFF_ZONE
from tests.files.customers import sold_customer
from tests.web.support import log_in

OPERATOR = "operator@caas.example"
_ROW = re.compile(r'<tr data-event="([^"]+)">(.*?)</tr>', re.S)


def _rows(html: str) -> list[tuple[str, str]]:
    return _ROW.findall(html)


def _count(db: Session, *conditions: object) -> int:
    return db.scalar(select(func.count(HistoryEntry.id)).where(*conditions)) or 0  # type: ignore[arg-type]


def test_the_operator_searches_the_audit_trail(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    madrid = sold_customer(db, settings=settings, now=clock.now(), country="ES")
    lyon = sold_customer(db, settings=settings, now=clock.now(), country="FR")
    db.commit()
    log_in(app_client, OPERATOR)

    by_email = app_client.get("/operator/audit", params={"customer": madrid.customer.email})
    assert by_email.status_code == 200
    rows = _rows(by_email.text)
    expected = _count(db, HistoryEntry.customer_id == madrid.customer.id)
    assert len(rows) == min(expected, 50) and expected > 0
    assert all(f"/operator/customers/{madrid.customer.id}" in row for _, row in rows)
    by_number = app_client.get("/operator/audit", params={"customer": str(lyon.customer.id)})
    assert all(f"/operator/customers/{lyon.customer.id}" in row for _, row in _rows(by_number.text))

    entry = db.scalars(
        select(HistoryEntry).where(HistoryEntry.customer_id == lyon.customer.id).limit(1)
    ).one()
    subject = f"{entry.subject_type}:{entry.subject_id}"
    found = _rows(app_client.get("/operator/audit", params={"subject": subject}).text)
    assert found and all(subject in row for _, row in found)
    assert len(found) == _count(
        db,
        HistoryEntry.subject_type == entry.subject_type,
        HistoryEntry.subject_id == entry.subject_id,
    )
    by_event = _rows(app_client.get("/operator/audit", params={"event": entry.event}).text)
    assert by_event and all(entry.event in event for event, _ in by_event)
    by_actor = app_client.get(
        "/operator/audit", params={"actor": entry.actor_label, "customer": lyon.customer.email}
    )
    assert all(entry.actor_label in row for _, row in _rows(by_actor.text))
    assert _rows(by_actor.text)

    today = clock.now().astimezone(ZoneInfo(STAFF_ZONE)).date()
    same_day = {"customer": madrid.customer.email, "since": today.isoformat()}
    assert len(_rows(app_client.get("/operator/audit", params=same_day).text)) == len(rows)
    later = {"customer": madrid.customer.email, "since": (today + timedelta(days=1)).isoformat()}
    assert _rows(app_client.get("/operator/audit", params=later).text) == []
    earlier = {"customer": madrid.customer.email, "until": (today - timedelta(days=1)).isoformat()}
    assert _rows(app_client.get("/operator/audit", params=earlier).text) == []


def test_a_wrong_date_is_named_next_to_its_field(app_client: TestClient) -> None:
    log_in(app_client, OPERATOR)
    response = app_client.get("/operator/audit", params={"since": "31/12/2026"})
    assert response.status_code == 422
    assert 'id="since-error"' in response.text and "YYYY-MM-DD" in response.text


def test_only_the_operator_opens_the_audit_trail(app_client: TestClient) -> None:
    log_in(app_client, "sales.madrid@caas.example")
    assert app_client.get("/operator/audit").status_code == 403
    assert 'href="/operator/audit"' not in app_client.get("/intranet/sales").text
