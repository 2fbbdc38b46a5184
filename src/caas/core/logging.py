"""Structured logs: JSON in production, readable in the terminal, never a secret.

Every line, the platform's own (structlog) and the libraries' (stdlib, uvicorn's access log
included, were it turned on), goes through `redact_secrets` as it is written: values under a
secret's key (`password`, `token`, `authorization`...) and secrets inside text (a URL's
`?token=`, a `Bearer` header, `password=...`, the session cookie, a card number) become
`[redacted]`. The code should not log secrets in the first place; this is the second lock.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

# A key naming one of these (any case, anywhere in the name) holds a secret.
SECRET_KEYS = (
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "cookie",
    "card_number",
    "cvc",
    "api_key",
    "transfer_code",
)

_SECRETS_IN_TEXT: tuple[tuple[re.Pattern[str], str], ...] = (
    # A URL's query: ?token=..., &code=..., &signature=...
    (
        re.compile(
            r"(?i)([?&;](?:[a-z_]*token|code|password|secret|api_key|signature|sig)=)"
            r"[^&\s\"'<>\\]+"
        ),
        r"\1" + REDACTED,
    ),
    # An Authorization header's credentials.
    (re.compile(r"(?i)(\b(?:bearer|basic)\s+)[\w.~+/=-]+"), r"\1" + REDACTED),
    # key: value and key=value pairs, quoted or not (a dict's repr, JSON, a form).
    (
        re.compile(
            r"(?i)((?:password|passwd|secret|[a-z_]*token|cvc|card_number|api_key)['\"]?"
            r"\s*[:=]\s*['\"]?)[^'\"\s,;&}]+"
        ),
        r"\1" + REDACTED,
    ),
    # The web session's cookie.
    (re.compile(r"(caas_session=)[^;\s\"']+"), r"\1" + REDACTED),
)
_DIGITS = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _card_number(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return REDACTED if _luhn_valid(digits) else match.group(0)


def redact_text(text: str) -> str:
    """`text` with the secrets it carries replaced by `[redacted]`."""
    for pattern, replacement in _SECRETS_IN_TEXT:
        text = pattern.sub(replacement, text)
    return _DIGITS.sub(_card_number, text)


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and any(name in key.lower() for name in SECRET_KEYS)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: REDACTED if _is_secret_key(key) else _redacted(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redacted(item) for item in value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", errors="replace"))
    return value


def redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: secrets out of every value of the line, the message included."""
    for key, value in list(event_dict.items()):
        if key.startswith("_"):
            continue  # structlog's own bookkeeping (the record, the logger)
        event_dict[key] = REDACTED if _is_secret_key(key) else _redacted(value)
    if "exception" in event_dict and isinstance(event_dict["exception"], str):
        event_dict["exception"] = redact_text(event_dict["exception"])
    return event_dict


def configure_logging(fmt: str | None, level: str = "INFO") -> None:
    """Route stdlib and structlog through one renderer; `fmt` None picks by terminal."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # JSON: tracebacks become text, redacted like the rest (SQL errors carry
                # their parameters); the console renders its own, for a person at a terminal.
                *([structlog.processors.format_exc_info] if fmt == "json" else []),
                redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
