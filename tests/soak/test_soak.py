"""The concurrency soak (`make soak`): many customers buying, renewing, cancelling and switching
options through the HTTP API while their cars drop off the network and come back and the clock
runs days ahead; then, once every car is online and the worker has drained, the invariants of
money and configuration hold (`tests.soak.invariants`).

Bounded in time: `SOAK_SECONDS` of load (default 90), then at most `QUIESCE_SECONDS` for the
platform to settle. `SOAK_CUSTOMERS` sets how many customers (each with one car; default 30).
The summary (operations by kind and answer, errors by kind, what the run made) is printed at
the end of pytest's report.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from caas.iot.local import LocalBroker, start_local_broker
from caas.iot.mosquitto import available as mosquitto_available
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from tests.conftest import ScratchDatabases, SmtpInbox
from tests.soak import invariants
from tests.soak.conftest import REPORT
from tests.soak.customers import Shopper, Tally
from tests.soak.world import World, add_customers, running_world

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "90"))
CUSTOMERS = int(os.environ.get("SOAK_CUSTOMERS", "30"))
# The platform's clock runs two days ahead every few seconds of the soak: windows end, monthly
# subscriptions renew (or fail to, and are retried or lapse) within the run.
CLOCK_STEP = timedelta(days=2)
CLOCK_EVERY_SECONDS = 3.0
# Each car, every half second, may lose its network (for 1 to 6 s).
DROP_CHANCE = 0.02
OFFLINE_SECONDS = (1.0, 6.0)
# Every few seconds one customer's card starts or stops being declined (renewals too).
CARD_CHANGE_EVERY_SECONDS = 5.0
# How often the soak counts the outbox messages due (the worker's backlog).
BACKLOG_EVERY_SECONDS = 5.0
# After the load: how long the platform may take to settle, and the clock step that lets
# purchase deadlines, retries and the payments' resolve sweep come due.
QUIESCE_SECONDS = 90.0
SETTLE_STEP = timedelta(minutes=11)
START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(SOAK_SECONDS + QUIESCE_SECONDS) + 240)]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto of the soak's own (CI has it; elsewhere the soak is skipped without it)."""
    if not mosquitto_available():
        if os.environ.get("CI"):
            pytest.fail("the soak needs mosquitto with its dynamic security plugin")
        pytest.skip("mosquitto (with its dynamic security plugin) is not installed")
    broker = start_local_broker(tmp_path / "mqtt", kind="mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def world(
    scratch_databases: ScratchDatabases,
    smtp_server: SmtpInbox,
    mosquitto: LocalBroker,
    tmp_path: Path,
) -> Iterator[World]:
    with running_world(
        scratch_databases, smtp_server, mosquitto, tmp_path / "keys", start=START
    ) as running:
        yield running


