"""The operator's finance page: the chart and its table, revenue by feature and country,
refunds, failed payments, the filters and the CSV links; nobody else opens it."""

from __future__ import annotations

import re
from datetime import date

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.billing import finance
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.web.finance import PLOT_BOTTOM, PLOT_TOP, default_start, revenue_charts
from tests.billing.conftest import buyer
from tests.billing.test_finance import BOOST, WINTER, Books, books  # noqa: F401 (the fixture)
from tests.web.support import log_in, submit, text_of

OPERATOR = "operator@caas.example"


def test_the_operator_reads_revenue_refunds_and_failed_payments(
    app_client: TestClient,
    books: Books,  # noqa: F811
) -> None:
    log_in(app_client, OPERATOR)
    response = app_client.get("/operator/finance")
    assert response.status_code == 200, response.text
    html = response.text
    assert 'href="/operator/finance"' in html  # in the operator's menu
    # One chart per currency, each with its figures as a table.
    assert re.findall(r'<svg role="img"[^>]*data-currency="(\w+)"', html) == ["EUR", "GBP"]
    assert "Net revenue by month in EUR, stacked by feature" in html
    page = text_of(html)
    assert WINTER in page and BOOST in page
    assert "ES EUR" in page and "FR EUR" in page and "ES GBP" in page
    assert "Total GBP £20.00" in page
    assert books.eur.reference not in page  # the page names invoices, not provider references
    assert "Refunds 1" in page and "€10.01" in page
    assert "Failed payments 1" in page and "card_declined" in page
    # Without a range, the last twelve months and this one: the links export the same.
    assert re.search(r'name="from"\s+value="2025-01-01"', html)
    assert 'href="/api/v1/finance/invoices.csv?from=2025-01-01"' in html
    assert 'href="/api/v1/finance/ledger.csv?from=2025-01-01"' in html
    every = app_client.get("/operator/finance", params={"from": "", "to": ""}).text
    assert 'href="/api/v1/finance/invoices.csv"' in every and "Total GBP £20.00" in text_of(every)


def test_the_default_range_starts_a_year_before_this_months_first_day() -> None:
    assert default_start(date(2026, 1, 15)) == date(2025, 1, 1)
    assert default_start(date(2026, 12, 31)) == date(2025, 12, 1)


def test_the_filters_narrow_the_page_and_the_csv_links(
    app_client: TestClient,
    books: Books,  # noqa: F811
) -> None:
    log_in(app_client, OPERATOR)
    day = books.refund_day.isoformat()
    html = app_client.get("/operator/finance", params={"from": day, "country": "ES"}).text
    page = text_of(html)
    assert "GBP" not in page  # the pounds were invoiced the day before
    assert "No failed payments in this range." in page
    assert f'href="/api/v1/finance/invoices.csv?from={day}"' in html
    french = text_of(app_client.get("/operator/finance", params={"country": "FR"}).text)
    assert "No refunds in this range." in french and "GBP" not in french
    bad = app_client.get("/operator/finance", params={"from": "2026-02-01", "to": "2026-01-01"})
    assert bad.status_code == 422
    assert "The end is before the start." in bad.text
    assert app_client.get("/operator/finance", params={"from": "someday"}).status_code == 422


def test_the_page_speaks_spanish(app_client: TestClient, books: Books) -> None:  # noqa: F811
    log_in(app_client, OPERATOR)
    submit(app_client, "/operator/finance", "/language", {"lang": "es", "next": "/"})
    page = text_of(app_client.get("/operator/finance").text)
    assert "Ingresos por función" in page and "Pagos fallidos" in page


def test_only_the_operator_opens_the_finance_page(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    customer = buyer(db, settings, clock)
    log_in(app_client, customer.customer.email)
    assert app_client.get("/operator/finance").status_code in (403, 404)
    app_client.cookies.clear()
    log_in(app_client, "sales.madrid@caas.example")
    assert app_client.get("/operator/finance").status_code in (403, 404)
    app_client.cookies.clear()
    anonymous = app_client.get("/operator/finance", follow_redirects=False)
    assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]


def test_the_chart_stacks_features_above_zero_and_takings_back_below() -> None:
    cells = [
        finance.RevenueCell(("2026-01", "vehicle sale"), "EUR", 3_000),
        finance.RevenueCell(("2026-01", "winter_traction"), "EUR", 1_000),
        finance.RevenueCell(("2026-02", "chargebacks"), "EUR", -1_000),
        finance.RevenueCell(("2026-02", "vehicle sale"), "EUR", 2_000),
        finance.RevenueCell(("2026-01", "vehicle sale"), "GBP", 500),
    ]
    euros, pounds = revenue_charts(cells)
    assert (euros.currency, pounds.currency) == ("EUR", "GBP")
    january, february = euros.bars
    # 4,000 up at most and 1,000 down: zero sits four fifths down the plot.
    plot = PLOT_BOTTOM - PLOT_TOP
    assert euros.zero_y == PLOT_TOP + plot * 4 / 5
    assert sum(s.height for s in january.segments) == pytest.approx(plot * 4 / 5)
    assert all(s.y + s.height <= euros.zero_y + 0.01 for s in january.segments)
    [taken] = [s for s in february.segments if s.net_minor < 0]
    assert taken.y == pytest.approx(euros.zero_y) and taken.height == pytest.approx(plot / 5)
    assert euros.table == [
        ("2026-01", [0, 3_000, 1_000], 4_000),
        ("2026-02", [-1_000, 2_000, 0], 1_000),
    ]
    assert [feature for feature, _ in euros.legend] == [
        "chargebacks",
        "vehicle sale",
        "winter_traction",
    ]
