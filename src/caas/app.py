"""The FastAPI application: every domain's routes, the error shape, health and metrics."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from caas import __version__
from caas.core.api import ErrorBody, ValidationErrorBody, error_responses, with_retry_after
from caas.core.clock import Clock, SystemClock
from caas.core.db import database_unreachable, lock_conflict
from caas.core.errors import CaasError
from caas.core.settings import Settings

log = structlog.get_logger(__name__)

# What a client is told to wait before trying again while the database does not answer.
DATABASE_RETRY_AFTER_SECONDS = 5
# ... and after its request collided with another one's (a deadlock): a moment is enough.
CONFLICT_RETRY_AFTER_SECONDS = 1

REQUESTS = Counter("caas_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("caas_http_request_seconds", "HTTP request latency", ["method", "route"])

DESCRIPTION = """
The Car-as-a-Service platform: the dealer's sale, the factory order, payments, registration,
delivery and the customer's file.

Authenticate with a web session (log in on `/login`) or with a bearer token from
`POST /api/v1/auth/tokens`. Every command that moves money or state takes an
`Idempotency-Key` header: a retry with the same key returns the first answer.
Every error has the same JSON shape (`code`, `message`, `field`).
"""


def _field_path(location: Sequence[Any]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _document_our_error_shapes(document: dict[str, Any]) -> None:
    """Make the generated OpenAPI document say what the application really answers.

    FastAPI documents the 422 of every route that takes input with its own
    `HTTPValidationError`; our `validation_error` handler answers `ValidationErrorBody`, so the
    document says so, here, once for every route. Request bodies given as a model's JSON
    schema (`openapi_extra`, for routes that read the raw body to check a signature) keep
    their nested models in `$defs`, which a reader of the document cannot resolve: they move
    to the document's components.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    _add_to_components(
        schemas,
        ValidationErrorBody.model_json_schema(
            mode="serialization", ref_template="#/components/schemas/{model}"
        ),
        "ValidationErrorBody",
    )
    invalid_input = error_responses(422)[422]["description"]
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            answer = operation.get("responses", {}).get("422")
            schema = (answer or {}).get("content", {}).get("application/json", {}).get("schema")
            if schema is not None and schema.get("$ref", "").endswith("/HTTPValidationError"):
                answer["content"]["application/json"]["schema"] = {
                    "$ref": "#/components/schemas/ValidationErrorBody"
                }
                answer["description"] = invalid_input
            for media in operation.get("requestBody", {}).get("content", {}).values():
                if "$defs" in media.get("schema", {}):
                    # A copy: the route's `openapi_extra` must stay as written for the next app.
                    media["schema"] = _with_refs_to_components(copy.deepcopy(media["schema"]))
                    for name, definition in media["schema"].pop("$defs").items():
                        _add_to_components(schemas, definition, name)


def _with_refs_to_components(node: Any) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
        for value in node.values():
            _with_refs_to_components(value)
    elif isinstance(node, list):
        for value in node:
            _with_refs_to_components(value)
    return node


def _add_to_components(schemas: dict[str, Any], schema: dict[str, Any], name: str) -> None:
    """Add `schema` (and its `$defs`) unless the model is there already (FastAPI's rendering
    of the same model differs in details, such as `default: null`, so fields are compared)."""
    for nested, definition in schema.pop("$defs", {}).items():
        _add_to_components(schemas, definition, nested)
    present = schemas.setdefault(name, schema)
    if set(present.get("properties", {})) != set(schema.get("properties", {})):
        raise ValueError(f"two different schemas are both called {name!r} in the OpenAPI document")


def _invalid_input(field: str, reason: str, kind: str) -> JSONResponse:
    """A 422 in the shape of `validation_error`'s answers, for input refused past validation."""
    return JSONResponse(
        {
            "code": "invalid_input",
            "message": f"{field}: {reason}",
            "field": field,
            "errors": [{"field": field, "reason": reason, "type": kind}],
        },
        status_code=422,
    )


