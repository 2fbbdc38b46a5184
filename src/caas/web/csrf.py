"""Cross-site request forgery: every POST form carries the session's secret token."""

from __future__ import annotations

import secrets

from fastapi import Request

from caas.core.errors import Forbidden

CSRF_FIELD = "csrf_token"
_SESSION_KEY = "csrf"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(request: Request) -> str:
    """The token of this browser session, created on first use."""
    token = request.session.get(_SESSION_KEY)
    if not isinstance(token, str):
        token = renew_csrf_token(request)
    return token


def renew_csrf_token(request: Request) -> str:
    """A fresh token, after logging in or out (a token seen before login stops working)."""
    token = secrets.token_urlsafe(32)
    request.session[_SESSION_KEY] = token
    return token


async def csrf_protect(request: Request) -> None:
    """Router dependency: a POST without the session's token is refused with 403."""
    if request.method in _SAFE_METHODS:
        return
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    expected = request.session.get(_SESSION_KEY)
    if (
        not isinstance(sent, str)
        or not isinstance(expected, str)
        or not secrets.compare_digest(sent.encode(), expected.encode())
    ):
        raise Forbidden(
            "this form has expired or did not come from this site; reload the page and try again",
            code="csrf.invalid",
        )
