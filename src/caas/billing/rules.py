"""The rules of money that need no database: the payment's states, VAT per line, invoice lines.

VAT is computed on each line's net and rounded half up there; an invoice's totals are the sums
of its lines, so the document always adds up. An advance payment (the deposit) is invoiced by
its gross, split back into net and VAT at the sale's rate; the final invoice lists the whole
sale and deducts the advances exactly as they were invoiced, so the invoices of a sale add up
to its total to the cent.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from caas.core.money import percent_of
from caas.core.state_machine import StateMachine

PAYMENT = StateMachine(
    "payment",
    {
        # Sent to the provider; the answer (or its webhook) decides.
        "pending": {"authorised", "failed"},
        "authorised": {"captured", "voided", "failed"},
        # A chargeback: the card's bank took the money (or what was left of it) back.
        "captured": {"refunded", "charged_back"},
        "voided": set(),
        "failed": set(),
        "refunded": set(),
        "charged_back": set(),
    },
)
# Why a payment the provider never received is failed (`caas.billing.resolve`).
NEVER_RECEIVED = "provider.never_received"

# Payments of a sale, and the order state in which each may be paid.
PAYABLE_IN = {"deposit": "awaiting_deposit", "final": "at_dealer"}
# The invoice each kind of payment gets.
INVOICE_KIND = {"deposit": "advance", "final": "final"}
# Payments of the store (held at checkout, captured once the car applied the option; renewals
# and occurrences are charged when they start; metered usage once a month).
STORE_KINDS = frozenset({"option", "renewal", "occurrence", "metered", "upkeep"})
# States in which a payment still holds (or may still take) the customer's money.
OPEN_STATES = frozenset({"pending", "authorised"})

COUNTRY_ZONES = {
    "ES": "Europe/Madrid",
    "FR": "Europe/Paris",
    "DE": "Europe/Berlin",
    "IT": "Europe/Rome",
    "PT": "Europe/Lisbon",
}


@dataclass(frozen=True)
class Seller:
    name: str
    tax_id: str
    address: str


# The maker, registered for VAT in every country it sells in.
SELLERS = {
    "ES": Seller("caas Motors S.L.", "ESB87654323", "Calle de Alcalá 200\n28028 Madrid\nEspaña"),
    "FR": Seller(
        "caas Motors S.L.", "FR46841329576", "18 avenue de la Grande Armée\n75017 Paris\nFrance"
    ),
    "DE": Seller(
        "caas Motors S.L.", "DE284639101", "Friedrichstraße 120\n10117 Berlin\nDeutschland"
    ),
    "IT": Seller("caas Motors S.L.", "IT04728150964", "Via Torino 40\n20123 Milano\nItalia"),
    "PT": Seller(
        "caas Motors S.L.", "PT517642093", "Avenida da Liberdade 150\n1250-146 Lisboa\nPortugal"
    ),
}

_NUMBER = re.compile(r"^(?P<series>[A-Z0-9]{1,10})-(?P<year>\d{4})-(?P<sequence>\d{6,})$")


def new_payment_reference() -> str:
    """Our reference for a payment at the provider, echoed in its events."""
    return f"pay_{secrets.token_hex(10)}"


def provider_key(reference: str, step: str) -> str:
    """The provider's Idempotency-Key for one step of one payment: a retry repeats it."""
    return f"{reference}-{step}"


def invoice_number(series: str, year: int, sequence: int) -> str:
    return f"{series}-{year}-{sequence:06d}"


def parse_invoice_number(number: str) -> tuple[str, int, int]:
    match = _NUMBER.match(number)
    if match is None:
        raise ValueError(f"not an invoice number: {number!r}")
    return match["series"], int(match["year"]), int(match["sequence"])


def issue_date(moment: datetime, country: str) -> date:
    """The date on the invoice: the day it is in the seller's country."""
    return moment.astimezone(ZoneInfo(COUNTRY_ZONES.get(country, "UTC"))).date()


