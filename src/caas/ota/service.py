"""Over-the-air configuration: what each car must run, signed as a new version, and the car's
answer to it.

`effective_configuration` is the one place that decides what a car runs (today the sale's
included features and the paired phones; the store adds its purchases there). Every change is a
new `ConfigurationVersion`, strictly increasing per car, signed and queued for publication
(`ota.publish`) in the caller's transaction; the worker publishes it retained with QoS 1 and
re-sends it while the car stays silent; the car's `Reported` answer settles it
(`record_report`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.catalog import service as catalog
from caas.core.errors import Conflict, InvalidInput
from caas.core.history import Actor, record
from caas.core.live import announce, vehicle_subjects
from caas.core.outbox import cancel, enqueue
from caas.core.settings import Settings, get_settings
from caas.iot import rules as broker_rules
from caas.ota.keys import SigningMaterial, ensure_demo_keys, load_signing_material
from caas.ota.models import ConfigurationPush, ConfigurationVersion
from caas.ota.rules import (
    STALE_VERSION,
    WAITING_STATES,
    CatalogFeature,
    Entitlement,
    feature_states,
    features_switched,
    questions_authenticity,
    state_after_report,
)
from caas.protocol.manifest import (
    ManifestRejected,
    encode_for_wire,
    publish_packet_size,
    verify_manifest,
)
from caas.protocol.mqtt import (
    FeatureState,
    ManifestBody,
    PhoneKey,
    Reported,
    SignedManifest,
    SoftwareOrder,
    desired_topic,
)
from caas.vehicles.keys import active_phone_keys
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

PUBLISH_TOPIC: Final = "ota.publish"
CLEAR_TOPIC: Final = "ota.clear"
SUBJECT: Final = "vehicle"
# A re-send waits twice as long as the one before, up to this.
LONGEST_RESEND_WAIT: Final = timedelta(hours=1)
# The car's `report_reason` of a version the platform gave up publishing: its manifest does not
# fit in one packet the broker takes (`publish_configuration`).
TOO_LARGE: Final = "manifest_too_large"


class ConfigurationTooLarge(Conflict):
    """The car's signed manifest would not fit in one MQTT packet the broker takes
    (`caas.iot.rules.MAX_PACKET_SIZE`): the broker would refuse every publication of it."""

    code = "configuration.too_large"


# --- signing material -------------------------------------------------------------------------

_material: SigningMaterial | None = None
_material_lock = threading.Lock()


def signing_material(settings: Settings | None = None) -> SigningMaterial:
    """The platform's signing key and certificate, read once per process from
    `settings.ota_keys_path` (created there first in the demo and tests only)."""
    global _material
    if _material is None:
        with _material_lock:
            if _material is None:
                settings = settings or get_settings()
                path = settings.ota_keys_path
                if settings.env in ("demo", "test"):
                    _material = ensure_demo_keys(path)
                else:
                    _material = load_signing_material(path)
    return _material


def use_signing_material(material: SigningMaterial | None) -> None:
    """Sign with `material` from now on in this process (None: read the settings' again)."""
    global _material
    with _material_lock:
        _material = material


# --- what the car must run --------------------------------------------------------------------


def catalog_features(session: Session, platform_id: int) -> list[CatalogFeature]:
    """The features of a platform, as the rules need them."""
    return [
        CatalogFeature(
            code=feature.code,
            name=feature.name,
            category=feature.category,
            needs_hardware=feature.needs_hardware,
            parameters=dict(feature.parameters or {}),
            min_software_version=feature.min_software_version,
        )
        for feature in catalog.platform_features(session, platform_id)
    ]


def entitlements(session: Session, vehicle: Vehicle) -> list[Entitlement]:
    """Everything the car is entitled to run (`caas.store.entitlements`)."""
    from caas.store.entitlements import car_entitlements

    return car_entitlements(session, vehicle)


def effective_configuration(session: Session, vehicle: Vehicle, at: datetime) -> list[FeatureState]:
    """Every feature of the car's platform as the car must run it from `at`."""
    return feature_states(
        catalog_features(session, vehicle.platform_id), entitlements(session, vehicle), at=at
    )


def phone_keys(session: Session, vehicle: Vehicle) -> list[PhoneKey]:
    """The phones authorised as the car's key."""
    return active_phone_keys(session, vehicle.id)


def software_update(session: Session, vehicle: Vehicle) -> SoftwareOrder | None:
    """The software release the car must install, while a rollout offers it one
    (`caas.releases`)."""
    from caas.releases.service import software_order

    return software_order(session, vehicle)


def standing_messages(session: Session, vehicle: Vehicle, now: datetime) -> list[str]:
    """What the car's screen keeps showing whatever the version's reason: its bookings at a
    workshop (`caas.upkeep.screen`)."""
    from caas.upkeep.screen import car_messages

    return car_messages(session, vehicle, now)


# --- versions -----------------------------------------------------------------------------------


def lock_vehicle(session: Session, vehicle_id: int) -> None:
    """Lock the car's row (FOR UPDATE) until the transaction ends: the first lock of every
    transaction that changes what a car runs or what it is charged for.

    One order everywhere, so two such transactions never wait for each other in a circle
    (a deadlock, which PostgreSQL breaks by rolling one back): the car's row first, then its
    purchases by id, then its configuration versions. Taking it again in the same
    transaction costs one round trip and waits for nothing."""
    session.execute(select(Vehicle.id).where(Vehicle.id == vehicle_id).with_for_update())


def request_configuration(
    session: Session,
    vehicle: Vehicle,
    *,
    reason: str,
    actor: Actor,
    now: datetime,
    messages: Sequence[str] = (),
    push: ConfigurationPush | None = None,
) -> ConfigurationVersion:
    """Sign the car's configuration as it must be from `now` as a new version and queue it for
    the car; older versions still waiting for the car are superseded. `push` is the many-car
    change this version is part of (`caas.ota.pushes`), for the operator's progress page.

    The car's row is locked, so concurrent requests get consecutive versions. A scrapped
    (archived) car gets no configuration any more (409).
    """
    lock_vehicle(session, vehicle.id)
    if vehicle.state == "archived":
        raise Conflict("this car was scrapped: it gets no configuration", code="vehicle.archived")
    last = session.scalar(
        select(func.max(ConfigurationVersion.version)).where(
            ConfigurationVersion.vehicle_id == vehicle.id
        )
    )
    body = ManifestBody(
        vin=vehicle.vin,
        version=(last or 0) + 1,
        issued_at=now,
        features=effective_configuration(session, vehicle, now),
        phone_keys=phone_keys(session, vehicle),
        messages=[*messages, *standing_messages(session, vehicle, now)],
        software=software_update(session, vehicle),
    )
    signed = signing_material().sign(body)
    manifest = signed.model_dump(mode="json")
    _refuse_what_does_not_fit(vehicle, manifest, messages=messages)
    for older in session.scalars(
        select(ConfigurationVersion).where(
            ConfigurationVersion.vehicle_id == vehicle.id,
            ConfigurationVersion.state.in_(("pending", "deferred")),
        )
    ):
        _move(session, vehicle, older, "superseded", actor=actor, now=now)
        older.superseded_at = now
    version = ConfigurationVersion(
        vehicle_id=vehicle.id,
        version=body.version,
        body=body.model_dump(mode="json"),
        manifest=manifest,
        reason=reason[:80],
        state="pending",
        created_at=now,
        publish_count=0,
        push_id=push.id if push is not None else None,
    )
    session.add(version)
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event="configuration.issued",
        to_state="pending",
        details={
            "version": version.version,
            "reason": version.reason,
            "enabled": [state.code for state in body.features if state.enabled],
            "phone_keys": [key.key_id for key in body.phone_keys],
        },
    )
    enqueue(
        session,
        topic=PUBLISH_TOPIC,
        payload={"version_id": version.id},
        dedupe_key=f"{PUBLISH_TOPIC}:{vehicle.id}:{version.version}",
        now=now,
    )
    return version


