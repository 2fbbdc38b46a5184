# ruff: noqa: E501 - a catalogue of texts reads best one text per line
"""Pages of a change of owner and of an end of life: the owner's "Sell this car" (a code for
the buyer, shown once, and its cancellation), the buyer's "Receive a car" (VIN and code), the
dealership's resale form, and the operator's "Scrap" on the fleet's twin page."""

from __future__ import annotations

import uuid
from typing import Any, get_args

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.catalog import service as catalog
from caas.core.api import ClockDep, DbSession, SettingsDep, with_retry_after
from caas.core.errors import CaasError, NotFound
from caas.core.idempotency import once
from caas.ownership import service
from caas.ownership.schemas import (
    ResaleCreate,
    ScrappingCreate,
    TransferAccept,
    TransferAcceptNew,
)
from caas.sales.schemas import CountryCode
from caas.web import strings
from caas.web.csrf import csrf_protect
from caas.web.display import zone_of_country
from caas.web.forms import (
    FormErrors,
    FormValues,
    PostedForm,
    once_per_form,
    refusal_text,
    values_of,
)
from caas.web.intranet import CUSTOMER_FIELDS, EMAIL_LANGUAGES
from caas.web.pages import (
    CustomerPage,
    DealerPage,
    OperatorPage,
    PageRoute,
    flash,
    language_of,
    render,
    see_other,
)

