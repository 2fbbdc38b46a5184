"""The digital twin: one car as the platform knows it (identity, hardware and software, desired
and reported configuration, connection, telemetry, what it could run, its history), and the
fleet for the operator. Read-only, in a fixed number of queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, cast

from sqlalchemy import Select, and_, exists, func, select
from sqlalchemy.orm import Session

from caas.accounts.models import Role, User
from caas.catalog.models import Platform
from caas.core.errors import NotFound
from caas.core.history import HistoryEntry, subject_history
from caas.ota import service as ota
from caas.ota.models import ConfigurationVersion
from caas.ota.rules import CAPABILITY_CODES, Capability, affects_driving, capability
from caas.protocol.mqtt import ManifestBody
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle, VehicleState
from caas.vehicles.twin_schemas import (
    CapabilityRead,
    ConfigurationRead,
    ConfigurationStateText,
    ConnectionRead,
    DesiredRead,
    FleetCar,
    FleetPage,
    ModelRead,
    OwnerRead,
    PendingRead,
    PhoneKeyBrief,
    ReportedRead,
    TelemetryRead,
    TwinEvent,
    TwinRead,
)

SUBJECT: Final = "vehicle"
CAPABILITY_TEXTS: Final[dict[Capability, str]] = {
    "hardware_missing": "Its hardware was not fitted at the factory",
    "software_too_old": "The car's software is too old for it",
}


def shown_since(user: User, vehicle: Vehicle) -> datetime | None:
    """From when `user` sees the car's whole history (None: all of it): an owner who bought
    it second-hand, from their purchase; an operator, all."""
    return vehicle.owner_since if user.role is Role.CUSTOMER else None


def visible_vehicle(session: Session, user: User, vin: str) -> Vehicle:
    """The car if `user` may see its twin: its owner, or an operator; anyone else gets the
    same 404 as for no car at all."""
    vehicle = session.scalars(select(Vehicle).where(Vehicle.vin == vin.upper())).first()
    if vehicle is not None:
        if user.role is Role.OPERATOR:
            return vehicle
        if user.role is Role.CUSTOMER and vehicle.owner_customer_id is not None:
            owner_user = session.scalar(
                select(Customer.user_id).where(Customer.id == vehicle.owner_customer_id)
            )
            if owner_user == user.id:
                return vehicle
    raise NotFound("no car with this VIN", code="vehicle.not_found")


def fitted_hardware(session: Session, vehicle: Vehicle) -> frozenset[str]:
    """The features whose hardware the factory fitted: those of the sale that need it (the
    factory order asks for exactly these)."""
    if vehicle.sale_id is None:
        return frozenset()
    return frozenset(
        feature.code
        for feature in sales.sale_features(session, vehicle.sale_id)
        if feature.needs_hardware
    )


def _configuration(version: ConfigurationVersion) -> ConfigurationRead:
    return ConfigurationRead(
        version=version.version,
        state=cast(ConfigurationStateText, version.state),
        reason=version.reason,
        created_at=version.created_at,
        published_at=version.published_at,
        last_published_at=version.last_published_at,
        publish_count=version.publish_count,
        reported_at=version.reported_at,
        report_reason=version.report_reason,
    )


def _desired(version: ConfigurationVersion) -> DesiredRead:
    body = ManifestBody.model_validate(version.body)
    return DesiredRead(
        **_configuration(version).model_dump(),
        features=body.features,
        phone_keys=[PhoneKeyBrief(key_id=key.key_id, label=key.label) for key in body.phone_keys],
    )


def _pending(version: ConfigurationVersion) -> PendingRead | None:
    if not ota.is_waiting(version):
        return None
    return PendingRead(
        version=version.version,
        waiting_for="park" if version.state == "deferred" else "car",
        since=version.created_at,
        published_at=version.published_at,
    )


def _telemetry(state: VehicleState | None) -> TelemetryRead | None:
    if state is None or state.telemetry_at is None:
        return None
    return TelemetryRead(
        at=state.telemetry_at,
        odometer_km=state.odometer_km,
        parked=state.parked,
        battery_percent=state.battery_percent,
        speed_kmh=state.speed_kmh,
        latitude=state.latitude,
        longitude=state.longitude,
    )


@dataclass(frozen=True)
class _Answers:
    desired: ConfigurationVersion | None
    applied: ConfigurationVersion | None


def _answers(versions: list[ConfigurationVersion]) -> _Answers:
    return _Answers(
        desired=versions[0] if versions else None,
        applied=next((v for v in versions if v.state == "applied"), None),
    )


# Events about the people who had the car (their phones, the sale), not about the car: an
# owner who bought it second-hand does not see those of the owners before them.
PERSONAL_EVENTS: Final = ("phone.", "car.paired", "car.sold", "car.received", "ownership.")


def _shown(entry: HistoryEntry, since: datetime | None) -> bool:
    return since is None or entry.at >= since or not entry.event.startswith(PERSONAL_EVENTS)


def twin_of(session: Session, vehicle: Vehicle, *, since: datetime | None = None) -> TwinRead:
    """The whole twin of `vehicle` (the caller has checked who may see it); history before
    `since` (an owner's start with a second-hand car) only about the car itself."""
    platform = session.get_one(Platform, vehicle.platform_id)
    owner = (
        session.get(Customer, vehicle.owner_customer_id)
        if vehicle.owner_customer_id is not None
        else None
    )
    state = session.get(VehicleState, vehicle.id)
    versions = ota.versions_of(session, vehicle.id)
    answers = _answers(versions)
    desired = _desired(answers.desired) if answers.desired is not None else None
    reported = (
        ReportedRead(
            version=answers.applied.version,
            reported_at=answers.applied.reported_at,
            active_features=answers.applied.active_features or [],
        )
        if answers.applied is not None
        else None
    )
    hardware = fitted_hardware(session, vehicle)
    wanted = {f.code for f in desired.features if f.enabled} if desired else set()
    running = set(reported.active_features) if reported else set()
    capabilities = []
    for feature in ota.catalog_features(session, vehicle.platform_id):
        missing = capability(
            feature, fitted_hardware=hardware, software_version=vehicle.software_version
        )
        capabilities.append(
            CapabilityRead(
                code=feature.code,
                name=feature.name,
                category=feature.category,
                affects_driving=affects_driving(feature.category),
                runnable=missing is None,
                reason_code=CAPABILITY_CODES[missing] if missing else None,
                reason=CAPABILITY_TEXTS[missing] if missing else None,
                desired=feature.code in wanted,
                on_in_car=feature.code in running,
            )
        )
    return TwinRead(
        vin=vehicle.vin,
        model=ModelRead(code=platform.code, name=platform.name),
        plate=vehicle.plate,
        registered_country=vehicle.registered_country,
        owner=OwnerRead(customer_id=owner.id, name=owner.full_name) if owner else None,
        built_at=vehicle.built_at,
        delivered_at=vehicle.delivered_at,
        software_version=vehicle.software_version,
        fitted_hardware=sorted(hardware),
        connection=ConnectionRead(
            online=bool(state and state.online),
            status_at=state.status_at if state else None,
            last_seen_at=state.last_seen_at if state else None,
        ),
        telemetry=_telemetry(state),
        desired=desired,
        reported=reported,
        pending=_pending(answers.desired) if answers.desired is not None else None,
        capabilities=capabilities,
        versions=[_configuration(version) for version in versions],
        history=[
            TwinEvent(
                at=entry.at,
                event=entry.event,
                from_state=entry.from_state,
                to_state=entry.to_state,
                actor=f"{entry.actor_kind}: {entry.actor_label}",
                details=entry.details,
            )
            for entry in subject_history(session, SUBJECT, vehicle.id)
            if _shown(entry, since)
        ],
        state=vehicle.state,
        archived_at=vehicle.archived_at,
    )


# --- the fleet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetFilter:
    online: bool | None = None
    model: str | None = None
    pending: bool | None = None
    software: str | None = None
    limit: int = 50
    offset: int = 0


def _fleet_query(filters: FleetFilter) -> Select[Vehicle, str, str, VehicleState]:
    query = (
        select(
            Vehicle,
            Platform.code,
            (Customer.first_name + " " + Customer.last_name).label("owner_name"),
            VehicleState,
        )
        .join(Platform, Platform.id == Vehicle.platform_id)
        .outerjoin(Customer, Customer.id == Vehicle.owner_customer_id)
        .outerjoin(VehicleState, VehicleState.vehicle_id == Vehicle.id)
    )
    if filters.model:
        query = query.where(Platform.code == filters.model.upper())
    if filters.online is not None:
        online = func.coalesce(VehicleState.online, False)
        query = query.where(online.is_(filters.online))
    if filters.pending is not None:
        waiting = exists().where(
            ConfigurationVersion.vehicle_id == Vehicle.id,
            ConfigurationVersion.state.in_(("pending", "deferred")),
        )
        query = query.where(waiting if filters.pending else ~waiting)
    if filters.software:
        query = query.where(Vehicle.software_version == filters.software)
    return query


def software_versions(session: Session) -> list[str]:
    """Every software version the fleet's cars run, for the fleet page's filter."""
    versions = session.scalars(select(Vehicle.software_version).distinct())
    return sorted(
        versions,
        key=lambda version: tuple(int(p) if p.isdigit() else 0 for p in version.split(".")),
    )


def fleet(session: Session, filters: FleetFilter) -> FleetPage:
    """The cars matching `filters`, one page ordered by VIN, in three queries."""
    query = _fleet_query(filters)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.order_by(Vehicle.vin).limit(filters.limit).offset(filters.offset)
    ).all()
    ids = [row[0].id for row in rows]
    summary = _version_summary(session, ids)
    items = []
    for vehicle, model, owner_name, state in rows:
        desired, applied, waiting = summary.get(vehicle.id, (None, None, None))
        items.append(
            FleetCar(
                vin=vehicle.vin,
                model=model,
                plate=vehicle.plate,
                owner_name=owner_name,
                online=bool(state and state.online),
                last_seen_at=state.last_seen_at if state else None,
                software_version=vehicle.software_version,
                desired_version=desired,
                applied_version=applied,
                pending_since=waiting.created_at if waiting else None,
                pending_state=cast(Literal["pending", "deferred"], waiting.state)
                if waiting
                else None,
            )
        )
    return FleetPage(total=total, items=items)


def _version_summary(
    session: Session, vehicle_ids: list[int]
) -> dict[int, tuple[int | None, int | None, ConfigurationVersion | None]]:
    """Per car: newest version, newest applied version, the version waiting (if any)."""
    if not vehicle_ids:
        return {}
    newest = (
        select(
            ConfigurationVersion.vehicle_id,
            func.max(ConfigurationVersion.version).label("desired"),
            func.max(ConfigurationVersion.version)
            .filter(ConfigurationVersion.state == "applied")
            .label("applied"),
        )
        .where(ConfigurationVersion.vehicle_id.in_(vehicle_ids))
        .group_by(ConfigurationVersion.vehicle_id)
        .subquery()
    )
    rows = session.execute(
        select(
            newest.c.vehicle_id, newest.c.desired, newest.c.applied, ConfigurationVersion
        ).outerjoin(
            ConfigurationVersion,
            and_(
                ConfigurationVersion.vehicle_id == newest.c.vehicle_id,
                ConfigurationVersion.version == newest.c.desired,
                ConfigurationVersion.state.in_(("pending", "deferred")),
            ),
        )
    ).all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}
