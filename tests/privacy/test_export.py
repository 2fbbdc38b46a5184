"""Download everything: every table that holds a customer's data is exported or excluded for
a stated reason, and the ZIP holds the caller's rows and PDFs and no one else's."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.db import Base, import_all_models
from caas.privacy.export import EXCLUDED, EXPORTED, REDACTED, SCHEMA_VERSION
from caas.privacy.rules import RETENTION_NOTE
from caas.vehicles import ingest
from tests.privacy.conftest import invoice_for
from tests.registration.support import login
from tests.vehicles.cars import Fleet, consent, telemetry

# The person's own rows, and the columns that can name a person or their car without a key.
ROOTS = {"customers", "users", "vehicles"}
PERSONAL_COLUMNS = {"customer_id", "user_id", "vin", "email"}


def tables_about_people() -> set[str]:
    """Tables with a path to a customer: the roots, any table with a foreign key to one of
    them (transitively), or with a column that names a person or car without a foreign key."""
    import_all_models()
    related = set(ROOTS)
    grew = True
    while grew:
        grew = False
        for table in Base.metadata.sorted_tables:
            if table.name in related:
                continue
            linked = any(fk.column.table.name in related for fk in table.foreign_keys)
            named = any(column.name in PERSONAL_COLUMNS for column in table.columns)
            if linked or named:
                related.add(table.name)
                grew = True
    return related


def test_every_table_about_a_customer_is_exported_or_excluded_with_a_reason() -> None:
    related = tables_about_people()
    assert {"customers", "invoices", "telemetry_samples", "entitlements"} <= related
    missing = sorted(related - set(EXPORTED) - set(EXCLUDED))
    assert missing == [], f"add these tables to EXPORTED or EXCLUDED: {missing}"
    assert all(reason.strip() for reason in EXCLUDED.values())
    assert not set(EXPORTED) & set(EXCLUDED)


def _export(client: TestClient) -> tuple[dict[str, Any], zipfile.ZipFile]:
    response = client.get("/api/v1/me/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    return json.loads(archive.read("data.json")), archive


def _rows(data: dict[str, Any], table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = data["tables"][table]["rows"]
    return rows


def test_the_export_holds_the_callers_data_and_pdfs_and_no_one_elses(
    app_client: TestClient, db: Session, clock: FixedClock, owner: Fleet, other: Fleet
) -> None:
    mine = invoice_for(db, owner, clock)
    theirs = invoice_for(db, other, clock)
    for fleet in (owner, other):
        consent(db, fleet.customer_id, clock.now(), location_history=True)
        ingest.store_telemetry(db, [telemetry(fleet.order.vin, 1, clock.now())], now=clock.now())
    db.commit()
    clock.advance(timedelta(hours=1))

    login(app_client, owner.order.customer_email)
    data, archive = _export(app_client)

    assert data["schema_version"] == SCHEMA_VERSION
    assert [row["id"] for row in _rows(data, "customers")] == [owner.customer_id]
    (user,) = _rows(data, "users")
    assert user["email"] == owner.order.customer_email
    assert user["password_hash"] == REDACTED
    assert [row["vin"] for row in _rows(data, "vehicles")] == [owner.order.vin]
    assert [row["vin"] for row in _rows(data, "telemetry_samples")] == [owner.order.vin]
    assert _rows(data, "telemetry_samples")[0]["latitude"] == 40.4168
    assert [row["purpose"] for row in _rows(data, "consents")] == ["location_history"]
    assert [row["number"] for row in _rows(data, "invoices")] == [mine.number]
    assert data["tables"]["invoices"]["retained"] == RETENTION_NOTE
    assert len(_rows(data, "invoice_lines")) == 1
    assert [row["id"] for row in _rows(data, "sales")] == [owner.order.sale_id]
    assert any(row["event"] == "consent.granted" for row in _rows(data, "history"))
    assert set(data["excluded"]) == set(EXCLUDED)

    names = archive.namelist()
    assert f"invoices/{mine.number}.pdf" in names
    assert archive.read(f"invoices/{mine.number}.pdf").startswith(b"%PDF")
    # Nothing of the other customer, anywhere in the archive.
    text = archive.read("data.json").decode()
    assert other.order.vin not in text
    assert other.order.customer_email not in text
    assert f"invoices/{theirs.number}.pdf" not in names
    for table in data["tables"].values():
        for row in table["rows"]:
            assert row.get("customer_id") in (None, owner.customer_id)


def test_the_portal_page_offers_the_download(app_client: TestClient, owner: Fleet) -> None:
    from tests.web.support import log_in

    log_in(app_client, owner.order.customer_email)
    page = app_client.get("/portal/privacy")
    assert page.status_code == 200, page.text
    assert 'href="/portal/privacy/export"' in page.text
    download = app_client.get("/portal/privacy/export")
    assert download.status_code == 200
    assert "data.json" in zipfile.ZipFile(io.BytesIO(download.content)).namelist()


def test_only_customers_export(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/me/export").status_code == 401
