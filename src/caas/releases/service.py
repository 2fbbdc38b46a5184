"""Software releases and their staged rollouts: every state change of a release, a rollout and
each car's update, with its history row, in the caller's transaction.

A release is an image uploaded by the operator (kept under the data directory, with its size
and SHA-256) and its compatibility; publishing signs it. A rollout chooses the compatible cars
once, in the fixed order of `rules.order_key`, and offers them wave by wave: an offered car
gets a new configuration version whose manifest carries the `SoftwareOrder`
(`software_order`, called by `caas.ota.service.request_configuration`). The car's steps come
back through the MQTT bridge (`record_step`), and each queues `releases.advance`, which starts
the next wave, halts the rollout or completes it (`advance`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.catalog import service as catalog
from caas.catalog.models import Platform
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.core.outbox import enqueue
from caas.core.settings import Settings, get_settings
from caas.notifications.service import notify_user
from caas.ota.models import ConfigurationPush
from caas.protocol.manifest import sign_release
from caas.protocol.mqtt import SoftwareOrder, SoftwareStep
from caas.releases import rules
from caas.releases.models import Rollout, RolloutTarget, SoftwareRelease
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle, VehicleState

log = structlog.get_logger(__name__)

ADVANCE_TOPIC: Final = "releases.advance"
RELEASE_SUBJECT: Final = "software_release"
ROLLOUT_SUBJECT: Final = "rollout"
VEHICLE_SUBJECT: Final = "vehicle"
SYSTEM: Final = Actor.system("rollouts")
MAX_IMAGE_BYTES: Final = 512 * 1024 * 1024


# --- images -------------------------------------------------------------------------------------


def images_dir(settings: Settings, platform_code: str) -> Path:
    """Where a platform's release images are kept: `data_dir/releases/<platform>`."""
    return settings.data_dir / "releases" / platform_code


def image_file(settings: Settings, release: SoftwareRelease) -> Path:
    return settings.data_dir / "releases" / release.image_path


def image_token(settings: Settings, release_id: int, vin: str) -> str:
    """The token in a car's image URL: only that car is given it (in its signed manifest)."""
    message = f"caas.releases.image:{release_id}:{vin}".encode()
    return hmac.new(settings.secret_key.encode(), message, hashlib.sha256).hexdigest()


def image_url(settings: Settings, release_id: int, vin: str) -> str:
    """Where the car downloads the image: a path on the platform's HTTP address, which the car
    knows as it knows its broker's (the fleet is not tied to one host name)."""
    token = image_token(settings, release_id, vin)
    return f"/api/v1/software/releases/{release_id}/image?vin={vin}&token={token}"


def _store_image(settings: Settings, platform: Platform, version: str, image: bytes) -> str:
    if not image:
        raise InvalidInput("the image file is empty", field="image", code="release.empty_image")
    if len(image) > MAX_IMAGE_BYTES:
        raise InvalidInput(
            f"the image is larger than {MAX_IMAGE_BYTES} bytes",
            field="image",
            code="release.image_too_large",
        )
    digest = hashlib.sha256(image).hexdigest()
    directory = images_dir(settings, platform.code)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{version}-{digest[:16]}.img"
    path = directory / name
    if not path.exists():
        draft = path.with_suffix(".part")
        draft.write_bytes(image)
        draft.replace(path)
    return f"{platform.code}/{name}"


# --- releases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compatibility:
    """What the operator says a release fits: models (platform codes), features whose hardware
    must be fitted, and the oldest software a car may run to take it."""

    models: list[str]
    hardware: list[str]
    min_version: str | None


def _checked_compatibility(
    session: Session, platform: Platform, compatibility: Compatibility
) -> Compatibility:
    models = sorted(set(compatibility.models or [platform.code]))
    known = {p.code for p in catalog.list_platforms(session)}
    unknown = [code for code in models if code not in known]
    if unknown:
        raise InvalidInput(
            f"no platform {', '.join(unknown)}", field="models", code="release.unknown_model"
        )
    features = {f.code for f in catalog.platform_features(session, platform.id)}
    missing = [code for code in compatibility.hardware if code not in features]
    if missing:
        raise InvalidInput(
            f"{platform.code} has no feature {', '.join(missing)}",
            field="hardware",
            code="release.unknown_hardware",
        )
    if compatibility.min_version is not None:
        _version(compatibility.min_version, field="min_version")
    return Compatibility(models, sorted(set(compatibility.hardware)), compatibility.min_version)


def _version(text: str, *, field: str = "version") -> str:
    try:
        rules.parse_version(text)
    except ValueError as error:
        raise InvalidInput(str(error), field=field, code="release.invalid_version") from None
    return text


