"""`caas bench scheduler`: one day's window boundaries swept from N entitlements in PostgreSQL.

A scratch database (on `CAAS_DATABASE_URL`'s server, else the embedded PostgreSQL), migrated
and seeded with the catalog, gets `entitlements` rows bulk-loaded with `generate_series` (one
statement each for the cars and the entitlements, deterministic with `setseed`) across
`cars` cars (N/5 by default): windows of a day, a week, a month (30 % each) or a year (10 %),
starting at random instants over the `spread_days` before the end of the day swept, so every
day of the fleet has about the same number of starts and ends; those already over before the
day are `ended`, the rest `active`.

Then the sweep (`caas.store.sweep.sweep_batch`, as the worker's `store.sweep` runs it) catches
up on that whole day: the cursor at the day's start, the clock at its end, batch after batch
of cars, one committed transaction each, until the pass is finished. Every affected car gets
its entitlements ended and one newly signed configuration (`request_configuration`: the
car's lock, its features and entitlements read, the manifest signed with Ed25519, the older
version superseded, the version, its history and its publication queued in the outbox).
Only the sweep is timed; the loading is reported beside it.
"""

from __future__ import annotations

import contextlib
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from caas.bench.harness import _embedded_postgres, scratch_database
from caas.catalog.models import Feature, Platform
from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.migrate import upgrade
from caas.ota import service as ota
from caas.ota.keys import ensure_demo_keys
from caas.ota.models import ConfigurationVersion
from caas.protocol.mqtt import ManifestBody
from caas.protocol.vin import make_vin, model_year_code
from caas.runtime import read_settings
from caas.seed import load_reference_data
from caas.store import sweep
from caas.store.models import Entitlement, SweepCursor
from caas.vehicles.models import Vehicle

PLATFORM = "AURA"
PLANTS = "BCDFGHJKLMNPRSTVWXYZ"  # a VIN's plant code: a million serials each
# The day swept: [DAY_START, DAY_START + 1 day).
DAY_START = datetime(2026, 6, 1, tzinfo=UTC)

Progress = Callable[[str], None]

_LOAD_CARS = text(
    """
    INSERT INTO vehicles (vin, platform_id, public_key, software_version, built_at, delivered_at)
    SELECT vin, :platform_id, 'bench', '7.2.0', :built, :built
    FROM unnest(CAST(:vins AS text[])) WITH ORDINALITY AS car(vin, n) ORDER BY n
    """
)
# Cars' ids are consecutive in a fresh table: entitlement g goes to car first + g % cars.
_LOAD_ENTITLEMENTS = text(
    """
    INSERT INTO entitlements (vehicle_id, feature_id, code, source, state, enabled, valid_from,
                              valid_until, parameters, created_at, updated_at)
    SELECT vehicle_id, feature_ids[feature], codes[feature], 'purchase',
           CASE WHEN valid_from + length <= :day_start THEN 'ended' ELSE 'active' END,
           true, valid_from, valid_from + length, '{}'::jsonb, :day_start, :day_start
    FROM (
        SELECT :first_car + g % :cars AS vehicle_id,
               1 + (g / :cars) % cardinality(CAST(:feature_ids AS integer[])) AS feature,
               CAST(:feature_ids AS integer[]) AS feature_ids,
               CAST(:codes AS text[]) AS codes,
               :day_end - random() * make_interval(days => :spread_days) AS valid_from,
               CASE floor(random() * 10)::int
                   WHEN 0 THEN interval '1 day' WHEN 1 THEN interval '1 day'
                   WHEN 2 THEN interval '1 day' WHEN 3 THEN interval '7 days'
                   WHEN 4 THEN interval '7 days' WHEN 5 THEN interval '7 days'
                   WHEN 9 THEN interval '365 days' ELSE interval '30 days'
               END AS length
        FROM generate_series(0, :entitlements - 1) AS g
    ) AS drawn
    """
)


def _peak_rss_mb() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _quiet(_: str) -> None:
    return None


