"""The soak runs only when asked for (`make soak`: `-m soak`, or `CAAS_SOAK=1`): a plain
`make test` skips it, so CI, which runs both, does not run it twice. Its summary is printed at
the end of pytest's report."""

from __future__ import annotations

import os

import pytest

# Lines of the soak's summary, filled by the test and printed by `pytest_terminal_summary`.
REPORT: list[str] = []


def _asked_for(config: pytest.Config) -> bool:
    marks = str(config.getoption("markexpr", "") or "")
    return os.environ.get("CAAS_SOAK") == "1" or ("soak" in marks and "not soak" not in marks)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    skip = pytest.mark.skip(reason="the soak runs with `make soak` (-m soak or CAAS_SOAK=1)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("soak summary")
        for line in REPORT:
            terminalreporter.write_line(line)
