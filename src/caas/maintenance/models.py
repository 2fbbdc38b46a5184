"""Tables of maintenance: every service a workshop performed on a car."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class MaintenanceRecord(Base):
    """One service of one car, as the workshop recorded it; never edited afterwards."""

    __tablename__ = "maintenance_records"
    __table_args__ = (
        Index("ix_maintenance_records_vehicle_performed", "vehicle_id", "performed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"))
    performed_at: Mapped[datetime]
    odometer_km: Mapped[int]
    workshop_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    work_description: Mapped[str] = mapped_column(Text)
    # Covered by the maintenance package the customer bought with the car.
    included_in_plan: Mapped[bool]
    created_at: Mapped[datetime]
