"""The demo's software release: a draft the operator can publish and roll out from the console."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Role, User
from caas.catalog import service as catalog
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.releases import service
from caas.releases.models import SoftwareRelease

DEMO_PLATFORM: Final = "AURA"
DEMO_VERSION: Final = "7.4.0"
DEMO_NOTES: Final = "Faster route planning and a calmer lane-keeping assistant."
# What the demo's image holds: it is never run, only downloaded and checked by the cars.
DEMO_IMAGE: Final = b"caas demo software image AURA 7.4.0\n" * 8192


def ensure_demo_release(session: Session, settings: Settings, *, now: datetime) -> int | None:
    """The draft release of the demo (made once; its image under the data directory), or
    None when the demo has no operator. Returns its id."""
    platform = catalog.platform_by_code(session, DEMO_PLATFORM)
    found = session.scalar(
        select(SoftwareRelease.id).where(
            SoftwareRelease.platform_id == platform.id, SoftwareRelease.version == DEMO_VERSION
        )
    )
    if found is not None:
        return found
    operator = session.scalar(select(User).where(User.role == Role.OPERATOR).order_by(User.id))
    if operator is None:
        return None
    release = service.create_release(
        session,
        platform=platform,
        version=DEMO_VERSION,
        notes=DEMO_NOTES,
        image=DEMO_IMAGE,
        compatibility=service.Compatibility([DEMO_PLATFORM], [], "7.0.0"),
        created_by=operator,
        actor=Actor.system("demo"),
        now=now,
        settings=settings,
    )
    return release.id
