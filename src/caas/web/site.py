"""Mounting the pages and their static files on the application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from caas.web import (
    accounts,
    audit,
    cars,
    catalogs,
    console,
    intranet,
    keys,
    live,
    methods,
    ownership,
    portal,
    privacy,
    pushes,
    pwa,
    releases,
    store,
    upkeep,
    workshop,
)
from caas.web.finance import router as finance_router
from caas.web.pages import STATIC_DIR
from caas.web.upkeep_console import router as upkeep_console_router

FAVICON = STATIC_DIR / "favicon.svg"


def favicon() -> FileResponse:
    """The site's icon where browsers look for it without being told (`/favicon.ico`)."""
    return FileResponse(
        FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )


def include_web(app: FastAPI) -> None:
    """Every page router, `/static` (CSS, the icon and the little JavaScript the pages use),
    and `/favicon.ico`."""
    for module in (
        accounts,
        intranet,
        portal,
        keys,
        privacy,
        cars,
        console,
        workshop,
        store,
        methods,
        ownership,
        releases,
        pushes,
        pwa,
        audit,
        upkeep,
    ):
        app.include_router(module.router)
    app.include_router(portal.live_router)
    app.include_router(live.router)
    app.include_router(finance_router)
    app.include_router(upkeep_console_router)
    app.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    catalogs.install(app.state.settings.locales_dir)
