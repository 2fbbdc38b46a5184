"""What must hold after the soak, once every car is online and the worker has drained: read
with SQL from the platform's database, from the payment sandbox's books and from the cars.

Each check returns the violations it found, one line each (empty: it holds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.orm import Session

from caas.protocol.mqtt import FeatureState, ManifestBody
from caas.protocol.payments import API_KEY_HEADER, Settlement
from caas_sim.vehicle.agent import VehicleAgent
from tests.soak.world import PAYMENT_API_KEY, World

# Payment states in which the money was taken (a refund or a chargeback keeps the invoice).
TAKEN = ("captured", "refunded", "charged_back")


def _rows(session: Session, sql: str, **params: Any) -> list[Any]:
    return list(session.execute(text(sql), params).all())


def captures_have_invoices(session: Session) -> list[str]:
    """Every payment whose money was taken has its invoice (and only one)."""
    rows = _rows(
        session,
        """
        SELECT p.id, p.kind, p.state, count(i.id) AS invoices
        FROM payments p LEFT JOIN invoices i ON i.payment_id = p.id
        WHERE p.captured_at IS NOT NULL OR p.state IN :taken
        GROUP BY p.id, p.kind, p.state
        HAVING count(i.id) <> 1
        """.replace(":taken", str(TAKEN)),
    )
    return [f"payment {r.id} ({r.kind}, {r.state}) has {r.invoices} invoices" for r in rows]


def active_entitlements_are_paid(session: Session) -> list[str]:
    """Every active entitlement comes from the plan, is a trial, or was paid: its purchase is
    active with its payment captured, or (a renewed subscription period) the renewal that
    granted it was captured."""
    rows = _rows(
        session,
        """
        SELECT e.id, e.source, e.code, e.vehicle_id, pu.state AS purchase, pp.state AS payment
        FROM entitlements e
        LEFT JOIN purchases pu ON pu.id = e.purchase_id
        LEFT JOIN payments pp ON pp.id = pu.payment_id
        WHERE e.state = 'active'
          AND e.source NOT IN ('plan', 'trial')
          AND NOT coalesce(pu.state = 'active' AND pp.state = 'captured', false)
          AND NOT (
            e.source = 'subscription' AND e.purchase_id IS NULL AND EXISTS (
              SELECT 1 FROM history h
              JOIN payments rp ON rp.id = (h.details ->> 'payment_id')::bigint
              WHERE h.event = 'subscription.renewed'
                AND (h.details ->> 'entitlement_id')::bigint = e.id
                AND rp.state = 'captured'
            )
          )
        """,
    )
    return [
        f"entitlement {r.id} ({r.source} {r.code}, car {r.vehicle_id}) is active but unpaid: "
        f"purchase {r.purchase}, payment {r.payment}"
        for r in rows
    ]


def nothing_left_half_done(session: Session) -> list[str]:
    """No purchase, entitlement or payment still waiting for something (after quiescence)."""
    rows = _rows(
        session,
        """
        SELECT 'purchase' AS what, id, state FROM purchases
          WHERE state IN ('authorising', 'delivering')
        UNION ALL SELECT 'entitlement', id, state FROM entitlements WHERE state = 'delivering'
        UNION ALL SELECT 'payment', id, state FROM payments
          WHERE state = 'pending' OR (state = 'authorised' AND kind <> 'deposit')
        """,
    )
    return [f"{r.what} {r.id} still {r.state}" for r in rows]


def invoice_numbers_gap_free(session: Session) -> list[str]:
    """Per series and year: numbers 1..n, each once, and the counter at n."""
    problems = [
        f"series {r.series} {r.year}: {r.count} invoices, sequences {r.low}..{r.high}, "
        f"{r.distinct} distinct, counter {r.counter}"
        for r in _rows(
            session,
            """
            SELECT i.series, i.year, count(*) AS count, count(DISTINCT i.sequence) AS distinct,
                   min(i.sequence) AS low, max(i.sequence) AS high, c.last_number AS counter
            FROM invoices i
            LEFT JOIN invoice_counters c ON c.series = i.series AND c.year = i.year
            GROUP BY i.series, i.year, c.last_number
            HAVING count(*) <> count(DISTINCT i.sequence) OR min(i.sequence) <> 1
                OR max(i.sequence) <> count(*) OR c.last_number IS DISTINCT FROM max(i.sequence)
            """,
        )
    ]
    problems += [
        f"invoice number {r.number} used {r.count} times"
        for r in _rows(
            session,
            "SELECT number, count(*) AS count FROM invoices GROUP BY number HAVING count(*) > 1",
        )
    ]
    return problems


def ledger_balances(session: Session, provider_cash: dict[str, int]) -> list[str]:
    """Every posting balances; what is held equals the holds still authorised; the cash at
    the provider equals what the provider says it took less what it gave back."""
    problems = [
        f"posting {r.key} ({r.currency}): debits {r.debits} != credits {r.credits}"
        for r in _rows(
            session,
            """
            SELECT idempotency_key AS key, currency, sum(debit_minor) AS debits,
                   sum(credit_minor) AS credits
            FROM ledger_entries GROUP BY idempotency_key, currency
            HAVING sum(debit_minor) <> sum(credit_minor)
            """,
        )
    ]
    held = {
        r.currency: int(r.held)
        for r in _rows(
            session,
            """
            SELECT currency, sum(debit_minor - credit_minor) AS held FROM ledger_entries
            WHERE account = 'holds' GROUP BY currency
            """,
        )
    }
    authorised = {
        r.currency: int(r.amount)
        for r in _rows(
            session,
            """
            SELECT currency, sum(amount_minor) AS amount FROM payments
            WHERE state = 'authorised' GROUP BY currency
            """,
        )
    }
    for currency in held.keys() | authorised.keys():
        if held.get(currency, 0) != authorised.get(currency, 0):
            problems.append(
                f"holds {currency}: ledger {held.get(currency, 0)}, "
                f"authorised payments {authorised.get(currency, 0)}"
            )
    cash = {
        r.currency: int(r.cash)
        for r in _rows(
            session,
            """
            SELECT currency, sum(debit_minor - credit_minor) AS cash FROM ledger_entries
            WHERE account = 'cash at provider' GROUP BY currency
            """,
        )
    }
    for currency in cash.keys() | provider_cash.keys():
        if cash.get(currency, 0) != provider_cash.get(currency, 0):
            problems.append(
                f"cash at provider {currency}: ledger {cash.get(currency, 0)}, "
                f"provider {provider_cash.get(currency, 0)}"
            )
    return problems


@dataclass(frozen=True)
class ProviderBooks:
    """What the payment sandbox did: our reference of each authorisation it made (one entry
    per authorisation) and every capture and refund it settled."""

    authorised: list[str]
    settlements: list[Settlement]


def provider_books(world: World) -> ProviderBooks:
    authorised = [a.reference for a in list(world.sandbox.authorizations.values())]
    answer = httpx.get(
        f"{world.payments_url}/v1/settlements", headers={API_KEY_HEADER: PAYMENT_API_KEY}
    )
    answer.raise_for_status()
    return ProviderBooks(
        authorised=authorised,
        settlements=[Settlement.model_validate(item) for item in answer.json()],
    )


def one_effect_per_key(session: Session, books: ProviderBooks) -> list[str]:
    """No Idempotency-Key acted twice: one payment per purchase and one purchase per payment,
    one entitlement per purchase line, and at the provider one authorisation per payment and
    at most one capture."""
    problems = [
        f"payment {r.payment_id} serves {r.count} purchases"
        for r in _rows(
            session,
            """
            SELECT payment_id, count(*) AS count FROM purchases WHERE payment_id IS NOT NULL
            GROUP BY payment_id HAVING count(*) > 1
            """,
        )
    ]
    problems += [
        f"purchase line {r.id} became {r.count} entitlements"
        for r in _rows(
            session,
            """
            SELECT l.id, count(e.id) AS count FROM purchase_lines l
            JOIN entitlements e ON e.purchase_id = l.purchase_id AND e.offer_id = l.offer_id
                AND e.valid_from = l.valid_from
            GROUP BY l.id HAVING count(e.id) > 1
            """,
        )
    ]
    references = set(session.scalars(text("SELECT reference FROM payments")))
    authorisations = Counter(books.authorised)
    problems += [
        f"payment {reference} authorised {count} times at the provider"
        for reference, count in authorisations.items()
        if count > 1
    ]
    problems += [
        f"the provider authorised {reference}, which the platform does not know"
        for reference in authorisations
        if reference not in references
    ]
    captures = Counter(s.reference for s in books.settlements if s.kind == "capture")
    problems += [
        f"payment {reference} captured {count} times at the provider"
        for reference, count in captures.items()
        if count > 1
    ]
    return problems


def provider_agrees(session: Session, books: ProviderBooks) -> list[str]:
    """The money the provider took is exactly what the platform's payments say was taken."""
    taken = {
        r.reference: int(r.amount_minor)
        for r in _rows(
            session,
            "SELECT reference, amount_minor FROM payments WHERE state IN :taken".replace(
                ":taken", str(TAKEN)
            ),
        )
    }
    at_provider: Counter[str] = Counter()
    for settlement in books.settlements:
        if settlement.kind == "capture":
            at_provider[settlement.reference] += settlement.amount_minor
    problems = [
        f"payment {reference}: platform took {amount}, provider {at_provider.get(reference, 0)}"
        for reference, amount in taken.items()
        if at_provider.get(reference, 0) != amount
    ]
    problems += [
        f"the provider captured {reference}, which the platform does not count as taken"
        for reference in at_provider.keys() - taken.keys()
    ]
    return problems


