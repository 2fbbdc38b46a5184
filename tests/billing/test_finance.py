"""Finance views: revenue by feature, country and month net of refunds, currencies apart,
refunds and failed payments, the CSV exports, and who may see them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from caas import cli
from caas.billing import finance, ledger, rules, service
from caas.billing.finance import FinanceFilter
from caas.billing.invoices import credit_notes_of, invoice_lines, invoice_of_payment
from caas.billing.models import Invoice, LedgerEntry, Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.errors import InvalidInput
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from tests.billing.conftest import PaymentSandbox, buyer, deliver, login, pay

ACTOR = Actor(kind="operator", label="finance-test")
OPERATOR = "operator@caas.example"
WINTER = "Winter traction, 1 month"
BOOST = "Power boost, 1 day"


def _store_payment(
    db: Session,
    settings: Settings,
    clock: FixedClock,
    sandbox: PaymentSandbox,
    *,
    customer_id: int,
    lines: list[rules.LineDraft],
    key: str,
    currency: str = "EUR",
    country: str = "ES",
    card: str = CARD_SUCCEEDS,
) -> Payment:
    token = sandbox.token(card)
    payment = service.begin_store_payment(
        db,
        customer_id=customer_id,
        kind="option",
        lines=lines,
        currency=currency,
        country=country,
        payment_method=token,
        idempotency_key=key,
        actor=ACTOR,
        now=clock.now(),
    )
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
        if payment.state == "authorised":
            payment = service.capture_payment(
                db, payment, provider=provider, actor=ACTOR, now=clock.now()
            )
    db.commit()
    return payment


def _refund(
    db: Session, settings: Settings, payment: Payment, amount: int, clock: FixedClock
) -> None:
    with SandboxProvider.from_settings(settings) as provider:
        service.refund_payment(
            db, payment, amount_minor=amount, provider=provider, actor=ACTOR, now=clock.now()
        )
    db.commit()


@dataclass(frozen=True)
class Books:
    """A Spanish customer's EUR purchase (partly refunded the next day), a GBP one, a
    French customer's EUR purchase and a declined card."""

    eur: Payment
    gbp: Payment
    french: Payment
    declined: Payment
    first_day: date
    refund_day: date