def _history(
    session: Session,
    subject_type: str,
    subject_id: int,
    event: str,
    *,
    actor: Actor,
    now: datetime,
    from_state: str | None = None,
    to_state: str | None = None,
    customer_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type=subject_type,
        subject_id=subject_id,
        customer_id=customer_id,
        event=event,
        from_state=from_state,
        to_state=to_state,
        details=details or {},
    )


def create_release(
    session: Session,
    *,
    platform: Platform,
    version: str,
    notes: str,
    image: bytes,
    compatibility: Compatibility,
    created_by: User,
    actor: Actor,
    now: datetime,
    settings: Settings | None = None,
) -> SoftwareRelease:
    """A draft release of `platform`'s software with its image stored; 409 when the platform
    already has that version."""
    settings = settings or get_settings()
    _version(version)
    checked = _checked_compatibility(session, platform, compatibility)
    if session.scalar(
        select(SoftwareRelease.id).where(
            SoftwareRelease.platform_id == platform.id, SoftwareRelease.version == version
        )
    ):
        raise Conflict(
            f"{platform.code} already has a release {version}", code="release.duplicate_version"
        )
    release = SoftwareRelease(
        platform_id=platform.id,
        version=version,
        notes=notes,
        image_path=_store_image(settings, platform, version, image),
        image_size=len(image),
        image_sha256=hashlib.sha256(image).hexdigest(),
        models=checked.models,
        hardware=checked.hardware,
        min_version=checked.min_version,
        state="draft",
        created_by=created_by.id,
        created_at=now,
    )
    session.add(release)
    session.flush()
    _history(
        session,
        RELEASE_SUBJECT,
        release.id,
        "release.created",
        actor=actor,
        now=now,
        to_state="draft",
        details={"platform": platform.code, "version": version, "sha256": release.image_sha256},
    )
    return release


def get_release(session: Session, release_id: int, *, lock: bool = False) -> SoftwareRelease:
    query = select(SoftwareRelease).where(SoftwareRelease.id == release_id)
    release = session.scalar(query.with_for_update() if lock else query)
    if release is None:
        raise NotFound(f"no release {release_id}", code="release.not_found", field="release_id")
    return release


def list_releases(session: Session) -> list[tuple[SoftwareRelease, str]]:
    """Every release with its platform's code, newest first."""
    rows = session.execute(
        select(SoftwareRelease, Platform.code)
        .join(Platform, Platform.id == SoftwareRelease.platform_id)
        .order_by(SoftwareRelease.created_at.desc(), SoftwareRelease.id.desc())
    )
    return [(release, code) for release, code in rows]


def update_release(
    session: Session,
    release: SoftwareRelease,
    *,
    notes: str | None,
    compatibility: Compatibility | None,
    actor: Actor,
    now: datetime,
) -> SoftwareRelease:
    """Change a draft's notes or compatibility (a published release is what was signed)."""
    if release.state != "draft":
        raise Conflict("only a draft release can be changed", code="release.not_draft")
    if notes is not None:
        release.notes = notes
    if compatibility is not None:
        platform = catalog.get_platform(session, release.platform_id)
        checked = _checked_compatibility(session, platform, compatibility)
        release.models, release.hardware = checked.models, checked.hardware
        release.min_version = checked.min_version
    _history(session, RELEASE_SUBJECT, release.id, "release.updated", actor=actor, now=now)
    return release


def delete_release(
    session: Session, release: SoftwareRelease, *, actor: Actor, now: datetime
) -> None:
    """Drop a draft (its image file stays: another draft may share it)."""
    if release.state != "draft":
        raise Conflict("only a draft release can be deleted", code="release.not_draft")
    _history(
        session,
        RELEASE_SUBJECT,
        release.id,
        "release.deleted",
        actor=actor,
        now=now,
        from_state="draft",
        details={"version": release.version},
    )
    session.delete(release)


def publish_release(
    session: Session, release: SoftwareRelease, *, actor: Actor, now: datetime
) -> SoftwareRelease:
    """Sign the release (version, sha256, size, models) with the manifest signing key: from now
    on it can be rolled out."""
    from caas.ota.service import signing_material

    rules.RELEASE.check(release.state, "published")
    release.signature = sign_release(
        signing_material().signing_key,
        version=release.version,
        sha256=release.image_sha256,
        size=release.image_size,
        models=list(release.models),
    )
    release.state = "published"
    release.published_at = now
    _history(
        session,
        RELEASE_SUBJECT,
        release.id,
        "release.published",
        actor=actor,
        now=now,
        from_state="draft",
        to_state="published",
    )
    return release


