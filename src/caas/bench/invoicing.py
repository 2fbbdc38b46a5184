"""`caas bench invoicing`: one month of metered use invoiced for N cars, as the worker does it.

A scratch database (on `CAAS_DATABASE_URL`'s server, else the embedded PostgreSQL), migrated
and seeded with the catalog, gets N customers (with their users), N cars, one purchase of a
metered option per car (carrying the card), its `metered` entitlement and E usage events per
car over the month, bulk-loaded with `generate_series` (one statement per table, deterministic
with `setseed`); the customers are spread over the five countries, so five invoice series
are numbered at once.

The payment sandbox (`caas_sim.payments`) runs as a real HTTP server in a process of its own,
as the provider is not on the platform's machine; the cards are tokenised there.

Then the first of the month comes: the worker's relay (`caas.worker.build_relay`, every
handler the worker has) runs in `threads` threads with the clock at the monthly run, and
delivers the month's job (`store.metering.month`), which queues one charge per customer and
car; each charge starts its payment (`store.metering.charge`) and each settlement authorises
and captures it at the sandbox over HTTP and issues its invoice with the series' next number
(`store.metering.settle`). The clock stops when the outbox has nothing due left. Only that is
timed; the loading is reported beside it.

The baseline, in the same run: the provider's share alone, a sample of authorise + capture
round trips to the same sandbox made by the same number of threads, scaled to N cars.
"""

from __future__ import annotations

import contextlib
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from caas.bench.harness import _embedded_postgres, scratch_database
from caas.bench.sandbox import SANDBOX_KEY, running_sandbox
from caas.bench.scheduler import StatementClock
from caas.billing.models import Invoice, Payment
from caas.billing.provider import SandboxProvider
from caas.catalog.models import Feature, Platform
from caas.core.clock import FixedClock
from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.migrate import upgrade
from caas.core.money import Money
from caas.core.outbox import OutboxMessage, Relay
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.protocol.vin import make_vin, model_year_code
from caas.runtime import read_settings
from caas.seed import load_reference_data
from caas.store import metering
from caas.store.models import Offer
from caas.worker import build_relay

PLATFORM = "AURA"
PLANTS = "BCDFGHJKLMNPRSTVWXYZ"  # a VIN's plant code: a million serials each
# The month invoiced: October 2026, every customer's zone; its run is due on 1 November.
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
DUE = metering.next_month_run(MONTH_START + timedelta(days=20))
COUNTRIES = (("ES", "es"), ("FR", "fr"), ("DE", "de"), ("IT", "it"), ("PT", "pt"))
CARDS = 50  # cards tokenised at the sandbox, shared round robin by the customers
BASELINE_SAMPLE = 1000

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _peak_rss_mb() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the sandbox, in a process of its own: caas.bench.sandbox -----------------------------


def _tokenise(url: str, count: int) -> list[str]:
    card = {"number": CARD_SUCCEEDS, "exp_month": 12, "exp_year": 2035, "cvc": "123"}
    with httpx.Client(base_url=url, timeout=10) as client:
        return [str(client.post("/v1/tokens", json=card).json()["id"]) for _ in range(count)]


# --- loading the month ------------------------------------------------------------------------

