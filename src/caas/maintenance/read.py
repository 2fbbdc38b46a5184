"""Turning maintenance records into their API shapes (used by the routes and the file)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from caas.catalog.models import Platform
from caas.maintenance.models import MaintenanceRecord
from caas.maintenance.schemas import (
    MaintenancePlanRead,
    NextServiceRead,
    ServiceRecordRead,
    VehicleServicesRead,
)
from caas.maintenance.service import MaintenanceSummary, workshop_names


def service_record_read(record: MaintenanceRecord, *, vin: str, workshop: str) -> ServiceRecordRead:
    return ServiceRecordRead(
        id=record.id,
        vin=vin,
        performed_at=record.performed_at,
        odometer_km=record.odometer_km,
        workshop=workshop,
        work_description=record.work_description,
        included_in_plan=record.included_in_plan,
        created_at=record.created_at,
    )


def vehicle_services_read(session: Session, summary: MaintenanceSummary) -> VehicleServicesRead:
    vehicle = summary.vehicle
    names = workshop_names(session, summary.records)
    due = summary.next_service
    return VehicleServicesRead(
        vin=vehicle.vin,
        plate=vehicle.plate,
        platform=session.get_one(Platform, vehicle.platform_id).code,
        delivered_at=vehicle.delivered_at,
        plan=MaintenancePlanRead(
            every_km=summary.plan.every_km, every_months=summary.plan.every_months
        ),
        next_service=NextServiceRead(
            due_on=due.due_on, due_km=due.due_km, counted_from=due.counted_from
        )
        if due
        else None,
        status=summary.status,
        odometer_km=summary.odometer_km,
        services=[
            service_record_read(r, vin=vehicle.vin, workshop=names.get(r.workshop_user_id, ""))
            for r in summary.records
        ],
    )