router = APIRouter(
    route_class=PageRoute, include_in_schema=False, dependencies=[Depends(csrf_protect)]
)

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "nav.resale": "Resale",
        "sell.link": "Sell this car",
        "sell.title": "Sell this car",
        "sell.intro": "Give the buyer the car's VIN and the code below. When they enter both, the car becomes theirs: your subscriptions end (refunded as their terms say), your phones stop opening it, and the options bought for life stay with the car.",
        "sell.open": "Create a transfer code",
        "sell.code": "The code for the buyer",
        "sell.code_once": "Write it down now: it is shown only this once.",
        "sell.where": "The buyer enters them in their portal (“Receive a car”), or at {url} if they have no account yet.",
        "sell.expires": "Valid until {when}.",
        "sell.pending": "A transfer is open until {when}. The code was shown when you created it; cancel it for a new one.",
        "sell.cancel": "Cancel the transfer",
        "sell.cancel_confirm": "Cancel this transfer? Its code stops working.",
        "sell.not_delivered": "A car can be sold once it has been delivered.",
        "receive.link": "Receive a car",
        "receive.title": "Receive a car",
        "receive.intro": "Bought a car from its owner? Enter its VIN and the code the seller gave you.",
        "receive.submit": "Receive the car",
        "receive.new_title": "Receive a car: new customer",
        "receive.new_intro": "Bought a car from its owner and have no account with us yet? Enter its VIN, the seller's code and who you are: your account is created and we e-mail you the link to activate it. Already a customer? Log in and use “Receive a car” in your portal.",
        "receive.you": "You, the new owner",
        "receive.done_title": "The car is yours",
        "receive.done": "The car {vin} is now yours. We have sent the link to activate your account to {email}; once you have set your password, pair your phone with the car.",
        "field.vin": "VIN",
        "field.transfer_code": "Transfer code",
        "resale.title": "Record a resale",
        "resale.intro": "With both parties present: the seller's identity document must match the car's owner. The buyer is found or created as in a new sale, and gets the activation e-mail if they are new.",
        "resale.car": "The car and its seller",
        "resale.seller_national_id": "Seller's national id",
        "resale.buyer": "The buyer",
        "resale.submit": "Record the resale",
        "scrap.title": "Scrap this car",
        "scrap.intro": "The registry deregisters it, its network access is removed, its subscriptions end and its owner is told. It cannot be undone.",
        "scrap.reason": "Reason",
        "scrap.certificate": "Certificate of destruction number",
        "scrap.submit": "Scrap the car",
        "scrap.confirm": "Scrap this car for good?",
        "scrap.archived": "Scrapped {when}: this record is archived and read-only.",
        "flash.transfer_cancelled": "The transfer is cancelled; its code no longer works.",
        "flash.car_received": "The car {vin} is yours. Pair your phone with it on the digital key page.",
        "flash.resale_recorded": "The resale of {vin} is recorded; the car belongs to its new owner.",
        "flash.car_scrapped": "The car {vin} is scrapped and its record archived.",
        "flash.scrap_refused": "The car was not scrapped: {message}",
        "event.ownership.transfer_opened": "Transfer to a new owner opened",
        "event.ownership.transfer_cancelled": "Transfer cancelled",
        "event.ownership.transfer_completed": "Transfer to the new owner completed",
        "event.car.sold": "The car was sold",
        "event.car.received": "The car was received by its new owner",
        "event.car.scrapped": "The car was scrapped",
        "registry.refused_title": "The registry refused it",
        "registry.refused": "The registry refused the {request} ({when}): {reason}",
        "registry.request.holder_change": "change of holder",
        "registry.request.deregistration": "deregistration",
        "registry.retry_hint": "Correct what it asks for (the holder's details in their file), then send it again.",
        "registry.retry": "Send it to the registry again",
        "flash.registry_retried": "Sent to the registry again; its answer appears in the car's history.",
        "flash.registry_retry_refused": "Not sent again: {message}",
        "dealer_car.title": "Car {vin}",
        "dealer_car.state": "State",
        "dealer_car.in_service": "in service",
        "dealer_car.archived": "scrapped",
        "event.ownership.registry_holder_change_refused": "The registry refused the change of holder",
        "event.ownership.registry_deregistration_refused": "The registry refused the deregistration",
        "event.ownership.registry_holder_change_retried": "The change of holder was sent to the registry again",
        "event.ownership.registry_deregistration_retried": "The deregistration was sent to the registry again",
    },
    "es": {
        "nav.resale": "Reventa",
        "sell.link": "Vender este coche",
        "sell.title": "Vender este coche",
        "sell.intro": "Dé al comprador el número de bastidor (VIN) y el código de abajo. Cuando los introduzca, el coche será suyo: sus suscripciones terminan (con el reembolso que digan sus condiciones), sus teléfonos dejan de abrirlo y las opciones compradas para siempre se quedan con el coche.",
        "sell.open": "Crear un código de transferencia",
        "sell.code": "El código para el comprador",
        "sell.code_once": "Anótelo ahora: solo se muestra esta vez.",
        "sell.where": "El comprador los introduce en su portal («Recibir un coche»), o en {url} si aún no tiene cuenta.",
        "sell.expires": "Válido hasta el {when}.",
        "sell.pending": "Hay una transferencia abierta hasta el {when}. El código se mostró al crearla; cancélela para obtener uno nuevo.",
        "sell.cancel": "Cancelar la transferencia",
        "sell.cancel_confirm": "¿Cancelar esta transferencia? Su código dejará de funcionar.",
        "sell.not_delivered": "Un coche se puede vender una vez entregado.",
        "receive.link": "Recibir un coche",
        "receive.title": "Recibir un coche",
        "receive.intro": "¿Ha comprado un coche a su propietario? Introduzca su VIN y el código que le dio el vendedor.",
        "receive.submit": "Recibir el coche",
        "receive.new_title": "Recibir un coche: cliente nuevo",
        "receive.new_intro": "¿Ha comprado un coche a su propietario y aún no tiene cuenta con nosotros? Introduzca su VIN, el código del vendedor y sus datos: se crea su cuenta y le enviamos por correo el enlace para activarla. ¿Ya es cliente? Inicie sesión y use «Recibir un coche» en su portal.",
        "receive.you": "Usted, el nuevo propietario",
        "receive.done_title": "El coche es suyo",
        "receive.done": "El coche {vin} ya es suyo. Hemos enviado el enlace para activar su cuenta a {email}; cuando haya elegido su contraseña, empareje su teléfono con el coche.",
        "field.vin": "VIN (número de bastidor)",
        "field.transfer_code": "Código de transferencia",
        "resale.title": "Registrar una reventa",
        "resale.intro": "Con ambas partes presentes: el documento de identidad del vendedor debe coincidir con el del propietario. El comprador se busca o se crea como en una venta nueva y, si es nuevo, recibe el correo de activación.",
        "resale.car": "El coche y su vendedor",
        "resale.seller_national_id": "DNI/NIE del vendedor",
        "resale.buyer": "El comprador",
        "resale.submit": "Registrar la reventa",
        "scrap.title": "Dar de baja este coche",
        "scrap.intro": "El registro lo da de baja, se retira su acceso a la red, sus suscripciones terminan y se avisa a su propietario. No se puede deshacer.",
        "scrap.reason": "Motivo",
        "scrap.certificate": "Número del certificado de destrucción",
        "scrap.submit": "Dar de baja el coche",
        "scrap.confirm": "¿Dar de baja este coche definitivamente?",
        "scrap.archived": "Dado de baja el {when}: este expediente está archivado y es de solo lectura.",
        "flash.transfer_cancelled": "La transferencia está cancelada; su código ya no funciona.",
        "flash.car_received": "El coche {vin} es suyo. Empareje su teléfono en la página de la llave digital.",
        "flash.resale_recorded": "La reventa de {vin} está registrada; el coche es de su nuevo propietario.",
        "flash.car_scrapped": "El coche {vin} está dado de baja y su expediente archivado.",
        "flash.scrap_refused": "El coche no se ha dado de baja: {message}",
        "event.ownership.transfer_opened": "Transferencia a un nuevo propietario abierta",
        "event.ownership.transfer_cancelled": "Transferencia cancelada",
        "event.ownership.transfer_completed": "Transferencia al nuevo propietario completada",
        "event.car.sold": "El coche se vendió",
        "event.car.received": "El coche lo recibió su nuevo propietario",
        "event.car.scrapped": "El coche se dio de baja",
        "registry.refused_title": "El registro lo rechazó",
        "registry.refused": "El registro rechazó {request} ({when}): {reason}",
        "registry.request.holder_change": "el cambio de titular",
        "registry.request.deregistration": "la baja",
        "registry.retry_hint": "Corrige lo que pide (los datos del titular en su expediente) y vuelve a enviarlo.",
        "registry.retry": "Enviarlo de nuevo al registro",
        "flash.registry_retried": "Enviado de nuevo al registro; su respuesta aparecerá en el historial del coche.",
        "flash.registry_retry_refused": "No se ha vuelto a enviar: {message}",
        "dealer_car.title": "Coche {vin}",
        "dealer_car.state": "Estado",
        "dealer_car.in_service": "en servicio",
        "dealer_car.archived": "dado de baja",
        "event.ownership.registry_holder_change_refused": "El registro rechazó el cambio de titular",
        "event.ownership.registry_deregistration_refused": "El registro rechazó la baja",
        "event.ownership.registry_holder_change_retried": "El cambio de titular se envió de nuevo al registro",
        "event.ownership.registry_deregistration_retried": "La baja se envió de nuevo al registro",
    },
}

