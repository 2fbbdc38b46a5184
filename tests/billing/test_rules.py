"""The arithmetic of invoices and the payment's states, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.eu import vat

from caas.billing import rules
from caas.core.errors import Conflict
from caas.core.money import Money
from caas.sales.rules import QuoteLine, quote


def test_vat_is_rounded_half_up_on_each_line() -> None:
    # 21 % of 0.50 is 0.105: half a cent, rounded up; of 0.49 it is 0.1029, rounded down.
    assert rules.priced_line("a", 50, 2100).vat_minor == 11
    assert rules.priced_line("b", 49, 2100).vat_minor == 10
    # 21 % of 0.10 = 0.021 -> 0.02; three such lines give 0.06, not 21 % of 0.30 (0.063 -> 0.06).
    lines = [rules.priced_line("x", 10, 2100) for _ in range(3)]
    assert [line.vat_minor for line in lines] == [2, 2, 2]
    # 21 % of 0.50 three times: 0.33 by lines, while 21 % of 1.50 would be 0.315 -> 0.32.
    halves = [rules.priced_line("y", 50, 2100) for _ in range(3)]
    assert rules.totals(halves).vat_minor == 33


def test_totals_are_the_sums_of_the_lines() -> None:
    lines = [
        rules.priced_line("base", 2_900_000, 2100),
        rules.priced_line("option", 180_005, 2100),
        rules.LineDraft("less advance", -300_000, 2100, -52_066),
    ]
    summed = rules.totals(lines)
    assert summed.net_minor == sum(line.net_minor for line in lines)
    assert summed.vat_minor == sum(line.vat_minor for line in lines)
    assert summed.gross_minor == sum(line.gross_minor for line in lines)
    assert summed.gross_minor == summed.net_minor + summed.vat_minor


@pytest.mark.parametrize(
    ("gross", "rate", "net", "vat_part"),
    [
        (12_100, 2100, 10_000, 2_100),
        (100, 2100, 83, 17),
        (1, 2300, 1, 0),
        (363_000, 1900, 305_042, 57_958),
    ],
)
def test_a_gross_amount_splits_into_net_and_vat_that_add_back_up(
    gross: int, rate: int, net: int, vat_part: int
) -> None:
    assert rules.split_gross(gross, rate) == (net, vat_part)
    assert sum(rules.split_gross(gross, rate)) == gross


def test_division_rounds_half_away_from_zero() -> None:
    assert rules.divide_half_up(5, 10) == 1
    assert rules.divide_half_up(4, 10) == 0
    assert rules.divide_half_up(-5, 10) == -1
    assert rules.divide_half_up(15, 10) == 2


@pytest.mark.parametrize(
    ("country", "rate", "deposit_bp"), [("ES", 2100, 1000), ("DE", 1900, 1500)]
)
def test_advance_and_final_invoices_add_up_to_the_sale_to_the_cent(
    country: str, rate: int, deposit_bp: int
) -> None:
    sale_lines = [("Aura base platform", 2_900_000), ("Driver assistance", 180_033), ("Care", 9)]
    priced = quote(
        [QuoteLine(d, Money(n, "EUR")) for d, n in sale_lines],
        currency="EUR",
        vat_rate_bp=rate,
        deposit_share_bp=deposit_bp,
    )
    advance = rules.advance_lines(
        order_number="S2026-000001",
        gross_minor=priced.deposit.amount_minor,
        vat_rate_bp=rate,
        language="en",
    )
    advance_totals = rules.totals(advance)
    assert advance_totals.gross_minor == priced.deposit.amount_minor
    final = rules.final_lines(
        sale_lines=sale_lines,
        vat_rate_bp=rate,
        advances=[
            rules.InvoicedAdvance(
                "ES-2026-000001", advance_totals.net_minor, advance_totals.vat_minor, rate
            )
        ],
        language="es",
    )
    final_totals = rules.totals(final)
    assert final_totals.gross_minor == priced.total.amount_minor - priced.deposit.amount_minor
    assert advance_totals.net_minor + final_totals.net_minor == priced.net.amount_minor
    assert advance_totals.vat_minor + final_totals.vat_minor == priced.vat.amount_minor
    assert final[-1].description == "Menos: anticipo facturado en ES-2026-000001"


def test_line_texts_fall_back_to_english() -> None:
    (line,) = rules.advance_lines(
        order_number="S1", gross_minor=100, vat_rate_bp=2000, language="fr"
    )
    assert line.description == "Advance payment on order S1"


def test_invoice_numbers_are_series_year_and_six_digits() -> None:
    assert rules.invoice_number("ES", 2026, 1) == "ES-2026-000001"
    assert rules.parse_invoice_number("PT-2027-001234") == ("PT", 2027, 1234)
    with pytest.raises(ValueError, match="not an invoice number"):
        rules.parse_invoice_number("ES-26-1")


def test_the_invoice_date_is_the_day_in_the_sellers_country() -> None:
    new_year_in_madrid = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert rules.issue_date(new_year_in_madrid, "ES").isoformat() == "2027-01-01"
    assert rules.issue_date(new_year_in_madrid, "PT").isoformat() == "2026-12-31"


def test_the_seller_has_a_valid_vat_number_in_every_country() -> None:
    for country, seller in rules.SELLERS.items():
        assert seller.tax_id.startswith(country)
        assert vat.is_valid(seller.tax_id), seller.tax_id


def test_payment_states_only_move_along_the_table() -> None:
    assert rules.PAYMENT.allows("pending", "authorised")
    assert rules.PAYMENT.allows("authorised", "captured")
    assert rules.PAYMENT.allows("captured", "refunded")
    with pytest.raises(Conflict):
        rules.PAYMENT.check("failed", "captured")
    with pytest.raises(Conflict):
        rules.PAYMENT.check("pending", "captured")


def test_provider_keys_derive_from_the_payment_and_never_repeat_across_payments() -> None:
    first, second = rules.new_payment_reference(), rules.new_payment_reference()
    assert first != second
    assert rules.provider_key(first, "capture") == rules.provider_key(first, "capture")
    assert rules.provider_key(first, "capture") != rules.provider_key(first, "authorise")


_RATES = st.sampled_from([0, 400, 550, 1000, 1900, 2000, 2100, 2200, 2300])
_NETS = st.integers(min_value=-10_000_000, max_value=10_000_000)


@given(net=_NETS, rate=_RATES)
def test_property_vat_per_line_is_the_exact_share_rounded_half_up(net: int, rate: int) -> None:
    line = rules.priced_line("x", net, rate)
    exact = Fraction(net * rate, 10_000)
    # Within half a cent of the exact share, and exactly half a cent only when rounding away.
    assert abs(line.vat_minor - exact) <= Fraction(1, 2)
    if abs(line.vat_minor - exact) == Fraction(1, 2):
        assert abs(line.vat_minor) > abs(exact)
    assert line.gross_minor == net + line.vat_minor


@given(lines=st.lists(st.tuples(_NETS, _RATES), min_size=1, max_size=30))
def test_property_totals_equal_the_sum_of_their_lines(lines: list[tuple[int, int]]) -> None:
    drafts = [rules.priced_line("x", net, rate) for net, rate in lines]
    summed = rules.totals(drafts)
    assert summed.net_minor == sum(d.net_minor for d in drafts)
    assert summed.vat_minor == sum(d.vat_minor for d in drafts)
    assert summed.gross_minor == sum(d.gross_minor for d in drafts)


@given(gross=_NETS, rate=_RATES)
def test_property_a_gross_splits_into_parts_that_add_back_to_it(gross: int, rate: int) -> None:
    net, vat_part = rules.split_gross(gross, rate)
    assert net + vat_part == gross
    assert abs(net - Fraction(gross * 10_000, 10_000 + rate)) <= Fraction(1, 2)
