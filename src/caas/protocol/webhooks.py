"""Signed webhooks: HMAC-SHA256 over the timestamp and the raw body.

The sender puts `X-Caas-Signature: t=<unix seconds>,v1=<hex digest>` on the request, where the
digest is HMAC-SHA256(secret, f"{t}.{body}"). The receiver recomputes it over the exact bytes it
received, compares in constant time, and refuses a timestamp outside its tolerance, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Caas-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature is missing, malformed, wrong or too old."""


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The header value that signs `body` now (or at `timestamp`)."""
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def verify(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    now: float | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless `header` signs `body` with `secret`, recently enough."""
    if not header:
        raise SignatureError("missing signature")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        moment = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise SignatureError("malformed signature") from None
    current = time.time() if now is None else now
    if abs(current - moment) > tolerance_seconds:
        raise SignatureError("signature timestamp outside the tolerance")
    expected = sign(body, secret, timestamp=moment).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise SignatureError("wrong signature")
