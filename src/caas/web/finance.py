"""The operator's finance page: revenue by month (a chart drawn on the server), by feature and by
country, refunds and failed payments, with a range and a country to filter by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, get_args
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response

from caas.billing import finance
from caas.catalog import service as catalog
from caas.core.api import ClockDep, DbSession
from caas.core.errors import InvalidInput
from caas.sales.schemas import CountryCode
from caas.web.csrf import csrf_protect
from caas.web.display import STAFF_ZONE
from caas.web.forms import FormErrors
from caas.web.pages import OperatorPage, PageRoute, language_of, render
from caas.web.strings import translate

router = APIRouter(
    prefix="/operator/finance",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

LISTED = 50  # refunds and failed payments shown on the page; the API pages through all

# Colours of the chart's features, in order (readable on white, told apart in the legend).
PALETTE = (
    "#0b5fff",
    "#127a46",
    "#b45309",
    "#7c3aed",
    "#b42318",
    "#0e7490",
    "#a16207",
    "#be185d",
    "#4a5568",
)

CHART_HEIGHT = 220
PLOT_TOP = 12
PLOT_BOTTOM = 190
BAR_WIDTH = 36
BAR_STEP = 64
AXIS_LEFT = 16


@dataclass(frozen=True)
class Segment:
    """One feature's part of a month's bar: a rectangle of the chart."""

    feature: str
    colour: str
    y: float
    height: float
    net_minor: int


@dataclass(frozen=True)
class Bar:
    month: str
    x: float
    segments: list[Segment]
    total_minor: int


@dataclass(frozen=True)
class Chart:
    """Revenue by month in one currency, stacked by feature (negative months below zero),
    with the same figures as a table for screen readers and for reading exact amounts."""

    currency: str
    width: int
    height: int
    bar_width: int
    zero_y: float
    bars: list[Bar]
    legend: list[tuple[str, str]]
    table: list[tuple[str, list[int], int]]  # month, net per legend feature, total


def revenue_charts(cells: list[finance.RevenueCell]) -> list[Chart]:
    """One chart per currency from revenue cells keyed (month, feature)."""
    currencies = sorted({cell.currency for cell in cells})
    return [
        _chart(currency, [c for c in cells if c.currency == currency]) for currency in currencies
    ]


def _chart(currency: str, cells: list[finance.RevenueCell]) -> Chart:
    months = sorted({cell.keys[0] for cell in cells})
    features = sorted({cell.keys[1] for cell in cells})
    colours = {feature: PALETTE[i % len(PALETTE)] for i, feature in enumerate(features)}
    amounts = {(cell.keys[0], cell.keys[1]): cell.net_minor for cell in cells}
    up = max((sum(max(amounts.get((m, f), 0), 0) for f in features) for m in months), default=0)
    down = max((sum(max(-amounts.get((m, f), 0), 0) for f in features) for m in months), default=0)
    span = (up + down) or 1
    plot = PLOT_BOTTOM - PLOT_TOP
    zero_y = PLOT_TOP + plot * up / span
    bars = []
    for index, month in enumerate(months):
        above, below = zero_y, zero_y
        segments = []
        for feature in features:
            amount = amounts.get((month, feature), 0)
            if amount == 0:
                continue
            height = plot * abs(amount) / span
            if amount > 0:
                above -= height
                y = above
            else:
                y = below
                below += height
            segments.append(
                Segment(feature, colours[feature], round(y, 2), round(height, 2), amount)
            )
        total = sum(amounts.get((month, feature), 0) for feature in features)
        bars.append(Bar(month, AXIS_LEFT + index * BAR_STEP, segments, total))
    table = [
        (
            month,
            [amounts.get((month, feature), 0) for feature in features],
            sum(amounts.get((month, f), 0) for f in features),
        )
        for month in months
    ]
    return Chart(
        currency=currency,
        width=max(AXIS_LEFT * 2 + len(months) * BAR_STEP, 240),
        height=CHART_HEIGHT,
        bar_width=BAR_WIDTH,
        zero_y=round(zero_y, 2),
        bars=bars,
        legend=[(feature, colours[feature]) for feature in features],
        table=table,
    )


def _day(value: str | None, name: str, errors: FormErrors, language: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.add(name, translate(language, "finance.bad_date"))
        return None


def default_start(today: date) -> date:
    """Where the page starts without a range: the first day of the month a year ago (twelve
    months and this one), so the page stays quick however long the books are."""
    months = today.year * 12 + today.month - 1 - 12
    return date(months // 12, months % 12 + 1, 1)


@router.get("")
def finance_page(
    request: Request,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
    start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    country: Annotated[str | None, Query(max_length=2)] = None,
) -> Response:
    language = language_of(request, user)
    countries = [catalog.get_country(session, code) for code in get_args(CountryCode)]
    country = country if country in {c.code for c in countries} else None
    errors = FormErrors()
    if start is None and end is None:
        start = default_start(clock.now().astimezone(ZoneInfo(STAFF_ZONE)).date()).isoformat()
    first, last = _day(start, "from", errors, language), _day(end, "to", errors, language)
    try:
        filters = finance.FinanceFilter(start=first, end=last, country=country)
    except InvalidInput:
        errors.add("to", translate(language, "finance.bad_range"))
        filters = finance.FinanceFilter(country=country)
    chosen = {"from": start or "", "to": end or "", "country": country or ""}
    refund_total, refunds = finance.refunds(session, filters, limit=LISTED)
    failed_total, failed = finance.failed_payments(session, filters, limit=LISTED)
    context: dict[str, Any] = {
        "chosen": chosen,
        "values": chosen,
        "errors": errors,
        "countries": [(c.code, c.name) for c in countries],
        "charts": revenue_charts(finance.revenue_cells(session, filters, ("month", "feature"))),
        "by_feature": finance.revenue(session, filters, "feature"),
        "by_country": finance.revenue(session, filters, "country"),
        "refunds": refunds,
        "refund_total": refund_total,
        "failed": failed,
        "failed_total": failed_total,
        "listed": LISTED,
        "export_query": urlencode(
            {
                name: day.isoformat()
                for name, day in (("from", filters.start), ("to", filters.end))
                if day
            }
        ),
    }
    return render(request, "operator/finance.html", context, status_code=422 if errors else 200)