def withdraw_release(
    session: Session, release: SoftwareRelease, *, actor: Actor, now: datetime
) -> SoftwareRelease:
    """No car gets it any more: its unfinished rollouts are cancelled."""
    rules.RELEASE.check(release.state, "withdrawn")
    for rollout in session.scalars(
        select(Rollout)
        .where(
            Rollout.release_id == release.id,
            Rollout.state.in_(("planned", *rules.ACTIVE_ROLLOUT_STATES)),
        )
        .with_for_update()
    ):
        cancel_rollout(session, rollout, actor=actor, now=now)
    release.state = "withdrawn"
    release.withdrawn_at = now
    _history(
        session,
        RELEASE_SUBJECT,
        release.id,
        "release.withdrawn",
        actor=actor,
        now=now,
        from_state="published",
        to_state="withdrawn",
    )
    return release


# --- choosing the cars --------------------------------------------------------------------------


def compatible_cars(session: Session, release: SoftwareRelease) -> list[Vehicle]:
    """The cars that may take the release, online or not, in the rollouts' fixed order."""
    from caas.vehicles.twin import fitted_hardware

    rule = rules.Compatibility(
        frozenset(release.models), frozenset(release.hardware), release.min_version
    )
    rows = session.execute(
        select(Vehicle, Platform.code)
        .join(Platform, Platform.id == Vehicle.platform_id)
        .where(Platform.code.in_(release.models))
    )
    chosen = [
        vehicle
        for vehicle, model in rows
        if vehicle.software_version != release.version
        and rules.compatible(
            rule,
            model=model,
            fitted_hardware=fitted_hardware(session, vehicle) if rule.hardware else (),
            running=vehicle.software_version,
        )
    ]
    return sorted(chosen, key=lambda vehicle: rules.order_key(vehicle.vin))


# --- rollouts -----------------------------------------------------------------------------------


def create_rollout(
    session: Session,
    release: SoftwareRelease,
    *,
    waves: Sequence[int],
    success_percent: int,
    failure_percent: int,
    start: bool,
    created_by: User,
    actor: Actor,
    now: datetime,
    ask_owner: bool = False,
    auto_install_days: int | None = None,
) -> Rollout:
    """A rollout of a published release over the compatible fleet, its cars chosen now in
    waves; started at once (wave 1 offered) unless `start` is false. With `ask_owner` each car
    of a started wave waits for its owner to accept (`accept_update`), or for
    `auto_install_days` after the owner was asked."""
    try:
        rules.check_waves(waves)
    except ValueError as error:
        raise InvalidInput(str(error), field="waves", code="rollout.invalid_waves") from None
    if auto_install_days is not None and not (
        ask_owner and 1 <= auto_install_days <= rules.MAX_AUTO_INSTALL_DAYS
    ):
        raise InvalidInput(
            f"days before installing without an answer: 1 to {rules.MAX_AUTO_INSTALL_DAYS}, "
            "only when the owners are asked first",
            field="auto_install_days",
            code="rollout.invalid_auto_install_days",
        )
    if release.state != "published":
        raise Conflict("only a published release can be rolled out", code="release.not_published")
    if session.scalar(
        select(Rollout.id).where(
            Rollout.release_id == release.id,
            Rollout.state.in_(("planned", *rules.ACTIVE_ROLLOUT_STATES)),
        )
    ):
        raise Conflict("this release already has a rollout under way", code="rollout.exists")
    cars = compatible_cars(session, release)
    rollout = Rollout(
        release_id=release.id,
        waves=list(waves),
        success_percent=success_percent,
        failure_percent=failure_percent,
        state="planned",
        current_wave=0,
        ask_owner=ask_owner,
        auto_install_days=auto_install_days,
        created_by=created_by.id,
        created_at=now,
    )
    session.add(rollout)
    session.flush()
    session.add_all(
        RolloutTarget(
            rollout_id=rollout.id,
            vehicle_id=vehicle.id,
            rank=rank,
            wave=rules.wave_of(rank, len(cars), waves),
            state="pending",
        )
        for rank, vehicle in enumerate(cars)
    )
    session.flush()
    _history(
        session,
        ROLLOUT_SUBJECT,
        rollout.id,
        "rollout.created",
        actor=actor,
        now=now,
        to_state="planned",
        details={
            "release_id": release.id,
            "version": release.version,
            "cars": len(cars),
            "ask_owner": ask_owner,
            "auto_install_days": auto_install_days,
        },
    )
    if start:
        _move(session, rollout, "running", actor=actor, now=now)
        rollout.started_at = now
        advance(session, rollout, now=now)
    return rollout


def get_rollout(session: Session, rollout_id: int, *, lock: bool = False) -> Rollout:
    query = select(Rollout).where(Rollout.id == rollout_id)
    rollout = session.scalar(query.with_for_update() if lock else query)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}", code="rollout.not_found", field="rollout_id")
    return rollout


