"""Shapes of the in-app notifications API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NotificationRead(BaseModel):
    """One in-app message to the caller."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Database id of the notification", examples=[31])
    kind: str = Field(description="What happened; names the template", examples=["order.shipped"])
    title: str = Field(
        description="One-line summary, in the reader's language",
        examples=["Order S2026-000001: your Aura has left the factory"],
    )
    body: str = Field(description="The message, plain text in the reader's language")
    details: dict[str, Any] = Field(
        validation_alias="context",
        description="The facts the message was written from (order number, plate, ...)",
        examples=[{"order_number": "S2026-000001", "model": "Aura"}],
    )
    created_at: datetime = Field(description="When it was sent, with UTC offset")
    read_at: datetime | None = Field(description="When the reader marked it read; null if unread")


class NotificationPage(BaseModel):
    """One page of the caller's notifications."""

    total: int = Field(description="How many notifications match (all pages)")
    unread: int = Field(description="How many of the caller's notifications are unread")
    items: list[NotificationRead] = Field(description="Newest first")


class ReadAllResult(BaseModel):
    """What marking everything read changed."""

    marked: int = Field(description="How many notifications were unread and are now read")
    unread: int = Field(default=0, description="Unread left (always 0 right after)")
