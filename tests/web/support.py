"""What a browser does with the pages, without a browser: read the form's token, post forms."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import httpx
from fastapi.testclient import TestClient

from caas.seed import DEMO_PASSWORD

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_KEY = re.compile(r'name="idempotency_key" value="([^"]*)"')


def csrf_token(html: str) -> str:
    found = _TOKEN.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def form_key(html: str) -> str:
    found = _KEY.search(html)
    assert found is not None, "the page has no form with an idempotency key"
    return found.group(1)


def submit(
    client: TestClient, page: str, action: str, data: dict[str, Any], *, with_key: bool = False
) -> httpx.Response:
    """Open `page`, then post `data` to `action` with the page's token (and form key), as a
    browser posts a form; redirects are not followed so the test sees where they go."""
    html = client.get(page).text
    fields = {"csrf_token": csrf_token(html), **data}
    if with_key:
        fields.setdefault("idempotency_key", form_key(html))
    return client.post(action, data=fields, follow_redirects=False)


def log_in(client: TestClient, email: str, password: str = DEMO_PASSWORD) -> httpx.Response:
    response = submit(client, "/login", "/login", {"email": email, "password": password})
    assert response.status_code == 303, response.text
    return response


def text_of(html: str) -> str:
    """The page's text without tags, to assert on what a reader sees."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def sale_form(payload: dict[str, Any]) -> dict[str, Any]:
    """A `sale_payload()` body as the new-sale form posts it."""
    customer = {f"customer.{name}": value for name, value in payload["customer"].items()}
    plan = payload["plan"]
    return {
        **customer,
        "plan.platform": plan["platform"],
        f"plan.features.{plan['platform']}": plan["features"],
        "plan.service_period_months": str(plan["service_period_months"]),
        **({"plan.maintenance_included": "true"} if plan["maintenance_included"] else {}),
    }