@pytest.fixture
def books(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> Books:
    spanish = buyer(db, settings, clock).customer.id
    french_id = buyer(db, settings, clock, country="FR").customer.id
    first_day = clock.now().date()
    eur = _store_payment(
        db,
        settings,
        clock,
        payment_sandbox,
        customer_id=spanish,
        lines=[rules.priced_line(WINTER, 1_000, 2100), rules.priced_line(BOOST, 999, 2100)],
        key="fin-eur-1",
    )
    gbp = _store_payment(
        db,
        settings,
        clock,
        payment_sandbox,
        customer_id=spanish,
        lines=[rules.priced_line(WINTER, 2_000, 2100)],
        key="fin-gbp-1",
        currency="GBP",
    )
    french = _store_payment(
        db,
        settings,
        clock,
        payment_sandbox,
        customer_id=french_id,
        lines=[rules.priced_line(BOOST, 500, 2000)],
        key="fin-fr-1",
        country="FR",
    )
    declined = _store_payment(
        db,
        settings,
        clock,
        payment_sandbox,
        customer_id=french_id,
        lines=[rules.priced_line(BOOST, 700, 2000)],
        key="fin-fr-declined",
        country="FR",
        card=CARD_DECLINED,
    )
    assert [p.state for p in (eur, gbp, french, declined)] == [
        "captured",
        "captured",
        "captured",
        "failed",
    ]
    clock.advance(timedelta(days=1))
    _refund(db, settings, eur, 1_001, clock)
    return Books(eur, gbp, french, declined, first_day, clock.now().date())


def _by_key(cells: list[finance.RevenueCell]) -> dict[tuple[str, str], int]:
    return {(cell.keys[0], cell.currency): cell.net_minor for cell in cells}


def _net_by_description(db: Session, invoice: Invoice) -> dict[str, int]:
    return {line.description: line.net_minor for line in invoice_lines(db, invoice.id)}


def test_revenue_by_feature_is_invoiced_less_credit_notes_currencies_apart(
    db: Session, books: Books
) -> None:
    invoice = invoice_of_payment(db, books.eur.id)
    assert invoice is not None
    [note] = credit_notes_of(db, invoice.id)
    credited = {
        line.description.removeprefix("Abono: "): line.net_minor
        for line in invoice_lines(db, note.id)
    }
    assert credited and all(amount < 0 for amount in credited.values())
    invoiced = _net_by_description(db, invoice)

    found = finance.revenue(db, FinanceFilter(), "feature")
    by_feature = _by_key(found.cells)
    assert by_feature[(WINTER, "EUR")] == invoiced[WINTER] + credited.get(WINTER, 0)
    assert by_feature[(BOOST, "EUR")] == invoiced[BOOST] + credited.get(BOOST, 0) + 500
    assert by_feature[(WINTER, "GBP")] == 2_000
    assert found.totals == {
        "EUR": invoice.net_minor + note.net_minor + 500,
        "GBP": 2_000,
    }


def test_before_a_refund_revenue_per_feature_is_the_ledgers(db: Session, books: Books) -> None:
    captured = select(LedgerEntry.account, LedgerEntry.currency, LedgerEntry.credit_minor).where(
        LedgerEntry.kind == "capture", LedgerEntry.account.startswith("revenue:")
    )
    posted: dict[tuple[str, str], int] = {}
    for account, currency, credit in db.execute(captured):
        key = (account.removeprefix("revenue:"), currency)
        posted[key] = posted.get(key, 0) + credit
    first_day = FinanceFilter(end=books.first_day)
    assert _by_key(finance.revenue(db, first_day, "feature").cells) == posted
    assert ledger.revenue(WINTER) in {account for account, *_ in db.execute(captured)}


def test_revenue_by_country_and_month_and_the_filters(db: Session, books: Books) -> None:
    everything = finance.revenue(db, FinanceFilter(), "country")
    by_country = _by_key(everything.cells)
    assert by_country[("FR", "EUR")] == 500
    assert by_country[("ES", "GBP")] == 2_000
    assert ("FR", "GBP") not in by_country

    month = books.first_day.strftime("%Y-%m")
    assert (
        _by_key(finance.revenue(db, FinanceFilter(), "month").cells)[(month, "EUR")]
        == (everything.totals["EUR"])
    )
    french = finance.revenue(db, FinanceFilter(country="FR"), "feature")
    assert french.totals == {"EUR": 500}
    pounds = finance.revenue(db, FinanceFilter(currency="GBP"), "country")
    assert pounds.totals == {"GBP": 2_000}

    # The refund is a credit note of the next day: that day alone is negative revenue.
    refund_day = finance.revenue(db, FinanceFilter(start=books.refund_day), "feature")
    assert refund_day.totals["EUR"] < 0 and "GBP" not in refund_day.totals
    later = books.refund_day + timedelta(days=1)
    assert finance.revenue(db, FinanceFilter(start=later), "feature").totals == {}
    with pytest.raises(InvalidInput):
        FinanceFilter(start=later, end=books.first_day)


def test_refunds_list_the_credit_note_with_its_invoice_and_who_refunded(
    db: Session, books: Books
) -> None:
    invoice = invoice_of_payment(db, books.eur.id)
    assert invoice is not None
    total, found = finance.refunds(db, FinanceFilter())
    assert total == 1
    [refund] = found
    assert (refund.corrects_number, refund.gross_minor, refund.currency) == (
        invoice.number,
        1_001,
        "EUR",
    )
    assert refund.issue_date == books.refund_day and refund.country == "ES"
    assert refund.refunded_by == "operator:finance-test"
    assert finance.refunds(db, FinanceFilter(end=books.first_day)) == (0, [])


def test_failed_payments_list_the_declined_card(db: Session, books: Books) -> None:
    total, found = finance.failed_payments(db, FinanceFilter())
    assert total == 1
    [failed] = found
    assert (failed.payment_id, failed.amount_minor, failed.country) == (
        books.declined.id,
        books.declined.amount_minor,
        "FR",
    )
    assert failed.failure_code == books.declined.failure_code is not None
    assert finance.failed_payments(db, FinanceFilter(country="ES"))[0] == 0


def test_amounts_are_written_as_decimals_of_their_currency() -> None:
    assert finance.decimal_text(1234, "EUR") == "12.34"
    assert finance.decimal_text(-5, "EUR") == "-0.05"
    assert finance.decimal_text(100, "GBP") == "1.00"
    assert finance.decimal_text(500, "JPY") == "500"


# --- over HTTP -------------------------------------------------------------------------------


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_invoice_csv_reads_back_as_the_invoices(
    app_client: TestClient, db: Session, books: Books
) -> None:
    login(app_client, OPERATOR)
    response = app_client.get("/api/v1/finance/invoices.csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = _csv_rows(response.text)
    assert list(rows[0]) == list(finance.INVOICE_COLUMNS)
    invoices = db.scalars(select(Invoice).order_by(Invoice.id)).all()
    assert [row["number"] for row in rows] == [invoice.number for invoice in invoices]
    for row, invoice in zip(rows, invoices, strict=True):
        assert Decimal(row["gross"]) * 100 == invoice.gross_minor
        assert Decimal(row["net"]) * 100 == invoice.net_minor
        assert Decimal(row["vat"]) * 100 == invoice.vat_minor
        assert (row["currency"], row["kind"], row["corrects_number"]) == (
            invoice.currency,
            invoice.kind,
            invoice.corrects_number or "",
        )
    assert {row["country"] for row in rows} == {"ES", "FR"}

    first_day = app_client.get(
        "/api/v1/finance/invoices.csv", params={"from": books.first_day, "to": books.first_day}
    )
    assert "credit_note" not in {row["kind"] for row in _csv_rows(first_day.text)}


def test_the_ledger_csv_has_every_line_and_balances(
    app_client: TestClient, db: Session, books: Books
) -> None:
    login(app_client, OPERATOR)
    rows = _csv_rows(app_client.get("/api/v1/finance/ledger.csv").text)
    entries = db.scalars(select(LedgerEntry).order_by(LedgerEntry.id)).all()
    assert [int(row["id"]) for row in rows] == [entry.id for entry in entries]
    assert {row["idempotency_key"] for row in rows} >= {f"payment:{books.eur.reference}:capture"}
    for currency in ("EUR", "GBP"):
        mine = [row for row in rows if row["currency"] == currency]
        assert sum(Decimal(r["debit"]) for r in mine) == sum(Decimal(r["credit"]) for r in mine)
    next_day = _csv_rows(
        app_client.get("/api/v1/finance/ledger.csv", params={"from": books.refund_day}).text
    )
    assert {row["kind"] for row in next_day} == {"refund"}


def test_the_json_routes_answer_the_operator(app_client: TestClient, books: Books) -> None:
    login(app_client, OPERATOR)
    revenue = app_client.get("/api/v1/finance/revenue", params={"group": "country"}).json()
    assert {(row["key"], row["net"]["currency"]) for row in revenue["rows"]} >= {
        ("ES", "EUR"),
        ("ES", "GBP"),
        ("FR", "EUR"),
    }
    assert sorted(total["currency"] for total in revenue["totals"]) == ["EUR", "GBP"]
    refunds = app_client.get("/api/v1/finance/refunds").json()
    assert refunds["total"] == 1 and refunds["items"][0]["gross"]["amount_minor"] == 1_001
    failed = app_client.get("/api/v1/finance/failed-payments", params={"limit": 1}).json()
    assert failed["total"] == 1 and failed["items"][0]["payment_id"] == books.declined.id
    bad = app_client.get(
        "/api/v1/finance/revenue", params={"from": "2026-02-01", "to": "2026-01-01"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "to"
    assert app_client.get("/api/v1/finance/revenue", params={"from": "soon"}).status_code == 422
    assert app_client.get("/api/v1/finance/revenue", params={"group": "x"}).status_code == 422


def test_only_operators_see_the_finance_routes(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    routes = [
        "/api/v1/finance/revenue",
        "/api/v1/finance/refunds",
        "/api/v1/finance/failed-payments",
        "/api/v1/finance/invoices.csv",
        "/api/v1/finance/ledger.csv",
    ]
    for route in routes:
        assert app_client.get(route).status_code == 401
    customer = buyer(db, settings, clock)
    login(app_client, customer.customer.email)
    for route in routes:
        assert app_client.get(route).status_code == 403
    app_client.cookies.clear()
    login(app_client, "sales.madrid@caas.example")
    assert app_client.get(routes[0]).status_code == 403


def test_a_sales_deposit_is_vehicle_sale_revenue(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock, country="IT")
    login(app_client, who.customer.email)
    paid = pay(
        app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_SUCCEEDS), "fin-deposit-1"
    )
    assert paid.status_code == 201, paid.text
    found = finance.revenue(db, FinanceFilter(country="IT"), "feature")
    invoice = invoice_of_payment(db, paid.json()["id"])
    assert invoice is not None
    assert _by_key(found.cells) == {(finance.VEHICLE_SALE, "EUR"): invoice.net_minor}


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def command(
    monkeypatch: pytest.MonkeyPatch, sessions: sessionmaker[Session], settings: Settings
) -> Iterator[None]:
    """`caas billing export` on the test's own database."""

    @dataclass
    class TestRuntime:
        sessions: sessionmaker[Session]

        def close(self) -> None:
            pass

    monkeypatch.setattr(cli, "_settings", lambda: settings)
    monkeypatch.setattr(
        "caas.runtime.Runtime.connect", lambda _settings: TestRuntime(sessions=sessions)
    )
    yield


def test_the_export_command_writes_the_invoices_and_the_ledger(
    command: None, db: Session, books: Books, tmp_path: Path
) -> None:
    out = tmp_path / "invoices.csv"
    day = books.first_day.isoformat()
    result = CliRunner().invoke(
        cli.app, ["billing", "export", "invoices", "--from", day, "--to", day, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = _csv_rows(out.read_text())
    first_day = db.scalars(
        select(Invoice.number).where(Invoice.issue_date == books.first_day).order_by(Invoice.id)
    ).all()
    assert [row["number"] for row in rows] == list(first_day) and len(rows) == 3
    assert f"{len(rows)} invoices written to {out}" in result.output

    ledger_out = tmp_path / "ledger.csv"
    result = CliRunner().invoke(cli.app, ["billing", "export", "ledger", "--out", str(ledger_out)])
    assert result.exit_code == 0, result.output
    count = len(db.scalars(select(LedgerEntry.id)).all())
    assert len(_csv_rows(ledger_out.read_text())) == count


@pytest.mark.parametrize(
    "arguments",
    [
        ["invoices", "--from", "yesterday", "--out", "x.csv"],
        ["ledger", "--from", "2026-02-01", "--to", "2026-01-01", "--out", "x.csv"],
        ["payments", "--out", "x.csv"],
    ],
)
def test_a_bad_export_is_one_line_and_exit_2(
    command: None, arguments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.app, ["billing", "export", *arguments])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_a_chargeback_subtracts_its_net_share_in_its_month(
    app_client: TestClient, db: Session, books: Books, payment_sandbox: PaymentSandbox
) -> None:
    before = finance.revenue(db, FinanceFilter(), "feature").totals["GBP"]
    assert books.gbp.provider_ref is not None
    taken = httpx.post(
        f"{payment_sandbox.url}/sim/authorizations/{books.gbp.provider_ref}/chargeback",
        json={"reason": "fraudulent"},
    )
    assert taken.status_code == 201, taken.text
    event = payment_sandbox.inbox.wait_for(books.gbp.reference, "chargeback.created")
    assert deliver(app_client, event)["state"] == "charged_back"
    db.expire_all()
    after = finance.revenue(db, FinanceFilter(), "feature")
    # The whole 24.20 taken back: its net share is the invoice's 20.00.
    assert _by_key(after.cells)[(finance.CHARGEBACKS, "GBP")] == -2_000
    assert after.totals["GBP"] == before - 2_000 == 0
    assert after.totals["EUR"] == finance.revenue(db, FinanceFilter(), "country").totals["EUR"]
