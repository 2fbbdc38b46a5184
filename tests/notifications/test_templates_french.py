"""Every e-mail and in-app message written in English has its French version, which renders
with the same details as the English one (no fallback, no placeholder left)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, meta

from caas.notifications import templates
from caas.notifications.templates import render, template_language

TEMPLATES = Path(templates.__file__).parent / "templates"
KINDS = sorted(path.stem for path in (TEMPLATES / "en").glob("*.txt") if path.stem[0] != "_")
PORTAL = "https://caas.example/portal"

# Details whose kind matters to a template (a dict key, a filter's input, a condition); any
# other detail is a plain text.
SAMPLES: dict[str, Any] = {
    "need": "brake_pads",
    "request": "deregistration",
    "by": "workshop",
    "included": False,
    "gross_minor": 12_345,
    "amount_minor": 4_990,
    "currency": "EUR",
    "slot_start": "2026-03-05T16:30:00+00:00",
    "slots": ["2026-03-05T16:30:00+00:00", "2026-03-06T09:00:00+00:00"],
    "days": 7,
    "refunds": [{"amount_minor": 2_500, "currency": "EUR"}],
}


MOMENT = "2026-03-05T16:30:00+00:00"
MOMENTS = ("_at", "_on", "_for", "_until", "_by", "_end", "_start", "eta", "completion", "date")


def _sample(name: str) -> Any:
    """A detail's value by its name: money in minor units, moments as ISO text, else text."""
    if name in SAMPLES:
        return SAMPLES[name]
    if name.endswith("_minor"):
        return 12_345
    if name.endswith(MOMENTS):
        return MOMENT
    return f"<{name}>"


def _details(kind: str) -> dict[str, Any]:
    """A value for every detail the English or the French template reads."""
    environment: Environment = templates._env
    names: set[str] = set()
    for language in ("en", "fr"):
        path = TEMPLATES / language / f"{kind}.txt"
        if path.exists():
            names |= meta.find_undeclared_variables(environment.parse(path.read_text()))
    names -= {"language", "portal_url"}
    return {name: _sample(name) for name in names}


def test_every_english_template_has_a_french_one() -> None:
    missing = [kind for kind in KINDS if template_language(kind, "fr") != "fr"]
    assert missing == [], f"no French for {missing}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_french_template_renders_what_the_english_one_does(kind: str) -> None:
    details = _details(kind)
    english = render(kind, "en", details, portal_url=PORTAL)
    french = render(kind, "fr", details, portal_url=PORTAL)
    assert french.subject and french.subject != english.subject
    assert french.text != english.text
    assert "{{" not in french.text and "{%" not in french.text
    # Every text detail the English message shows, the French one shows too.
    shown = [f"<{name}>" for name in details if f"<{name}>" in english.text]
    assert [value for value in shown if value not in french.text] == []
