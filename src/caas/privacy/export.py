"""The customer takes their data with them: one ZIP with every row about them and their PDFs.

`data.json` holds, per table, every row about the person (all columns, secrets redacted) in a
machine-readable shape with a schema version; `invoices/` and `credit_notes/` hold the PDFs.

Which rows are the person's is written down once, in `EXPORTED`: per table, the columns that
tie a row to them and what those columns point at (their customer and user rows, a table
exported before it, the cars they own now, their e-mail). A car's own data (its state, its
telemetry, its manifests) is exported only while they own it: a car they sold belongs to its
new owner from then on. Every table with a path to a customer is either here or in `EXCLUDED`
with the reason (tests/privacy/test_export.py walks the metadata to keep it so).

The ZIP is written to a spooled temporary file (memory while small, disk when large) table by
table and streamed out in chunks, so a car's years of telemetry never sit in memory at once.
"""

from __future__ import annotations

import base64
import enum
import json
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from tempfile import SpooledTemporaryFile
from typing import IO, Any, Final

from sqlalchemy import Table, or_, select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing import invoices as billing_invoices
from caas.billing import service as billing
from caas.billing.pdf import render_invoice_pdf
from caas.core.db import Base
from caas.privacy.rules import RETENTION_NOTE
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle

SCHEMA_VERSION: Final = 1
# A spooled file moves to disk past this size.
IN_MEMORY_BYTES: Final = 8 * 1024 * 1024
CHUNK_BYTES: Final = 64 * 1024
# Rows fetched from the database at a time.
BATCH_ROWS: Final = 1_000
REDACTED: Final = "[redacted]"

# What a link column points at, besides a table exported before: the person's own rows and
# what is theirs now.
CUSTOMER: Final = "customers"
USER: Final = "users"
OWNED_VEHICLES: Final = "owned vehicles"
OWNED_VINS: Final = "owned vins"
EMAIL: Final = "e-mail"


@dataclass(frozen=True)
class TableExport:
    """How a table's rows about the person are found: a row is theirs when any of `links`
    (column, what it must point at) matches. `redact`: secrets shown as "[redacted]" (a
    password's hash is no use to the person, and it is a secret); `retained`: why the rows
    survive an erasure."""

    links: tuple[tuple[str, str], ...]
    redact: frozenset[str] = field(default_factory=frozenset)
    retained: str | None = None


