"""Routes of software releases and rollouts (operator), and the image download (car)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Path, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from caas.accounts.deps import CustomerUser, Operator, actor_of
from caas.catalog import service as catalog
from caas.core.api import ClockDep, DbSession, SettingsDep, answer_once, error_responses
from caas.releases import service
from caas.releases.read import release_of, rollout_read
from caas.releases.schemas import (
    AwaitedUpdateRead,
    ReleaseRead,
    ReleaseUpdate,
    RolloutCreate,
    RolloutRead,
)
from caas.store.entitlements import owned_vehicle

router = APIRouter(prefix="/api/v1/software", tags=["software releases"])
# The owner's side of a rollout that asks them first.
owner_router = APIRouter(prefix="/api/v1/me", tags=["software releases"])

ReleaseId = Annotated[int, Path(description="Database id of the release", examples=[3])]
RolloutId = Annotated[int, Path(description="Database id of the rollout", examples=[1])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended change; a retry with the same key acts once",
    ),
]


def _codes(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@router.post(
    "/releases",
    response_model=ReleaseRead,
    status_code=201,
    summary="Upload a software release of a platform, as a draft (operator)",
    description="Multipart form: the image file and its compatibility. The image is kept "
    "under the platform's data directory with its size and SHA-256. 409 when the platform "
    "already has that version; 422 names the field at fault.",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_release(
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: Operator,
    platform: Annotated[str, Form(max_length=20, description="Platform code", examples=["AURA"])],
    version: Annotated[
        str, Form(max_length=20, description="Semantic version", examples=["8.1.0"])
    ],
    image: Annotated[
        UploadFile, File(description="The software image", examples=["aura-8.1.0.img"])
    ],
    notes: Annotated[
        str,
        Form(max_length=5000, description="What changes for the driver", examples=["Faster maps."]),
    ] = "",
    models: Annotated[
        str,
        Form(
            max_length=200, description="Platform codes it fits, comma-separated", examples=["AURA"]
        ),
    ] = "",
    hardware: Annotated[
        str,
        Form(
            max_length=400,
            description="Features whose hardware must be fitted, comma-separated",
            examples=["driver_assist"],
        ),
    ] = "",
    min_version: Annotated[
        str,
        Form(
            max_length=20,
            description="The oldest software a car may run to take it",
            examples=["7.0.0"],
        ),
    ] = "",
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    data = await image.read(service.MAX_IMAGE_BYTES + 1)
    now = clock.now()
    found = catalog.platform_or_404(session, platform)
    request = {
        "platform": found.code,
        "version": version,
        "notes": notes,
        "models": models,
        "hardware": hardware,
        "min_version": min_version,
        "sha256": hashlib.sha256(data).hexdigest(),
    }

    def act() -> dict[str, Any]:
        release = service.create_release(
            session,
            platform=found,
            version=version,
            notes=notes,
            image=data,
            compatibility=service.Compatibility(
                _codes(models), _codes(hardware), min_version or None
            ),
            created_by=user,
            actor=actor_of(user),
            now=now,
            settings=settings,
        )
        return release_of(session, release).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation="releases.create",
        request=request,
        now=now,
        act=act,
        status_code=201,
    )


@router.get(
    "/releases",
    response_model=list[ReleaseRead],
    summary="Every software release, newest first (operator)",
    responses=error_responses(401, 403),
)
def list_releases(session: DbSession, _: Operator) -> list[ReleaseRead]:
    from caas.releases.read import release_read

    return [release_read(release, code) for release, code in service.list_releases(session)]


@router.get(
    "/releases/{release_id}",
    response_model=ReleaseRead,
    summary="One software release (operator)",
    responses=error_responses(401, 403, 404, 422),
)
def get_release(release_id: ReleaseId, session: DbSession, _: Operator) -> ReleaseRead:
    return release_of(session, service.get_release(session, release_id))


@router.patch(
    "/releases/{release_id}",
    response_model=ReleaseRead,
    summary="Change a draft release's notes or compatibility (operator)",
    description="Only the fields sent change; 409 once published.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def update_release(
    release_id: ReleaseId,
    body: ReleaseUpdate,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        release = service.get_release(session, release_id, lock=True)
        compatibility = None
        if {"models", "hardware", "min_version"} & body.model_fields_set:
            compatibility = service.Compatibility(
                body.models if body.models is not None else list(release.models),
                body.hardware if body.hardware is not None else list(release.hardware),
                (body.min_version or None)
                if "min_version" in body.model_fields_set
                else release.min_version,
            )
        service.update_release(
            session,
            release,
            notes=body.notes,
            compatibility=compatibility,
            actor=actor_of(user),
            now=now,
        )
        return release_of(session, release).model_dump(mode="json")

    request = body.model_dump(mode="json", exclude_unset=True)
    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"releases.update:{release_id}",
        request=request,
        now=now,
        act=act,
    )


@router.delete(
    "/releases/{release_id}",
    status_code=204,
    summary="Delete a draft release (operator)",
    responses=error_responses(401, 403, 404, 409, 422),
)
def delete_release(
    release_id: ReleaseId, session: DbSession, clock: ClockDep, user: Operator
) -> Response:
    release = service.get_release(session, release_id, lock=True)
    service.delete_release(session, release, actor=actor_of(user), now=clock.now())
    return Response(status_code=204)


@router.post(
    "/releases/{release_id}/publish",
    response_model=ReleaseRead,
    summary="Sign and publish a draft release (operator)",
    description="Signs version, sha256, size and models with the manifest signing key; "
    "from then on it can be rolled out and no longer changed. 409 unless a draft.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def publish_release(
    release_id: ReleaseId,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        release = service.get_release(session, release_id, lock=True)
        service.publish_release(session, release, actor=actor_of(user), now=now)
        return release_of(session, release).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"releases.publish:{release_id}",
        request={},
        now=now,
        act=act,
    )


@router.post(
    "/releases/{release_id}/withdraw",
    response_model=ReleaseRead,
    summary="Withdraw a published release; its unfinished rollouts are cancelled (operator)",
    responses=error_responses(401, 403, 404, 409, 422),
)
def withdraw_release(
    release_id: ReleaseId,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        release = service.get_release(session, release_id, lock=True)
        service.withdraw_release(session, release, actor=actor_of(user), now=now)
        return release_of(session, release).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"releases.withdraw:{release_id}",
        request={},
        now=now,
        act=act,
    )


@router.get(
    "/releases/{release_id}/image",
    response_class=FileResponse,
    summary="The release's image, for a car whose update of it is under way",
    description="The car finds this path, with its own token, in its signed manifest. 404 for "
    "a wrong token, a car not offered the release, or a rollout no longer running.",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The image"},
        **error_responses(404, 422),
    },
)
def download_image(
    release_id: ReleaseId,
    session: DbSession,
    settings: SettingsDep,
    vin: Annotated[str, Query(max_length=17, description="The car's VIN")],
    token: Annotated[str, Query(max_length=128, description="The car's token for this image")],
) -> FileResponse:
    path = service.image_for_car(session, release_id, vin=vin, token=token, settings=settings)
    return FileResponse(path, media_type="application/octet-stream")


@router.post(
    "/releases/{release_id}/rollouts",
    response_model=RolloutRead,
    status_code=201,
    summary="Roll a published release out to its compatible fleet in waves (operator)",
    description="The compatible cars (model, fitted hardware, minimum software; online or "
    "not) are chosen now, in a fixed order by a hash of their VIN, and split into the waves. "
    "409 unless the release is published, or when it already has a rollout under way.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def create_rollout(
    release_id: ReleaseId,
    body: RolloutCreate,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        release = service.get_release(session, release_id, lock=True)
        rollout = service.create_rollout(
            session,
            release,
            waves=body.waves,
            success_percent=body.success_percent,
            failure_percent=body.failure_percent,
            start=body.start,
            ask_owner=body.ask_owner,
            auto_install_days=body.auto_install_days,
            created_by=user,
            actor=actor_of(user),
            now=now,
        )
        return rollout_read(session, rollout).model_dump(mode="json")

    request = body.model_dump(mode="json")
    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"releases.rollout:{release_id}",
        request=request,
        now=now,
        act=act,
        status_code=201,
    )


@router.get(
    "/rollouts/{rollout_id}",
    response_model=RolloutRead,
    summary="A rollout's progress per wave and car (operator)",
    responses=error_responses(401, 403, 404, 422),
)
def get_rollout(rollout_id: RolloutId, session: DbSession, _: Operator) -> RolloutRead:
    return rollout_read(session, service.get_rollout(session, rollout_id))


def _command(name: str, summary: str, description: str) -> None:
    action = getattr(service, f"{name}_rollout")

    @router.post(
        f"/rollouts/{{rollout_id}}/{name}",
        response_model=RolloutRead,
        summary=summary,
        description=description,
        responses=error_responses(401, 403, 404, 409, 422),
        name=f"{name}_rollout",
    )
    def command(
        rollout_id: RolloutId,
        session: DbSession,
        clock: ClockDep,
        user: Operator,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        now = clock.now()

        def act() -> dict[str, Any]:
            rollout = service.get_rollout(session, rollout_id, lock=True)
            action(session, rollout, actor=actor_of(user), now=now)
            return rollout_read(session, rollout).model_dump(mode="json")

        operation = f"releases.rollout.{name}:{rollout_id}"
        return answer_once(
            session,
            user_id=user.id,
            key=idempotency_key,
            operation=operation,
            request={},
            now=now,
            act=act,
        )


_command(
    "pause",
    "Pause a rollout: no further wave starts (operator)",
    "Cars already offered finish their update. 409 unless running (pausing a paused one "
    "changes nothing).",
)
_command(
    "resume",
    "Start a planned rollout, or resume a paused or halted one (operator)",
    "The next wave starts as soon as the current one has enough cars updated. 409 when "
    "cancelled or completed.",
)
_command(
    "cancel",
    "Cancel a rollout for good (operator)",
    "Cars offered that have not started get a manifest without the update. 409 once completed.",
)


Vin = Annotated[str, Path(description="The car's VIN", examples=["VCAAURA02TM000001"])]


def _awaited_read(awaited: service.AwaitedUpdate) -> AwaitedUpdateRead:
    return AwaitedUpdateRead(
        version=awaited.release.version,
        notes=awaited.release.notes,
        asked_at=awaited.target.asked_at,
        install_by=awaited.install_by,
        state=awaited.target.state,
    )


@owner_router.get(
    "/vehicles/{vin}/software-update",
    response_model=AwaitedUpdateRead | None,
    summary="The new software the car's owner is asked to accept, if any",
    description="Null when no rollout asks the owner now. 404 for a car that is not the caller's.",
    responses=error_responses(401, 403, 404),
)
def awaited_update(vin: Vin, session: DbSession, user: CustomerUser) -> AwaitedUpdateRead | None:
    vehicle = owned_vehicle(session, user, vin)
    awaited = service.awaited_update(session, vehicle)
    return _awaited_read(awaited) if awaited is not None else None


@owner_router.post(
    "/vehicles/{vin}/software-update/accept",
    response_model=AwaitedUpdateRead,
    summary="Accept the new software: the car installs it when connected and parked",
    description="The car's next signed manifest orders the update. 409 "
    "`release.nothing_to_accept` when no update awaits the owner (the rollout paused, halted "
    "or cancelled, or already accepted: a retry with the same Idempotency-Key repeats the "
    "first answer). 404 for a car that is not the caller's.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def accept_update(
    vin: Vin,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        vehicle = owned_vehicle(session, user, vin)
        accepted = service.accept_update(session, vehicle, actor=actor_of(user), now=now)
        return _awaited_read(accepted).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation=f"releases.accept:{vin}",
        request={},
        now=now,
        act=act,
    )
