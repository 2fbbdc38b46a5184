"""`caas bench api`: purchases per second through HTTP, beside a trivial endpoint of the same
server measured in the same run.

The platform is what `caas api` serves (`caas.runtime.Runtime.create_app`), started as a
`caas api` process of its own on a scratch database (on `CAAS_DATABASE_URL`'s server, else the
embedded PostgreSQL), migrated and seeded with the catalog. The payment sandbox
(`caas_sim.payments`) runs as a real HTTP server in another process, as the provider is not on
the platform's machine; every purchase holds the price on a card tokenised there.

Loaded first, not timed: one customer per purchase (with their user, an API token and a car
delivered to them, all in Spain), one `generate_series` statement per table: each purchase is a
different customer buying for their own car, as at a busy hour, so purchases do not queue
behind one car's lock. The option bought is the first `window` offer of the platform in Spain
that such a car may get (`caas.store.eligibility.refusals_for` says so).

The load comes from a third process (`python -m caas.bench.api load`): `concurrency` asyncio
clients (httpx) share the requests. First the baseline, `requests` GETs of `/healthz` (the
same server, routing, middleware and serialisation, no database); then `requests` purchases,
`POST /api/v1/vehicles/{vin}/purchases` with the customer's bearer token and an
Idempotency-Key, each answered 201 once the card is held and the car's new configuration is
signed and queued (the worker need not run: delivery to the car is not part of the answer).
A few of each are made first to warm up, untimed.

Figures: requests a second of each over the whole phase (first request sent to last answer),
p50/p95/p99 of the answer times, and `ratio` = trivial requests a second / purchases a second
(how many times dearer a purchase is than the server's cheapest answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.service import issue_api_token
from caas.bench.harness import _embedded_postgres, percentile, scratch_database
from caas.bench.sandbox import SANDBOX_KEY, free_port, running_sandbox
from caas.catalog.models import Feature, Platform
from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.migrate import upgrade
from caas.ota.keys import ensure_demo_keys
from caas.protocol.payments import CARD_SUCCEEDS
from caas.protocol.vin import make_vin, model_year_code
from caas.runtime import StartupError, read_settings
from caas.sales.models import Customer
from caas.seed import load_reference_data
from caas.store.eligibility import car_facts, refusals_for
from caas.store.models import Offer, Purchase
from caas.vehicles.models import Vehicle

PLATFORM = "AURA"
COUNTRY = "ES"
WARM_UP = 5  # requests of each kind made first and not timed (imports, pools, caches)
CARDS = 20  # card tokens shared round robin by the customers
START_SECONDS = 300.0  # a machine shared with test suites imports slowly
TRIVIAL = "/healthz"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class Buyer:
    """One customer able to buy for their car: what the load process needs."""

    vin: str
    token: str
    card: str

    def as_json(self) -> dict[str, str]:
        return {"vin": self.vin, "token": self.token, "card": self.card}


# --- loading the customers ---------------------------------------------------------------------

_LOAD_USERS = text(
    """
    INSERT INTO users (email, full_name, role, language, is_active, created_at, activated_at,
                       session_epoch)
    SELECT 'bench-' || g || '@bench.example', 'Bench Customer ' || g, 'customer', 'es', true,
           :at, :at, 0
    FROM generate_series(0, :count - 1) AS g ORDER BY g
    """
)
_LOAD_CUSTOMERS = text(
    """
    INSERT INTO customers (user_id, first_name, last_name, national_id, email, phone, street,
                           postal_code, city, country, language, created_at)
    SELECT :first_user + g, 'Bench', 'Customer ' || g, 'BENCH' || g,
           'bench-' || g || '@bench.example', '+34600000000', 'Calle Mayor ' || g, '28001',
           'Madrid', :country, 'es', :at
    FROM generate_series(0, :count - 1) AS g ORDER BY g
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


def _first_id(session: Session, table: str) -> int:
    """The first id the bench's rows got (consecutive: one INSERT each, in order)."""
    query = f"SELECT min(id) FROM {table} WHERE email LIKE 'bench-%'"
    return int(session.execute(text(query)).scalar_one())