def divide_half_up(numerator: int, denominator: int) -> int:
    """`numerator / denominator` rounded half away from zero."""
    quotient, remainder = divmod(abs(numerator), denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


@dataclass(frozen=True)
class LineDraft:
    description: str
    net_minor: int
    vat_rate_bp: int
    vat_minor: int

    @property
    def gross_minor(self) -> int:
        return self.net_minor + self.vat_minor


@dataclass(frozen=True)
class Totals:
    net_minor: int
    vat_minor: int
    gross_minor: int


def priced_line(description: str, net_minor: int, vat_rate_bp: int) -> LineDraft:
    """A line priced by its net: VAT on this line alone, rounded half up."""
    return LineDraft(description, net_minor, vat_rate_bp, percent_of(net_minor, vat_rate_bp))


def split_gross(gross_minor: int, vat_rate_bp: int) -> tuple[int, int]:
    """Net and VAT contained in a gross amount: net rounded half up, VAT the exact rest."""
    net = divide_half_up(gross_minor * 10_000, 10_000 + vat_rate_bp)
    return net, gross_minor - net


def totals(lines: list[LineDraft]) -> Totals:
    net = sum(line.net_minor for line in lines)
    vat = sum(line.vat_minor for line in lines)
    return Totals(net_minor=net, vat_minor=vat, gross_minor=net + vat)


_ADVANCE = {
    "en": "Advance payment on order {order}",
    "es": "Anticipo a cuenta del pedido {order}",
}
_DEDUCTION = {
    "en": "Less: advance payment invoiced in {invoice}",
    "es": "Menos: anticipo facturado en {invoice}",
}


def _words(table: dict[str, str], language: str) -> str:
    return table.get(language, table["en"])


def advance_lines(
    *, order_number: str, gross_minor: int, vat_rate_bp: int, language: str
) -> list[LineDraft]:
    """The one line of an advance-payment invoice: the amount paid, VAT included."""
    net, vat = split_gross(gross_minor, vat_rate_bp)
    description = _words(_ADVANCE, language).format(order=order_number)
    return [LineDraft(description, net, vat_rate_bp, vat)]


@dataclass(frozen=True)
class InvoicedAdvance:
    """An advance already invoiced: deducted from the final invoice exactly as invoiced."""

    invoice_number: str
    net_minor: int
    vat_minor: int
    vat_rate_bp: int


def final_lines(
    *,
    sale_lines: list[tuple[str, int]],
    vat_rate_bp: int,
    advances: list[InvoicedAdvance],
    language: str,
) -> list[LineDraft]:
    """The whole sale line by line, less every advance invoiced before."""
    lines = [priced_line(description, net, vat_rate_bp) for description, net in sale_lines]
    for advance in advances:
        description = _words(_DEDUCTION, language).format(invoice=advance.invoice_number)
        lines.append(
            LineDraft(description, -advance.net_minor, advance.vat_rate_bp, -advance.vat_minor)
        )
    return lines


# Credit notes: their own series per country, and the words of their lines.
CREDIT_NOTE_KIND = "credit_note"
_CREDIT = {
    "en": "Refund: {description}",
    "es": "Abono: {description}",
}


def credit_note_series(invoice_series: str) -> str:
    """The series of a country's credit notes: "R" before its invoice series ("RES")."""
    return f"R{invoice_series}"


def _share_by_gross(lines: list[LineDraft], amount_minor: int) -> list[int]:
    """`amount_minor` spread over the lines in proportion to their gross, in whole cents that
    add up to it exactly (largest remainders get the leftover cents); a line's whole gross
    when `amount_minor` is the invoice's."""
    total = sum(line.gross_minor for line in lines)
    if total == 0:
        raise ValueError("cannot spread an amount over lines that add up to nothing")
    exact = [line.gross_minor * amount_minor for line in lines]
    shares = [numerator // total for numerator in exact]
    leftover = amount_minor - sum(shares)
    by_remainder = sorted(range(len(lines)), key=lambda i: exact[i] % total, reverse=True)
    for index in by_remainder[:leftover]:
        shares[index] += 1
    return shares


def _credited(line: LineDraft, gross_share: int) -> tuple[int, int]:
    """Net and VAT of a line's credited gross: the line's own figures when all of it."""
    if gross_share == line.gross_minor:
        return line.net_minor, line.vat_minor
    return split_gross(gross_share, line.vat_rate_bp)


def credit_lines(
    invoice_lines: list[LineDraft],
    *,
    refunded_before_minor: int,
    refunded_now_minor: int,
    language: str,
) -> list[LineDraft]:
    """The negative lines of a credit note for a refund of `refunded_now_minor` (gross) of an
    invoice of which `refunded_before_minor` was refunded before.

    Each line gets its share of the refund in proportion to its gross, split into net and VAT
    at its own rate. The shares are taken of what is refunded so far, less what the earlier
    notes took, so every note adds up to its refund and the notes of a full refund cancel the
    invoice line by line, to the cent.
    """
    if refunded_now_minor <= 0:
        raise ValueError("a credit note is for a positive refund")
    refunded_after = refunded_before_minor + refunded_now_minor
    before = _share_by_gross(invoice_lines, refunded_before_minor)
    after = _share_by_gross(invoice_lines, refunded_after)
    drafts = []
    for line, share_before, share_after in zip(invoice_lines, before, after, strict=True):
        if share_after == share_before:
            continue
        net_after, vat_after = _credited(line, share_after)
        net_before, vat_before = _credited(line, share_before)
        drafts.append(
            LineDraft(
                _words(_CREDIT, language).format(description=line.description),
                -(net_after - net_before),
                line.vat_rate_bp,
                -(vat_after - vat_before),
            )
        )
    return drafts