def packet_size(vin: str, payload: bytes) -> int:
    """The bytes of the MQTT packet that publishes `payload` (a manifest as `encode_for_wire`
    or `manifest_payload` gives it) on the car's desired topic."""
    return publish_packet_size(desired_topic(vin), len(payload))


def fits_in_a_packet(size: int) -> bool:
    """Whether a packet of `size` bytes is one the broker takes (the limit read at each call,
    so a lowered limit counts at once)."""
    return size <= broker_rules.MAX_PACKET_SIZE


def _refuse_what_does_not_fit(
    vehicle: Vehicle, manifest: dict[str, Any], *, messages: Sequence[str]
) -> None:
    """Raise before anything of the version is written when its manifest would not fit in
    one packet: InvalidInput on `messages` when the caller's messages alone make the
    difference (a person's text), else ConfigurationTooLarge (the car's configuration itself,
    such as the catalog's parameters of its features, is too large)."""
    size = packet_size(vehicle.vin, encode_for_wire(manifest))
    if fits_in_a_packet(size):
        return
    limit = broker_rules.MAX_PACKET_SIZE
    log.error("ota.manifest_too_large", vin=vehicle.vin, size=size, limit=limit)
    if messages:
        body = manifest["body"]
        without = {**manifest, "body": {**body, "messages": body["messages"][len(messages) :]}}
        if fits_in_a_packet(packet_size(vehicle.vin, encode_for_wire(without))):
            raise InvalidInput(
                f"these messages make the car's signed configuration {size} bytes, more "
                f"than the {limit} bytes one MQTT message may carry: shorten them",
                field="messages",
                code="configuration.messages_too_long",
                size=size,
                limit=limit,
            )
    raise ConfigurationTooLarge(
        f"the signed configuration of {vehicle.vin} would be {size} bytes, more than the "
        f"{limit} bytes one MQTT message may carry: the broker would refuse it",
        size=size,
        limit=limit,
        parts=_part_sizes(manifest["body"]),
    )


