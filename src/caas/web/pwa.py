# ruff: noqa: E501 - a catalogue of texts reads best one text per line
"""The customer app as an installable web app: its manifest, its service worker and the page it
shows offline (the worker itself is `static/sw.js`, the page's side `static/pwa.js`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from caas.web import strings
from caas.web.pages import STATIC_DIR, PageRoute, Viewer, language_of, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

THEME_COLOUR = "#0b5fff"
BACKGROUND_COLOUR = "#f4f6f9"
# Where the app opens, and the pages its worker looks after.
START_URL = "/portal"
SCOPE = "/portal"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "nav.privacy": "My data",
        "nav.menu": "Menu",
        "pwa.short_name": "My car",
        "pwa.description": "Your car: its orders, its file, its options and its key",
        "pwa.offline_title": "Offline",
        "pwa.offline_intro": "You are offline and this page was never opened on this device, so there is no copy of it here.",
        "pwa.offline_cars": "The pages of your cars you opened before are still here:",
        "pwa.offline_banner": "Offline: last updated {when}",
        "pwa.retry": "Try again",
        "live.reconnecting": "Reconnecting…",
    },
    "es": {
        "nav.privacy": "Mis datos",
        "nav.menu": "Menú",
        "pwa.short_name": "Mi coche",
        "pwa.description": "Tu coche: sus pedidos, su expediente, sus opciones y su llave",
        "pwa.offline_title": "Sin conexión",
        "pwa.offline_intro": "No tienes conexión y esta página nunca se abrió en este dispositivo, así que no hay copia de ella aquí.",
        "pwa.offline_cars": "Las páginas de tus coches que abriste antes siguen aquí:",
        "pwa.offline_banner": "Sin conexión: última actualización {when}",
        "pwa.retry": "Reintentar",
        "live.reconnecting": "Reconectando…",
    },
}

for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)


def manifest_of(language: str) -> dict[str, Any]:
    """The web app manifest in `language`: what a phone shows when the app is installed."""
    icons = [
        {"src": "/static/icons/icon-192.png", "sizes": "192x192", "type": "image/png"},
        {"src": "/static/icons/icon-512.png", "sizes": "512x512", "type": "image/png"},
        {
            "src": "/static/icons/icon-maskable-512.png",
            "sizes": "512x512",
            "type": "image/png",
            "purpose": "maskable",
        },
    ]
    return {
        "id": START_URL,
        "name": f"caas · {strings.translate(language, 'app.name')}",
        "short_name": strings.translate(language, "pwa.short_name"),
        "description": strings.translate(language, "pwa.description"),
        "lang": language,
        "start_url": START_URL,
        "scope": SCOPE,
        "display": "standalone",
        "orientation": "portrait",
        "theme_color": THEME_COLOUR,
        "background_color": BACKGROUND_COLOUR,
        "icons": icons,
    }


@router.get("/manifest.webmanifest")
def manifest(request: Request, user: Viewer) -> Response:
    return JSONResponse(
        manifest_of(language_of(request, user)),
        media_type="application/manifest+json",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/sw.js")
def service_worker() -> FileResponse:
    """Served from the root, so its scope may cover `/portal`; never cached by HTTP, so a new
    version is installed at the next visit."""
    return FileResponse(
        STATIC_DIR / "sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": SCOPE},
    )


@router.get("/portal/offline")
def offline_page(request: Request, _: Viewer) -> Response:
    # The worker fetches this page in the background (and it shows later, offline): a message
    # waiting for the reader's next page is neither shown here nor lost.
    waiting = request.session.get("flash")
    response = render(request, "portal/offline.html", {"flashes": []})
    if waiting:
        request.session["flash"] = waiting
    return response