def _load(
    session: Session, *, entitlements: int, cars: int, spread_days: int, progress: Progress
) -> None:
    platform_id = session.scalars(select(Platform.id).where(Platform.code == PLATFORM)).one()
    features = session.execute(
        select(Feature.id, Feature.code)
        .where(Feature.platform_id == platform_id)
        .order_by(Feature.code)
    ).all()
    progress(f"loading {cars:,} cars")
    year = model_year_code(2026)
    vins = [
        make_vin("WC9", "BENCH", year, PLANTS[n // 1_000_000], n % 1_000_000) for n in range(cars)
    ]
    session.execute(_LOAD_CARS, {"platform_id": platform_id, "vins": vins, "built": DAY_START})
    first_car = session.scalar(select(func.min(Vehicle.id)).where(Vehicle.vin.in_(vins[:1])))
    progress(f"loading {entitlements:,} entitlements")
    session.execute(text("SELECT setseed(0.42)"))
    session.execute(
        _LOAD_ENTITLEMENTS,
        {
            "first_car": first_car,
            "cars": cars,
            "feature_ids": [row.id for row in features],
            "codes": [row.code for row in features],
            "day_start": DAY_START,
            "day_end": DAY_START + timedelta(days=1),
            "spread_days": spread_days,
            "entitlements": entitlements,
        },
    )
    session.add(SweepCursor(name=sweep.CURSOR, swept_until=DAY_START, runs=0))


_STARTED = "caas.bench.statement_started"


class StatementClock:
    """Counts the SQL statements an engine runs and the time spent waiting for them.

    Safe with several threads on the engine (the invoicing bench's relay threads): each
    statement's start is kept on its own cursor's connection, and the sums under a lock."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self.seconds = 0.0
        self.by_kind: dict[str, list[float]] = {}  # statement's start -> [count, seconds]
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, connection: Connection, *_: Any) -> None:
        connection.info[_STARTED] = time.perf_counter()

    def _after(self, connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        took = time.perf_counter() - connection.info.pop(_STARTED)
        kind_of = " ".join(statement.split())[:70]
        with self._lock:
            self.count += 1
            self.seconds += took
            kind = self.by_kind.setdefault(kind_of, [0, 0.0])
            kind[0] += 1
            kind[1] += took

    def slowest(self, count: int = 6) -> list[str]:
        """The statements that took the most time altogether, as lines to print."""
        ranked = sorted(self.by_kind.items(), key=lambda item: item[1][1], reverse=True)
        return [
            f"{seconds:8.2f} s {int(calls):7d} x {seconds / calls * 1000:6.2f} ms  {statement}"
            for statement, (calls, seconds) in ranked[:count]
        ]


def _signing_seconds(sessions: Any, *, samples: int = 200) -> float:
    """What signing one stored manifest's body costs, on its own (mean of `samples`)."""
    with unit_of_work(sessions) as session:
        body = session.scalars(select(ConfigurationVersion.body).limit(1)).first()
    if body is None:
        return 0.0
    manifest = ManifestBody.model_validate(body)
    material = ota.signing_material()
    started = time.perf_counter()
    for _ in range(samples):
        material.sign(manifest)
    return (time.perf_counter() - started) / samples


def _sweep_day(sessions: Any, *, batch: int, progress: Progress) -> dict[str, int]:
    """The day's pass, batch after batch, one committed transaction each."""
    totals = {"batches": 0, "cars": 0, "signed": 0, "boundaries": 0, "ended": 0}
    day_end = DAY_START + timedelta(days=1)
    while True:
        with unit_of_work(sessions) as session:
            done = sweep.sweep_batch(session, sweep._cursor(session), now=day_end, batch=batch)
        totals["batches"] += 1
        totals["cars"] += done.cars
        totals["signed"] += done.signed
        totals["boundaries"] += done.boundaries
        totals["ended"] += done.ended
        if totals["batches"] % 10 == 0:
            progress(f"swept {totals['boundaries']:,} boundaries in {totals['cars']:,} cars")
        if done.finished:
            return totals


def run_scheduler_bench(
    entitlements: int,
    *,
    cars: int | None = None,
    spread_days: int = 365,
    batch: int = sweep.BATCH,
    progress: Progress = _quiet,
) -> dict[str, float]:
    """Load `entitlements` windows across `cars` cars (N/5), sweep one day's boundaries; the
    figures: `seconds` (the sweep), `boundaries_per_s`, `peak_rss_mb`, and what was done."""
    cars = cars or max(1, entitlements // 5)
    settings = read_settings()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caas-bench-")))
        progress("starting PostgreSQL")
        server_url = settings.database_url or _embedded_postgres(settings, stack)
        database_url = stack.enter_context(scratch_database(server_url))
        progress("migrating the scratch database")
        upgrade(database_url)
        ota.use_signing_material(ensure_demo_keys(workdir / "keys"))
        stack.callback(ota.use_signing_material, None)
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        sessions = make_session_factory(engine)
        started = time.perf_counter()
        with unit_of_work(sessions) as session:
            load_reference_data(session)
            _load(
                session,
                entitlements=entitlements,
                cars=cars,
                spread_days=spread_days,
                progress=progress,
            )
        with engine.connect() as connection:
            connection.execute(text("ANALYZE vehicles"))
            connection.execute(text("ANALYZE entitlements"))
            connection.commit()
        loaded = time.perf_counter() - started
        progress(f"loaded in {loaded:.1f} s; sweeping the day")
        statements = StatementClock(engine)
        started = time.perf_counter()
        totals = _sweep_day(sessions, batch=batch, progress=progress)
        seconds = time.perf_counter() - started
        database_seconds, statement_count = statements.seconds, statements.count
        for line in statements.slowest():
            progress(line)
        signing = _signing_seconds(sessions) * totals["signed"]
        with unit_of_work(sessions) as session:
            stored = session.scalar(select(func.count()).select_from(Entitlement)) or 0
            versions = session.scalar(select(func.count()).select_from(ConfigurationVersion)) or 0
    return {
        "seconds": round(seconds, 3),
        "boundaries_per_s": round(totals["boundaries"] / seconds, 1) if seconds else 0.0,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "entitlements": float(stored),
        "cars": float(cars),
        "boundaries": float(totals["boundaries"]),
        "cars_swept": float(totals["cars"]),
        "configurations_signed": float(totals["signed"]),
        "versions_stored": float(versions),
        "entitlements_ended": float(totals["ended"]),
        "batches": float(totals["batches"]),
        "signed_per_s": round(totals["signed"] / seconds, 1) if seconds else 0.0,
        "load_seconds": round(loaded, 3),
        # Where the sweep's time went: waiting for PostgreSQL (statements sent and answered),
        # signing manifests (Ed25519 over the canonical JSON, measured apart), the rest in
        # Python (the ORM, building the manifests).
        "statements": float(statement_count),
        "statements_per_car": round(statement_count / max(totals["cars"], 1), 1),
        "database_seconds": round(database_seconds, 3),
        "signing_seconds": round(signing, 3),
        "python_seconds": round(max(seconds - database_seconds - signing, 0.0), 3),
    }