for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)


# --- the seller ---------------------------------------------------------------------------------


def _sell_page(
    request: Request,
    session: Session,
    user: User,
    vin: str,
    *,
    code: str | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    vehicle, transfer = service.seller_transfer(session, user=user, vin=vin)
    context: dict[str, Any] = {
        "vehicle": vehicle,
        "transfer": transfer,
        "code": code,
        "zone": zone_of_country(vehicle.registered_country or "ES"),
        "new_key": uuid.uuid4().hex,
        "errors": errors or FormErrors(),
    }
    return render(request, "portal/sell.html", context, status_code=status_code)


@router.get("/portal/cars/{vin}/sell")
def sell_page(request: Request, vin: str, session: DbSession, user: CustomerPage) -> Response:
    return _sell_page(request, session, user, vin)


@router.post("/portal/cars/{vin}/sell")
def open_transfer(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: CustomerPage,
) -> Response:
    """The code is shown on this answer only (never kept, never in a cookie); a second click
    with the same form finds the transfer open and shows it without its code."""
    values = values_of(form)
    now = clock.now()

    def act() -> dict[str, Any]:
        opened = service.open_transfer(
            session, user=user, vin=vin, settings=settings, actor=actor_of(user), now=now
        )
        request.state.transfer_code = opened.code
        return {"id": opened.transfer.id}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.transfer.open:{vin.upper()}",
            request={},
            now=now,
            act=act,
        )
    except CaasError as error:
        if error.status == 404:
            raise
        return _sell_page(
            request, session, user, vin, errors=FormErrors.of(error), status_code=error.status
        )
    code = getattr(request.state, "transfer_code", None)
    return _sell_page(request, session, user, vin, code=code, status_code=201 if code else 200)


@router.post("/portal/cars/{vin}/sell/cancel")
def cancel_transfer(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    now = clock.now()

    def act() -> dict[str, Any]:
        transfer = service.cancel_transfer(
            session, user=user, vin=vin, actor=actor_of(user), now=now
        )
        return {"id": transfer.id}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values_of(form),
            operation=f"web.transfer.cancel:{vin.upper()}",
            request={},
            now=now,
            act=act,
        )
    except NotFound as error:
        if error.code != "transfer.not_found":
            raise  # not the customer's car
        # Nothing open any more (cancelled or completed meanwhile): the page says so.
    flash(request, "flash.transfer_cancelled")
    return see_other(f"/portal/cars/{vin.upper()}/sell")


