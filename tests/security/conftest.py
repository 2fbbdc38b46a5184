"""Shared by the security tests. Each fixture says whose it is; add yours with a clear name.

`json_logs` (authz engineer: brute force, secrets in logs): every log line of the process,
stdlib and structlog, rendered by the production JSON formatter at DEBUG and kept for the test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from caas.core.logging import configure_logging


@dataclass
class JsonLogs:
    """The JSON log lines written during a test (the server's threads included)."""

    caplog: pytest.LogCaptureFixture

    def lines(self) -> list[str]:
        handler = self.caplog.handler
        return [handler.format(record) for record in self.caplog.records]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The lines as objects, only those of the event `name` when given."""
        parsed = [json.loads(line) for line in self.lines()]
        return [item for item in parsed if name is None or item.get("event") == name]

    def text(self) -> str:
        return "\n".join(self.lines())


@pytest.fixture
def json_logs(caplog: pytest.LogCaptureFixture) -> Iterator[JsonLogs]:
    """Logging configured as production's JSON output at DEBUG, every line captured through
    caplog's handler with that formatter; the previous configuration is restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quieted = {
        name: logging.getLogger(name).level for name in ("uvicorn.access", "httpx", "httpcore")
    }
    structlog_config = structlog.get_config()
    configure_logging("json", "DEBUG")
    formatter = root.handlers[0].formatter
    caplog.handler.setFormatter(formatter)
    caplog.set_level(logging.DEBUG)
    root.addHandler(caplog.handler)  # configure_logging replaced the root's handlers
    try:
        yield JsonLogs(caplog)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, previous in quieted.items():
            logging.getLogger(name).setLevel(previous)
        structlog.configure(**structlog_config)
