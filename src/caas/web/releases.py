"""The operator's console pages of software releases: the list, a new release (the image
uploaded), a release with its rollouts, and a rollout's live progress per wave."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.catalog import service as catalog
from caas.core.api import ClockDep, DbSession, SettingsDep
from caas.core.errors import CaasError, InvalidInput, NotFound
from caas.releases import rules, service
from caas.releases.read import release_of, rollout_read
from caas.releases.schemas import RolloutCreate
from caas.web import strings
from caas.web.csrf import csrf_protect
from caas.web.forms import FormErrors, FormValues, PostedForm, once_per_form, values_of
from caas.web.pages import OperatorPage, PageRoute, flash, render, see_other

router = APIRouter(
    prefix="/operator",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

# A running rollout's page reloads itself this often (seconds): its progress is live.
REFRESH_SECONDS = 3
ROLLOUT_ACTIONS = ("pause", "resume", "cancel")
TARGET_STATES = (
    "pending",
    "awaiting_owner",
    "offered",
    "downloading",
    "installing",
    "installed",
    "failed",
    "rolled_back",
)


# Texts of asking the owners first; `caas.web.strings` wins where it has a text.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "rollout.ask_owner": "Ask each owner first (the car installs it once they accept)",
        "rollout.auto_install_days": "Install without an answer after (days)",
        "rollout.auto_install_hint": "Empty: only when the owner accepts.",
        "rollout.target.awaiting_owner": "Waiting for the owner",
    },
    "es": {
        "rollout.ask_owner": "Preguntar antes a cada propietario (el coche lo instala si acepta)",
        "rollout.auto_install_days": "Instalar sin respuesta tras (días)",
        "rollout.auto_install_hint": "Vacío: solo cuando el propietario acepta.",
        "rollout.target.awaiting_owner": "A la espera del propietario",
    },
}
for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)


def _codes(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@router.get("/releases")
def releases_page(request: Request, session: DbSession, _: OperatorPage) -> Response:
    rows = []
    for release, code in service.list_releases(session):
        rollouts = service.rollouts_of(session, release.id)
        rows.append(
            {"release": release, "platform": code, "rollout": rollouts[0] if rollouts else None}
        )
    return render(request, "operator/releases.html", {"rows": rows})


def _render_new(
    request: Request,
    session: Session,
    *,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    platforms = [(p.code, f"{p.name} ({p.code})") for p in catalog.list_platforms(session)]
    context: dict[str, Any] = {"platforms": platforms, "values": values or {}}
    if errors is not None:
        context["errors"] = errors
    return render(request, "operator/releases_new.html", context, status_code=status_code)


@router.get("/releases/new")
def new_release_page(request: Request, session: DbSession, _: OperatorPage) -> Response:
    return _render_new(request, session, values={"platform": "AURA", "models": "AURA"})


@router.post("/releases")
async def create_release(
    request: Request,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: OperatorPage,
    form: PostedForm,
) -> Response:
    values = values_of(form)
    upload = form.get("image")
    image = await upload.read() if isinstance(upload, UploadFile) else b""
    now = clock.now()

    def act() -> dict[str, Any]:
        platform = catalog.platform_by_code(session, values.get("platform", ""), field="platform")
        release = service.create_release(
            session,
            platform=platform,
            version=values.get("version", "").strip(),
            notes=values.get("notes", ""),
            image=image,
            compatibility=service.Compatibility(
                _codes(values.get("models", "")),
                _codes(values.get("hardware", "")),
                values.get("min_version", "").strip() or None,
            ),
            created_by=user,
            actor=actor_of(user),
            now=now,
            settings=settings,
        )
        return {"id": release.id}

    request_body = {key: value for key, value in values.items() if key != "csrf_token"}
    try:
        created = once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation="web.releases.create",
            request={**request_body, "image_size": len(image)},
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        return _render_new(
            request, session, values=values, errors=FormErrors.of(error), status_code=status
        )
    flash(request, "releases.flash_created")
    return see_other(f"/operator/releases/{created['id']}")


@router.get("/releases/{release_id}")
def release_page(
    request: Request, release_id: int, session: DbSession, _: OperatorPage
) -> Response:
    return _render_release(request, session, release_id)


def _render_release(
    request: Request,
    session: Session,
    release_id: int,
    *,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    release = service.get_release(session, release_id)
    context: dict[str, Any] = {
        "release": release_of(session, release),
        "rollouts": service.rollouts_of(session, release.id),
        "compatible": len(service.compatible_cars(session, release)),
        "values": values or {"waves": ", ".join(str(w) for w in rules.DEFAULT_WAVES),
                             "success_percent": "90", "failure_percent": "10"},
    }  # fmt: skip
    if errors is not None:
        context["errors"] = errors
    return render(request, "operator/releases_detail.html", context, status_code=status_code)


def _command(
    request: Request,
    session: Session,
    user: User,
    values: FormValues,
    *,
    operation: str,
    now: Any,
    act: Any,
) -> dict[str, Any] | Response:
    try:
        answer: dict[str, Any] = once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=operation,
            request={},
            now=now,
            act=act,
        )
    except CaasError as error:
        if isinstance(error, NotFound):
            raise
        flash(request, "releases.flash_refused", tone="danger", reason=error.message)
        return see_other(str(request.url.path).rsplit("/", 1)[0])
    return answer


@router.post("/releases/{release_id}/publish")
def publish_release(
    request: Request,
    release_id: int,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
    form: PostedForm,
) -> Response:
    now = clock.now()

    def act() -> dict[str, Any]:
        release = service.get_release(session, release_id, lock=True)
        service.publish_release(session, release, actor=actor_of(user), now=now)
        return {"id": release.id}

    answer = _command(
        request,
        session,
        user,
        values_of(form),
        operation=f"web.releases.publish:{release_id}",
        now=now,
        act=act,
    )
    if isinstance(answer, Response):
        return answer
    flash(request, "releases.flash_published")
    return see_other(f"/operator/releases/{release_id}")


@router.post("/releases/{release_id}/rollouts")
def create_rollout(
    request: Request,
    release_id: int,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
    form: PostedForm,
) -> Response:
    values = values_of(form)
    now = clock.now()

    def act() -> dict[str, Any]:
        try:
            waves = [int(part) for part in _codes(values.get("waves", ""))]
        except ValueError:
            raise InvalidInput(
                "waves are whole percentages, e.g. 1, 10, 50, 100", field="waves"
            ) from None
        terms = RolloutCreate(
            waves=waves,
            success_percent=values.get("success_percent") or 90,
            failure_percent=values.get("failure_percent") or 10,
            ask_owner=values.get("ask_owner") == "true",
            auto_install_days=values.get("auto_install_days") or None,
        )
        release = service.get_release(session, release_id, lock=True)
        rollout = service.create_rollout(
            session,
            release,
            waves=terms.waves,
            success_percent=terms.success_percent,
            failure_percent=terms.failure_percent,
            ask_owner=terms.ask_owner,
            auto_install_days=terms.auto_install_days,
            start=True,
            created_by=user,
            actor=actor_of(user),
            now=now,
        )
        return {"id": rollout.id}

    try:
        created = once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.releases.rollout:{release_id}",
            request={k: v for k, v in values.items() if k != "csrf_token"},
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, NotFound):
            raise
        status = error.status if isinstance(error, CaasError) else 422
        return _render_release(
            request,
            session,
            release_id,
            values=values,
            errors=FormErrors.of(error),
            status_code=status,
        )
    flash(request, "releases.flash_rollout_started")
    return see_other(f"/operator/rollouts/{created['id']}")


@router.get("/rollouts/{rollout_id}")
def rollout_page(
    request: Request, rollout_id: int, session: DbSession, _: OperatorPage
) -> Response:
    rollout = service.get_rollout(session, rollout_id)
    release = service.get_release(session, rollout.release_id)
    context = {
        "rollout": rollout_read(session, rollout),
        "release": release_of(session, release),
        "actions": [
            action
            for action, target in (
                ("pause", "paused"),
                ("resume", "running"),
                ("cancel", "cancelled"),
            )
            if rules.ROLLOUT.allows(rollout.state, target)
        ],
        "target_states": TARGET_STATES,
        "live": rollout.state in ("running", "paused"),
        "refresh_seconds": REFRESH_SECONDS,
    }
    response = render(request, "operator/releases_rollout.html", context)
    if context["live"]:
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


@router.post("/rollouts/{rollout_id}/{action}")
def rollout_command(
    request: Request,
    rollout_id: int,
    action: str,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
    form: PostedForm,
) -> Response:
    if action not in ROLLOUT_ACTIONS:
        raise NotFound("no such action", code="rollout.no_action")
    command = getattr(service, f"{action}_rollout")
    now = clock.now()

    def act() -> dict[str, Any]:
        rollout = service.get_rollout(session, rollout_id, lock=True)
        command(session, rollout, actor=actor_of(user), now=now)
        return {"state": rollout.state}

    answer = _command(
        request,
        session,
        user,
        values_of(form),
        operation=f"web.releases.rollout.{action}:{rollout_id}",
        now=now,
        act=act,
    )
    if isinstance(answer, Response):
        return answer
    flash(request, f"releases.flash_{action}")
    return see_other(f"/operator/rollouts/{rollout_id}")
