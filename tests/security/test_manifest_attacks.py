"""Manifest attacks beyond tests/protocol/test_manifest.py and tests/sim/test_vehicle_agent.py
(which forge single manifests: a changed byte, another VIN, an older version, an unknown signer,
a forged or expired certificate, another root).

Here the attacker replays what it captured: the car's own older manifest that still had a
feature since removed (a rollback), another car's genuine manifest; plants a forgery retained on
the broker for the car's next connection; claims a far-future version in a forgery, hoping the
car will then refuse its next genuine manifest as stale; and relies on the car's honest report
of a forgery to cancel the platform's genuine pending version.

The cars are `caas_sim.vehicle` agents on a real broker, the test playing the platform with
the maker's keys (tests/sim/conftest.py).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.models import Payment
from caas.core.clock import FixedClock
from caas.core.history import Actor, subject_history
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.protocol import mqtt
from caas.protocol.manifest import canonical, issue_certificate, sign_manifest
from caas.protocol.mqtt import ManifestBody, Reported, SignedManifest
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store.models import Entitlement, Purchase
from caas.vehicles.models import Vehicle
from caas_sim.vehicle.agent import VehicleAgent
from tests.billing.conftest import PaymentSandbox, payment_sandbox, settings
from tests.sim.conftest import (
    Maker,
    Platform,
    anyio_backend,
    feature,
    fresh_vin,
    maker,
    mqtt_broker,
    new_car,
    platform,
    running,
)
from tests.store.conftest import answer, buy, item, offer, owner_of, run_relay
from tests.store.engine import Delivered, delivered
from tests.vehicles.support import born_car, deliver, rogue_material, signing, versions

__all__ = [
    "anyio_backend",
    "delivered",
    "maker",
    "mqtt_broker",
    "payment_sandbox",
    "platform",
    "settings",
    "signing",
]

FAR_FUTURE = 1_000_000


def applied(version: int) -> Callable[[Reported], bool]:
    return lambda report: report.status == "applied" and report.version == version


def rejected(version: int) -> Callable[[Reported], bool]:
    return lambda report: report.status == "rejected" and report.version == version


async def _settle(platform: Platform, car: VehicleAgent, payload: bytes, version: int) -> None:
    """Publish a genuine manifest (retained, as the platform does) and wait until it applied."""
    await platform.publish(car.vin, payload)
    await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(version))


@pytest.mark.anyio
@pytest.mark.parametrize("case", ["own older manifest", "another car's manifest"])
async def test_a_captured_genuine_manifest_replayed_to_the_car_is_rejected(
    case: str, mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    """Genuine bytes, signed by the maker: version 1 still had autopilot (a trial, since
    ended), another car's manifest has it too; neither brings it back."""
    car = new_car(mqtt_broker, maker, clock)
    now = clock.now()
    autopilot = feature("autopilot", affects_driving=True)
    first = maker.sign(maker.body(car.vin, 1, now, features=[autopilot, feature("premium_audio")]))
    current = maker.body(car.vin, 2, now, features=[feature("premium_audio")])
    if case == "own older manifest":
        captured, reason, claimed = first, "stale_version", 1
    else:
        other = maker.body(fresh_vin(), 9, now, features=[autopilot, feature("premium_audio")])
        captured, reason, claimed = maker.sign(other), "wrong_vin", 9
    async with running(car):
        await _settle(platform, car, first, 1)
        await _settle(platform, car, maker.sign(current), 2)
        await platform.publish(car.vin, captured, retain=False)
        rejection = await platform.wait_for(Reported, mqtt.REPORTED, car.vin, rejected(claimed))

    assert rejection.reason == reason
    assert rejection.active_features == ["premium_audio"]
    assert (car.version, car.applied, car.active_features) == (2, current, ["premium_audio"])