def _part_sizes(body: dict[str, Any]) -> dict[str, int]:
    """Bytes of each list of the manifest's body, largest first: where to look."""
    parts = {
        name: len(encode_for_wire({name: body.get(name)}))
        for name in ("features", "phone_keys", "messages", "software")
    }
    return dict(sorted(parts.items(), key=lambda item: -item[1]))


def retire(session: Session, vehicle: Vehicle, *, actor: Actor, now: datetime) -> None:
    """The car is scrapped: versions still waiting for it are superseded, and once the caller
    commits its retained manifest is cleared from the broker (`ota.clear`)."""
    for waiting in session.scalars(
        select(ConfigurationVersion)
        .where(
            ConfigurationVersion.vehicle_id == vehicle.id,
            ConfigurationVersion.state.in_(("pending", "deferred")),
        )
        .with_for_update()
    ):
        _move(session, vehicle, waiting, "superseded", actor=actor, now=now)
        waiting.superseded_at = now
    enqueue(
        session,
        topic=CLEAR_TOPIC,
        payload={"vin": vehicle.vin},
        dedupe_key=f"{CLEAR_TOPIC}:{vehicle.id}",
        now=now,
    )


def _move(
    session: Session,
    vehicle: Vehicle,
    version: ConfigurationVersion,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    from_state = version.state
    version.state = to_state
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event=f"configuration.{to_state}",
        from_state=from_state,
        to_state=to_state,
        details={"version": version.version, **(details or {})},
    )