def rollouts_of(session: Session, release_id: int) -> list[Rollout]:
    return list(
        session.scalars(
            select(Rollout).where(Rollout.release_id == release_id).order_by(Rollout.id.desc())
        )
    )


def _move(session: Session, rollout: Rollout, to_state: str, *, actor: Actor, now: datetime,
          details: dict[str, Any] | None = None) -> None:  # fmt: skip
    rules.ROLLOUT.check(rollout.state, to_state)
    from_state, rollout.state = rollout.state, to_state
    _history(
        session,
        ROLLOUT_SUBJECT,
        rollout.id,
        f"rollout.{to_state}",
        actor=actor,
        now=now,
        from_state=from_state,
        to_state=to_state,
        details={"wave": rollout.current_wave, **(details or {})},
    )


def pause_rollout(session: Session, rollout: Rollout, *, actor: Actor, now: datetime) -> Rollout:
    """No further wave starts; the cars already offered finish their update."""
    if rollout.state != "paused":
        _move(session, rollout, "paused", actor=actor, now=now)
        rollout.paused_at = now
    return rollout


def resume_rollout(session: Session, rollout: Rollout, *, actor: Actor, now: datetime) -> Rollout:
    """Start a planned rollout, or go on with a paused or halted one (the cars offered but not
    yet updating get the order again)."""
    if rollout.state == "running":
        return rollout
    was_halted = rollout.state == "halted"
    _move(session, rollout, "running", actor=actor, now=now)
    rollout.started_at = rollout.started_at or now
    if was_halted:
        rollout.halt_reason = None
        _reissue(session, rollout, now=now, reason="rollout resumed")
    advance(session, rollout, now=now)
    return rollout


def cancel_rollout(session: Session, rollout: Rollout, *, actor: Actor, now: datetime) -> Rollout:
    """Stop for good: cars offered but not yet updating get a manifest without the order."""
    if rollout.state == "cancelled":
        return rollout
    _move(session, rollout, "cancelled", actor=actor, now=now)
    rollout.cancelled_at = now
    _reissue(session, rollout, now=now, reason="rollout cancelled")
    return rollout


def _reissue(session: Session, rollout: Rollout, *, now: datetime, reason: str) -> None:
    """A new configuration for each car offered that has not started: its manifest carries the
    order, or no longer does, as the rollout's state now says."""
    from caas.ota.pushes import open_push
    from caas.ota.service import request_configuration

    push = None
    for vehicle in session.scalars(
        select(Vehicle)
        .join(RolloutTarget, RolloutTarget.vehicle_id == Vehicle.id)
        .where(RolloutTarget.rollout_id == rollout.id, RolloutTarget.state == "offered")
        .order_by(Vehicle.id)  # several cars' rows: by id, as every such transaction takes them
    ):
        push = push or open_push(
            session, kind="release.reissue", label=f"{reason} ({rollout.id})", actor=SYSTEM, now=now
        )
        request_configuration(session, vehicle, reason=reason, actor=SYSTEM, now=now, push=push)


def progress(session: Session, rollout: Rollout) -> list[rules.WaveProgress]:
    """Each wave's cars by state (waves without cars included)."""
    counts: dict[int, Counter[str]] = {n: Counter() for n in range(1, len(rollout.waves) + 1)}
    for wave, state, amount in session.execute(
        select(RolloutTarget.wave, RolloutTarget.state, func.count())
        .where(RolloutTarget.rollout_id == rollout.id)
        .group_by(RolloutTarget.wave, RolloutTarget.state)
    ):
        counts[wave][state] = amount
    return [
        rules.WaveProgress(number, sum(by_state.values()), dict(by_state))
        for number, by_state in counts.items()
    ]


def targets_of(session: Session, rollout: Rollout) -> list[tuple[RolloutTarget, str]]:
    """The rollout's cars with their VIN, in their order."""
    rows = session.execute(
        select(RolloutTarget, Vehicle.vin)
        .join(Vehicle, Vehicle.id == RolloutTarget.vehicle_id)
        .where(RolloutTarget.rollout_id == rollout.id)
        .order_by(RolloutTarget.rank)
    )
    return [(target, vin) for target, vin in rows]


def advance(session: Session, rollout: Rollout, *, now: datetime) -> rules.Decision:
    """Move a running rollout as far as its cars allow now: next waves, halt or completion.
    The caller holds the rollout's row (FOR UPDATE) or has just made it."""
    decision: rules.Decision = "wait"
    if rollout.state == "running" and rollout.auto_install_days is not None:
        _install_unanswered(session, rollout, now=now)
    while rollout.state == "running":
        waves = progress(session, rollout)
        decision = rules.decide(
            waves,
            current_wave=rollout.current_wave,
            success_percent=rollout.success_percent,
            failure_percent=rollout.failure_percent,
        )
        if decision == "wait":
            break
        if decision == "halt":
            _halt(session, rollout, waves, now=now)
        elif decision == "complete":
            _move(session, rollout, "completed", actor=SYSTEM, now=now)
            rollout.completed_at = now
        else:
            rollout.current_wave += 1
            _offer_wave(session, rollout, now=now)
    return decision