def provider_cash(books: ProviderBooks) -> dict[str, int]:
    """What the provider holds for the maker per currency: captures less refunds."""
    cash: Counter[str] = Counter()
    for settlement in books.settlements:
        sign = 1 if settlement.kind == "capture" else -1
        cash[settlement.currency] += sign * settlement.amount_minor
    return dict(cash)


def running_at(body: ManifestBody, now: datetime) -> list[str]:
    """The features a car running `body` has on at `now` (all cars here are parked)."""

    def on(state: FeatureState) -> bool:
        return (
            state.enabled
            and (state.valid_from is None or state.valid_from <= now)
            and (state.valid_until is None or now < state.valid_until)
        )

    return sorted(state.code for state in body.features if on(state))


def what_cars_run(agents: dict[str, VehicleAgent]) -> dict[str, tuple[int, list[str]]]:
    """Each car's applied version and the features it runs (read on the cars' loop)."""
    return {vin: (agent.version, agent.active_features) for vin, agent in agents.items()}


def cars_run_their_configuration(
    session: Session, cars: dict[str, tuple[int, list[str]]], now: datetime
) -> list[str]:
    """Every car applied its newest configuration, runs what it says at this moment, and the
    platform knows it; and that configuration is what the car's entitlements say now."""
    from caas.ota import service as ota
    from caas.vehicles.models import Vehicle

    newest = {
        r.vin: r
        for r in _rows(
            session,
            """
            SELECT DISTINCT ON (v.id) v.id AS vehicle_id, v.vin, c.version, c.state, c.body,
                   c.active_features
            FROM vehicles v JOIN configuration_versions c ON c.vehicle_id = v.id
            WHERE v.vin IN :vins
            ORDER BY v.id, c.version DESC
            """.replace(":vins", "(" + ",".join(f"'{vin}'" for vin in cars) + ")"),
        )
    }
    problems = []
    for vin, (version, running) in sorted(cars.items()):
        row = newest.get(vin)
        if row is None:
            problems.append(f"{vin}: no configuration")
            continue
        body = ManifestBody.model_validate(row.body)
        wanted = running_at(body, now)
        if row.state != "applied" or version != row.version:
            problems.append(
                f"{vin}: newest version {row.version} is {row.state}, the car runs "
                f"version {version}"
            )
        if running != wanted:
            problems.append(f"{vin}: runs {running}, its configuration {wanted}")
        if sorted(row.active_features or []) != running:
            problems.append(
                f"{vin}: the platform believes it runs {row.active_features}, it runs {running}"
            )
        vehicle = session.get_one(Vehicle, row.vehicle_id)
        expected = running_at(
            ManifestBody.model_validate(
                {**row.body, "features": ota.effective_configuration(session, vehicle, now)}
            ),
            now,
        )
        if expected != wanted:
            problems.append(
                f"{vin}: its entitlements want {expected} now, its newest configuration {wanted}"
            )
    return problems


