"""The operator's audit trail: every recorded change, newest first, searchable by customer,
subject, event, actor and date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import ColumnElement, func, or_, select

from caas.core.api import DbSession
from caas.core.errors import InvalidInput
from caas.core.history import HistoryEntry
from caas.sales.models import Customer
from caas.web import display
from caas.web.csrf import csrf_protect
from caas.web.forms import FormErrors
from caas.web.pages import OperatorPage, PageRoute, render

router = APIRouter(
    prefix="/operator",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditRow:
    entry: HistoryEntry
    customer_name: str | None


def _day(value: str, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("give the day as YYYY-MM-DD", field=field) from None


def _start_of(day: date) -> datetime:
    """The day's first moment where the staff work (the dates on the page are theirs)."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(display.STAFF_ZONE))


def _conditions(chosen: dict[str, str]) -> list[ColumnElement[bool]]:
    """What the rows must match, from the filters the reader filled in."""
    conditions: list[ColumnElement[bool]] = []
    customer = chosen["customer"].strip()
    if customer.isdigit():
        conditions.append(HistoryEntry.customer_id == int(customer))
    elif customer:
        pattern = f"%{customer}%"
        people = select(Customer.id).where(
            or_(
                Customer.email.ilike(pattern),
                (Customer.first_name + " " + Customer.last_name).ilike(pattern),
            )
        )
        conditions.append(HistoryEntry.customer_id.in_(people))
    subject = chosen["subject"].strip()
    if subject:
        kind, _, number = subject.partition(":")
        conditions.append(HistoryEntry.subject_type == kind.strip())
        if number.strip().isdigit():
            conditions.append(HistoryEntry.subject_id == int(number))
    if chosen["event"].strip():
        conditions.append(HistoryEntry.event.ilike(f"%{chosen['event'].strip()}%"))
    if chosen["actor"].strip():
        conditions.append(HistoryEntry.actor_label.ilike(f"%{chosen['actor'].strip()}%"))
    since = _day(chosen["since"], "since")
    until = _day(chosen["until"], "until")
    if since is not None:
        conditions.append(HistoryEntry.at >= _start_of(since))
    if until is not None:
        conditions.append(HistoryEntry.at < _start_of(until + timedelta(days=1)))
    return conditions


@router.get("/audit")
def audit_page(
    request: Request,
    session: DbSession,
    _: OperatorPage,
    customer: Annotated[str, Query(max_length=100)] = "",
    subject: Annotated[str, Query(max_length=60)] = "",
    event: Annotated[str, Query(max_length=80)] = "",
    actor: Annotated[str, Query(max_length=200)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    chosen = {
        "customer": customer,
        "subject": subject,
        "event": event,
        "actor": actor,
        "since": since,
        "until": until,
    }
    context: dict[str, Any] = {
        "chosen": chosen,
        "page": page,
        "query": urlencode({key: value for key, value in chosen.items() if value}),
    }
    try:
        conditions = _conditions(chosen)
        total = session.scalar(select(func.count(HistoryEntry.id)).where(*conditions)) or 0
        rows = session.execute(
            select(HistoryEntry, Customer)
            .where(*conditions)
            .outerjoin(Customer, Customer.id == HistoryEntry.customer_id)
            .order_by(HistoryEntry.at.desc(), HistoryEntry.id.desc())
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        ).all()
    except InvalidInput as error:
        context.update(errors=FormErrors.of(error), rows=[], total=0, pages=1)
        return render(request, "operator/audit.html", context, status_code=422)
    context.update(
        rows=[
            AuditRow(entry, f"{person.first_name} {person.last_name}" if person else None)
            for entry, person in rows
        ],
        total=total,
        pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
    )
    return render(request, "operator/audit.html", context)
