# ruff: noqa: E501 - a catalogue of texts reads best one text per line
"""The digital twin's pages: the owner's cars (what each runs, what is on its way, what it could
run) and the operator's fleet, filterable, with any car's twin."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.catalog.models import Platform
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError
from caas.ownership.service import refused_registry
from caas.releases.service import accept_update, awaited_update
from caas.releases.service import update_status as software_update_of
from caas.sales import service as sales
from caas.vehicles import twin
from caas.vehicles.models import Vehicle
from caas.web import strings
from caas.web.csrf import csrf_protect
from caas.web.display import zone_of_country
from caas.web.forms import PostedForm, once_per_form, values_of
from caas.web.pages import CustomerPage, OperatorPage, PageRoute, flash, render, see_other

router = APIRouter(
    route_class=PageRoute, include_in_schema=False, dependencies=[Depends(csrf_protect)]
)

PAGE_SIZE = 25

# The pages' texts, in the catalogue's languages; `caas.web.strings` wins where it has a text.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "software.ask": "New software {version} available: install now",
        "software.ask_intro": "The car installs it the next time it is connected and parked; it restarts once and keeps all your options.",
        "software.install_by": "Without an answer it is installed by itself from {when}.",
        "software.install_now": "Install now",
        "flash.software_accepted": "Software {version} will be installed the next time the car is connected and parked.",
        "flash.software_refused": "Not installed: {message}",
        "event.software.asked": "New software offered: waiting for the owner",
        "event.software.accepted": "The owner accepted the new software",
        "event.software.unanswered": "New software sent after the owner did not answer",
        "rollout.target.awaiting_owner": "Waiting for the owner",
        "nav.my_cars": "My cars",
        "nav.fleet": "Fleet",
        "cars.title": "My cars",
        "cars.none": "You have no car yet. It appears here once the factory has built it.",
        "fleet.title": "Fleet",
        "fleet.online": "Connection",
        "fleet.pending": "Changes",
        "fleet.pending_yes": "waiting for the car",
        "fleet.pending_no": "nothing waiting",
        "fleet.empty": "No car matches.",
        "twin.model": "Model",
        "twin.owner": "Owner",
        "twin.online": "online",
        "twin.offline": "offline",
        "twin.last_seen": "last heard from {when}",
        "twin.never_seen": "never connected yet",
        "twin.software": "Software",
        "twin.hardware": "Fitted hardware",
        "twin.hardware_none": "none",
        "twin.configuration": "Configuration",
        "twin.version": "Version {version}",
        "twin.version_applied": "The car runs version {version}.",
        "twin.nothing_applied": "The car has not applied a configuration yet.",
        "twin.pending_car": "Version {version} is on its way to the car since {when}; it arrives as soon as the car is online.",
        "twin.pending_park": "The car has version {version} and applies it as soon as it is parked (since {when}).",
        "twin.rejected": "The car refused version {version}: {reason}.",
        "twin.features": "Options",
        "twin.feature": "Option",
        "twin.in_car": "In the car",
        "twin.ordered": "Ordered",
        "twin.available": "For this car",
        "twin.on": "on",
        "twin.off": "off",
        "twin.until": "until {day}",
        "twin.from": "from {day}",
        "twin.runnable": "available",
        "twin.drives": "switches while parked",
        "twin.telemetry": "Last report",
        "twin.no_telemetry": "The car has sent no report yet.",
        "twin.odometer": "Odometer",
        "twin.battery": "Battery",
        "twin.parked": "Parked",
        "twin.moving": "Moving",
        "twin.measured": "Measured {when}",
        "twin.history": "History",
        "twin.back_fleet": "Back to the fleet",
        "twin.back_cars": "My cars",
        "twin.phones": "Phones that open it: {count}",
        "config.pending": "waiting",
        "config.applied": "applied",
        "config.rejected": "refused",
        "config.deferred": "waiting to be parked",
        "config.superseded": "replaced",
        "capability.hardware_missing": "its hardware was not fitted at the factory",
        "capability.software_too_old": "needs newer software",
        "reason.bad_signature": "the signature does not match",
        "reason.bad_certificate": "not signed by the maker",
        "reason.certificate_expired": "the signing certificate is not valid now",
        "reason.wrong_vin": "it was meant for another car",
        "reason.stale_version": "the car already has a newer one",
        "reason.malformed": "it could not be read",
        "event.configuration.issued": "New configuration signed",
        "event.configuration.applied": "The car applied its configuration",
        "event.configuration.rejected": "The car refused a configuration",
        "event.configuration.deferred": "The car waits to be parked to apply a configuration",
        "event.configuration.superseded": "A configuration replaced by a newer one",
        "event.configuration.manifest_refused": "The car refused a manifest not issued for it",
        "event.configuration.features_changed": "The car switched options on or off by itself "
        "(a window began or ended)",
    },
    "es": {
        "software.ask": "Nuevo software {version} disponible: instálalo ahora",
        "software.ask_intro": "El coche lo instala la próxima vez que esté conectado y aparcado; se reinicia una vez y conserva todas tus opciones.",
        "software.install_by": "Si no respondes, se instalará solo a partir del {when}.",
        "software.install_now": "Instalar ahora",
        "flash.software_accepted": "El software {version} se instalará la próxima vez que el coche esté conectado y aparcado.",
        "flash.software_refused": "No se ha instalado: {message}",
        "event.software.asked": "Nuevo software ofrecido: a la espera del propietario",
        "event.software.accepted": "El propietario aceptó el nuevo software",
        "event.software.unanswered": "Nuevo software enviado al no responder el propietario",
        "rollout.target.awaiting_owner": "A la espera del propietario",
        "nav.my_cars": "Mis coches",
        "nav.fleet": "Flota",
        "cars.title": "Mis coches",
        "cars.none": "Aún no tienes coche. Aparecerá aquí cuando la fábrica lo haya construido.",
        "fleet.title": "Flota",
        "fleet.online": "Conexión",
        "fleet.pending": "Cambios",
        "fleet.pending_yes": "esperando al coche",
        "fleet.pending_no": "nada pendiente",
        "fleet.empty": "Ningún coche coincide.",
        "twin.model": "Modelo",
        "twin.owner": "Propietario",
        "twin.online": "conectado",
        "twin.offline": "desconectado",
        "twin.last_seen": "última noticia {when}",
        "twin.never_seen": "aún no se ha conectado",
        "twin.software": "Software",
        "twin.hardware": "Hardware instalado",
        "twin.hardware_none": "ninguno",
        "twin.configuration": "Configuración",
        "twin.version": "Versión {version}",
        "twin.version_applied": "El coche tiene la versión {version}.",
        "twin.nothing_applied": "El coche aún no ha aplicado ninguna configuración.",
        "twin.pending_car": "La versión {version} va de camino al coche desde {when}; llegará en cuanto el coche esté conectado.",
        "twin.pending_park": "El coche tiene la versión {version} y la aplicará en cuanto esté aparcado (desde {when}).",
        "twin.rejected": "El coche ha rechazado la versión {version}: {reason}.",
        "twin.features": "Opciones",
        "twin.feature": "Opción",
        "twin.in_car": "En el coche",
        "twin.ordered": "Contratada",
        "twin.available": "Para este coche",
        "twin.on": "activa",
        "twin.off": "apagada",
        "twin.until": "hasta el {day}",
        "twin.from": "desde el {day}",
        "twin.runnable": "disponible",
        "twin.drives": "cambia con el coche aparcado",
        "twin.telemetry": "Último informe",
        "twin.no_telemetry": "El coche aún no ha enviado ningún informe.",
        "twin.odometer": "Cuentakilómetros",
        "twin.battery": "Batería",
        "twin.parked": "Aparcado",
        "twin.moving": "En marcha",
        "twin.measured": "Medido {when}",
        "twin.history": "Historial",
        "twin.back_fleet": "Volver a la flota",
        "twin.back_cars": "Mis coches",
        "twin.phones": "Teléfonos que lo abren: {count}",
        "config.pending": "pendiente",
        "config.applied": "aplicada",
        "config.rejected": "rechazada",
        "config.deferred": "esperando a aparcar",
        "config.superseded": "sustituida",
        "capability.hardware_missing": "su hardware no se instaló en fábrica",
        "capability.software_too_old": "necesita un software más reciente",
        "reason.bad_signature": "la firma no coincide",
        "reason.bad_certificate": "no la firmó el fabricante",
        "reason.certificate_expired": "el certificado de firma no es válido ahora",
        "reason.wrong_vin": "era para otro coche",
        "reason.stale_version": "el coche ya tiene una más reciente",
        "reason.malformed": "no se pudo leer",
        "event.configuration.issued": "Nueva configuración firmada",
        "event.configuration.applied": "El coche aplicó su configuración",
        "event.configuration.rejected": "El coche rechazó una configuración",
        "event.configuration.deferred": "El coche espera a estar aparcado para aplicar una configuración",
        "event.configuration.superseded": "Una configuración sustituida por otra más reciente",
        "event.configuration.manifest_refused": "El coche rechazó un manifiesto que no era para él",
        "event.configuration.features_changed": "El coche activó o desactivó opciones por sí "
        "mismo (empezó o terminó un periodo)",
    },
}

for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)


def _twin_page(
    request: Request,
    session: Session,
    vehicle: Vehicle,
    since: datetime | None = None,
    **context: Any,
) -> Response:
    shown = twin.twin_of(session, vehicle, since=since)
    update = software_update_of(session, vehicle.id)
    page: dict[str, Any] = {"twin": shown, "software_update": update, **context}
    return render(request, "car_twin.html", page)


@router.get("/portal/cars")
def my_cars(request: Request, session: DbSession, user: CustomerPage) -> Response:
    customer = sales.customer_of_user(session, user)
    rows = session.execute(
        select(Vehicle, Platform.name)
        .join(Platform, Platform.id == Vehicle.platform_id)
        .where(Vehicle.owner_customer_id == customer.id)
        .order_by(Vehicle.built_at, Vehicle.id)
    ).all()
    context = {"cars": rows, "zone": zone_of_country(customer.country)}
    return render(request, "portal/cars.html", context)


@router.get("/portal/cars/{vin}")
def my_car(request: Request, vin: str, session: DbSession, user: CustomerPage) -> Response:
    vehicle = twin.visible_vehicle(session, user, vin)
    customer = sales.customer_of_user(session, user)
    return _twin_page(
        request,
        session,
        vehicle,
        since=twin.shown_since(user, vehicle),
        zone=zone_of_country(customer.country),
        back="/portal/cars",
        awaited=awaited_update(session, vehicle),
        new_key=uuid.uuid4().hex,
    )


@router.post("/portal/cars/{vin}/software-update")
def accept_software(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """The owner accepts the new software the rollout asked them about (once per form key)."""
    vehicle = twin.visible_vehicle(session, user, vin)  # its owner's only (404 for others)
    values = values_of(form)
    now = clock.now()

    def act() -> dict[str, Any]:
        accepted = accept_update(session, vehicle, actor=actor_of(user), now=now)
        return {"version": accepted.release.version}

    try:
        answer = once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.software.accept:{vehicle.vin}",
            request={},
            now=now,
            act=act,
        )
    except CaasError as error:
        flash(request, "flash.software_refused", tone="danger", message=error.message)
    else:
        flash(request, "flash.software_accepted", version=answer["version"])
    return see_other(f"/portal/cars/{vehicle.vin}")


@router.get("/operator/fleet")
def fleet_page(
    request: Request,
    session: DbSession,
    _: OperatorPage,
    online: Annotated[str | None, Query(max_length=5)] = None,
    model: Annotated[str | None, Query(max_length=20)] = None,
    pending: Annotated[str | None, Query(max_length=5)] = None,
    software: Annotated[str | None, Query(max_length=20)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    def choice(value: str | None) -> bool | None:
        return {"yes": True, "no": False}.get(value or "")

    filters = twin.FleetFilter(
        online=choice(online),
        model=model or None,
        pending=choice(pending),
        software=software or None,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    fleet = twin.fleet(session, filters)
    chosen = {
        "online": online or "",
        "model": model or "",
        "pending": pending or "",
        "software": software or "",
    }
    context: dict[str, Any] = {
        "fleet": fleet,
        "chosen": chosen,
        "models": list(session.scalars(select(Platform.code).order_by(Platform.code))),
        "software_versions": twin.software_versions(session),
        "page": page,
        "pages": max((fleet.total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        "query": urlencode({key: value for key, value in chosen.items() if value}),
    }
    return render(request, "operator/fleet.html", context)


@router.get("/operator/fleet/{vin}")
def fleet_car(request: Request, vin: str, session: DbSession, user: OperatorPage) -> Response:
    vehicle = twin.visible_vehicle(session, user, vin)
    return _twin_page(
        request,
        session,
        vehicle,
        back="/operator/fleet",
        may_scrap=True,  # `caas.web.ownership` takes the form
        refusal=refused_registry(session, vehicle),  # and the registry's, to send again
        new_key=uuid.uuid4().hex,
    )
