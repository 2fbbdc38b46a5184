"""What every page shares: templates, the page route, who may open a page, flash messages."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import structlog
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from caas.accounts.deps import current_user_or_none
from caas.accounts.models import Role, User
from caas.core.errors import CaasError, Forbidden
from caas.web import display
from caas.web.csrf import CSRF_FIELD, csrf_token
from caas.web.forms import FormErrors, refusal_text
from caas.web.strings import DEFAULT_LANGUAGE, LANGUAGES, lookup, translate

log = structlog.get_logger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# Where each role lands after logging in.
HOME = {
    Role.DEALER: "/intranet/sales",
    Role.CUSTOMER: "/portal/orders",
    Role.OPERATOR: "/operator/orders",
    Role.WORKSHOP: "/workshop",
}

# The top bar of each role: where it goes and the text it shows.
NAV = {
    Role.DEALER: (
        ("/intranet/sales", "nav.sales"),
        ("/intranet/sales/new", "nav.new_sale"),
        ("/intranet/resales/new", "nav.resale"),
    ),
    Role.CUSTOMER: (
        ("/portal/orders", "nav.my_orders"),
        ("/portal/cars", "nav.my_cars"),
        ("/portal/store", "nav.store"),
        ("/portal/upkeep", "nav.my_upkeep"),
        ("/portal/file", "nav.my_file"),
        ("/portal/payment-methods", "nav.payment_methods"),
        ("/portal/notifications", "nav.notifications"),
        ("/portal/key", "nav.key"),
        ("/portal/privacy", "nav.privacy"),
    ),
    Role.OPERATOR: (
        ("/operator/orders", "nav.orders"),
        ("/operator/fleet", "nav.fleet"),
        ("/operator/pushes", "nav.pushes"),
        ("/operator/catalog", "nav.catalog"),
        ("/operator/releases", "nav.releases"),
        ("/operator/upkeep", "nav.upkeep"),
        ("/operator/finance", "nav.finance"),
        ("/operator/audit", "nav.audit"),
    ),
    Role.WORKSHOP: (("/workshop", "nav.find_car"), ("/workshop/upkeep", "nav.workshop_calendar")),
}


def nav_items(role: str, path: str) -> list[tuple[str, str, bool]]:
    """The role's links, the one the current page belongs to marked (the longest match)."""
    links = NAV[Role(role)]
    matching = [href for href, _ in links if path == href or path.startswith(href + "/")]
    current = max(matching, key=len, default=None)
    return [(href, key, href == current) for href, key in links]


_environment = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(("html",), default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(display.FILTERS)
_environment.globals.update(display.GLOBALS)
_environment.globals["CSRF_FIELD"] = CSRF_FIELD
_environment.globals["nav_items"] = nav_items


class LoginRequired(Exception):
    """A visitor without a session opened a page that needs one."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def language_of(request: Request, user: User | None) -> str:
    """The language the reader chose on the page, else their account's, else English."""
    chosen = request.session.get("lang")
    if isinstance(chosen, str) and chosen in LANGUAGES:
        return chosen
    if user is not None and user.role is Role.CUSTOMER and user.language in LANGUAGES:
        return user.language
    return DEFAULT_LANGUAGE


def flash(request: Request, key: str, *, tone: str = "ok", **values: Any) -> None:
    """A message shown once on the next page (after a redirect), in the reader's language."""
    text = translate(language_of(request, getattr(request.state, "user", None)), key, **values)
    request.session.setdefault("flash", []).append([tone, text])


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    user: User | None = getattr(request.state, "user", None)
    language = language_of(request, user)
    page: dict[str, Any] = {
        "request": request,
        "user": user,
        "home": HOME.get(user.role, "/") if user else "/login",
        "lang": language,
        "languages": LANGUAGES,
        "t": partial(translate, language),
        "csrf_token": csrf_token(request),
        "flashes": request.session.pop("flash", []),
        "zone": display.STAFF_ZONE,
        "values": {},
        "errors": FormErrors(),
        "path": request.url.path,
        "unread": 0,
    }
    page.update(context or {})
    if isinstance(page["errors"], FormErrors):
        page["errors"] = page["errors"].in_language(language)
    body = _environment.get_template(template).render(page)
    return HTMLResponse(body, status_code=status_code, headers=_page_headers(request))


def _page_headers(request: Request) -> dict[str, str]:
    """Scripts and forms only from this site; card numbers only to the payment provider; the
    activation link's token never leaves in a Referer."""
    settings = request.app.state.settings
    provider = urlsplit(settings.browser_payment_url)
    provider_origin = f"{provider.scheme}://{provider.netloc}" if provider.netloc else ""
    policy = "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            f"connect-src 'self' {provider_origin}".strip(),
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'self'",
            "worker-src 'self'",
            "manifest-src 'self'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def render_error(request: Request, status_code: int, message: str) -> HTMLResponse:
    title_key = f"error.{status_code}" if lookup(DEFAULT_LANGUAGE, f"error.{status_code}") else ""
    context = {"status": status_code, "message": message, "title_key": title_key or "error.generic"}
    return render(request, "error.html", context, status_code=status_code)


def see_other(url: str) -> RedirectResponse:
    """After a POST: go to `url` with GET (so reloading does not post again)."""
    return RedirectResponse(url, status_code=303)


def safe_next(url: str | None) -> str | None:
    """`url` when it is a path on this site; nothing else (no open redirect)."""
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return None


class PageRoute(APIRoute):
    """A route that answers with pages: errors become an HTML page, anonymous visitors go to
    the login page; the transaction has already been rolled back when they get here."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as needed:
                return see_other(f"/login?next={quote(needed.next_url, safe='/')}")
            except CaasError as error:
                if error.status >= 500:
                    log.warning("page.upstream_error", code=error.code, message=error.message)
                language = language_of(request, getattr(request.state, "user", None))
                return render_error(request, error.status, refusal_text(error, language))
            except RequestValidationError as error:
                first = error.errors()[0] if error.errors() else {"msg": "invalid input"}
                return render_error(request, 422, str(first["msg"]))

        return page


def _viewer(
    request: Request, user: Annotated[User | None, Depends(current_user_or_none)]
) -> User | None:
    request.state.user = user
    return user


Viewer = Annotated[User | None, Depends(_viewer)]


def _signed_in(role: Role | None) -> Callable[[Request, User | None], User]:
    def dependency(request: Request, user: Viewer) -> User:
        if user is None:
            query = request.url.query
            raise LoginRequired(request.url.path + (f"?{query}" if query else ""))
        if role is not None and user.role is not role:
            raise Forbidden(f"this page is for the role {role.value}")
        return user

    return dependency


SignedIn = Annotated[User, Depends(_signed_in(None))]
DealerPage = Annotated[User, Depends(_signed_in(Role.DEALER))]
CustomerPage = Annotated[User, Depends(_signed_in(Role.CUSTOMER))]
OperatorPage = Annotated[User, Depends(_signed_in(Role.OPERATOR))]
WorkshopPage = Annotated[User, Depends(_signed_in(Role.WORKSHOP))]