def _offer_wave(session: Session, rollout: Rollout, *, now: datetime) -> None:
    from caas.ota.pushes import open_push

    release = session.get_one(SoftwareRelease, rollout.release_id)
    rows = session.execute(
        select(RolloutTarget, Vehicle)
        .join(Vehicle, Vehicle.id == RolloutTarget.vehicle_id)
        .where(
            RolloutTarget.rollout_id == rollout.id,
            RolloutTarget.wave == rollout.current_wave,
            RolloutTarget.state == "pending",
        )
        # Several cars' rows in one transaction: by id, as the fleet-wide re-sign, the window
        # sweep and the spending caps take them, so two of them never wait in a circle.
        .order_by(Vehicle.id)
    ).all()
    # One push for the manifests the wave sends at once (none when every owner is asked first).
    push = None
    if any(not rollout.ask_owner or vehicle.owner_customer_id is None for _, vehicle in rows):
        push = open_push(
            session,
            kind="release.wave",
            label=f"software {release.version}, rollout {rollout.id}, wave {rollout.current_wave}",
            actor=SYSTEM,
            now=now,
            key=f"rollout:{rollout.id}:wave:{rollout.current_wave}",
        )
    for target, vehicle in rows:
        _start_target(session, rollout, release, target, vehicle, now=now, push=push)
    offered = len(rows)
    _history(
        session,
        ROLLOUT_SUBJECT,
        rollout.id,
        "rollout.wave_started",
        actor=SYSTEM,
        now=now,
        details={"wave": rollout.current_wave, "cars": offered},
    )
    log.info("releases.wave_started", rollout=rollout.id, wave=rollout.current_wave, cars=offered)


def _start_target(
    session: Session,
    rollout: Rollout,
    release: SoftwareRelease,
    target: RolloutTarget,
    vehicle: Vehicle,
    *,
    now: datetime,
    push: ConfigurationPush | None = None,
) -> None:
    """A car's turn in its wave: its owner asked first when the rollout says so (a car without
    an owner has nobody to ask), else the update offered."""
    if rollout.ask_owner and vehicle.owner_customer_id is not None:
        _ask_owner(session, rollout, release, target, vehicle, now=now)
    else:
        _offer_target(session, rollout, release, target, vehicle, actor=SYSTEM, now=now, push=push)
        _tell_owner(session, vehicle, release, now=now)


def _offer_target(
    session: Session,
    rollout: Rollout,
    release: SoftwareRelease,
    target: RolloutTarget,
    vehicle: Vehicle,
    *,
    actor: Actor,
    now: datetime,
    event: str = "software.offered",
    push: ConfigurationPush | None = None,
) -> None:
    """The car's next manifest carries the order (a new configuration version), part of
    `push` when the whole wave is offered at once."""
    from caas.ota.service import request_configuration

    from_state = target.state
    rules.TARGET.check(from_state, "offered")
    target.state = "offered"
    target.offered_at = target.last_step_at = now
    _history(
        session,
        VEHICLE_SUBJECT,
        vehicle.id,
        event,
        actor=actor,
        now=now,
        customer_id=vehicle.owner_customer_id,
        from_state=from_state,
        to_state="offered",
        details={"version": release.version, "rollout_id": rollout.id, "wave": target.wave},
    )
    session.flush()
    request_configuration(
        session, vehicle, reason=f"software {release.version}", actor=actor, now=now, push=push
    )


