"""Releases and rollouts as the API and the console show them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from caas.catalog import service as catalog
from caas.releases import service
from caas.releases.models import Rollout, SoftwareRelease
from caas.releases.schemas import ReleaseRead, RolloutRead, RolloutTargetRead, WaveRead


def release_read(release: SoftwareRelease, platform_code: str) -> ReleaseRead:
    return ReleaseRead(
        id=release.id,
        platform=platform_code,
        version=release.version,
        notes=release.notes,
        state=release.state,
        image_size=release.image_size,
        image_sha256=release.image_sha256,
        signature=release.signature,
        models=list(release.models),
        hardware=list(release.hardware),
        min_version=release.min_version,
        created_at=release.created_at,
        published_at=release.published_at,
    )


def release_of(session: Session, release: SoftwareRelease) -> ReleaseRead:
    return release_read(release, catalog.get_platform(session, release.platform_id).code)


def rollout_read(session: Session, rollout: Rollout) -> RolloutRead:
    release = session.get_one(SoftwareRelease, rollout.release_id)
    return RolloutRead(
        id=rollout.id,
        release_id=release.id,
        version=release.version,
        state=rollout.state,
        current_wave=rollout.current_wave,
        success_percent=rollout.success_percent,
        failure_percent=rollout.failure_percent,
        halt_reason=rollout.halt_reason,
        ask_owner=rollout.ask_owner,
        auto_install_days=rollout.auto_install_days,
        created_at=rollout.created_at,
        started_at=rollout.started_at,
        completed_at=rollout.completed_at,
        waves=[
            WaveRead(
                number=wave.number,
                percent=rollout.waves[wave.number - 1],
                cars=wave.total,
                by_state=dict(wave.by_state),
                success_percent=round(wave.success_percent, 1),
            )
            for wave in service.progress(session, rollout)
        ],
        targets=[
            RolloutTargetRead(
                vin=vin,
                wave=target.wave,
                state=target.state,
                last_step_at=target.last_step_at,
                error=target.error,
            )
            for target, vin in service.targets_of(session, rollout)
        ],
    )
