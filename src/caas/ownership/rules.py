"""The rules of a change of owner that need no database: the transfer's states, its code, and
what the previous owner gets back for what stops early."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Final

from caas.core.state_machine import StateMachine

TRANSFER = StateMachine(
    "transfer",
    {"open": {"completed", "cancelled"}, "completed": set(), "cancelled": set()},
)
# How long the buyer has to type the code.
CODE_VALIDITY: Final = timedelta(days=7)
# Crockford's base32: no I, L, O or U, so a code read aloud or copied by hand stays right.
CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH: Final = 8  # 40 random bits, shown as two groups of four
# Wrong codes before the buyer (or the VIN) must wait, within the window; like logins.
MAX_FAILED_CODES: Final = 5
FAILED_CODES_WINDOW: Final = timedelta(minutes=15)
# Sources of entitlements that belong to the car and pass to the next owner.
STAYS_WITH_CAR: Final = frozenset({"permanent", "plan"})
DAY: Final = timedelta(days=1)


def new_code() -> str:
    """A fresh transfer code, `XXXX-XXXX`."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalised_code(typed: str) -> str:
    """The code as typed by a person, read the way Crockford's base32 reads it: case, spaces
    and dashes ignored, O read as 0 and I or L as 1."""
    cleaned = "".join(typed.upper().split()).replace("-", "")
    return cleaned.translate(str.maketrans("OIL", "011"))


def code_hash(secret: str, vin: str, code: str) -> str:
    """The keyed hash kept instead of the code (bound to the car's VIN)."""
    message = f"{vin.upper()}:{normalised_code(code)}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def code_matches(secret: str, vin: str, code: str, stored: str | None) -> bool:
    return stored is not None and hmac.compare_digest(code_hash(secret, vin, code), stored)


def refund_minor(
    policy: str,
    *,
    paid_minor: int,
    valid_from: datetime,
    valid_until: datetime | None,
    at: datetime,
) -> int:
    """What the previous owner gets back of `paid_minor` for a window cut at `at`, by the
    offer's refund policy: a window not yet begun, everything; else `none` and
    `end_of_period` nothing (the period was theirs to use), `full` everything, `unused_days`
    the whole days not yet begun, pro rata (rounded down, never more than was paid)."""
    if paid_minor <= 0:
        return 0
    if at <= valid_from or policy == "full":
        return paid_minor
    if policy != "unused_days" or valid_until is None or at >= valid_until:
        return 0
    total_days = -(-(valid_until - valid_from) // DAY)  # started days of the window
    unused_days = (valid_until - at) // DAY
    return min(paid_minor, paid_minor * unused_days // max(total_days, 1))