def record_report(
    session: Session, reported: Reported, *, now: datetime
) -> ConfigurationVersion | None:
    """The car's answer to a version: applied, rejected (with its reason) or deferred (waiting
    to be parked). Duplicates and late answers change nothing; a rejection always stays in the
    car's history, even of a manifest the platform never issued (a forgery, a replay).

    A refusal of a manifest as not genuine (forged, another car's, unreadable) under the number
    of a version the platform issued, whose own manifest passes that check, was about another
    message: it settles nothing (no purchase revoked, no hold voided), the version keeps
    waiting and its re-send still brings the genuine manifest; the report is kept in the car's
    history as a suspected forgery, with a warning in the log.
    Returns the version answered, None when the platform has no such version.
    """
    actor = Actor(kind="vehicle", label=reported.vin)
    details: dict[str, Any] = {"reason": reported.reason, "car_time": reported.at.isoformat()}
    # The car's row first, as every transaction that settles purchases or issues a version
    # takes it (`lock_vehicle`): then its purchases, then the version.
    vehicle = session.scalars(
        select(Vehicle).where(Vehicle.vin == reported.vin.upper()).with_for_update()
    ).first()
    if vehicle is None:
        log.warning("ota.report_for_unknown_car", vin=reported.vin, version=reported.version)
        return None
    version = session.scalars(
        select(ConfigurationVersion)
        .where(
            ConfigurationVersion.vehicle_id == vehicle.id,
            ConfigurationVersion.version == reported.version,
        )
        .with_for_update()
    ).first()
    if version is None:
        _keep_unmatched(session, vehicle, reported, actor=actor, now=now, details=details)
        return None
    if questions_authenticity(reported.status, reported.reason) and _passes_the_cars_checks(
        version, vehicle.vin
    ):
        _forgery_reported(
            session, vehicle, version, reported, actor=actor, now=now, details=details
        )
        return version
    newest = reported.reason == STALE_VERSION and version.version == session.scalar(
        select(func.max(ConfigurationVersion.version)).where(
            ConfigurationVersion.vehicle_id == vehicle.id
        )
    )
    target = state_after_report(version.state, reported.status, reported.reason, newest=newest)
    if target is None:
        if reported.status == "rejected":
            _keep_unmatched(session, vehicle, reported, actor=actor, now=now, details=details)
        elif reported.status == "applied" and version.state == "applied":
            _features_switched(session, vehicle, version, reported, actor=actor, now=now)
        return version
    if version.state == "pending" and version.publish_count:
        # Answered: the re-send queued after the last publication has nothing left to do.
        cancel(session, dedupe_key=_resend_key(version, version.publish_count), now=now)
    version.reported_at = now
    version.report_reason = reported.reason
    version.active_features = list(reported.active_features)
    _move(session, vehicle, version, target, actor=actor, now=now, details=details)
    announce(session, *vehicle_subjects(vehicle.id, version.push_id))
    from caas.store.purchases import configuration_answered

    configuration_answered(session, vehicle, version, now=now)
    log.info("ota.reported", vin=vehicle.vin, version=version.version, state=target)
    return version


def _features_switched(
    session: Session,
    vehicle: Vehicle,
    version: ConfigurationVersion,
    reported: Reported,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    """The car reports `applied` again for a version it runs, with other features on: it
    switched a feature off (or on) by its own clock at the end (start) of its window, maybe
    while offline. The twin follows; the same features again change nothing."""
    switched = features_switched(version.active_features, reported.active_features)
    if switched is None:
        return
    off, on = switched
    version.active_features = list(reported.active_features)
    version.reported_at = now
    announce(session, f"vehicle:{vehicle.id}")
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event="configuration.features_changed",
        details={
            "version": version.version,
            "switched_off": off,
            "switched_on": on,
            "car_time": reported.at.isoformat(),
        },
    )
    log.info("ota.features_changed", vin=vehicle.vin, version=version.version, off=off, on=on)


def _passes_the_cars_checks(version: ConfigurationVersion, vin: str) -> bool:
    """Whether the platform's own manifest of `version` is genuine for the car `vin` as the car
    checks it (readable, certified by the maker's root, signed by the certified key, for this
    VIN) at the time it was issued. False when it is not, say signed while the platform held
    another root's key: then the car's refusal is true of it and settles it."""
    try:
        verify_manifest(
            SignedManifest.model_validate(version.manifest),
            root_public_key=signing_material().root_public_key,
            vin=vin,
            current_version=0,
            now=version.created_at,
        )
    except (ManifestRejected, ValueError):
        return False
    return True


def _forgery_reported(
    session: Session,
    vehicle: Vehicle,
    version: ConfigurationVersion,
    reported: Reported,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, Any],
) -> None:
    """The car refused, as not genuine, a message under the number of a version whose manifest
    is genuine: someone else published on its topic (or the message was damaged on the way).
    Kept in the car's history and logged as a warning; the version is left as it was."""
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event="configuration.manifest_refused",
        details={
            "version": reported.version,
            **details,
            "suspected": "forgery",
            "version_state": version.state,
        },
    )
    log.warning(
        "ota.forged_manifest_reported",
        vin=vehicle.vin,
        version=reported.version,
        reason=reported.reason,
        version_state=version.state,
    )


def _keep_unmatched(
    session: Session,
    vehicle: Vehicle,
    reported: Reported,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, Any],
) -> None:
    """A report that settles nothing, kept for the twin when it tells of a refused manifest."""
    if reported.status != "rejected":
        return
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=vehicle.id,
        customer_id=vehicle.owner_customer_id,
        event="configuration.manifest_refused",
        details={"version": reported.version, **details},
    )
    log.warning(
        "ota.manifest_refused", vin=vehicle.vin, version=reported.version, reason=reported.reason
    )


