"""The operator's page of configuration pushes: the recent many-car changes (a release's wave, a
rollout's re-issue, a pass of the window sweep) with, per push, the cars targeted and what
became of their manifests, kept live by server-sent events; and one push's cars, filtered by
outcome or VIN (`caas.ota.pushes` reads them)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError, NotFound
from caas.ota import pushes
from caas.web import live, strings
from caas.web.csrf import csrf_protect
from caas.web.forms import PostedForm, once_per_form, values_of
from caas.web.pages import OperatorPage, PageRoute, flash, render, see_other

router = APIRouter(
    prefix="/operator/pushes",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

RECENT = 20
# A fleet-wide push makes thousands of answers a minute: the list's counts are read again at
# most this often meanwhile (one push's page follows at the live pages' own pace).
PUSHES_SETTLE_SECONDS = 1.0
PAGE_SIZE = 50
# The counts the pages show, in their order (`outcome` filters the drill-down by the last six).
COUNTS = ("targeted", "published", *pushes.OUTCOMES)

# Texts of these pages; `caas.web.strings` wins where it has a text.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "nav.pushes": "Pushes",
        "pushes.title": "Configuration pushes",
        "pushes.intro": (
            "Changes sent to many cars at once, newest first, with what became of each car's "
            "new manifest."
        ),
        "pushes.live": "The counts update by themselves.",
        "pushes.none": "No configuration has been pushed to many cars yet.",
        "pushes.when": "Requested",
        "pushes.change": "Change",
        "pushes.by": "By",
        "pushes.count.targeted": "Cars",
        "pushes.count.published": "Published",
        "pushes.count.applied": "Applied",
        "pushes.count.deferred": "Waiting to park",
        "pushes.count.rejected": "Rejected",
        "pushes.count.superseded": "Replaced",
        "pushes.count.waiting": "Online, no answer",
        "pushes.count.offline": "Offline, pending",
        "pushes.done": "Done",
        "pushes.open": "{count} open",
        "pushes.kind.release.wave": "Software release wave",
        "pushes.kind.release.reissue": "Rollout changed",
        "pushes.kind.window.sweep": "Option windows started or ended",
        "pushes.kind.fleet.resign": "Every car signed anew",
        "pushes.resign.title": "Sign every car's configuration anew",
        "pushes.resign.hint": (
            "After the signing key was rotated: every delivered car gets its configuration, "
            "unchanged, signed with the current key, as one push the worker sends in batches."
        ),
        "pushes.resign.submit": "Sign every car anew",
        "pushes.resign.flash": (
            "Every delivered car gets a newly signed configuration: follow it below."
        ),
        "pushes.resign.refused": "Not done: {reason}",
        "pushes.back": "All pushes",
        "pushes.cars": "Cars of this push",
        "pushes.outcome": "Outcome",
        "pushes.vin": "VIN contains",
        "pushes.version": "Version",
        "pushes.online": "Connection",
        "pushes.published_at": "Published",
        "pushes.answered_at": "Answered",
        "pushes.reason": "Car's reason",
        "pushes.no_cars": "No car of this push matches these filters.",
    },
    "es": {
        "nav.pushes": "Envíos",
        "pushes.title": "Envíos de configuración",
        "pushes.intro": (
            "Cambios enviados a muchos coches a la vez, los más recientes primero, con lo que "
            "pasó con el nuevo manifiesto de cada coche."
        ),
        "pushes.live": "Las cifras se actualizan solas.",
        "pushes.none": "Aún no se ha enviado ninguna configuración a muchos coches.",
        "pushes.when": "Pedido",
        "pushes.change": "Cambio",
        "pushes.by": "Por",
        "pushes.count.targeted": "Coches",
        "pushes.count.published": "Publicados",
        "pushes.count.applied": "Aplicados",
        "pushes.count.deferred": "Esperando aparcar",
        "pushes.count.rejected": "Rechazados",
        "pushes.count.superseded": "Sustituidos",
        "pushes.count.waiting": "Conectados, sin respuesta",
        "pushes.count.offline": "Desconectados, pendientes",
        "pushes.done": "Terminado",
        "pushes.open": "{count} abiertos",
        "pushes.kind.release.wave": "Oleada de una versión de software",
        "pushes.kind.release.reissue": "Despliegue cambiado",
        "pushes.kind.window.sweep": "Ventanas de opciones que empiezan o terminan",
        "pushes.kind.fleet.resign": "Todos los coches firmados de nuevo",
        "pushes.resign.title": "Firmar de nuevo la configuración de todos los coches",
        "pushes.resign.hint": (
            "Tras cambiar la clave de firma: cada coche entregado recibe su configuración, sin "
            "cambios, firmada con la clave actual, como un envío que el worker hace por lotes."
        ),
        "pushes.resign.submit": "Firmar de nuevo todos los coches",
        "pushes.resign.flash": (
            "Cada coche entregado recibe una configuración firmada de nuevo: sígala abajo."
        ),
        "pushes.resign.refused": "No se ha hecho: {reason}",
        "pushes.back": "Todos los envíos",
        "pushes.cars": "Coches de este envío",
        "pushes.outcome": "Resultado",
        "pushes.vin": "El VIN contiene",
        "pushes.version": "Versión",
        "pushes.online": "Conexión",
        "pushes.published_at": "Publicado",
        "pushes.answered_at": "Respondido",
        "pushes.reason": "Motivo del coche",
        "pushes.no_cars": "Ningún coche de este envío coincide con estos filtros.",
    },
}
for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)


class PushCounts(BaseModel):
    """One push's counts as the live stream sends them."""

    id: int
    targeted: int = Field(description="Cars the push sent a new manifest to")
    published: int = Field(description="Manifests the broker has taken")
    applied: int = Field(description="Cars running the manifest")
    deferred: int = Field(description="Cars that have it and wait to be parked")
    rejected: int = Field(description="Cars that refused it")
    superseded: int = Field(description="Manifests replaced by a newer one before an answer")
    waiting: int = Field(description="Pending, the car online")
    offline: int = Field(description="Pending, the car offline")
    done: bool = Field(description="Every car has answered (or got a newer manifest)")