_LOAD_USERS = text(
    """
    INSERT INTO users (email, full_name, role, language, is_active, created_at, activated_at,
                       session_epoch)
    SELECT 'bench-' || g || '@bench.example', 'Bench Customer ' || g, 'customer',
           (CAST(:languages AS text[]))[1 + g % 5], true, :at, :at, 0
    FROM generate_series(0, :cars - 1) AS g ORDER BY g
    """
)
_LOAD_CUSTOMERS = text(
    """
    INSERT INTO customers (user_id, first_name, last_name, national_id, email, phone, street,
                           postal_code, city, country, language, created_at)
    SELECT :first_user + g, 'Bench', 'Customer ' || g, 'BENCH' || g,
           'bench-' || g || '@bench.example', '+34600000000', 'Calle Mayor ' || g, '28001',
           'Madrid', (CAST(:countries AS text[]))[1 + g % 5],
           (CAST(:languages AS text[]))[1 + g % 5], :at
    FROM generate_series(0, :cars - 1) AS g ORDER BY g
    """
)
_LOAD_CARS = text(
    """
    INSERT INTO vehicles (vin, platform_id, owner_customer_id, public_key, software_version,
                          built_at, delivered_at, owner_since)
    SELECT vin, :platform_id, :first_customer + n - 1, 'bench', '7.2.0', :at, :at, :at
    FROM unnest(CAST(:vins AS text[])) WITH ORDINALITY AS car(vin, n) ORDER BY n
    """
)
_LOAD_PURCHASES = text(
    """
    INSERT INTO purchases (customer_id, vehicle_id, state, idempotency_key, request_hash,
                           currency, net_minor, vat_minor, gross_minor, payment_method,
                           created_at, updated_at)
    SELECT :first_customer + g, :first_car + g, 'active', 'bench-' || g, 'bench', 'EUR', 0, 0,
           0, (CAST(:cards AS text[]))[1 + g % cardinality(CAST(:cards AS text[]))], :at, :at
    FROM generate_series(0, :cars - 1) AS g ORDER BY g
    """
)
_LOAD_ENTITLEMENTS = text(
    """
    INSERT INTO entitlements (vehicle_id, feature_id, code, source, state, enabled, valid_from,
                              customer_id, offer_id, purchase_id, parameters, created_at,
                              updated_at)
    SELECT :first_car + g, (CAST(:feature_ids AS integer[]))[1 + g % 5],
           (CAST(:codes AS text[]))[1 + g % 5], 'metered', 'active', true, :at,
           :first_customer + g, (CAST(:offer_ids AS integer[]))[1 + g % 5],
           :first_purchase + g, '{}'::jsonb, :at, :at
    FROM generate_series(0, :cars - 1) AS g ORDER BY g
    """
)
# E events per car inside the month in every zone (a day off each end), quantities of 0.1 to
# 3 units at the car's precision.
_LOAD_USAGE = text(
    """
    INSERT INTO usage_events (vin, seq, at, received_at, feature, unit, quantity)
    SELECT vin, e, at, at + interval '1 minute', code, unit,
           round((0.1 + random() * 2.9)::numeric, 3)::double precision
    FROM (
        SELECT car.vin, e, (CAST(:codes AS text[]))[1 + (n - 1) % 5] AS code,
               (CAST(:units AS text[]))[1 + (n - 1) % 5] AS unit,
               :month_start + interval '1 day' + random() * interval '28 days' AS at
        FROM unnest(CAST(:vins AS text[])) WITH ORDINALITY AS car(vin, n),
             generate_series(1, :events) AS e
    ) AS drawn
    """
)


def _metered_offers(session: Session) -> list[tuple[int, int, str, str]]:
    """Per country of `COUNTRIES`: the first metered offer of the platform (offer id, feature
    id, feature code, unit)."""
    chosen = []
    for country, _ in COUNTRIES:
        offer, feature = session.execute(
            select(Offer, Feature)
            .join(Feature, Feature.id == Offer.feature_id)
            .join(Platform, Platform.id == Feature.platform_id)
            .where(Platform.code == PLATFORM, Offer.country == country, Offer.kind == "metered")
            .order_by(Feature.code)
            .limit(1)
        ).one()
        chosen.append((offer.id, feature.id, feature.code, str(offer.unit)))
    return chosen


def _first_id(session: Session, table: str, column: str) -> int:
    """The first id the bench's rows got (consecutive: one INSERT each, in order)."""
    query = f"SELECT min(id) FROM {table} WHERE {column} LIKE 'bench-%'"
    return int(session.execute(text(query)).scalar_one())