# --- publication --------------------------------------------------------------------------------


def version_to_publish(
    session: Session, version_id: int
) -> tuple[ConfigurationVersion, str] | None:
    """The version and its car's VIN when it still waits to reach the car (not scrapped);
    else None.

    The car's row is held (FOR KEY SHARE) until the caller commits: a newer version cannot be
    issued meanwhile (`request_configuration` locks that row), so publications follow the
    order of the versions and an older one never replaces a newer one on the broker. The
    car's answer waits for it (`record_report` locks the car's row first): at most the
    broker's acknowledgement, on the bridge's report threads, never on its network loop.
    """
    row = session.execute(
        select(ConfigurationVersion, Vehicle.vin, Vehicle.state)
        .join(Vehicle, Vehicle.id == ConfigurationVersion.vehicle_id)
        .where(ConfigurationVersion.id == version_id)
        .with_for_update(read=True, key_share=True, of=Vehicle)
    ).first()
    # A scrapped (archived) car is published nothing any more.
    if row is None or row[0].state != "pending" or row[2] == "archived":
        return None
    return row[0], row[1]


def manifest_payload(version: ConfigurationVersion) -> bytes:
    """The `SignedManifest` as published on the car's desired topic."""
    return encode_for_wire(version.manifest)


def publication_refused(
    session: Session, version: ConfigurationVersion, *, size: int, now: datetime
) -> None:
    """The version's manifest does not fit in one packet the broker takes (the limit was
    lowered after it was signed): the broker would refuse every publication of it, so it is
    given up, as rejected by the platform (`TOO_LARGE`), never re-sent. The car keeps the
    version it runs; purchases this version carried are settled by their deadline (refunded),
    as for a car that stays silent."""
    vehicle = session.get_one(Vehicle, version.vehicle_id)
    limit = broker_rules.MAX_PACKET_SIZE
    version.report_reason = TOO_LARGE
    _move(
        session,
        vehicle,
        version,
        "rejected",
        actor=Actor.system("ota"),
        now=now,
        details={"reason": TOO_LARGE, "size": size, "limit": limit},
    )
    announce(session, *vehicle_subjects(vehicle.id, version.push_id))
    log.error(
        "ota.publication_refused",
        vin=vehicle.vin,
        version=version.version,
        reason=TOO_LARGE,
        size=size,
        limit=limit,
    )


def resend_wait(first: timedelta, publish_count: int) -> timedelta:
    """How long after its `publish_count`-th publication a silent car gets the version again."""
    wait: timedelta = first * (2 ** max(publish_count - 1, 0))
    return min(wait, LONGEST_RESEND_WAIT)


def _resend_key(version: ConfigurationVersion, publish_count: int) -> str:
    return f"{PUBLISH_TOPIC}:{version.vehicle_id}:{version.version}:resend-{publish_count}"


def published(
    session: Session, version: ConfigurationVersion, *, now: datetime, resend_after: timedelta
) -> None:
    """The broker has the version: note it, and queue a re-send in case the car stays silent."""
    count = version.publish_count + 1
    version.published_at = version.published_at or now
    version.last_published_at = now
    version.publish_count = count
    if count == 1:  # the first publication changes what the pages show
        announce(session, *vehicle_subjects(version.vehicle_id, version.push_id))
    enqueue(
        session,
        topic=PUBLISH_TOPIC,
        payload={"version_id": version.id},
        dedupe_key=_resend_key(version, count),
        now=now,
        run_after=now + resend_wait(resend_after, count),
    )


# --- reading ------------------------------------------------------------------------------------


def versions_of(session: Session, vehicle_id: int) -> list[ConfigurationVersion]:
    """Every version of the car's configuration, newest first."""
    return list(
        session.scalars(
            select(ConfigurationVersion)
            .where(ConfigurationVersion.vehicle_id == vehicle_id)
            .order_by(ConfigurationVersion.version.desc())
        )
    )


def is_waiting(version: ConfigurationVersion) -> bool:
    return version.state in WAITING_STATES
