"""Routes of the store's time: the owner's subscriptions and planned or recurring options."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from caas.accounts.deps import CustomerUser
from caas.accounts.models import User
from caas.core.api import ClockDep, DbSession, answer_once, error_responses
from caas.core.idempotency import once
from caas.store import schedules, subscriptions
from caas.store.models import Schedule, Subscription
from caas.store.time_schemas import (
    OccurrenceRead,
    ScheduleCreate,
    ScheduleRead,
    SubscriptionRead,
)
from caas.vehicles.models import Vehicle

router = APIRouter(prefix="/api/v1", tags=["store"])

Vin = Annotated[
    str,
    Path(
        min_length=17,
        max_length=17,
        pattern="^[A-HJ-NPR-Za-hj-npr-z0-9]{17}$",
        description="The car's VIN",
        examples=["1M8GDM9AXKP042788"],
    ),
]
SubscriptionId = Annotated[int, Path(description="Database id of the subscription", examples=[7])]
ScheduleId = Annotated[int, Path(description="Database id of the schedule", examples=[4])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]


def subscription_read(session: Session, subscription: Subscription) -> SubscriptionRead:
    vin = session.get_one(Vehicle, subscription.vehicle_id).vin
    return SubscriptionRead(
        id=subscription.id,
        vin=vin,
        code=subscription.code,
        offer_id=subscription.offer_id,
        state=subscription.state,
        current_period_start=subscription.current_period_start,
        current_period_end=subscription.current_period_end,
        cancel_at_period_end=subscription.cancel_at_period_end,
        renews=subscription.state in subscriptions.RENEWING
        and not subscription.cancel_at_period_end,
        attempts=subscription.attempts,
        next_attempt_at=subscription.next_attempt_at,
    )


def schedule_read(session: Session, schedule: Schedule, *, now: datetime) -> ScheduleRead:
    vin = session.get_one(Vehicle, schedule.vehicle_id).vin
    end_date, end_time = schedules.end_time_text(schedule)
    zone = schedule.timezone
    return ScheduleRead(
        id=schedule.id,
        vin=vin,
        code=schedule.code,
        offer_id=schedule.offer_id,
        recurrence=schedule.recurrence,
        timezone=zone,
        start_date=schedule.start_date,
        start_time=schedule.start_time.strftime("%H:%M"),
        end_date=end_date,
        end_time=end_time,
        charge=schedule.charge,
        state=schedule.state,
        upcoming=[
            OccurrenceRead(
                id=item.occurrence.id if item.occurrence else None,
                starts_at=item.starts_at,
                ends_at=item.ends_at,
                starts_local=schedules.local_time(item.starts_at, zone),
                ends_local=schedules.local_time(item.ends_at, zone),
                state=item.state,
                failure_reason=item.occurrence.failure_reason if item.occurrence else None,
            )
            for item in schedules.upcoming(session, schedule, now=now)
        ],
    )


def schedule_request(body: ScheduleCreate) -> schedules.ScheduleRequest:
    """The body as the service takes it: "24:00" is midnight of the next day."""
    if body.end_time == "24:00":
        end = datetime.combine(body.end_date + timedelta(days=1), time(0, 0))
    else:
        end = datetime.combine(body.end_date, time.fromisoformat(body.end_time))
    return schedules.ScheduleRequest(
        offer_id=body.offer_id,
        recurrence=body.recurrence,
        start=datetime.combine(body.start_date, body.start_time.replace(tzinfo=None)),
        end=end,
        timezone=body.timezone,
        charge=body.charge,
        payment_method=body.card_token,
    )


@router.get(
    "/vehicles/{vin}/subscriptions",
    response_model=list[SubscriptionRead],
    summary="The subscriptions of your car, with their paid period and renewal",
    description="For the car's owner; anyone else gets 404.",
    responses=error_responses(401, 403, 404, 422),
)
def list_subscriptions(vin: Vin, session: DbSession, user: CustomerUser) -> list[SubscriptionRead]:
    return [
        subscription_read(session, subscription)
        for subscription in subscriptions.subscriptions_of(session, user=user, vin=vin)
    ]


def _subscription_command(
    session: Session,
    user: User,
    subscription_id: int,
    key: str | None,
    operation: str,
    now: datetime,
) -> dict[str, Any]:
    command = subscriptions.cancel if operation == "cancel" else subscriptions.resume

    def act() -> dict[str, Any]:
        subscription = command(session, user=user, subscription_id=subscription_id, now=now)
        return subscription_read(session, subscription).model_dump(mode="json")

    return once(
        session,
        principal=f"user:{user.id}",
        key=key,
        operation=f"subscription.{operation}:{subscription_id}",
        request={},
        now=now,
        act=act,
    )


@router.post(
    "/subscriptions/{subscription_id}/cancel",
    response_model=SubscriptionRead,
    summary="Cancel a subscription at the end of its paid period",
    description="The option runs until the paid period ends and nothing is refunded (the "
    "offer's end-of-period policy); until then it can be resumed. A past-due subscription "
    "stops at once (no retry is charged). 409 `subscription.not_renewing` when it has ended "
    "already; another customer's subscription is 404.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def cancel_subscription(
    subscription_id: SubscriptionId,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    answer = _subscription_command(
        session, user, subscription_id, idempotency_key, "cancel", clock.now()
    )
    return JSONResponse(answer)


@router.post(
    "/subscriptions/{subscription_id}/resume",
    response_model=SubscriptionRead,
    summary="Undo the cancellation of a subscription before its paid period ends",
    description="It renews again at the period's end. 409 `subscription.ended` once the "
    "period is over or it lapsed; another customer's subscription is 404.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def resume_subscription(
    subscription_id: SubscriptionId,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    answer = _subscription_command(
        session, user, subscription_id, idempotency_key, "resume", clock.now()
    )
    return JSONResponse(answer)


@router.post(
    "/vehicles/{vin}/schedules",
    response_model=ScheduleRead,
    status_code=201,
    summary="Plan an option once, every year or every week, in your local time",
    description="Uses the option's own-dates offer (price per started day). Each occurrence "
    "is charged when it starts, or everything now (`upfront`, once-only); a failed charge "
    "means that occurrence does not start and you are told. 422 for a window that ends "
    "before it starts, an unknown time zone, a weekly window longer than 7 days, a yearly "
    "one longer than a year, upfront on a recurring schedule, a window already started, or "
    "an offer that is not the option's custom offer for your car and country; 409 "
    "`store.not_eligible.*` when the car cannot have the option now.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def create_schedule(
    vin: Vin,
    body: ScheduleCreate,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        schedule = schedules.create_schedule(
            session, user=user, vin=vin, request=schedule_request(body), now=now
        )
        return schedule_read(session, schedule, now=now).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"schedule.create:{vin.upper()}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
        status_code=201,
    )


@router.get(
    "/vehicles/{vin}/schedules",
    response_model=list[ScheduleRead],
    summary="The planned and recurring options of your car, with their next occurrences",
    description="For the car's owner; anyone else gets 404.",
    responses=error_responses(401, 403, 404, 422),
)
def list_schedules(
    vin: Vin, session: DbSession, clock: ClockDep, user: CustomerUser
) -> list[ScheduleRead]:
    now = clock.now()
    return [
        schedule_read(session, schedule, now=now)
        for schedule in schedules.schedules_of(session, user=user, vin=vin)
    ]


@router.delete(
    "/schedules/{schedule_id}",
    response_model=ScheduleRead,
    summary="Cancel a planned or recurring option",
    description="Every occurrence still planned is cancelled (one paid up front is refunded); "
    "one already running runs to its end. Cancelling again changes nothing; 409 "
    "`schedule.finished` when nothing was left to cancel; another customer's schedule is 404.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def cancel_schedule(
    schedule_id: ScheduleId,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        schedule = schedules.cancel_schedule(session, user=user, schedule_id=schedule_id, now=now)
        return schedule_read(session, schedule, now=now).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"schedule.cancel:{schedule_id}",
        request={},
        now=now,
        act=act,
    )