def _load(
    session: Session, *, cars: int, events: int, cards: list[str], progress: Progress
) -> None:
    platform_id = session.scalars(select(Platform.id).where(Platform.code == PLATFORM)).one()
    offers = _metered_offers(session)
    at = MONTH_START - timedelta(days=30)
    countries = [code for code, _ in COUNTRIES]
    languages = [language for _, language in COUNTRIES]
    progress(f"loading {cars:,} customers")
    common = {"cars": cars, "at": at, "countries": countries, "languages": languages}
    session.execute(_LOAD_USERS, common)
    first_user = _first_id(session, "users", "email")
    session.execute(_LOAD_CUSTOMERS, {**common, "first_user": first_user})
    first_customer = _first_id(session, "customers", "email")
    progress(f"loading {cars:,} cars")
    year = model_year_code(2026)
    vins = [
        make_vin("WC9", "BENCH", year, PLANTS[n // 1_000_000], n % 1_000_000) for n in range(cars)
    ]
    session.execute(
        _LOAD_CARS,
        {"platform_id": platform_id, "vins": vins, "first_customer": first_customer, "at": at},
    )
    first_car = session.execute(
        text("SELECT min(id) FROM vehicles WHERE public_key = 'bench'")
    ).scalar_one()
    ids = {"first_customer": first_customer, "first_car": first_car, "cars": cars, "at": at}
    session.execute(_LOAD_PURCHASES, {**ids, "cards": cards})
    first_purchase = _first_id(session, "purchases", "idempotency_key")
    session.execute(
        _LOAD_ENTITLEMENTS,
        {
            **ids,
            "first_purchase": first_purchase,
            "offer_ids": [offer[0] for offer in offers],
            "feature_ids": [offer[1] for offer in offers],
            "codes": [offer[2] for offer in offers],
        },
    )
    progress(f"loading {cars * events:,} usage events")
    session.execute(text("SELECT setseed(0.42)"))
    session.execute(
        _LOAD_USAGE,
        {
            "vins": vins,
            "events": events,
            "month_start": MONTH_START,
            "codes": [offer[2] for offer in offers],
            "units": [offer[3] for offer in offers],
        },
    )


# --- the monthly run --------------------------------------------------------------------------


def _due_left(sessions: sessionmaker[Session], relay: Relay) -> int:
    with unit_of_work(sessions) as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    OutboxMessage.done_at.is_(None),
                    OutboxMessage.gave_up_at.is_(None),
                    OutboxMessage.run_after <= relay.clock.now(),
                    OutboxMessage.topic.in_(relay.handlers),
                )
            )
            or 0
        )


def _deliver_until_idle(relay: Relay, sessions: sessionmaker[Session]) -> None:
    """One relay thread of the worker: deliver until nothing is due, anywhere."""
    while True:
        if relay.run_once(limit=100):
            continue
        if _due_left(sessions, relay) == 0:
            return
        time.sleep(0.02)  # another thread holds the last messages; real concurrency