# PostgreSQL's `integer`: the largest id (and count) a row can hold.
LARGEST_INTEGER = 2**31 - 1


def _out_of_range_path_parameter(request: Request) -> str | None:
    """The path parameter whose number the database cannot hold, if one is."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and value.isdigit() and int(value) > LARGEST_INTEGER:
            return str(name)
    return None


def create_app(
    *, settings: Settings, sessions: sessionmaker[Session], clock: Clock | None = None
) -> FastAPI:
    app = FastAPI(
        title="caas",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.clock = clock or SystemClock()
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="caas_session",
        same_site="lax",
        https_only=settings.secure_cookies,
        max_age=8 * 3600,
    )

    @app.exception_handler(CaasError)
    async def caas_error(_: Request, error: CaasError) -> JSONResponse:
        """The error's JSON shape; a refusal that says how long to wait (429) says it in
        `Retry-After` too."""
        return with_retry_after(JSONResponse(error.to_dict(), status_code=error.status), error)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, error: DBAPIError) -> JSONResponse:
        """The database does not answer (down, restarting, the connection dropped): 503 with
        `Retry-After` instead of a 500, so clients and load balancers try again. Nothing needs
        restarting afterwards: the pool has dropped the dead connections and the next request
        connects anew.

        A request whose transaction PostgreSQL rolled back for colliding with another (a
        deadlock, a serialization failure) lost only that transaction's writes: 503
        `database.conflict` with a short `Retry-After`, and the same request again (with its
        Idempotency-Key) carries on from what was committed. Any other database error is a bug
        and stays a 500."""
        if lock_conflict(error):
            log.warning(
                "api.database_conflict",
                method=request.method,
                path=request.url.path,
                error=type(error.orig).__name__,
            )
            return JSONResponse(
                {
                    "code": "database.conflict",
                    "message": "the request collided with another one; try it again",
                },
                status_code=503,
                headers={"Retry-After": str(CONFLICT_RETRY_AFTER_SECONDS)},
            )
        if not database_unreachable(error):
            raise error
        log.warning(
            "api.database_unavailable",
            method=request.method,
            path=request.url.path,
            error=type(error.orig).__name__,
        )
        return JSONResponse(
            {
                "code": "database.unavailable",
                "message": "the database does not answer; try again in a few seconds",
            },
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(item["loc"]), "reason": item["msg"], "type": item["type"]}
            for item in error.errors()
        ]
        first = errors[0] if errors else {"field": "body", "reason": "invalid"}
        return JSONResponse(
            {
                "code": "invalid_input",
                "message": f"{first['field']}: {first['reason']}",
                "field": first["field"],
                "errors": errors,
            },
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Any:
        """A body that is not UTF-8 is invalid input like any other malformed JSON (422 with
        `field` = `body`), not FastAPI's 400 in a shape of its own."""
        if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
            return _invalid_input("body", "the body is not UTF-8 text", "body_not_utf8")
        return await http_exception_handler(request, error)

    @app.exception_handler(DataError)
    async def data_error(request: Request, error: DataError) -> JSONResponse:
        """A value the database refuses to hold (an id beyond its integers, text too long for
        its column) is invalid input (422), not a server error; logged, since the route's own
        validation should have said so first."""
        field = _out_of_range_path_parameter(request) or "body"
        log.warning("request.data_refused", route=request.url.path, error=str(error.orig))
        return _invalid_input(field, "out of the range the platform keeps", "out_of_range")

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        path = getattr(request.scope.get("route"), "path", "unmatched")
        LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="The process can serve: the database answers",
        responses={503: {"model": ErrorBody, "description": "The database does not answer"}},
    )
    def readyz() -> JSONResponse:
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            log.warning("readyz.database_down", error=str(error))
            return JSONResponse(
                {"code": "database.unavailable", "message": "the database does not answer"},
                status_code=503,
            )
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
    )
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    from caas.routes import include_routes

    include_routes(app)

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        document = generate_openapi()
        if first:
            _document_our_error_shapes(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app
