"""How long a throttled caller waits: shared by logins and activations (`caas.accounts`) and
ownership transfer codes (`caas.ownership`), each counting its failures in a table of its own."""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import InstrumentedAttribute, Session


def seconds_until_allowed(
    session: Session,
    *,
    at: InstrumentedAttribute[datetime],
    failures: ColumnElement[bool],
    limit: int,
    since: datetime,
) -> int | None:
    """Seconds until fewer than `limit` failures (the rows `failures` selects, each timed by
    `at`) are left in the window that starts after `since`; None while fewer than `limit` are.
    That is when the `limit`-th newest of them leaves the window."""
    limit_th_newest = session.scalar(
        select(at).where(failures, at > since).order_by(at.desc()).offset(limit - 1).limit(1)
    )
    if limit_th_newest is None:
        return None
    return max(1, math.ceil((limit_th_newest - since).total_seconds()))