def _run_month(
    settings: Settings, sessions: sessionmaker[Session], *, threads: int, progress: Progress
) -> None:
    clock = FixedClock(DUE)
    with unit_of_work(sessions) as session:
        # What the worker's start does: the chains queued, the month's run due at `DUE`.
        metering.start_metering(session, now=DUE - timedelta(minutes=10))
    relay = build_relay(settings, sessions, clock)
    with unit_of_work(sessions) as session:
        autovacuum = session.execute(text("SHOW autovacuum")).scalar_one() == "on"
        if not autovacuum:
            progress("the server runs without autovacuum: the bench analyses the outbox")
    workers = [
        threading.Thread(target=_deliver_until_idle, args=(relay, sessions), daemon=True)
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(timeout=5)
        with unit_of_work(sessions) as session:
            issued = session.scalar(select(func.count()).select_from(Invoice)) or 0
            if not autovacuum:
                # What autovacuum does on a production server: without fresh statistics after
                # the month queued a job per car, the planner reads and sorts every due
                # message for each pick (210 ms a pick at 100,000 due, 0.2 ms analysed).
                session.execute(text("ANALYZE outbox"))
        progress(f"{issued:,} invoices issued")


def _baseline(url: str, cards: list[str], *, sample: int, threads: int) -> float:
    """Seconds per car of the provider's share alone: authorise + capture at the sandbox."""
    numbers = iter(range(sample))
    lock = threading.Lock()

    def pay() -> None:
        with SandboxProvider(url, SANDBOX_KEY) as provider:
            while True:
                with lock:
                    number = next(numbers, None)
                if number is None:
                    return
                money = Money(1_000 + number, "EUR")
                held = provider.authorise(
                    money, cards[number % len(cards)], f"baseline-{number}-a", f"B{number}"
                )
                assert held.provider_ref is not None
                provider.capture(held.provider_ref, money, f"baseline-{number}-c")

    started = time.perf_counter()
    workers = [threading.Thread(target=pay) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - started) / sample


def _series(session: Session) -> dict[str, list[int]]:
    """Per series and year: [first number, last number, invoices]."""
    rows = session.execute(
        select(Invoice.series, Invoice.year, func.min(Invoice.sequence), func.max(Invoice.sequence))
        .add_columns(func.count())
        .group_by(Invoice.series, Invoice.year)
    ).all()
    return {f"{series}-{year}": [first, last, count] for series, year, first, last, count in rows}


def _gap_free(session: Session) -> bool:
    """Every series and year numbered 1..n, once each."""
    rows = session.execute(
        select(
            Invoice.series,
            Invoice.year,
            func.count(),
            func.count(func.distinct(Invoice.sequence)),
            func.min(Invoice.sequence),
            func.max(Invoice.sequence),
        ).group_by(Invoice.series, Invoice.year)
    ).all()
    return all(
        count == distinct == last and first == 1 for _, _, count, distinct, first, last in rows
    )


def run_invoicing_bench(
    cars: int, *, events: int = 10, threads: int = 4, progress: Progress = _quiet
) -> dict[str, Any]:
    """Load a month of metered use for `cars` cars, run the first of the month as the worker
    does; the figures: `seconds` (the run), `invoices_per_s`, `peak_rss_mb`, and the rest."""
    base = read_settings()
    with contextlib.ExitStack() as stack:
        stack.enter_context(tempfile.TemporaryDirectory(prefix="caas-bench-"))
        progress("starting PostgreSQL")
        server_url = base.database_url or _embedded_postgres(base, stack)
        database_url = stack.enter_context(scratch_database(server_url))
        progress("migrating the scratch database")
        upgrade(database_url)
        progress("starting the payment sandbox")
        sandbox_url = stack.enter_context(running_sandbox())
        cards = _tokenise(sandbox_url, CARDS)
        settings = read_settings(
            database_url=database_url,
            payment_url=sandbox_url,
            payment_api_key=SANDBOX_KEY,
            worker_threads=threads,
        )
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        sessions = make_session_factory(engine)
        started = time.perf_counter()
        with unit_of_work(sessions) as session:
            load_reference_data(session)
            _load(session, cars=cars, events=events, cards=cards, progress=progress)
        with engine.connect() as connection:
            for table in ("users", "customers", "vehicles", "purchases", "entitlements"):
                connection.execute(text(f"ANALYZE {table}"))
            connection.execute(text("ANALYZE usage_events"))
            connection.commit()
        loaded = time.perf_counter() - started
        progress(f"loaded in {loaded:.1f} s; the first of the month")
        statements = StatementClock(engine)
        started = time.perf_counter()
        _run_month(settings, sessions, threads=threads, progress=progress)
        seconds = time.perf_counter() - started
        database_seconds, statement_count = statements.seconds, statements.count
        for line in statements.slowest():
            progress(line)
        progress("baseline: the sandbox's round trips alone")
        sample = min(cars, BASELINE_SAMPLE)
        provider_per_car = _baseline(sandbox_url, cards, sample=sample, threads=threads)
        with unit_of_work(sessions) as session:
            invoices = session.scalar(select(func.count()).select_from(Invoice)) or 0
            captured = session.scalar(
                select(func.count()).where(Payment.state == "captured", Payment.kind == "metered")
            )
            gap_free = _gap_free(session)
            series = _series(session)
            gross = session.scalar(select(func.coalesce(func.sum(Invoice.gross_minor), 0)))
    provider_seconds = provider_per_car * cars
    return {
        "seconds": round(seconds, 3),
        "invoices_per_s": round(invoices / seconds, 1) if seconds else 0.0,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "cars": cars,
        "invoices": invoices,
        "payments_captured": int(captured or 0),
        "gap_free": gap_free,
        "series": series,
        "gross_minor": int(gross or 0),
        "threads": threads,
        "events_per_car": events,
        "load_seconds": round(loaded, 3),
        "statements": statement_count,
        "statements_per_invoice": round(statement_count / max(invoices, 1), 1),
        "database_seconds": round(database_seconds, 3),
        # The provider's share alone (authorise + capture over HTTP, same threads), scaled to
        # N cars from a sample: what the run could not go below with the sandbox as it is.
        "baseline_seconds": round(provider_seconds, 3),
        "baseline_sample": sample,
        "ratio": round(seconds / provider_seconds, 2) if provider_seconds else 0.0,
    }
