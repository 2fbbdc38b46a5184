"""Mounting the pages and their static files on the application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from caas.web import accounts, console, intranet, portal, workshop
from caas.web.pages import STATIC_DIR


def include_web(app: FastAPI) -> None:
    """Every page router, and `/static` (CSS and the little JavaScript the pages use)."""
    for module in (accounts, intranet, portal, console, workshop):
        app.include_router(module.router)
    app.include_router(portal.live_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