# --- the buyer ----------------------------------------------------------------------------------


def _receive_page(
    request: Request, values: FormValues, errors: FormErrors | None = None, status_code: int = 200
) -> Response:
    context = {"values": values, "errors": errors or FormErrors()}
    return render(request, "portal/receive.html", context, status_code=status_code)


@router.get("/portal/receive")
def receive_page(request: Request, _: CustomerPage) -> Response:
    return _receive_page(request, {"idempotency_key": uuid.uuid4().hex})


@router.post("/portal/receive")
def receive_car(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: CustomerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()
    try:
        body = TransferAccept.model_validate(
            {"vin": values.get("vin", ""), "code": values.get("code", "")}
        )

        def act() -> dict[str, Any]:
            transfer = service.receive_car(
                session,
                user=user,
                vin=body.vin,
                code=body.code,
                attempts=request.app.state.sessions,
                settings=settings,
                actor=actor_of(user),
                now=now,
            )
            return {"id": transfer.id}

        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation="web.transfer.receive",
            request=body.model_dump(mode="json"),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        page = _receive_page(request, values, FormErrors.of(error), status_code=status)
        return with_retry_after(page, error) if isinstance(error, CaasError) else page
    flash(request, "flash.car_received", vin=body.vin.upper())
    return see_other("/portal/cars")


def _identity(values: FormValues, prefix: str) -> dict[str, Any]:
    """A person's fields of a form, as the API's `CustomerIdentity`."""
    person: dict[str, Any] = {"country": values.get(f"{prefix}.country", "")}
    for name in CUSTOMER_FIELDS:
        person[name] = values.get(f"{prefix}.{name}", "")
    if values.get(f"{prefix}.language"):
        person["language"] = values[f"{prefix}.language"]
    return person


def _people_form(
    request: Request,
    session: Session,
    template: str,
    values: FormValues,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    countries = [catalog.get_country(session, code) for code in get_args(CountryCode)]
    context = {
        "values": values,
        "errors": errors or FormErrors(),
        "countries": [(country.code, country.name) for country in countries],
        "email_languages": EMAIL_LANGUAGES,
    }
    return render(request, template, context, status_code=status_code)


@router.get("/receive")
def receive_new_page(request: Request, session: DbSession) -> Response:
    return _people_form(request, session, "receive_new.html", {"idempotency_key": uuid.uuid4().hex})


@router.post("/receive")
def receive_car_as_new_customer(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
) -> Response:
    """No login: the buyer's account is made with the car and activated from the e-mail."""
    values = values_of(form)
    now = clock.now()
    try:
        body = TransferAcceptNew.model_validate(
            {
                "vin": values.get("vin", ""),
                "code": values.get("code", ""),
                "buyer": _identity(values, "buyer"),
            }
        )

        def act() -> dict[str, Any]:
            transfer, _ = service.receive_car_as_new_customer(
                session,
                vin=body.vin,
                code=body.code,
                identity=body.buyer,
                attempts=request.app.state.sessions,
                settings=settings,
                now=now,
            )
            return {"id": transfer.id}

        with session.begin_nested():  # a failure rolls back only this, so the page can say why
            once(
                session,
                principal=f"transfer:{body.vin.upper()}",
                key=values.get("idempotency_key") or uuid.uuid4().hex,
                operation="web.transfer.receive_new",
                request=body.model_dump(mode="json"),
                now=now,
                act=act,
            )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        errors = FormErrors.of(error, aliases={"email": "buyer.email", "country": "buyer.country"})
        page = _people_form(request, session, "receive_new.html", values, errors, status)
        return with_retry_after(page, error) if isinstance(error, CaasError) else page
    context = {"vin": body.vin.upper(), "email": body.buyer.email}
    return render(request, "receive_done.html", context, status_code=201)


# --- the dealership -----------------------------------------------------------------------------


@router.get("/intranet/resales/new")
def resale_page(request: Request, session: DbSession, _: DealerPage) -> Response:
    return _people_form(
        request, session, "intranet/resale_new.html", {"idempotency_key": uuid.uuid4().hex}
    )


@router.post("/intranet/resales/new")
def record_resale(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: DealerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()
    buyer = _identity(values, "buyer")
    try:
        body = ResaleCreate.model_validate(
            {
                "vin": values.get("vin", ""),
                "seller_national_id": values.get("seller_national_id", ""),
                "buyer": buyer,
            }
        )

        def act() -> dict[str, Any]:
            transfer = service.record_resale(
                session,
                dealer=user,
                vin=body.vin,
                seller_national_id=body.seller_national_id,
                identity=body.buyer,
                settings=settings,
                now=now,
            )
            return {"id": transfer.id}

        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation="web.transfer.resale",
            request=body.model_dump(mode="json"),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        errors = FormErrors.of(error, aliases={"email": "buyer.email", "country": "buyer.country"})
        return _people_form(
            request, session, "intranet/resale_new.html", values, errors, status_code=status
        )
    flash(request, "flash.resale_recorded", vin=body.vin.upper())
    return see_other("/intranet/sales")


# --- the operator -------------------------------------------------------------------------------


@router.post("/operator/fleet/{vin}/scrap")
def scrap(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
) -> Response:
    return _scrap(request, vin, form, session, clock, user, page=f"/operator/fleet/{vin.upper()}")


def _scrap(
    request: Request,
    vin: str,
    form: PostedForm,
    session: Session,
    clock: ClockDep,
    user: User,
    *,
    page: str,
) -> Response:
    """The scrap form of the operator's twin page and of the dealer's car page."""
    values = values_of(form)
    now = clock.now()
    try:
        body = ScrappingCreate.model_validate(
            {
                "reason": values.get("reason", ""),
                "certificate_number": values.get("certificate_number", ""),
            }
        )

        def act() -> dict[str, Any]:
            scrapping = service.scrap(
                session,
                user=user,
                vin=vin,
                reason=body.reason,
                certificate_number=body.certificate_number,
                actor=actor_of(user),
                now=now,
            )
            return {"id": scrapping.id}

        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.vehicle.scrap:{vin.upper()}",
            request=body.model_dump(mode="json"),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, CaasError) and error.status == 404:
            raise
        errors = FormErrors.of(error).in_language(language_of(request, user))
        message = "; ".join([*errors.general, *errors.fields.values()])
        flash(request, "flash.scrap_refused", tone="danger", message=message)
        return see_other(page)
    flash(request, "flash.car_scrapped", vin=vin.upper())
    return see_other(page)


def _retry_registry(
    request: Request,
    vin: str,
    form: PostedForm,
    session: Session,
    clock: ClockDep,
    user: User,
    *,
    page: str,
) -> Response:
    """Send the registry's refused request again, once per form key."""
    values = values_of(form)
    now = clock.now()

    def act() -> dict[str, Any]:
        refusal = service.retry_registry(session, user=user, vin=vin, actor=actor_of(user), now=now)
        return {"request": refusal.kind}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.vehicle.registry_retry:{vin.upper()}",
            request={},
            now=now,
            act=act,
        )
    except CaasError as error:
        if error.status == 404:
            raise
        message = refusal_text(error, language_of(request, user))
        flash(request, "flash.registry_retry_refused", tone="danger", message=message)
        return see_other(page)
    flash(request, "flash.registry_retried")
    return see_other(page)


@router.post("/operator/fleet/{vin}/registry-retry")
def operator_retry_registry(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
) -> Response:
    page = f"/operator/fleet/{vin.upper()}"
    return _retry_registry(request, vin, form, session, clock, user, page=page)


# --- the dealer's car page ----------------------------------------------------------------------


@router.get("/intranet/cars/{vin}")
def dealer_car(request: Request, vin: str, session: DbSession, user: DealerPage) -> Response:
    """A car the dealership sold: its registry's refusal to retry, and the scrap form."""
    vehicle = service.dealer_car(session, user, vin)
    context = {
        "vehicle": vehicle,
        "model": catalog.get_platform(session, vehicle.platform_id).name,
        "refusal": service.refused_registry(session, vehicle),
        "scrapping": service.scrapping_of(session, vehicle.id),
        "new_key": uuid.uuid4().hex,
    }
    return render(request, "intranet/car.html", context)


@router.post("/intranet/cars/{vin}/scrap")
def dealer_scrap(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: DealerPage,
) -> Response:
    return _scrap(request, vin, form, session, clock, user, page=f"/intranet/cars/{vin.upper()}")


@router.post("/intranet/cars/{vin}/registry-retry")
def dealer_retry_registry(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: DealerPage,
) -> Response:
    page = f"/intranet/cars/{vin.upper()}"
    return _retry_registry(request, vin, form, session, clock, user, page=page)