def load_buyers(session: Session, count: int, cards: list[str]) -> list[Buyer]:
    """`count` customers in Spain, each with a user, an API token and a delivered car."""
    at = datetime.now(UTC) - timedelta(days=30)
    platform_id = session.scalars(select(Platform.id).where(Platform.code == PLATFORM)).one()
    session.execute(_LOAD_USERS, {"count": count, "at": at})
    first_user = _first_id(session, "users")
    session.execute(
        _LOAD_CUSTOMERS, {"count": count, "at": at, "first_user": first_user, "country": COUNTRY}
    )
    first_customer = _first_id(session, "customers")
    year = model_year_code(2026)
    vins = [make_vin("WC9", "BENCH", year, "A", n) for n in range(count)]
    session.execute(
        _LOAD_CARS,
        {"platform_id": platform_id, "vins": vins, "first_customer": first_customer, "at": at},
    )
    users = session.scalars(select(User).where(User.email.like("bench-%")).order_by(User.id)).all()
    now = datetime.now(UTC)
    return [
        Buyer(
            vin=vin,
            token=issue_api_token(session, user=user, name="bench", now=now),
            card=cards[number % len(cards)],
        )
        for number, (vin, user) in enumerate(zip(vins, users, strict=True))
    ]


def offer_for(session: Session, vin: str) -> Offer:
    """The first `window` offer in Spain the car may get now (nothing refuses it)."""
    vehicle = session.scalars(select(Vehicle).where(Vehicle.vin == vin)).one()
    customer = session.get_one(Customer, vehicle.owner_customer_id)
    facts = car_facts(session, vehicle, at=datetime.now(UTC))
    offers = session.execute(
        select(Offer, Feature)
        .join(Feature, Feature.id == Offer.feature_id)
        .where(
            Feature.platform_id == vehicle.platform_id,
            Offer.country == COUNTRY,
            Offer.kind == "window",
            Offer.active.is_(True),
            Offer.net_minor > 0,
        )
        .order_by(Feature.code, Offer.duration)
    ).all()
    for offer, feature in offers:
        if not refusals_for(facts, feature=feature, offer=offer, customer=customer):
            return offer
    raise StartupError("the catalog has no window offer a bench car may buy")


def _tokenise(url: str, count: int) -> list[str]:
    card = {"number": CARD_SUCCEEDS, "exp_month": 12, "exp_year": 2035, "cvc": "123"}
    with httpx.Client(base_url=url, timeout=30) as client:
        return [str(client.post("/v1/tokens", json=card).json()["id"]) for _ in range(count)]


# --- the API server, in a process of its own ---------------------------------------------------