def _ask_owner(
    session: Session,
    rollout: Rollout,
    release: SoftwareRelease,
    target: RolloutTarget,
    vehicle: Vehicle,
    *,
    now: datetime,
) -> None:
    """The owner is told a new version is available, to install now from the app; the car gets
    nothing until they accept (or `auto_install_days` pass: a job looks again then)."""
    rules.TARGET.check(target.state, "awaiting_owner")
    target.state = "awaiting_owner"
    target.asked_at = target.last_step_at = now
    _history(
        session,
        VEHICLE_SUBJECT,
        vehicle.id,
        "software.asked",
        actor=SYSTEM,
        now=now,
        customer_id=vehicle.owner_customer_id,
        from_state="pending",
        to_state="awaiting_owner",
        details={
            "version": release.version,
            "rollout_id": rollout.id,
            "wave": target.wave,
            "auto_install_days": rollout.auto_install_days,
        },
    )
    if rollout.auto_install_days is not None:
        enqueue(
            session,
            topic=ADVANCE_TOPIC,
            payload={"rollout_id": rollout.id},
            dedupe_key=f"{ADVANCE_TOPIC}:{rollout.id}:{target.id}:unanswered",
            now=now,
            run_after=now + timedelta(days=rollout.auto_install_days),
        )
    customer = session.get_one(Customer, vehicle.owner_customer_id)
    settings = get_settings()
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind="release.update_ask",
        context={
            "name": customer.first_name,
            "country": customer.country,
            "vin": vehicle.vin,
            "version": release.version,
            "notes": release.notes,
            "days": rollout.auto_install_days,
            "car_url": f"{settings.public_url.rstrip('/')}/portal/cars/{vehicle.vin}",
        },
        dedupe_key=f"release.update_ask:{release.id}:{vehicle.id}",
        now=now,
    )


def _install_unanswered(session: Session, rollout: Rollout, *, now: datetime) -> None:
    """Cars whose owners did not answer within `auto_install_days` are offered the update."""
    assert rollout.auto_install_days is not None
    due = now - timedelta(days=rollout.auto_install_days)
    release = session.get_one(SoftwareRelease, rollout.release_id)
    for target, vehicle in session.execute(
        select(RolloutTarget, Vehicle)
        .join(Vehicle, Vehicle.id == RolloutTarget.vehicle_id)
        .where(
            RolloutTarget.rollout_id == rollout.id,
            RolloutTarget.state == "awaiting_owner",
            RolloutTarget.asked_at <= due,
        )
        .order_by(Vehicle.id)  # several cars' rows: by id (see `_offer_wave`)
        .with_for_update(of=RolloutTarget)
    ):
        _offer_target(
            session, rollout, release, target, vehicle, actor=SYSTEM, now=now,
            event="software.unanswered",
        )  # fmt: skip


@dataclass(frozen=True)
class AwaitedUpdate:
    """A new version the car's owner is asked to accept."""

    target: RolloutTarget
    release: SoftwareRelease
    install_by: datetime | None  # installed anyway then (None: only on acceptance)


