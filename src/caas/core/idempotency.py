"""Idempotency keys: a retried command returns the first answer instead of acting twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, UniqueConstraint, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from caas.core.db import Base
from caas.core.errors import Conflict, InvalidInput


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    principal: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(200))
    operation: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: str | None) -> str:
    if key is None or not (8 <= len(key) <= 200):
        raise InvalidInput(
            "send an Idempotency-Key header of 8 to 200 characters",
            field="Idempotency-Key",
            code="idempotency.key_required",
        )
    return key


def claim(
    session: Session,
    *,
    principal: str,
    key: str,
    operation: str,
    request: Any,
    now: datetime,
) -> dict[str, Any] | None:
    """Reserve `key` for this request, or return the stored answer of the first attempt.

    The row is written in the caller's transaction: a concurrent retry waits on the unique
    index until the first attempt commits (then sees its answer) or rolls back (then proceeds).
    """
    digest = fingerprint({"operation": operation, "request": request})
    inserted = session.execute(
        insert(IdempotencyRecord)
        .values(
            principal=principal,
            key=key,
            operation=operation,
            request_hash=digest,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["principal", "key"])
        .returning(IdempotencyRecord.id)
    ).first()
    if inserted is not None:
        return None
    existing = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
        )
    ).one()
    if existing.request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was already used for a different request",
            code="idempotency.key_reused",
        )
    if existing.response is None:
        raise Conflict("the first request with this key is still running", code="idempotency.busy")
    return existing.response


def store(session: Session, *, principal: str, key: str, response: dict[str, Any]) -> None:
    record = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
        )
    ).one()
    record.response = response


def once(
    session: Session,
    *,
    principal: str,
    key: str | None,
    operation: str,
    request: Any,
    now: datetime,
    act: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run `act` once per key: a retry with the same key and request gets the first answer."""
    key = check_key(key)
    previous = claim(
        session, principal=principal, key=key, operation=operation, request=request, now=now
    )
    if previous is not None:
        return previous
    response = act()
    store(session, principal=principal, key=key, response=response)
    return response
