"""The benchmarks' statement clock with several threads on one engine (the invoicing bench's
relay threads): each statement is timed from its own start, not from another thread's."""

from __future__ import annotations

import threading

from sqlalchemy import text

from caas.bench.scheduler import StatementClock
from caas.core.db import make_engine


def test_overlapping_statements_of_two_threads_are_each_timed_from_their_own_start(
    admin_url: str,
) -> None:
    engine = make_engine(admin_url)
    clock = StatementClock(engine)
    first_running = threading.Event()

    def run(statement: str, *, before: threading.Event | None = None) -> None:
        if before is not None:
            before.wait(10)
        with engine.connect() as connection:
            if before is None:
                connection.exec_driver_sql("select 1")  # connected: the other may start
                first_running.set()
            connection.execute(text(statement))

    # The short one starts first and ends first, while the long one is still running: a
    # clock keeping one stack of starts gave each the other's start.
    short = threading.Thread(target=run, args=("select pg_sleep(0.3) as short",))
    long = threading.Thread(
        target=run, args=("select pg_sleep(0.6) as long",), kwargs={"before": first_running}
    )
    try:
        short.start()
        long.start()
        short.join(20)
        long.join(20)
    finally:
        engine.dispose()

    took = {statement.split()[-1]: seconds for statement, (_, seconds) in clock.by_kind.items()}
    assert took["short"] >= 0.3  # the stack gave it the long one's later start: 0.3 - a little
    assert took["long"] >= 0.6
    assert clock.count == 3
