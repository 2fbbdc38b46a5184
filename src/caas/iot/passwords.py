"""Broker passwords: made at random, kept only as salted scrypt hashes.

A car's password is 32 random bytes (256 bits), so no hash cost makes guessing it feasible or
not: the hash only has to be one-way and salted. scrypt's cost is kept moderate (N=2**12, about
13 ms here) because the embedded broker verifies every car at connection, and a thousand cars
reconnecting at once must not take minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**12, 8, 1
_KEY_BYTES = 32


def new_password() -> str:
    """A fresh random password (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES, maxmem=256 * 1024 * 1024
    )


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$key`, salt and key in base64: the parameters travel with the hash."""
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, _N, _R, _P)
    encoded = [base64.b64encode(part).decode() for part in (salt, key)]
    return "$".join(["scrypt", str(_N), str(_R), str(_P), *encoded])


def verify_password(password_hash: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, key = password_hash.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
