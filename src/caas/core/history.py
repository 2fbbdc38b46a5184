"""The audit history: every state change of an order, a car, a payment, with time and actor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from caas.core.db import Base


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused a change: a person (with their user id) or a machine."""

    kind: str  # operator, dealer, workshop, customer, system, factory, registry, provider, vehicle
    label: str
    user_id: int | None = None

    @classmethod
    def system(cls, label: str = "platform") -> Actor:
        return cls(kind="system", label=label)

    def __str__(self) -> str:
        return f"{self.kind}:{self.label}"


class HistoryEntry(Base):
    __tablename__ = "history"
    __table_args__ = (
        Index("ix_history_subject", "subject_type", "subject_id", "id"),
        Index("ix_history_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime]
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    event: Mapped[str] = mapped_column(String(80))
    from_state: Mapped[str | None] = mapped_column(String(40))
    to_state: Mapped[str | None] = mapped_column(String(40))
    actor_kind: Mapped[str] = mapped_column(String(20))
    actor_label: Mapped[str] = mapped_column(String(200))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


def record(
    session: Session,
    *,
    at: datetime,
    actor: Actor,
    subject_type: str,
    subject_id: int,
    event: str,
    customer_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    details: dict[str, Any] | None = None,
) -> HistoryEntry:
    """Keep one history row in the caller's transaction."""
    entry = HistoryEntry(
        at=at,
        subject_type=subject_type,
        subject_id=subject_id,
        customer_id=customer_id,
        event=event,
        from_state=from_state,
        to_state=to_state,
        actor_kind=actor.kind,
        actor_label=actor.label,
        actor_user_id=actor.user_id,
        details=details or {},
    )
    session.add(entry)
    return entry


def customer_timeline(session: Session, customer_id: int) -> list[HistoryEntry]:
    """Everything that happened in a customer's file, oldest first."""
    query = (
        select(HistoryEntry)
        .where(HistoryEntry.customer_id == customer_id)
        .order_by(HistoryEntry.at, HistoryEntry.id)
    )
    return list(session.scalars(query))


def subject_history(session: Session, subject_type: str, subject_id: int) -> list[HistoryEntry]:
    query = (
        select(HistoryEntry)
        .where(HistoryEntry.subject_type == subject_type, HistoryEntry.subject_id == subject_id)
        .order_by(HistoryEntry.at, HistoryEntry.id)
    )
    return list(session.scalars(query))
