"""Posted forms: reading them, and turning service and validation errors into field messages."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from caas.core.errors import CaasError
from caas.core.idempotency import once
from caas.web.strings import lookup

log = structlog.get_logger(__name__)


async def _posted_form(request: Request) -> FormData:
    return await request.form()


# The posted form of a page's POST route (already checked for its CSRF token by the router).
PostedForm = Annotated[FormData, Depends(_posted_form)]

FormValues = dict[str, Any]


def values_of(form: FormData, *, lists: tuple[str, ...] = ()) -> FormValues:
    """The user's input as plain values (kept to fill the form again after an error)."""
    values: FormValues = {}
    for key in form:
        if key in lists:
            values[key] = [str(item) for item in form.getlist(key)]
        else:
            item = form.get(key)
            values[key] = item if isinstance(item, str) else ""
    for key in lists:
        values.setdefault(key, [])
    return values


def field_name(path: str) -> str:
    """The form field of an error path: `plan.features.1` belongs to `plan.features`."""
    parts = [part for part in path.split(".") if not part.isdigit()]
    return ".".join(parts)


def _reason(message: str) -> str:
    return message.removeprefix("Value error, ")


def refusal_text(error: CaasError, language: str) -> str:
    """A service's refusal as a page says it in `language`.

    Services speak English (their message is the API's); a page says the refusal with its own
    text for the error's code, `refusal.<code>` in the page strings, with the details filled
    in (lists as "A, B") and the minutes to wait for a throttled try (`refusal.<code>.one`
    when a minute or less is left). A generic code (`invalid_input`) is told apart by its
    field: `refusal.<code>.<field>`. A code no page text covers keeps the service's message.
    """
    details: dict[str, Any] = {
        name: ", ".join(str(item) for item in value) if isinstance(value, list) else value
        for name, value in error.extra.items()
    }
    keys = []
    seconds = details.get("retry_after_seconds")
    if isinstance(seconds, int):
        minutes = details["minutes"] = math.ceil(seconds / 60)
        if minutes <= 1:
            keys.append(f"refusal.{error.code}.one")
    if error.field:
        keys.append(f"refusal.{error.code}.{error.field}")
    keys.append(f"refusal.{error.code}")
    for key in keys:
        text = lookup(language, key)
        if text is not None:
            try:
                return text.format(**details)
            except (KeyError, IndexError, ValueError):  # a text naming a detail not given
                log.warning("page.refusal_text_unfilled", key=key, language=language)
                return error.message
    return error.message


@dataclass
class FormErrors:
    """Messages next to the fields they name, plus those that belong to no field."""

    fields: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    # The service's refusal these messages came from, and the field it was shown at, so the
    # page can say it in the reader's language (`in_language`).
    refusal: tuple[CaasError, str | None] | None = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    def add(self, name: str | None, message: str) -> None:
        if name is None:
            self.general.append(message)
        else:
            self.fields.setdefault(field_name(name), message)

    @classmethod
    def of(
        cls, error: CaasError | ValidationError, *, aliases: dict[str, str] | None = None
    ) -> FormErrors:
        """The messages of a service error or of a Pydantic validation error, per field.

        `aliases` renames the fields a service names differently from the form.
        """
        aliases = aliases or {}
        errors = cls()
        if isinstance(error, ValidationError):
            for item in error.errors():
                path = ".".join(str(part) for part in item["loc"])
                errors.add(aliases.get(path, path) or None, _reason(item["msg"]))
        else:
            name = aliases.get(error.field, error.field) if error.field else None
            errors.add(name, error.message)
            errors.refusal = (error, name)
        return errors

    def in_language(self, language: str) -> FormErrors:
        """These messages with the service's refusal in `language` (see `refusal_text`);
        `render` calls it with the page's language."""
        if self.refusal is None:
            return self
        error, name = self.refusal
        text = refusal_text(error, language)
        if name is not None:
            fields = {**self.fields, field_name(name): text}
            return replace(self, fields=fields, refusal=None)
        general = [text if message == error.message else message for message in self.general]
        return replace(self, general=general, refusal=None)


def once_per_form(
    session: Session,
    *,
    user_id: int,
    values: FormValues,
    operation: str,
    request: Any,
    now: datetime,
    act: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run a form's command once per its hidden idempotency key, inside a savepoint.

    A failure rolls back only the command's own writes, so the page can show the error; a
    double submit with the same key returns the first answer instead of acting twice.
    """
    with session.begin_nested():
        return once(
            session,
            principal=f"user:{user_id}",
            key=values.get("idempotency_key") or uuid.uuid4().hex,
            operation=operation,
            request=request,
            now=now,
            act=act,
        )