class Chaos:
    """The soak's background: the clock moving, cars losing their network, cards changing."""

    def __init__(self, world: World, shoppers: list[Shopper], seed: int) -> None:
        self.world = world
        self.shoppers = shoppers
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.drops = 0
        self.clock_steps = 0
        self.card_changes = 0
        self.backlog: list[int] = []
        self.threads = [
            threading.Thread(target=self._move_clock, name="soak-clock", daemon=True),
            threading.Thread(target=self._change_cards, name="soak-cards", daemon=True),
            threading.Thread(target=self._watch_backlog, name="soak-backlog", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        self.world.cars.loop.call_soon_threadsafe(self._drop_cars)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        # Every card works again, as its owner would have fixed it by now.
        for shopper in self.shoppers:
            self.world.sandbox.change_card(shopper.card, CARD_SUCCEEDS)

    def _move_clock(self) -> None:
        while not self.stop.wait(CLOCK_EVERY_SECONDS):
            self.world.clock.advance(CLOCK_STEP)
            self.clock_steps += 1
            self.world.cars.loop.call_soon_threadsafe(self._tick_cars)

    def _tick_cars(self) -> None:
        """On the cars' loop: each car's own clock switches what its windows say."""
        for agent in self.world.agents.values():
            agent.tick()

    def _drop_cars(self) -> None:
        """On the cars' loop, every half second until the end: some cars lose their network
        and get it back a few seconds later."""
        if self.stop.is_set():
            return
        loop = self.world.cars.loop
        for agent in self.world.agents.values():
            if agent.online and self.random.random() < DROP_CHANCE:
                agent.lose_network()
                self.drops += 1
                loop.call_later(self.random.uniform(*OFFLINE_SECONDS), agent.restore_network)
        loop.call_later(0.5, self._drop_cars)

    def _watch_backlog(self) -> None:
        """How many outbox messages are due, every few seconds: whether the worker keeps up."""
        while not self.stop.wait(BACKLOG_EVERY_SECONDS):
            self.backlog.append(self.world.read(lambda s: _due(s, self.world.clock.now())))

    def _change_cards(self) -> None:
        declining: set[str] = set()
        while not self.stop.wait(CARD_CHANGE_EVERY_SECONDS):
            card = self.random.choice(self.shoppers).card
            number = CARD_SUCCEEDS if card in declining else CARD_DECLINED
            declining ^= {card}
            self.world.sandbox.change_card(card, number)
            self.card_changes += 1


def _unsettled(world: World) -> list[str]:
    """What keeps the platform from having settled (nothing: it has): cars offline, outbox
    messages due, purchases or payments half done, cars not at their newest configuration."""
    agents = dict(world.agents)
    cars = world.cars.call(lambda: invariants.what_cars_run(agents))
    offline = world.cars.call(lambda: sum(not agent.online for agent in agents.values()))

    def read(session: Session) -> list[str]:
        due = _due(session, world.clock.now())
        newest = dict(
            session.execute(
                text(
                    "SELECT v.vin, max(c.version) FROM vehicles v "
                    "JOIN configuration_versions c ON c.vehicle_id = v.id GROUP BY v.vin"
                )
            ).all()
        )
        behind = sum(newest.get(vin) != version for vin, (version, _) in cars.items())
        half_done = invariants.nothing_left_half_done(session)
        return [
            *([f"{offline} cars offline"] if offline else []),
            *([f"{due} outbox messages due"] if due else []),
            *([f"{behind} cars behind their newest configuration"] if behind else []),
            *([f"{len(half_done)} purchases or payments half done"] if half_done else []),
        ]

    return world.read(read)


def _due(session: Session, now: datetime) -> int:
    """Outbox messages the worker should be delivering now."""
    return int(
        session.scalar(
            text(
                "SELECT count(*) FROM outbox WHERE done_at IS NULL AND gave_up_at IS NULL "
                "AND run_after <= :now"
            ),
            {"now": now},
        )
        or 0
    )


def _next_wake(world: World) -> datetime | None:
    """When the platform will act again by itself on unfinished work: a failed outbox message
    tried again, or a configuration the car has not answered published again."""

    def read(session: Session) -> datetime | None:
        found: datetime | None = session.scalar(
            text(
                "SELECT min(run_after) FROM outbox WHERE done_at IS NULL AND gave_up_at IS NULL "
                "AND (attempts > 0 OR topic = 'ota.publish') AND run_after > :now"
            ),
            {"now": world.clock.now()},
        )
        return found

    return world.read(read)


@dataclass
class Settling:
    """How the platform settled after the load: seconds, clock moves, and what it waited for
    (each reason with the seconds it was seen)."""

    seconds: float = 0.0
    clock_moves: int = 0
    waited_for: dict[str, float] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)
    backlog: dict[str, int] = field(default_factory=dict)


def _quiesce(world: World) -> Settling:
    """Bring every car back online, let purchase deadlines and the payments' resolve sweep come
    due, and wait until the platform has settled (at most `QUIESCE_SECONDS`). While only the
    platform's own later attempts are left (a retry, a configuration published again), the
    clock moves to them, as time would."""
    settling = Settling()
    began = time.monotonic()

    def reconnect() -> None:
        for agent in world.agents.values():
            agent.restore_network()
            agent.tick()

    def tick() -> None:
        for agent in world.agents.values():
            agent.tick()

    world.cars.call(reconnect)
    world.clock.advance(SETTLE_STEP)
    world.cars.call(tick)
    looked = time.monotonic()
    while unsettled := _unsettled(world):
        now = time.monotonic()
        for reason in unsettled:
            kind = reason.split(" ", 1)[1]
            settling.waited_for[kind] = settling.waited_for.get(kind, 0.0) + now - looked
        looked = now
        settling.left = unsettled
        if now - began > QUIESCE_SECONDS:
            break
        wake = _next_wake(world)
        idle = not any("due" in reason for reason in unsettled)
        if idle and wake is not None and wake - world.clock.now() <= timedelta(hours=1):
            world.clock.set(wake)
            world.cars.call(tick)
            settling.clock_moves += 1
        time.sleep(0.25)
    else:
        settling.left = []
    settling.backlog = world.read(
        lambda session: {
            str(topic): int(count)
            for topic, count in session.execute(
                text(
                    "SELECT topic, count(*) FROM outbox WHERE done_at IS NULL "
                    "AND gave_up_at IS NULL AND run_after <= :now GROUP BY topic"
                ),
                {"now": world.clock.now()},
            ).all()
        }
    )
    settling.seconds = time.monotonic() - began
    return settling


def test_soak(world: World) -> None:
    started = time.monotonic()
    add_customers(world, CUSTOMERS)
    ready = time.monotonic() - started
    tally = Tally()
    shoppers = [
        Shopper(
            customer,
            platform_url=world.platform_url,
            payments_url=world.payments_url,
            tally=tally,
            seed=index,
        )
        for index, customer in enumerate(world.customers)
    ]
    for shopper in shoppers:
        shopper.log_in()
    chaos = Chaos(world, shoppers, seed=len(shoppers))
    stop = threading.Event()
    until = time.monotonic() + SOAK_SECONDS
    threads = [
        threading.Thread(target=shopper.run, args=(until, stop), name=f"soak-{n}", daemon=True)
        for n, shopper in enumerate(shoppers)
    ]
    load_began = time.monotonic()
    chaos.start()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SOAK_SECONDS + 120)
    finally:
        stop.set()
        chaos.finish()
        for shopper in shoppers:
            shopper.close()
    load_seconds = time.monotonic() - load_began
    settling = _quiesce(world)
    checking = time.monotonic()
    violations = invariants.all_violations(world)
    made = invariants.figures(world)
    checked = time.monotonic() - checking

    REPORT.extend(
        _summary(
            world,
            tally,
            chaos,
            made,
            violations,
            settling,
            ready=ready,
            load=load_seconds,
            checked=checked,
        )
    )
    assert not any(thread.is_alive() for thread in threads), "a customer never finished"
    assert settling.left == [], f"not settled within {QUIESCE_SECONDS:.0f} s: {settling.left}"
    assert sum(tally.ops.values()) > 0
    assert dict(tally.errors) == {}, tally.examples
    assert {name: found for name, found in violations.items() if found} == {}
    assert made["outbox gave up"] == {}


