"""Input the routes' own validation lets through is still refused as input (422 in the shape
of every other 422), never a server error: found by schemathesis (tests/security)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.seed import DEMO_PASSWORD
from tests.factories import salesperson


def test_a_body_that_is_not_utf8_is_invalid_input(app_client: TestClient) -> None:
    """FastAPI answers its own 400 for bytes that do not decode; the platform answers 422."""
    response = app_client.post(
        "/api/v1/auth/tokens",
        content=b"\xff\xfe{",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"
    assert response.json()["field"] == "body"


def test_an_id_beyond_the_databases_integers_is_invalid_input(
    app_client: TestClient, db: Session
) -> None:
    """An id PostgreSQL's `integer` cannot hold names its path parameter, not a 500."""
    seller = salesperson(db, "ES")
    login = app_client.post(
        "/api/v1/auth/login", json={"email": seller.email, "password": DEMO_PASSWORD}
    )
    assert login.status_code == 200, login.text
    response = app_client.get(f"/api/v1/sales/{2**52 + 1}")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "sale_id"
    assert response.json()["errors"][0]["type"] == "out_of_range"
    # The largest id that fits is simply not found.
    assert app_client.get(f"/api/v1/sales/{2**31 - 1}").status_code == 404


def test_other_http_errors_keep_their_status(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/no-such-route").status_code == 404
