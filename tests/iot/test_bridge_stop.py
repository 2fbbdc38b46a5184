"""Stopping the worker's bridge with a backlog: a thousand cars going offline at once queue a
thousand statuses, which must not keep the worker storing for minutes after it was told to
stop (a benchmark's worker went on into a dropped database and kept its process from ending).
Statuses and telemetry still queued are dropped (retained, or QoS 0); events are stored."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.iot.bridge import Bridge, Sinks
from caas.iot.broker import BrokerAddress
from caas.protocol import mqtt
from caas.protocol.mqtt import Status
from caas.protocol.vin import make_vin
from tests.vehicles.support import CommittedDatabase, committed, wait_until

__all__ = ["committed"]  # the fixture

AT = datetime(2026, 12, 4, 8, tzinfo=UTC)
VINS = [make_vin("VCA", "BRL00", "T", "M", n) for n in range(50)]


def test_stopping_drops_the_queued_statuses_and_stores_the_queued_usage_events(
    committed: CommittedDatabase,
) -> None:
    first_in_hand, release = threading.Event(), threading.Event()
    statuses: list[str] = []
    events: list[int] = []

    def status(_: Session, item: Status, __: datetime) -> None:
        if not statuses:
            first_in_hand.set()
            release.wait(10)  # the database is slow with the first one
        statuses.append(item.vin)

    def stored_events(_: Session, items: list[object], __: datetime) -> int:
        events.append(len(items))
        return len(items)

    sinks = Sinks(
        report=lambda *_: None, telemetry=lambda *_: 0, events=stored_events, status=status
    )
    # Never started: the test hands it the messages as its network loop would.
    # Batches of one: each status queued on its own, as when they come slower than a batch.
    bridge = Bridge(
        BrokerAddress("127.0.0.1", 1), committed.sessions, FixedClock(AT), sinks=sinks, batch_size=1
    )
    for vin in VINS:  # every car goes offline at once
        offline = Status(vin=vin, online=False, at=AT, session=1)
        bridge.dispatch(mqtt.status_topic(vin), mqtt.encode(offline))
    wait_until(first_in_hand.is_set, what="the first status in hand")
    bridge._submit_batch("events", stored_events, [object()] * 3)  # queued behind them

    stopping = threading.Thread(target=bridge.stop)
    stopping.start()
    wait_until(lambda: bridge._stopping_now, what="stop called")
    release.set()
    stopping.join(20)

    assert not stopping.is_alive()
    assert statuses == [VINS[0]]  # the one in hand finished
    assert bridge.counts["dropped.stopping.status"] == len(VINS) - 1
    assert events == [3]