def _summary(
    world: World,
    tally: Tally,
    chaos: Chaos,
    made: dict[str, dict[str, int]],
    violations: dict[str, list[str]],
    settling: Settling,
    *,
    ready: float,
    load: float,
    checked: float,
) -> list[str]:
    waited = ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in settling.waited_for.items())
    bridge = world.worker.bridge
    failures = {k: v for k, v in (bridge.counts if bridge else {}).items() if "fail" in k}
    lines = [
        f"customers and cars: {len(world.customers)}; ready in {ready:.1f} s, load "
        f"{load:.1f} s, settled in {settling.seconds:.1f} s ({settling.clock_moves} clock "
        f"moves to the platform's own retries and re-sends; waited for: {waited or 'nothing'})",
        f"the worker's MQTT bridge failed to store: {failures or 'nothing'}",
        f"outbox messages due, every {BACKLOG_EVERY_SECONDS:.0f} s of the load: "
        f"{' '.join(map(str, chaos.backlog)) or 'not counted'}; at the end: "
        f"{settling.backlog or 'none'}",
        f"clock moved {chaos.clock_steps} x {CLOCK_STEP} (now {world.clock.now():%Y-%m-%d %H:%M}"
        f" UTC); cars dropped off the network {chaos.drops} times; cards changed "
        f"{chaos.card_changes} times",
        f"operations: {sum(tally.ops.values())}",
        *(f"  {name}: {count}" for name, count in sorted(tally.ops.items())),
        f"errors: {sum(tally.errors.values())}",
        *(
            f"  {name}: {count} e.g. {tally.examples.get(name, [''])[0]}"
            for name, count in sorted(tally.errors.items())
        ),
    ]
    for name, counts in made.items():
        shown = ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))
        lines.append(f"{name}: {shown or 'none'}")
    lines.append(f"invariants (checked in {checked:.1f} s):")
    for name, found in violations.items():
        lines.append(f"  {'FAIL' if found else 'ok'}: {name}")
        lines.extend(f"    {problem}" for problem in found[:10])
    return lines
