"""Cars' statuses are stored in batches: a thousand cars coming back at once (after a broker
restart) cost a few transactions instead of a thousand, one after the other, ahead of every
telemetry batch on the bridge's single ingest thread. A software step stays after the
statuses that came before it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.iot.bridge import Bridge, Sinks
from caas.iot.broker import BrokerAddress
from caas.protocol import mqtt
from caas.protocol.mqtt import SoftwareStep, Status
from caas.protocol.vin import make_vin
from tests.vehicles.support import CommittedDatabase, committed, wait_until

__all__ = ["committed"]  # the fixture

AT = datetime(2026, 12, 4, 8, tzinfo=UTC)
VINS = [make_vin("VCA", "BRL00", "T", "M", n) for n in range(300)]


def test_many_statuses_are_stored_in_one_transaction_before_the_step_that_follows_them(
    committed: CommittedDatabase,
) -> None:
    lock = threading.Lock()
    calls: list[tuple[str, str, int]] = []  # (what, VIN, transaction)

    def transaction(session: Session) -> int:
        return int(session.execute(text("SELECT txid_current()")).scalar_one())

    def status(session: Session, item: Status, _: datetime) -> bool:
        with lock:
            calls.append(("status", item.vin, transaction(session)))
        return True

    def software(session: Session, item: SoftwareStep, _: datetime) -> None:
        with lock:
            calls.append(("software", item.vin, transaction(session)))

    sinks = Sinks(
        report=lambda *_: None,
        telemetry=lambda *_: 0,
        events=lambda *_: 0,
        status=status,
        software=software,
    )
    # Never started: the test hands it the messages as its network loop would.
    bridge = Bridge(BrokerAddress("127.0.0.1", 1), committed.sessions, FixedClock(AT), sinks=sinks)
    try:
        for vin in reversed(VINS):  # every car comes back at once
            online = Status(vin=vin, online=True, at=AT, session=2)
            bridge.dispatch(mqtt.status_topic(vin), mqtt.encode(online))
        step = SoftwareStep(
            vin=VINS[0],
            seq=1,
            at=AT,
            release_id=1,
            version="7.3.0",
            step="installed",
            software_version="7.3.0",
        )
        bridge.dispatch(mqtt.events_topic(VINS[0]), mqtt.encode(step))
        wait_until(lambda: len(calls) == len(VINS) + 1, what="statuses and the step stored")
    finally:
        bridge.stop()

    statuses = [call for call in calls if call[0] == "status"]
    assert [vin for _, vin, _ in statuses] == sorted(VINS)  # in VIN order, one transaction
    assert len({transaction for _, _, transaction in statuses}) == 1
    assert calls[-1][:2] == ("software", VINS[0])
    assert bridge.counts["stored.status"] == len(VINS)