def _forged(maker: Maker, body: ManifestBody, now: datetime, how: str) -> bytes:
    """`body` made to look signed, without the maker's signing key or within an old window."""
    if how == "unknown key":
        stranger = Ed25519PrivateKey.generate()
        signature = base64.b64encode(stranger.sign(canonical(body))).decode()
        forged = SignedManifest(body=body, certificate=maker.certificate, signature=signature)
        return mqtt.encode(forged)
    if how == "another root":
        other_root, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        certificate = issue_certificate(
            other_root,
            stranger.public_key(),
            key_id=maker.certificate.key_id,
            not_before=now - timedelta(days=1),
            not_after=now + timedelta(days=1),
        )
        return mqtt.encode(sign_manifest(body, signing_key=stranger, certificate=certificate))
    assert how == "expired certificate"
    certificate = issue_certificate(
        maker.root,
        maker.signing.public_key(),
        key_id="retired",
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=1),
    )
    return mqtt.encode(sign_manifest(body, signing_key=maker.signing, certificate=certificate))


REASONS = {
    "unknown key": "bad_signature",
    "another root": "bad_certificate",
    "expired certificate": "certificate_expired",
}


@pytest.mark.anyio
@pytest.mark.parametrize("how", list(REASONS))
async def test_a_forgery_claiming_a_far_future_version_does_not_block_the_next_genuine_one(
    how: str, mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    """Had the car counted the forgery's version as seen, every genuine manifest after it would
    be refused as stale: the car would be frozen out of its own updates."""
    car = new_car(mqtt_broker, maker, clock)
    now = clock.now()
    current = maker.body(car.vin, 2, now, features=[feature("premium_audio")])
    forged = maker.body(car.vin, FAR_FUTURE, now, features=[feature("autopilot")])
    following = maker.body(car.vin, 3, now, features=[feature("premium_audio"), feature("wifi")])
    async with running(car):
        await _settle(platform, car, maker.sign(current), 2)
        await platform.publish(car.vin, _forged(maker, forged, now, how), retain=False)
        rejection = await platform.wait_for(Reported, mqtt.REPORTED, car.vin, rejected(FAR_FUTURE))
        assert (rejection.reason, car.version) == (REASONS[how], 2)
        await _settle(platform, car, maker.sign(following), 3)

    assert (car.version, car.active_features) == (3, ["premium_audio", "wifi"])


@pytest.mark.anyio
async def test_a_forgery_retained_on_the_broker_is_refused_when_the_car_connects(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    """Whoever holds the platform's broker account could leave a forgery as the retained
    manifest: the car meets it first thing when it connects, refuses it and keeps what it ran."""
    car = new_car(mqtt_broker, maker, clock)
    now = clock.now()
    current = maker.body(car.vin, 2, now, features=[feature("premium_audio")])
    forged = maker.body(car.vin, 3, now, features=[feature("autopilot", affects_driving=True)])
    async with running(car):
        await _settle(platform, car, maker.sign(current), 2)
    await platform.publish(car.vin, _forged(maker, forged, now, "unknown key"))
    async with running(car):
        rejection = await platform.wait_for(Reported, mqtt.REPORTED, car.vin, rejected(3))
        assert car.version == 2
        await _settle(platform, car, maker.sign(forged), 3)  # the genuine one still applies
    await platform.publish(car.vin, b"")  # clear the retained manifest

    assert (rejection.reason, rejection.active_features) == ("bad_signature", ["premium_audio"])
    assert car.active_features == ["autopilot"]


FORGERY_REASONS = ["bad_signature", "bad_certificate", "wrong_vin", "malformed"]


def _report(vin: str, version: int, status: str, reason: str | None, at: datetime) -> Reported:
    return Reported.model_validate(
        {
            "vin": vin,
            "version": version,
            "status": status,
            "reason": reason,
            "at": at,
            "active_features": [],
        }
    )


@pytest.mark.parametrize("reason", FORGERY_REASONS)
def test_the_cars_report_of_a_forgery_does_not_settle_the_platforms_pending_version(
    reason: str,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    signing: SigningMaterial,
) -> None:
    """The platform signs its versions itself: a report that the car received a manifest under
    that number which was not the platform's (forged, another car's, unreadable) says nothing
    about the platform's own manifest, which stays pending (re-sent until the car answers) and
    applies when it arrives. The report stays in the car's history as a suspected forgery."""
    car = born_car(db, settings=settings, now=clock.now())
    pending = deliver(db, car, now=clock.now())
    assert pending.state == "pending"
    forged = _report(car.vin, pending.version, "rejected", reason, clock.now())
    assert ota.record_report(db, forged, now=clock.now()) is not None
    assert versions(db, car)[pending.version].state == "pending"
    suspected = [
        (entry.event, entry.details["version"], entry.details["reason"])
        for entry in subject_history(db, "vehicle", car.vehicle_id)
        if entry.details.get("suspected") == "forgery"
    ]
    assert suspected == [("configuration.manifest_refused", pending.version, reason)]

    clock.advance(timedelta(minutes=1))  # the re-send brings the genuine manifest: it applies
    ota.record_report(
        db, _report(car.vin, pending.version, "applied", None, clock.now()), now=clock.now()
    )
    assert versions(db, car)[pending.version].state == "applied"


def test_a_refusal_true_of_the_platforms_own_manifest_still_settles_it(
    db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial, tmp_path: Path
) -> None:
    """When the platform's own manifest fails the car's check (signed while the platform held
    a key of another root than the cars pin), the car's `bad_certificate` is the truth about
    it: the version is rejected, as is a refusal for a reason that is not about authenticity."""
    car = born_car(db, settings=settings, now=clock.now())
    ota.use_signing_material(rogue_material(tmp_path / "rogue"))
    try:
        rogue = deliver(db, car, now=clock.now())
    finally:
        ota.use_signing_material(signing)
    report = _report(car.vin, rogue.version, "rejected", "bad_certificate", clock.now())
    ota.record_report(db, report, now=clock.now())
    assert versions(db, car)[rogue.version].state == "rejected"

    vehicle = db.get_one(Vehicle, car.vehicle_id)
    genuine = ota.request_configuration(
        db, vehicle, reason="test", actor=Actor(kind="system", label="test"), now=clock.now()
    )
    report = _report(car.vin, genuine.version, "rejected", "certificate_expired", clock.now())
    ota.record_report(db, report, now=clock.now())
    assert versions(db, car)[genuine.version].state == "rejected"


# The purchase's, its payment's and its option's states in the end.
KEPT = ("active", "captured", "active")
REFUNDED = ("refunded", "voided", "revoked")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("bad_signature", KEPT), ("wrong_vin", KEPT), ("certificate_expired", REFUNDED)],
)
def test_a_forgery_reported_under_a_purchases_version_keeps_the_purchase_and_its_hold(
    reason: str,
    expected: tuple[str, str, str],
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    delivered: Delivered,
    payment_sandbox: PaymentSandbox,
) -> None:
    """The forger's aim: the car's honest refusal of its forgery, under the number of the
    version carrying a purchase, must not refund the purchase and void its hold; the car then
    applies the genuine manifest and the option is on. A genuine refusal (the certificate not
    valid by the car's clock) still refunds it and voids the hold."""
    owner = owner_of(db, delivered.car, clock.now())
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=999)
    purchase = buy(
        db,
        owner,
        [item(boost)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key=f"forged-report-{reason}",
        settings=settings,
        clock=clock,
    )
    version = purchase.configuration_version
    assert version is not None and purchase.state == "delivering"
    answer(db, owner, version, "rejected", clock, reason=reason)
    if expected == KEPT:  # the platform's re-send brings the genuine manifest
        answer(db, owner, version, "applied", clock)
    run_relay(settings, sessions, clock, db)
    purchase = db.get_one(Purchase, purchase.id)
    payment = db.get_one(Payment, purchase.payment_id)
    entitlement = db.scalars(
        select(Entitlement).where(Entitlement.purchase_id == purchase.id)
    ).one()
    assert (purchase.state, payment.state, entitlement.state) == expected
