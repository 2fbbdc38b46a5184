# ruff: noqa: E501 - a catalogue of texts reads best one text per line
"""The operator's console page of upkeep marks: each model's marks in a table, one form per
model to set them (the same rules as `PUT /api/v1/upkeep/thresholds/{platform}`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.catalog import service as catalog
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError
from caas.upkeep import thresholds
from caas.upkeep.thresholds import MARKS, ThresholdChange
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

PAGE = "/operator/upkeep"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "nav.upkeep": "Upkeep",
        "upkeep.marks.title": "Upkeep marks per model",
        "upkeep.marks.intro": "When a car's reading crosses its model's trip level, the platform proposes the fix once; the mark is armed again only when the reading goes back beyond its re-arm level (after a fill or a service), so a wavering reading makes one order. An empty mark is not watched on that model.",
        "upkeep.marks.mark": "Mark",
        "upkeep.marks.signal": "Reading",
        "upkeep.marks.vss_no": "not in VSS",
        "upkeep.marks.trips": "Trips",
        "upkeep.marks.trip_level": "Trip level",
        "upkeep.marks.rearm_level": "Re-arm level",
        "upkeep.marks.below": "below",
        "upkeep.marks.above": "above",
        "upkeep.marks.save": "Save the marks of {model}",
        "upkeep.marks.flash_saved": "The marks of {model} are saved.",
        "upkeep.mark.service_distance": "Service: distance to service",
        "upkeep.mark.service_time": "Service: time to service",
        "upkeep.mark.washer_fluid": "Washer fluid",
        "upkeep.mark.adblue": "AdBlue",
        "upkeep.mark.tyre_tread": "Tyre tread",
        "upkeep.mark.brake_pads": "Brake pad wear",
        "upkeep.mark.battery_12v": "12 V battery health",
        "event.upkeep.mark_tripped": "A reading of the car crossed its mark: a fix is proposed",
        "event.upkeep.mark_rearmed": "A reading of the car is back beyond its mark",
        "event.upkeep.threshold_set": "Upkeep mark of a model set",
    },
    "es": {
        "nav.upkeep": "Mantenimiento",
        "upkeep.marks.title": "Umbrales de mantenimiento por modelo",
        "upkeep.marks.intro": "Cuando una lectura del coche cruza el umbral de disparo de su modelo, la plataforma propone el arreglo una vez; el umbral solo se rearma cuando la lectura vuelve más allá de su nivel de rearme (tras rellenar o pasar el servicio), así una lectura que oscila genera un solo pedido. Un umbral vacío no se vigila en ese modelo.",
        "upkeep.marks.mark": "Umbral",
        "upkeep.marks.signal": "Lectura",
        "upkeep.marks.vss_no": "no está en VSS",
        "upkeep.marks.trips": "Salta",
        "upkeep.marks.trip_level": "Nivel de disparo",
        "upkeep.marks.rearm_level": "Nivel de rearme",
        "upkeep.marks.below": "por debajo",
        "upkeep.marks.above": "por encima",
        "upkeep.marks.save": "Guardar los umbrales de {model}",
        "upkeep.marks.flash_saved": "Umbrales de {model} guardados.",
        "upkeep.mark.service_distance": "Revisión: distancia hasta la revisión",
        "upkeep.mark.service_time": "Revisión: tiempo hasta la revisión",
        "upkeep.mark.washer_fluid": "Líquido limpiaparabrisas",
        "upkeep.mark.adblue": "AdBlue",
        "upkeep.mark.tyre_tread": "Dibujo de los neumáticos",
        "upkeep.mark.brake_pads": "Desgaste de las pastillas de freno",
        "upkeep.mark.battery_12v": "Salud de la batería de 12 V",
        "event.upkeep.mark_tripped": "Una lectura del coche cruzó su umbral: se propone el arreglo",
        "event.upkeep.mark_rearmed": "Una lectura del coche vuelve a estar más allá de su umbral",
        "event.upkeep.threshold_set": "Umbral de mantenimiento de un modelo cambiado",
    },
}

for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)

LEVELS = ("trip_level", "rearm_level")


def _name(platform: str, mark: str, level: str) -> str:
    return f"{platform}.{mark}.{level}"


def _render(
    request: Request,
    session: Session,
    *,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    models = []
    shown: FormValues = {}
    for platform in catalog.list_platforms(session):
        marks = thresholds.thresholds_of(session, platform)
        for t in marks:
            shown[_name(platform.code, t.mark.code, "trip_level")] = _number(t.trip_level)
            shown[_name(platform.code, t.mark.code, "rearm_level")] = _number(t.rearm_level)
        models.append({"platform": platform, "marks": marks})
    context: dict[str, Any] = {"models": models, "values": {**shown, **(values or {})}}
    if errors is not None:
        context["errors"] = errors
    return render(request, "operator/upkeep.html", context, status_code=status_code)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


@router.get("/upkeep")
def upkeep_page(request: Request, session: DbSession, _: OperatorPage) -> Response:
    return _render(request, session)


@router.post("/upkeep/{platform}")
def set_marks(
    request: Request,
    platform: str,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
    form: PostedForm,
) -> Response:
    values = values_of(form)
    found = catalog.platform_or_404(session, platform)
    now = clock.now()
    # Every mark with both levels filled in is set; a mark left empty stays as it is.
    codes = [
        code
        for code in MARKS
        if all(values.get(_name(found.code, code, level), "").strip() for level in LEVELS)
    ]
    aliases = {
        f"marks.{index}.{level}": _name(found.code, code, level)
        for index, code in enumerate(codes)
        for level in LEVELS
    }

    def act() -> dict[str, Any]:
        changes = []
        for index, code in enumerate(codes):
            levels = []
            for level in LEVELS:
                name = _name(found.code, code, level)
                try:
                    levels.append(float(values[name].strip().replace(",", ".")))
                except ValueError:
                    raise CaasError(
                        "a number", field=f"marks.{index}.{level}", code="invalid_input"
                    ) from None
            changes.append(ThresholdChange(code, levels[0], levels[1]))
        thresholds.set_thresholds(session, found, changes, actor=actor_of(user), now=now)
        return {"platform": found.code}

    request_body = {key: value for key, value in values.items() if key != "csrf_token"}
    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.upkeep.marks:{found.code}",
            request=request_body,
            now=now,
            act=act,
        )
    except CaasError as error:
        return _render(
            request,
            session,
            values=values,
            errors=FormErrors.of(error, aliases=aliases),
            status_code=422,
        )
    flash(request, "upkeep.marks.flash_saved", model=found.name)
    return see_other(PAGE)