def _links(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return pairs


# In order: a table's links may point at a table listed above it.
EXPORTED: Final[dict[str, TableExport]] = {
    "customers": TableExport(_links(("id", CUSTOMER))),
    "users": TableExport(_links(("id", USER)), redact=frozenset({"password_hash"})),
    "api_tokens": TableExport(_links(("user_id", USER)), redact=frozenset({"token_hash"})),
    "login_attempts": TableExport(_links(("email", EMAIL))),
    "consents": TableExport(_links(("customer_id", CUSTOMER))),
    "erasures": TableExport(_links(("customer_id", CUSTOMER))),
    "notifications": TableExport(_links(("user_id", USER))),
    "history": TableExport(_links(("customer_id", CUSTOMER), ("actor_user_id", USER))),
    "sales": TableExport(_links(("customer_id", CUSTOMER))),
    "sale_features": TableExport(_links(("sale_id", "sales"))),
    "factory_events": TableExport(_links(("sale_id", "sales"))),
    "registrations": TableExport(_links(("sale_id", "sales"))),
    "deliveries": TableExport(_links(("sale_id", "sales"))),
    "payment_methods": TableExport(_links(("customer_id", CUSTOMER)), redact=frozenset({"token"})),
    "payments": TableExport(_links(("customer_id", CUSTOMER)), redact=frozenset({"request_hash"})),
    "invoices": TableExport(_links(("customer_id", CUSTOMER)), retained=RETENTION_NOTE),
    "invoice_lines": TableExport(_links(("invoice_id", "invoices")), retained=RETENTION_NOTE),
    "ledger_entries": TableExport(_links(("customer_id", CUSTOMER)), retained=RETENTION_NOTE),
    # The cars they own now, and those they bought (the record of the car they sold; its
    # later data is its new owner's).
    "vehicles": TableExport(
        _links(("owner_customer_id", CUSTOMER), ("sale_id", "sales")),
        redact=frozenset({"public_key"}),
    ),
    "vehicle_state": TableExport(_links(("vehicle_id", OWNED_VEHICLES))),
    "configuration_versions": TableExport(
        _links(("vehicle_id", OWNED_VEHICLES)), redact=frozenset({"manifest"})
    ),
    "maintenance_records": TableExport(_links(("vehicle_id", OWNED_VEHICLES))),
    "rollout_targets": TableExport(_links(("vehicle_id", OWNED_VEHICLES))),
    "phone_keys": TableExport(_links(("user_id", USER))),
    "telemetry_samples": TableExport(_links(("vin", OWNED_VINS))),
    "usage_events": TableExport(_links(("vin", OWNED_VINS))),
    "ownership_transfers": TableExport(
        _links(
            ("seller_customer_id", CUSTOMER),
            ("buyer_customer_id", CUSTOMER),
            ("created_by_user_id", USER),
        ),
        redact=frozenset({"code_hash"}),
    ),
    "transfer_code_attempts": TableExport(_links(("user_id", USER))),
    "vehicle_scrappings": TableExport(
        _links(("owner_customer_id", CUSTOMER), ("scrapped_by_user_id", USER))
    ),
    "purchases": TableExport(
        _links(("customer_id", CUSTOMER)), redact=frozenset({"request_hash", "payment_method"})
    ),
    "purchase_lines": TableExport(_links(("purchase_id", "purchases"))),
    "subscriptions": TableExport(
        _links(("customer_id", CUSTOMER)), redact=frozenset({"payment_method"})
    ),
    "schedules": TableExport(
        _links(("customer_id", CUSTOMER)), redact=frozenset({"payment_method"})
    ),
    "occurrences": TableExport(_links(("schedule_id", "schedules"))),
    "entitlements": TableExport(_links(("customer_id", CUSTOMER))),
    "service_orders": TableExport(_links(("customer_id", CUSTOMER))),
    "upkeep_preferences": TableExport(_links(("customer_id", CUSTOMER))),
    "upkeep_levels": TableExport(_links(("vehicle_id", OWNED_VEHICLES))),
}

# Tables with a path to a customer that are deliberately not in the export, and why.
EXCLUDED: Final[dict[str, str]] = {
    # Single-use activation links: only their hash is kept, a secret of no use to the person.
    "activation_tokens": "secret: the hash of a single-use activation link",
    # The car's broker account: password hashes and sealed secrets of the machine, not the person.
    "broker_credentials": "the car's own broker secrets, not data about the person",
    # The dealership's own business address and e-mail, linked only through the salesperson.
    "dealerships": "the dealership's business contact, not the person's",
    # Software releases and their rollouts are made by the maker's operators (`created_by`);
    # a car's place in a rollout is exported (`rollout_targets`).
    "software_releases": "the maker's releases, linked only to the operator who made them",
    "rollouts": "the maker's rollout plans, linked only to the operator who made them",
    # Official workshops are places with a business e-mail; their hours, stock and staff are
    # the workshop's. An order's slot is exported with the order (`service_orders`).
    "workshops": "the workshop's business contact, not the person's",
    "workshop_hours": "a workshop's opening hours",
    "workshop_stock": "a workshop's parts in stock",
    "workshop_staff": "which workshop a workshop user works at, not about customers",
    "workshop_bookings": "a workshop's calendar cells; the slot is exported with the order",
}


@dataclass
class _Scope:
    """The person's anchors and the ids of the rows exported so far, per table."""

    customer: Customer
    user: User
    owned_vehicle_ids: list[int]
    owned_vins: list[str]
    exported_ids: dict[str, list[Any]] = field(default_factory=dict)

    def targets(self, what: str) -> Sequence[Any]:
        anchors: dict[str, Sequence[Any]] = {
            CUSTOMER: [self.customer.id],
            USER: [self.user.id],
            OWNED_VEHICLES: self.owned_vehicle_ids,
            OWNED_VINS: self.owned_vins,
            EMAIL: [self.user.email],
        }
        if what in anchors:
            return anchors[what]
        return self.exported_ids.get(what, [])


def _scope(session: Session, customer: Customer) -> _Scope:
    user = session.get_one(User, customer.user_id)
    owned = session.execute(
        select(Vehicle.id, Vehicle.vin)
        .where(Vehicle.owner_customer_id == customer.id)
        .order_by(Vehicle.id)
    ).all()
    return _Scope(customer, user, [row.id for row in owned], [row.vin for row in owned])


def _plain(value: Any) -> Any:
    """A column's value as JSON: times in ISO 8601, decimals as text (exact), bytes base64."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _rows(
    session: Session, table: Table, spec: TableExport, scope: _Scope
) -> Iterator[dict[str, Any]]:
    conditions = [
        table.c[column].in_(list(targets))
        for column, what in spec.links
        if (targets := scope.targets(what))
    ]
    if not conditions:
        return
    order = list(table.primary_key.columns) or list(table.columns)[:1]
    result = session.execute(
        select(table).where(or_(*conditions)).order_by(*order),
        execution_options={"yield_per": BATCH_ROWS},
    )
    for row in result.mappings():
        yield {
            name: REDACTED if name in spec.redact and value is not None else _plain(value)
            for name, value in row.items()
        }


def _write_data(session: Session, out: IO[bytes], scope: _Scope, now: datetime) -> None:
    """data.json, written table by table."""
    head = {
        "schema_version": SCHEMA_VERSION,
        "exported_at": now.isoformat(),
        "customer_id": scope.customer.id,
        "excluded": EXCLUDED,
    }
    out.write(json.dumps(head, ensure_ascii=False, indent=1)[:-2].encode() + b',\n "tables": {')
    tables = Base.metadata.tables
    first = True
    for name, spec in EXPORTED.items():
        if name not in tables:  # a table of a domain not in this build
            continue
        table = tables[name]
        out.write(("" if first else ",").encode() + f"\n  {json.dumps(name)}: {{".encode())
        first = False
        if spec.retained:
            out.write(f'"retained": {json.dumps(spec.retained)}, '.encode())
        out.write(b'"rows": [')
        ids: list[Any] = []
        for index, row in enumerate(_rows(session, table, spec, scope)):
            if "id" in row:
                ids.append(row["id"])
            prefix = b"\n   " if index == 0 else b",\n   "
            out.write(prefix + json.dumps(row, ensure_ascii=False, sort_keys=True).encode())
        scope.exported_ids[name] = ids
        out.write(b"]}")
    out.write(b"\n }\n}\n")


def _write_pdfs(session: Session, archive: zipfile.ZipFile, customer: Customer) -> None:
    for invoice in billing.invoices_for_customer(session, customer.id):
        folder = "credit_notes" if invoice.kind == "credit_note" else "invoices"
        lines = billing_invoices.invoice_lines(session, invoice.id)
        archive.writestr(f"{folder}/{invoice.number}.pdf", render_invoice_pdf(invoice, lines))


def build_export(session: Session, customer: Customer, *, now: datetime) -> IO[bytes]:
    """The customer's whole export as a ZIP in a spooled file, rewound to its start."""
    scope = _scope(session, customer)
    spooled: IO[bytes] = SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115 - streamed, closed by the reader
    with zipfile.ZipFile(spooled, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("data.json", "w") as data:
            _write_data(session, data, scope, now)
        _write_pdfs(session, archive, customer)
    spooled.seek(0)
    return spooled


def chunks(spooled: IO[bytes]) -> Iterator[bytes]:
    """The file's bytes in chunks for a streamed response; closes it at the end."""
    try:
        while chunk := spooled.read(CHUNK_BYTES):
            yield chunk
    finally:
        spooled.close()


def exported_tables() -> Mapping[str, TableExport]:
    """The tables of this build that the export reads."""
    return {name: spec for name, spec in EXPORTED.items() if name in Base.metadata.tables}