def awaited_update(session: Session, vehicle: Vehicle) -> AwaitedUpdate | None:
    """The update waiting for the owner's answer in a running rollout, if any."""
    row = session.execute(
        select(RolloutTarget, SoftwareRelease, Rollout)
        .join(Rollout, Rollout.id == RolloutTarget.rollout_id)
        .join(SoftwareRelease, SoftwareRelease.id == Rollout.release_id)
        .where(
            RolloutTarget.vehicle_id == vehicle.id,
            RolloutTarget.state == "awaiting_owner",
            Rollout.state == "running",
        )
        .order_by(RolloutTarget.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    target, release, rollout = row
    install_by = (
        target.asked_at + timedelta(days=rollout.auto_install_days)
        if rollout.auto_install_days is not None and target.asked_at is not None
        else None
    )
    return AwaitedUpdate(target, release, install_by)


def accept_update(
    session: Session, vehicle: Vehicle, *, actor: Actor, now: datetime
) -> AwaitedUpdate:
    """The owner accepts the new version: the car's next manifest orders it. 409
    `release.nothing_to_accept` when no update awaits them (already accepted, or the rollout
    paused, halted, cancelled)."""
    awaited = awaited_update(session, vehicle)
    if awaited is not None:
        rollout = get_rollout(session, awaited.target.rollout_id, lock=True)
        session.refresh(awaited.target, with_for_update=True)
    if awaited is None or awaited.target.state != "awaiting_owner" or rollout.state != "running":
        raise Conflict("no software update awaits your answer", code="release.nothing_to_accept")
    awaited.target.accepted_at = now
    _offer_target(
        session, rollout, awaited.release, awaited.target, vehicle, actor=actor, now=now,
        event="software.accepted",
    )  # fmt: skip
    return awaited


def car_built(session: Session, vehicle: Vehicle, *, now: datetime) -> None:
    """A car born while a rollout of a release it can take is planned or under way joins it:
    in the current wave, started at once, when the rollout runs; in the last wave when it has
    not reached it (planned, paused, halted); not at all once the last wave has started and
    the rollout is not running (it finished with the fleet it had; the next rollout takes it)."""
    from caas.vehicles.twin import fitted_hardware

    platform = catalog.get_platform(session, vehicle.platform_id)
    rows = session.execute(
        select(Rollout, SoftwareRelease)
        .join(SoftwareRelease, SoftwareRelease.id == Rollout.release_id)
        .where(
            Rollout.state.in_(("planned", *rules.ACTIVE_ROLLOUT_STATES)),
            SoftwareRelease.models.contains([platform.code]),
        )
        .order_by(Rollout.id)
        .with_for_update(of=Rollout)
    ).all()
    for rollout, release in rows:
        rule = rules.Compatibility(
            frozenset(release.models), frozenset(release.hardware), release.min_version
        )
        hardware = fitted_hardware(session, vehicle) if rule.hardware else ()
        if vehicle.software_version == release.version or not rules.compatible(
            rule, model=platform.code, fitted_hardware=hardware, running=vehicle.software_version
        ):
            continue
        last = len(rollout.waves)
        running = rollout.state == "running" and rollout.current_wave > 0
        if not running and rollout.current_wave >= last:
            continue
        rank = session.scalar(select(func.count()).where(RolloutTarget.rollout_id == rollout.id))
        target = RolloutTarget(
            rollout_id=rollout.id,
            vehicle_id=vehicle.id,
            rank=rank or 0,
            wave=rollout.current_wave if running else last,
            state="pending",
        )
        session.add(target)
        session.flush()
        _history(
            session,
            ROLLOUT_SUBJECT,
            rollout.id,
            "rollout.car_joined",
            actor=SYSTEM,
            now=now,
            details={"vin": vehicle.vin, "wave": target.wave},
        )
        if running:
            _start_target(session, rollout, release, target, vehicle, now=now)


def _tell_owner(
    session: Session, vehicle: Vehicle, release: SoftwareRelease, *, now: datetime
) -> None:
    """The owner hears that a new version is on its way to the car."""
    if vehicle.owner_customer_id is None:
        return
    customer = session.get_one(Customer, vehicle.owner_customer_id)
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind="release.update_available",
        context={
            "name": customer.first_name,
            "country": customer.country,
            "vin": vehicle.vin,
            "version": release.version,
            "notes": release.notes,
        },
        dedupe_key=f"release.update_available:{release.id}:{vehicle.id}",
        now=now,
    )


def _halt(
    session: Session, rollout: Rollout, waves: list[rules.WaveProgress], *, now: datetime
) -> None:
    offered = [wave for wave in waves if wave.number <= rollout.current_wave]
    failed = sum(wave.failed for wave in offered)
    total = sum(wave.total for wave in offered)
    reason = f"{failed} of {total} cars failed (limit {rollout.failure_percent}%)"
    _move(session, rollout, "halted", actor=SYSTEM, now=now, details={"reason": reason})
    rollout.halted_at = now
    rollout.halt_reason = reason
    _reissue(session, rollout, now=now, reason="rollout halted")
    release = session.get_one(SoftwareRelease, rollout.release_id)
    platform = catalog.get_platform(session, release.platform_id)
    operator = session.get_one(User, rollout.created_by)
    settings = get_settings()
    notify_user(
        session,
        user_id=operator.id,
        email=operator.email,
        language=operator.language,
        kind="release.rollout_halted",
        context={
            "name": operator.full_name,
            "version": release.version,
            "platform": platform.name,
            "wave": rollout.current_wave,
            "failed": failed,
            "offered": total,
            "failure_percent": rollout.failure_percent,
            "rollout_url": f"{settings.public_url.rstrip('/')}/operator/rollouts/{rollout.id}",
        },
        dedupe_key=f"release.rollout_halted:{rollout.id}:{now.isoformat()}",
        now=now,
    )
    log.warning("releases.rollout_halted", rollout=rollout.id, reason=reason)


def advance_job(session: Session, rollout_id: int, *, now: datetime) -> None:
    """The worker's `releases.advance`: the rollout's row locked, then `advance`."""
    rollout = session.scalar(select(Rollout).where(Rollout.id == rollout_id).with_for_update())
    if rollout is not None:
        advance(session, rollout, now=now)


# --- the car's side -----------------------------------------------------------------------------


def software_order(
    session: Session, vehicle: Vehicle, *, settings: Settings | None = None
) -> SoftwareOrder | None:
    """The release the car's next manifest must order, if any: the one of a running or paused
    rollout in which the car was offered it and has not finished."""
    row = session.execute(
        select(SoftwareRelease)
        .join(Rollout, Rollout.release_id == SoftwareRelease.id)
        .join(RolloutTarget, RolloutTarget.rollout_id == Rollout.id)
        .where(
            RolloutTarget.vehicle_id == vehicle.id,
            RolloutTarget.state.in_(rules.UNDER_WAY),
            Rollout.state.in_(("running", "paused")),
            SoftwareRelease.signature.is_not(None),
        )
        .order_by(RolloutTarget.id.desc())
        .limit(1)
    ).scalar()
    if row is None or row.signature is None:
        return None
    settings = settings or get_settings()
    return SoftwareOrder(
        release_id=row.id,
        version=row.version,
        url=image_url(settings, row.id, vehicle.vin),
        size=row.image_size,
        sha256=row.image_sha256,
        models=list(row.models),
        signature=row.signature,
    )


def image_for_car(
    session: Session, release_id: int, *, vin: str, token: str, settings: Settings
) -> Path:
    """The image file when `token` is the car's own and the car's update of this release is
    under way in a running or paused rollout; NotFound otherwise (nothing leaks)."""
    refused = NotFound("no such image for this car", code="release.image_not_found")
    expected = image_token(settings, release_id, vin)
    # Compared as bytes: compare_digest refuses text that is not ASCII, and anyone may send it.
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise refused
    release = session.scalar(
        select(SoftwareRelease)
        .join(Rollout, Rollout.release_id == SoftwareRelease.id)
        .join(RolloutTarget, RolloutTarget.rollout_id == Rollout.id)
        .join(Vehicle, Vehicle.id == RolloutTarget.vehicle_id)
        .where(
            SoftwareRelease.id == release_id,
            Vehicle.vin == vin,
            RolloutTarget.state.in_(rules.UNDER_WAY),
            Rollout.state.in_(("running", "paused")),
        )
        .limit(1)
    )
    if release is None:
        raise refused
    path = image_file(settings, release)
    if not path.is_file():
        raise refused
    return path


def record_step(session: Session, step: SoftwareStep, *, now: datetime) -> RolloutTarget | None:
    """A step the car reports of its update: the car's part in the rollout moves on (late or
    repeated steps change nothing), the car's history keeps it, the twin's software version
    follows an installed release, and the rollout is looked at again."""
    found = session.execute(
        select(RolloutTarget, Vehicle, Rollout)
        .join(Vehicle, Vehicle.id == RolloutTarget.vehicle_id)
        .join(Rollout, Rollout.id == RolloutTarget.rollout_id)
        .where(Vehicle.vin == step.vin, Rollout.release_id == step.release_id)
        .order_by(RolloutTarget.id.desc())
        .limit(1)
        .with_for_update(of=RolloutTarget)
    ).first()
    if found is None:
        log.info("releases.step_without_rollout", vin=step.vin, release=step.release_id)
        return None
    target, vehicle, rollout = found
    if not rules.TARGET.allows(target.state, step.step):
        return target
    from_state = target.state
    target.state = step.step
    target.last_step_at = now
    target.error = step.error
    _history(
        session,
        VEHICLE_SUBJECT,
        vehicle.id,
        f"software.{step.step}",
        actor=Actor(kind="vehicle", label=vehicle.vin),
        now=now,
        customer_id=vehicle.owner_customer_id,
        from_state=from_state,
        to_state=step.step,
        details={
            "version": step.version,
            "rollout_id": rollout.id,
            "error": step.error,
            "car_time": step.at.isoformat(),
            "software_version": step.software_version,
        },
    )
    if step.step == "installed":
        _software_installed(session, vehicle, step.software_version, now=now)
    enqueue(
        session,
        topic=ADVANCE_TOPIC,
        payload={"rollout_id": rollout.id},
        dedupe_key=f"{ADVANCE_TOPIC}:{rollout.id}:{target.id}:{step.step}",
        now=now,
    )
    log.info("releases.step", vin=vehicle.vin, release=step.release_id, step=step.step)
    return target


def _software_installed(session: Session, vehicle: Vehicle, version: str, *, now: datetime) -> None:
    """The twin runs what the car installed: its latest state, then the car's record (the
    order in which the status ingest takes the same rows, so the two never deadlock)."""
    session.execute(
        update(VehicleState)
        .where(VehicleState.vehicle_id == vehicle.id)
        .values(software_version=version)
    )
    if vehicle.software_version == version:
        return
    previous, vehicle.software_version = vehicle.software_version, version
    _history(
        session,
        VEHICLE_SUBJECT,
        vehicle.id,
        "car.software_reported",
        actor=Actor(kind="vehicle", label=vehicle.vin),
        now=now,
        customer_id=vehicle.owner_customer_id,
        from_state=previous,
        to_state=version,
        details={"vin": vehicle.vin, "software_version": version},
    )
    session.flush()


def update_status(session: Session, vehicle_id: int) -> tuple[RolloutTarget, str] | None:
    """The car's newest update: its part in a rollout and the version (for the twin page)."""
    row = session.execute(
        select(RolloutTarget, SoftwareRelease.version)
        .join(Rollout, Rollout.id == RolloutTarget.rollout_id)
        .join(SoftwareRelease, SoftwareRelease.id == Rollout.release_id)
        .where(RolloutTarget.vehicle_id == vehicle_id, RolloutTarget.state != "pending")
        .order_by(RolloutTarget.id.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None