def all_violations(world: World) -> dict[str, list[str]]:
    """Every invariant by name, with the violations found."""
    agents = dict(world.agents)
    cars = world.cars.call(lambda: what_cars_run(agents))
    now = world.clock.now()
    books = provider_books(world)
    cash = provider_cash(books)
    checks: dict[str, Callable[[Session], list[str]]] = {
        "every capture has an invoice": captures_have_invoices,
        "every active entitlement is paid, a trial or the plan's": active_entitlements_are_paid,
        "nothing left half done": nothing_left_half_done,
        "invoice numbers unique and gap-free per series": invoice_numbers_gap_free,
        "the ledger balances": lambda session: ledger_balances(session, cash),
        "no idempotency key acted twice": lambda session: one_effect_per_key(session, books),
        "the provider took what the platform says": lambda session: provider_agrees(session, books),
        "every car runs its desired configuration": lambda session: cars_run_their_configuration(
            session, cars, now
        ),
    }
    return {name: world.read(check) for name, check in checks.items()}


def figures(world: World) -> dict[str, dict[str, int]]:
    """Counts by state of what the soak made, for the summary."""

    def count(session: Session) -> dict[str, dict[str, int]]:
        tables = {
            "purchases": "SELECT state, count(*) FROM purchases GROUP BY state",
            "payments": "SELECT kind || ' ' || state, count(*) FROM payments GROUP BY 1",
            "subscriptions": "SELECT state, count(*) FROM subscriptions GROUP BY state",
            "entitlements": "SELECT source || ' ' || state, count(*) FROM entitlements GROUP BY 1",
            "invoices": "SELECT kind, count(*) FROM invoices GROUP BY kind",
            "configurations": "SELECT state, count(*) FROM configuration_versions GROUP BY state",
            "outbox": "SELECT topic, count(*) FROM outbox WHERE done_at IS NOT NULL GROUP BY 1",
            "outbox retries": "SELECT topic, sum(attempts - 1) FROM outbox "
            "WHERE attempts > 1 GROUP BY topic",
            "outbox gave up": "SELECT topic, count(*) FROM outbox WHERE gave_up_at IS NOT NULL "
            "GROUP BY topic",
        }
        return {
            name: {str(key): int(value) for key, value in session.execute(text(sql)).all()}
            for name, sql in tables.items()
        }

    return world.read(count)
