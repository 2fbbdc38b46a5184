"""E-mail and in-app message templates per language (Jinja2), with English as the fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound, select_autoescape

_env = Environment(
    loader=PackageLoader("caas.notifications", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)

FALLBACK_LANGUAGE = "en"


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str


def render(kind: str, language: str, context: dict[str, Any]) -> RenderedMessage:
    """Render `templates/<language>/<kind>.txt`: first line `Subject: ...`, then the body."""
    try:
        template = _env.get_template(f"{language}/{kind}.txt")
    except TemplateNotFound:
        template = _env.get_template(f"{FALLBACK_LANGUAGE}/{kind}.txt")
    rendered = template.render(**context)
    first, _, body = rendered.partition("\n")
    if not first.startswith("Subject: "):
        raise ValueError(f"template {kind} must start with a Subject: line")
    return RenderedMessage(subject=first.removeprefix("Subject: ").strip(), text=body.lstrip("\n"))