@contextlib.contextmanager
def running_api(env: dict[str, str]) -> Iterator[str]:
    """`caas api` on a free port with `env`; its base URL once `/healthz` answers."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("caas")), "api", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + TRIVIAL, timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise StartupError("the API server (caas api) did not start")
            time.sleep(0.1)  # real concurrency with another process, not a schedule
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the run ----------------------------------------------------------------------------------


def run(requests: int, *, concurrency: int, progress: Progress = _quiet) -> dict[str, Any]:
    """Serve the platform, load it with `requests` trivial requests then `requests` purchases
    from `concurrency` clients in another process; the figures (see the module's docstring)."""
    base = read_settings()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caas-bench-")))
        progress("starting PostgreSQL")
        server_url = base.database_url or _embedded_postgres(base, stack)
        database_url = stack.enter_context(scratch_database(server_url))
        progress("migrating the scratch database")
        upgrade(database_url)
        ensure_demo_keys(workdir / "keys")
        progress("starting the payment sandbox")
        sandbox_url = stack.enter_context(running_sandbox())
        cards = _tokenise(sandbox_url, CARDS)
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        sessions = make_session_factory(engine)
        progress(f"loading {requests + WARM_UP:,} customers with their cars")
        with unit_of_work(sessions) as session:
            load_reference_data(session)
            buyers = load_buyers(session, requests + WARM_UP, cards)
        with unit_of_work(sessions) as session:
            offer_id = offer_for(session, buyers[0].vin).id
        env = {
            **os.environ,
            "CAAS_DATABASE_URL": database_url,
            "CAAS_PAYMENT_URL": sandbox_url,
            "CAAS_PAYMENT_API_KEY": SANDBOX_KEY,
            "CAAS_OTA_KEYS_DIR": str(workdir / "keys"),
            "CAAS_DATA_DIR": str(workdir),
            "CAAS_LOG_LEVEL": "WARNING",
        }
        progress("starting the API server (caas api)")
        url = stack.enter_context(running_api(env))
        job = workdir / "load.json"
        job.write_text(
            json.dumps(
                {
                    "url": url,
                    "offer_id": offer_id,
                    "concurrency": concurrency,
                    "requests": requests,
                    "buyers": [buyer.as_json() for buyer in buyers],
                }
            )
        )
        progress(f"{requests:,} requests to {TRIVIAL}, then {requests:,} purchases")
        measured = _load_in_process(job, timeout=START_SECONDS + requests * 2.0)
        with unit_of_work(sessions) as session:
            stored = session.scalar(
                select(func.count()).where(Purchase.state.in_(("delivering", "active")))
            )
    return figures(measured, requests=requests, concurrency=concurrency, stored=int(stored or 0))


def _load_in_process(job: Path, *, timeout: float) -> dict[str, Any]:
    """The load process's measurements (its last line on stdout)."""
    command = [sys.executable, "-m", "caas.bench.api", "load", str(job)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the bench's load process failed: {done.stderr.strip()[-500:]}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


def figures(
    measured: dict[str, Any], *, requests: int, concurrency: int, stored: int
) -> dict[str, Any]:
    """The result from the load process's two phases (answer times in seconds, statuses,
    wall time of each phase)."""
    purchases, trivial = measured["purchases"], measured["trivial"]
    purchases_per_s = len(purchases["times"]) / purchases["seconds"]
    trivial_per_s = len(trivial["times"]) / trivial["seconds"]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "purchases_per_s": round(purchases_per_s, 1),
        "p50_ms": _ms(percentile(purchases["times"], 0.50)),
        "p95_ms": _ms(percentile(purchases["times"], 0.95)),
        "p99_ms": _ms(percentile(purchases["times"], 0.99)),
        "seconds": round(purchases["seconds"], 3),
        "purchases_ok": purchases["statuses"].get("201", 0) + purchases["statuses"].get("202", 0),
        "purchases_stored": stored,
        "statuses": purchases["statuses"],
        "baseline_endpoint": TRIVIAL,
        "baseline_per_s": round(trivial_per_s, 1),
        "baseline_p50_ms": _ms(percentile(trivial["times"], 0.50)),
        "baseline_p95_ms": _ms(percentile(trivial["times"], 0.95)),
        "baseline_p99_ms": _ms(percentile(trivial["times"], 0.99)),
        "baseline_seconds": round(trivial["seconds"], 3),
        "ratio": round(trivial_per_s / purchases_per_s, 1) if purchases_per_s else 0.0,
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- the load process -------------------------------------------------------------------------


async def _phase(
    requests: list[Callable[[], Any]],
    concurrency: int,
) -> dict[str, Any]:
    """Send every request of `requests` (each a coroutine factory giving a response) from
    `concurrency` tasks; answer times, statuses and the phase's wall time."""
    queue: asyncio.Queue[Callable[[], Any]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    times: list[float] = []
    statuses: Counter[str] = Counter()

    async def sender() -> None:
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            try:
                response = await request()
                statuses[str(response.status_code)] += 1
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
            times.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return {"times": times, "statuses": dict(statuses), "seconds": time.perf_counter() - started}


async def _load(job: dict[str, Any]) -> dict[str, Any]:
    concurrency, count = int(job["concurrency"]), int(job["requests"])
    buyers = job["buyers"]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=job["url"], timeout=120, limits=limits) as client:

        def trivial() -> Callable[[], Any]:
            return lambda: client.get(TRIVIAL)

        def purchase(buyer: dict[str, str]) -> Callable[[], Any]:
            body = {"items": [{"offer_id": job["offer_id"]}], "payment_method": buyer["card"]}
            headers = {
                "Authorization": f"Bearer {buyer['token']}",
                "Idempotency-Key": f"bench-{uuid.uuid4().hex}",
            }
            path = f"/api/v1/vehicles/{buyer['vin']}/purchases"
            return lambda: client.post(path, json=body, headers=headers)

        warm_up = [trivial() for _ in range(WARM_UP)]
        warm_up += [purchase(buyer) for buyer in buyers[:WARM_UP]]
        warmed = await _phase(warm_up, 1)
        if set(warmed["statuses"]) - {"200", "201", "202"}:
            raise RuntimeError(f"warm-up requests failed: {warmed['statuses']}")
        trivial_phase = await _phase([trivial() for _ in range(count)], concurrency)
        purchase_phase = await _phase(
            [purchase(buyer) for buyer in buyers[WARM_UP : WARM_UP + count]], concurrency
        )
    return {"trivial": trivial_phase, "purchases": purchase_phase}


def main(argv: list[str]) -> None:
    role, *rest = argv
    if role != "load":
        raise SystemExit(f"unknown role {role!r}: load")
    job = json.loads(Path(rest[0]).read_text())
    print(json.dumps(asyncio.run(_load(job))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
