"""Planned and recurring options: occurrences at the customer's wall-clock times across the
daylight-saving changes (exact UTC instants), charged at each start, not started when the
charge fails, cancelled with their schedule, and never charged twice by a restarted worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.models import Payment
from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.outbox import enqueue
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.ota.models import ConfigurationVersion
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from caas.store import schedules
from caas.store.models import Entitlement, Occurrence, Offer, Schedule
from caas.store.schedules import Recurrence, started_days, window, windows_from
from tests.billing.conftest import PaymentSandbox, login
from tests.store.conftest import Owner, delivered_owner, offer, run_all_due
from tests.store.engine import engine_keys, signing

__all__ = ["engine_keys", "signing"]

MADRID = "Europe/Madrid"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text)


WEEKEND = Recurrence(
    kind="weekly", zone=MADRID, start=local("2026-03-21T08:00"), end=local("2026-03-22T22:00")
)


# --- the recurrence, pure ------------------------------------------------------------------


def test_a_weekly_window_keeps_its_madrid_wall_clock_across_the_march_change() -> None:
    # The clocks go forward on Sunday 29 March 2026 at 01:00 UTC (02:00 -> 03:00).
    assert window(WEEKEND, 0) == (at("2026-03-21T07:00"), at("2026-03-22T21:00"))
    # Saturday still in winter time, Sunday evening already in summer time.
    assert window(WEEKEND, 1) == (at("2026-03-28T07:00"), at("2026-03-29T20:00"))
    assert window(WEEKEND, 2) == (at("2026-04-04T06:00"), at("2026-04-05T20:00"))


def test_a_weekly_window_keeps_its_madrid_wall_clock_across_the_october_change() -> None:
    # The clocks go back on Sunday 25 October 2026 at 01:00 UTC (03:00 -> 02:00).
    found = list(zip(range(3), windows_from(WEEKEND, at("2026-10-17T00:00")), strict=False))
    assert [pair for _, pair in found] == [
        (at("2026-10-17T06:00"), at("2026-10-18T20:00")),
        (at("2026-10-24T06:00"), at("2026-10-25T21:00")),
        (at("2026-10-31T07:00"), at("2026-11-01T21:00")),
    ]


def test_winter_every_year_runs_to_the_end_of_february_in_local_time() -> None:
    winter = Recurrence(
        kind="yearly", zone=MADRID, start=local("2026-12-01T00:00"), end=local("2027-03-01T00:00")
    )
    assert window(winter, 0) == (at("2026-11-30T23:00"), at("2027-02-28T23:00"))
    # 2028 is a leap year: "28 February 24:00" is the end of February, 29th included.
    assert window(winter, 1) == (at("2027-11-30T23:00"), at("2028-02-29T23:00"))
    starts, ends = window(winter, 0)
    assert started_days(starts, ends) == 90


def test_a_weekend_is_charged_for_its_started_days() -> None:
    assert started_days(*window(WEEKEND, 0)) == 2  # 38 hours
    assert started_days(at("2026-01-01T00:00"), at("2026-01-02T00:00")) == 1


# --- over the API and through the worker ---------------------------------------------------


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    return delivered_owner(db, settings, clock)


@pytest.fixture
def custom(db: Session, owner: Owner) -> Offer:
    found = offer(db, owner.vehicle, "power_boost", "custom", net_minor=500)
    db.commit()
    return found


def _weekend(offer_id: int, token: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "offer_id": offer_id,
        "recurrence": "weekly",
        "start_date": "2026-03-21",
        "start_time": "08:00",
        "end_date": "2026-03-22",
        "end_time": "22:00",
        "card_token": token,
    }
    body.update(changes)
    return body


def _create(client: TestClient, vin: str, body: dict[str, Any], key: str) -> httpx.Response:
    return client.post(
        f"/api/v1/vehicles/{vin}/schedules", json=body, headers={"Idempotency-Key": key}
    )


def _occurrences(db: Session, schedule_id: int) -> list[Occurrence]:
    return list(
        db.scalars(
            select(Occurrence)
            .where(Occurrence.schedule_id == schedule_id)
            .order_by(Occurrence.starts_at)
        )
    )


def _windows(db: Session, owner: Owner) -> list[tuple[datetime, datetime | None]]:
    rows = db.scalars(
        select(Entitlement)
        .where(Entitlement.vehicle_id == owner.vehicle.id, Entitlement.source == "occurrence")
        .order_by(Entitlement.valid_from)
    )
    return [(row.valid_from, row.valid_until) for row in rows]


def _occurrence_payments(db: Session, owner: Owner) -> list[Payment]:
    return list(
        db.scalars(
            select(Payment)
            .where(Payment.customer_id == owner.customer.id, Payment.kind == "occurrence")
            .order_by(Payment.id)
        )
    )


def test_every_weekend_starts_at_its_local_time_across_the_change_and_is_charged_once(
    db: Session,
    owner: Owner,
    custom: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    clock.set(at("2026-03-20T12:00"))
    login(app_client, owner.user.email)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    created = _create(app_client, owner.vehicle.vin, _weekend(custom.id, token), "weekend-0001")
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["timezone"] == MADRID  # the customer's country's zone by default
    # Wall-clock times without an offset, both ends alike (a `time` would claim RFC 3339's).
    assert (schedule["start_time"], schedule["end_time"]) == ("08:00", "22:00")
    assert [(o["starts_at"], o["ends_at"]) for o in schedule["upcoming"]] == [
        ("2026-03-21T07:00:00Z", "2026-03-22T21:00:00Z"),
        ("2026-03-28T07:00:00Z", "2026-03-29T20:00:00Z"),
        ("2026-04-04T06:00:00Z", "2026-04-05T20:00:00Z"),
    ]
    assert schedule["upcoming"][2]["starts_local"] == "2026-04-04T08:00:00+02:00"
    again = _create(app_client, owner.vehicle.vin, _weekend(custom.id, token), "weekend-0001")
    assert again.json()["id"] == schedule["id"]  # the same key creates one schedule

    run_all_due(settings, sessions, clock, db)
    assert _occurrence_payments(db, owner) == []  # nothing charged before the start

    for starts in ("2026-03-21T07:00", "2026-03-28T07:00", "2026-04-04T06:00"):
        clock.set(at(starts))
        run_all_due(settings, sessions, clock, db)
        run_all_due(settings, sessions, clock, db)  # a restarted worker: nothing more

    assert _windows(db, owner) == [
        (at("2026-03-21T07:00"), at("2026-03-22T21:00")),
        (at("2026-03-28T07:00"), at("2026-03-29T20:00")),
        (at("2026-04-04T06:00"), at("2026-04-05T20:00")),
    ]
    payments = _occurrence_payments(db, owner)
    # 2 started days x 5.00 + 21 % VAT, each weekend, captured once.
    assert [(p.state, p.amount_minor) for p in payments] == [("captured", 1_210)] * 3
    assert all(payment_sandbox.captures(p.reference) == 1 for p in payments)
    occurrences = _occurrences(db, schedule["id"])
    assert [o.state for o in occurrences] == ["started", "started", "started", "planned"]
    assert occurrences[-1].starts_at == at("2026-04-11T06:00")  # the next one, planned ahead
    started = db.scalars(
        select(ConfigurationVersion.reason).where(
            ConfigurationVersion.vehicle_id == owner.vehicle.id,
            ConfigurationVersion.reason == "occurrence.started",
        )
    ).all()
    assert len(started) == 3

    # A duplicated start message of a started occurrence repeats nothing.
    enqueue(
        db,
        topic=schedules.START_TOPIC,
        payload={"occurrence_id": occurrences[0].id},
        dedupe_key="a stray copy of the first start",
        now=clock.now(),
    )
    db.commit()
    run_all_due(settings, sessions, clock, db)
    assert len(_occurrence_payments(db, owner)) == 3
    assert len(_windows(db, owner)) == 3


def test_an_occurrence_whose_charge_fails_does_not_start_and_the_next_is_still_planned(
    db: Session,
    owner: Owner,
    custom: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    clock.set(at("2026-03-20T12:00"))
    login(app_client, owner.user.email)
    token = payment_sandbox.token(CARD_DECLINED)
    created = _create(app_client, owner.vehicle.vin, _weekend(custom.id, token), "weekend-0002")
    assert created.status_code == 201, created.text

    clock.set(at("2026-03-21T07:00"))
    run_all_due(settings, sessions, clock, db)

    first, second = _occurrences(db, created.json()["id"])
    assert (first.state, first.failure_reason) == ("failed", "card_declined")
    assert (second.state, second.starts_at) == ("planned", at("2026-03-28T07:00"))
    assert _windows(db, owner) == []
    (payment,) = _occurrence_payments(db, owner)
    assert payment.state == "failed"
    (told,) = db.scalars(
        select(Notification).where(
            Notification.user_id == owner.user.id, Notification.kind == "occurrence.failed"
        )
    ).all()
    assert "rechazada" in told.body and "21 de marzo de 2026, 8:00" in told.body
    events = [entry.event for entry in subject_history(db, "occurrence", first.id)]
    assert events == ["occurrence.failed"]


def test_a_cancelled_schedule_starts_nothing_more(
    db: Session,
    owner: Owner,
    custom: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    clock.set(at("2026-03-20T12:00"))
    login(app_client, owner.user.email)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    created = _create(app_client, owner.vehicle.vin, _weekend(custom.id, token), "weekend-0003")
    schedule_id = created.json()["id"]
    clock.set(at("2026-03-21T07:00"))
    run_all_due(settings, sessions, clock, db)

    cancelled = app_client.delete(
        f"/api/v1/schedules/{schedule_id}", headers={"Idempotency-Key": "cancel-weekend-1"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    # The running weekend runs to its end; the next one is cancelled.
    assert [o["state"] for o in cancelled.json()["upcoming"]] == ["started"]
    clock.set(at("2026-03-28T07:00"))
    run_all_due(settings, sessions, clock, db)
    assert [o.state for o in _occurrences(db, schedule_id)] == ["started", "cancelled"]
    assert len(_occurrence_payments(db, owner)) == 1
    listed = app_client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/schedules")
    assert [(s["id"], s["state"]) for s in listed.json()] == [(schedule_id, "cancelled")]

    stranger = delivered_owner(db, settings, clock)
    login(app_client, stranger.user.email)
    other = app_client.delete(
        f"/api/v1/schedules/{schedule_id}", headers={"Idempotency-Key": "cancel-weekend-2"}
    )
    assert (other.status_code, other.json()["code"]) == (404, "schedule.not_found")


def test_a_once_only_window_paid_up_front_is_charged_at_once_and_starts_at_its_time(
    db: Session,
    owner: Owner,
    custom: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    clock.set(at("2026-11-20T12:00"))
    login(app_client, owner.user.email)
    body = {
        "offer_id": custom.id,
        "recurrence": "once",
        "start_date": "2026-12-01",
        "start_time": "00:00",
        "end_date": "2026-12-03",
        "end_time": "24:00",
        "charge": "upfront",
        "card_token": payment_sandbox.token(CARD_SUCCEEDS),
    }
    created = _create(app_client, owner.vehicle.vin, body, "winter-once-1")
    assert created.status_code == 201, created.text
    assert created.json()["end_date"] == "2026-12-03"
    assert created.json()["end_time"] == "24:00"
    run_all_due(settings, sessions, clock, db)
    (payment,) = _occurrence_payments(db, owner)
    assert (payment.state, payment.amount_minor) == ("captured", 3 * 605)
    assert _windows(db, owner) == []  # paid, not started yet

    clock.set(at("2026-11-30T23:00"))
    run_all_due(settings, sessions, clock, db)
    assert _windows(db, owner) == [(at("2026-11-30T23:00"), at("2026-12-03T23:00"))]
    assert db.get_one(Schedule, created.json()["id"]).state == "finished"
    assert len(_occurrence_payments(db, owner)) == 1


def test_a_once_only_window_paid_up_front_and_cancelled_before_it_starts_is_refunded(
    db: Session,
    owner: Owner,
    custom: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    clock.set(at("2026-11-20T12:00"))
    login(app_client, owner.user.email)
    body = {
        "offer_id": custom.id,
        "recurrence": "once",
        "start_date": "2026-12-01",
        "start_time": "00:00",
        "end_date": "2026-12-01",
        "end_time": "24:00",
        "charge": "upfront",
        "card_token": payment_sandbox.token(CARD_SUCCEEDS),
    }
    created = _create(app_client, owner.vehicle.vin, body, "winter-once-2")
    run_all_due(settings, sessions, clock, db)
    (payment,) = _occurrence_payments(db, owner)
    assert payment.state == "captured"

    cancelled = app_client.delete(
        f"/api/v1/schedules/{created.json()['id']}", headers={"Idempotency-Key": "cancel-once-2"}
    )
    assert cancelled.status_code == 200, cancelled.text
    run_all_due(settings, sessions, clock, db)
    run_all_due(settings, sessions, clock, db)
    db.refresh(payment)
    assert payment.refunded_minor == payment.amount_minor == 605
    clock.set(at("2026-11-30T23:00"))
    run_all_due(settings, sessions, clock, db)
    assert _windows(db, owner) == []


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"end_date": "2026-03-21", "end_time": "07:00"}, "end_date", "schedule.end_before_start"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "schedule.unknown_timezone"),
        ({"end_date": "2026-03-29", "end_time": "09:00"}, "end_date", "schedule.weekly_too_long"),
        ({"charge": "upfront"}, "charge", "schedule.upfront_once_only"),
        ({"recurrence": "once", "start_date": "2026-03-01"}, "start_date", "schedule.in_the_past"),
        ({"end_time": "25:00"}, "end_time", "invalid_input"),
    ],
)
def test_a_schedule_that_cannot_be_planned_is_refused_with_the_field_at_fault(
    db: Session,
    owner: Owner,
    custom: Offer,
    clock: FixedClock,
    app_client: TestClient,
    changes: dict[str, Any],
    field: str,
    code: str,
) -> None:
    clock.set(at("2026-03-20T12:00"))
    login(app_client, owner.user.email)
    body = _weekend(custom.id, "tok_whatever", **changes)
    refused = _create(app_client, owner.vehicle.vin, body, f"refused-{code}")
    assert refused.status_code == 422, refused.text
    assert (refused.json()["field"], refused.json()["code"]) == (field, code)
    assert db.scalars(select(Schedule).where(Schedule.vehicle_id == owner.vehicle.id)).all() == []


def test_a_schedule_needs_the_options_custom_offer(
    db: Session, owner: Owner, clock: FixedClock, app_client: TestClient
) -> None:
    clock.set(at("2026-03-20T12:00"))
    window_offer = offer(db, owner.vehicle, "power_boost", "window", "1D")
    db.commit()
    login(app_client, owner.user.email)
    refused = _create(
        app_client, owner.vehicle.vin, _weekend(window_offer.id, "tok_whatever"), "not-custom"
    )
    assert (refused.status_code, refused.json()["field"]) == (422, "offer_id")
