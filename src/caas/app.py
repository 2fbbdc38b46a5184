"""The FastAPI application: every domain's routes, the error shape, health and metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware

from caas import __version__
from caas.core.api import ErrorBody
from caas.core.clock import Clock, SystemClock
from caas.core.errors import CaasError
from caas.core.settings import Settings

log = structlog.get_logger(__name__)

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
        return JSONResponse(error.to_dict(), status_code=error.status)

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

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    from caas.routes import include_routes

    include_routes(app)
    return app
