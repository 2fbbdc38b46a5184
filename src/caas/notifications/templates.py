"""E-mail and in-app message templates per language (Jinja2), with English as the fallback.

A template is `templates/<language>/<kind>.txt`: its first line is `Subject: ...`, the rest is
the plain-text body. The HTML alternative of an e-mail is the same text in a minimal wrapper
(`templates/layout.html`) with its links made clickable, so each message is written once.
Dates, times and money are formatted for the reader's locale with Babel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from babel.dates import format_date, format_time, get_datetime_format, get_timezone
from babel.numbers import format_currency
from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    TemplateNotFound,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from markupsafe import Markup, escape

FALLBACK_LANGUAGE = "en"
LANGUAGES = ("en", "es", "fr", "de", "it", "pt")

# Where the reader most likely lives, to show times on their clock: the customer's country
# when the caller passes it in the context (`country`), else a guess from the language.
COUNTRY_ZONES = {
    "ES": "Europe/Madrid",
    "FR": "Europe/Paris",
    "DE": "Europe/Berlin",
    "IT": "Europe/Rome",
    "PT": "Europe/Lisbon",
}
LANGUAGE_ZONES = {
    "es": "Europe/Madrid",
    "fr": "Europe/Paris",
    "de": "Europe/Berlin",
    "it": "Europe/Rome",
    "pt": "Europe/Lisbon",
}
DEFAULT_ZONE = "Europe/Madrid"

_LINK = re.compile(r"https?://[^\s<>\"']+")
_TRAILING = ".,;:!?)"


def _locale(context: Context) -> str:
    return str(context.get("language", FALLBACK_LANGUAGE))


def _zone(context: Context) -> Any:
    explicit = context.get("timezone")
    if isinstance(explicit, str) and explicit:
        return get_timezone(explicit)
    country = context.get("country")
    if isinstance(country, str) and country in COUNTRY_ZONES:
        return get_timezone(COUNTRY_ZONES[country])
    return get_timezone(LANGUAGE_ZONES.get(_locale(context), DEFAULT_ZONE))


def _as_datetime(value: Any) -> datetime | date:
    """Context values travel through the outbox as JSON: accept ISO strings too."""
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return date.fromisoformat(text)
    if len(text) <= 10:
        return parsed.date()
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@pass_context
def _format_datetime(context: Context, value: Any) -> str:
    """`{{ scheduled_for | datetime }}`: long date and short time on the reader's clock."""
    if value in (None, ""):
        return ""
    moment = _as_datetime(value)
    if not isinstance(moment, datetime):
        return format_date(moment, "long", locale=_locale(context))
    local = moment.astimezone(_zone(context))
    locale = _locale(context)
    pattern = str(get_datetime_format("long", locale=locale)).replace("'", "")
    return pattern.format(
        format_time(local, "short", locale=locale), format_date(local, "long", locale=locale)
    )


@pass_context
def _format_date(context: Context, value: Any) -> str:
    """`{{ performed_at | date }}`: the long date in the reader's locale."""
    if value in (None, ""):
        return ""
    moment = _as_datetime(value)
    if isinstance(moment, datetime):
        moment = moment.astimezone(_zone(context)).date()
    return format_date(moment, "long", locale=_locale(context))


@pass_context
def _format_money(context: Context, amount_minor: Any, currency: str = "EUR") -> str:
    """`{{ amount_minor | money(currency) }}`: integer minor units shown as currency."""
    if amount_minor in (None, ""):
        return ""
    return format_currency(int(amount_minor) / 100, currency, locale=_locale(context))


_env = Environment(
    loader=PackageLoader("caas.notifications", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
_env.filters.update(datetime=_format_datetime, date=_format_date, money=_format_money)


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


def linkify(text: str) -> Markup:
    """Escape `text` for HTML and turn every http(s) URL in it into a clickable link."""
    parts: list[str] = []
    position = 0
    for match in _LINK.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        end = match.start() + len(url)
        parts.append(escape(text[position : match.start()]))
        parts.append(Markup('<a href="{0}">{0}</a>').format(url))
        position = end
    parts.append(escape(text[position:]))
    return Markup("").join(parts)


def _paragraphs(text: str) -> list[Markup]:
    blocks = [block.strip("\n") for block in re.split(r"\n\s*\n", text) if block.strip()]
    return [Markup("<br>\n").join(linkify(line) for line in block.split("\n")) for block in blocks]


def template_language(kind: str, language: str) -> str:
    """The language `kind` will be written in for a reader of `language` (English fallback)."""
    try:
        _env.get_template(f"{language}/{kind}.txt")
    except TemplateNotFound:
        return FALLBACK_LANGUAGE
    return language


def render(
    kind: str, language: str, context: dict[str, Any], *, portal_url: str = "/portal"
) -> RenderedMessage:
    """Render `templates/<language>/<kind>.txt` (English when that language has none).

    `portal_url` is where the reader manages their car: the e-mail builder passes the absolute
    address, in-app messages keep the relative one.
    """
    written_in = template_language(kind, language)
    template = _env.get_template(f"{written_in}/{kind}.txt")
    rendered = template.render({**context, "language": written_in, "portal_url": portal_url})
    first, _, body = rendered.partition("\n")
    if not first.startswith("Subject: "):
        raise ValueError(f"template {kind} must start with a Subject: line")
    subject = first.removeprefix("Subject: ").strip()
    text = body.lstrip("\n")
    html = _env.get_template("layout.html").render(
        language=written_in, subject=subject, paragraphs=_paragraphs(text)
    )
    return RenderedMessage(subject=subject, text=text, html=html)