class PushesLive(BaseModel):
    """What the pushes pages show that changes while they are open; never final."""

    pushes: list[PushCounts]
    final: bool = False


def _counts(progress: pushes.PushProgress) -> PushCounts:
    return PushCounts(
        id=progress.id,
        targeted=progress.targeted,
        published=progress.published,
        applied=progress.applied,
        deferred=progress.deferred,
        rejected=progress.rejected,
        superseded=progress.superseded,
        waiting=progress.waiting,
        offline=progress.offline,
        done=progress.done,
    )


def recent_live(session: Session) -> PushesLive:
    """The recent pushes' counts, as the list page's stream sends them."""
    return PushesLive(pushes=[_counts(p) for p in pushes.recent_pushes(session, limit=RECENT)])


def one_live(session: Session, push_id: int) -> PushesLive:
    """One push's counts (404 when there is no such push)."""
    progress = pushes.push_progress(session, push_id)
    if progress is None:
        raise NotFound("no such configuration push", code="push.not_found")
    return PushesLive(pushes=[_counts(progress)])


@router.get("")
def pushes_page(request: Request, session: DbSession, _: OperatorPage) -> Response:
    context = {"pushes": pushes.recent_pushes(session, limit=RECENT), "counts": COUNTS}
    return render(request, "operator/pushes.html", context)


@router.post("/resign")
def resign_fleet(
    request: Request, form: PostedForm, session: DbSession, clock: ClockDep, user: OperatorPage
) -> Response:
    """Every delivered car's configuration signed anew, as one push (once per form key)."""
    now = clock.now()

    def act() -> dict[str, Any]:
        return {"id": pushes.resign_fleet(session, actor=actor_of(user), now=now).id}

    try:
        answer = once_per_form(
            session,
            user_id=user.id,
            values=values_of(form),
            operation="web.pushes.resign",
            request={},
            now=now,
            act=act,
        )
    except CaasError as error:
        flash(request, "pushes.resign.refused", tone="danger", reason=error.message)
        return see_other("/operator/pushes")
    flash(request, "pushes.resign.flash")
    return see_other(f"/operator/pushes/{answer['id']}")


@router.get("/live")
def pushes_live(session: DbSession, _: OperatorPage) -> PushesLive:
    """The recent pushes' counts once, as JSON (where the page cannot keep a stream)."""
    return recent_live(session)


@router.get("/events")
def pushes_events(request: Request, _: OperatorPage) -> StreamingResponse:
    """The recent pushes' counts, sent again whenever a car of any push answers or gets its
    manifest, and when a new push starts issuing (`ota.publish`)."""
    wake = live.Wake(("ota.",), subject_prefix="push:", settle=PUSHES_SETTLE_SECONDS)
    return live.stream(request, recent_live, wake)


@router.get("/{push_id}")
def push_page(
    request: Request,
    push_id: int,
    session: DbSession,
    _: OperatorPage,
    outcome: Annotated[str | None, Query(max_length=20)] = None,
    vin: Annotated[str | None, Query(max_length=17)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    progress = pushes.push_progress(session, push_id)
    if progress is None:
        raise NotFound("no such configuration push", code="push.not_found")
    chosen = {
        "outcome": outcome if outcome in pushes.OUTCOMES else "",
        "vin": (vin or "").strip().upper(),
    }
    cars, total = pushes.push_cars(
        session,
        push_id,
        outcome=chosen["outcome"] or None,
        vin=chosen["vin"] or None,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    context: dict[str, Any] = {
        "push": progress,
        "counts": COUNTS,
        "outcomes": pushes.OUTCOMES,
        "cars": cars,
        "total": total,
        "chosen": chosen,
        "page": page,
        "pages": max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        "query": urlencode({key: value for key, value in chosen.items() if value}),
    }
    return render(request, "operator/push.html", context)


@router.get("/{push_id}/live")
def push_live(push_id: int, session: DbSession, _: OperatorPage) -> PushesLive:
    """One push's counts once, as JSON."""
    return one_live(session, push_id)


@router.get("/{push_id}/events")
def push_events(
    request: Request, push_id: int, session: DbSession, _: OperatorPage
) -> StreamingResponse:
    """One push's counts, sent again whenever one of its cars answers or gets its manifest."""
    one_live(session, push_id)  # 404 before any stream

    def read(reading: Session) -> BaseModel:
        return one_live(reading, push_id)

    return live.stream(request, read, live.Wake(subjects=frozenset({f"push:{push_id}"})))
