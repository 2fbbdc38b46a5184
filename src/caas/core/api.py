"""HTTP plumbing shared by every domain: the session dependency and the error shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.responses import Response

from caas.core.clock import Clock
from caas.core.errors import CaasError
from caas.core.idempotency import once
from caas.core.settings import Settings

ResponseT = TypeVar("ResponseT", bound=Response)


class ErrorBody(BaseModel):
    """The one JSON shape of every error answer."""

    code: str = Field(description="Stable machine-readable code, e.g. `order.invalid_transition`")
    message: str = Field(description="What went wrong, for a person")
    field: str | None = Field(default=None, description="The input field at fault, if any")
    details: Any | None = Field(default=None, description="Extra context, varies per code")


class InvalidFieldBody(BaseModel):
    """One invalid field of a request."""

    field: str = Field(
        description="Dotted path of the field, e.g. `customer.phone`; `body` for the request "
        "as a whole",
        examples=["customer.phone"],
    )
    reason: str = Field(
        description="Why it is refused, for a person",
        examples=["Value error, not a valid phone number for ES"],
    )
    type: str = Field(
        description="Machine-readable kind of the problem (Pydantic's error type)",
        examples=["value_error"],
    )


class ValidationErrorBody(BaseModel):
    """The answer to invalid input (422). A request that does not match the schema answers
    `invalid_input` with every invalid field in `errors`; a well-formed value that is still
    wrong (an expired activation link, a service date in the future) answers its own code."""

    code: str = Field(
        default="invalid_input",
        description="`invalid_input`, or a code naming the rule, such as "
        "`account.activation_expired`",
        examples=["invalid_input"],
    )
    message: str = Field(
        description="The field at fault and why, for a person",
        examples=["customer.phone: Value error, not a valid phone number for ES"],
    )
    field: str = Field(
        description="Dotted path of the first invalid field, e.g. `customer.email`",
        examples=["customer.phone"],
    )
    errors: list[InvalidFieldBody] | None = Field(
        default=None,
        description="Every invalid field with its reason, when the request does not match the "
        "schema",
    )
    details: Any | None = Field(default=None, description="Extra context, varies per code")


def _retry_after(description: str) -> dict[str, Any]:
    """The `Retry-After` header of an error answer, in the OpenAPI document."""
    return {
        "Retry-After": {
            "description": description,
            "schema": {"type": "integer", "minimum": 1},
        }
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status documented with the error shape.

    503 is documented on every route that uses this, asked for or not: any request that reads
    the database can find it unavailable, or collide with another (`caas.app`'s
    `database_error` answers both with `Retry-After`). A route that asks for 503 also calls a
    system of its own that may be down."""
    down = "The database does not answer (`database.unavailable`)"
    if 503 in statuses:
        down += ", or a system we depend on is unavailable (`upstream.unavailable`)"
    described = {
        401: "Not logged in, or the token is invalid",
        402: "The payment provider declined or failed",
        403: "Logged in, but this role may not do this",
        404: "Not found, or not yours to see",
        409: "Not allowed in the object's current state",
        422: "Invalid input: `field` names the field at fault",
        429: "Too many attempts; try again after `Retry-After` seconds",
        503: f"{down}, or the request collided with another one (`database.conflict`); try "
        "again after `Retry-After` seconds",
    }
    headers = {
        429: _retry_after("Seconds until tries are accepted again"),
        503: _retry_after(
            "Seconds to wait before trying again (always sent with `database.unavailable` and "
            "`database.conflict`)"
        ),
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 503}):
        model = ValidationErrorBody if status == 422 else ErrorBody
        responses[status] = {
            "model": model,
            "description": described[status],
            **({"headers": headers[status]} if status in headers else {}),
        }
    return responses


def with_retry_after(response: ResponseT, error: CaasError) -> ResponseT:
    """`response` with the `Retry-After` header (seconds) a refusal told the caller to wait,
    if it did (a throttled login or transfer code carries `retry_after_seconds`)."""
    seconds = error.extra.get("retry_after_seconds")
    if isinstance(seconds, int):
        response.headers["Retry-After"] = str(seconds)
    return response


def _session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, else rolled back."""
    session: Session = request.app.state.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbSession = Annotated[Session, Depends(_session, scope="function")]
ClockDep = Annotated[Clock, Depends(_clock)]
SettingsDep = Annotated[Settings, Depends(_settings)]


SPOKEN_LANGUAGES = frozenset({"en", "es", "fr", "de", "it", "pt"})


def display_language(accept_language: str | None, fallback: str) -> str:
    """The first language of an Accept-Language header that the platform speaks."""
    for item in (accept_language or "").split(","):
        primary = item.split(";")[0].strip().split("-")[0].lower()
        if primary in SPOKEN_LANGUAGES:
            return primary
    return fallback


def answer_once(
    session: Session,
    *,
    user_id: int,
    key: str | None,
    operation: str,
    request: Any,
    now: datetime,
    act: Callable[[], dict[str, Any]],
    status_code: int = 200,
) -> JSONResponse:
    """A command route's answer, run once per the user's Idempotency-Key (`idempotency.once`):
    a retry with the same key and request gets the first answer again."""
    answer = once(
        session,
        principal=f"user:{user_id}",
        key=key,
        operation=operation,
        request=request,
        now=now,
        act=act,
    )
    return JSONResponse(answer, status_code=status_code)
