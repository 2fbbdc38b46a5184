# ruff: noqa: E501 - a catalogue of texts reads best one text per line
"""The customer's digital key page: pair this phone, add a second driver's, revoke a lost one,
and try the key on the car (what the car's data may be kept for is on `caas.web.privacy`'s page).

The key pair is made in the browser (`static/phone-key.js`, WebCrypto); the private key stays
in the browser's IndexedDB, not extractable, and only the public key is posted here.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError
from caas.core.idempotency import once
from caas.notifications import service as notifications
from caas.sales import service as sales
from caas.vehicles import keys
from caas.vehicles.key_schemas import PhoneKeyCreate, PhoneKeyRead
from caas.web import strings
from caas.web.csrf import csrf_protect
from caas.web.display import zone_of_country
from caas.web.forms import FormErrors, PostedForm, values_of
from caas.web.pages import CustomerPage, PageRoute, flash, render, see_other

router = APIRouter(
    prefix="/portal",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

PAGE = "/portal/key"

# The page's texts, in the catalogue's languages; `caas.web.strings` wins where it has a text.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "nav.key": "Digital key",
        "key.title": "Digital key and privacy",
        "key.intro": "Your phone is your car's key: it opens and starts the car only once it is paired, even where the car has no network.",
        "key.no_cars": "You have no car yet. Once it is delivered, you pair your phone here.",
        "key.not_delivered": "You can pair your phone once the car is delivered.",
        "key.this_phone": "This phone",
        "key.this_phone_paired": "This phone is paired with this car as “{label}”.",
        "key.this_phone_not_paired": "This phone is not paired with this car.",
        "key.needs_webcrypto": "This browser cannot keep a key (it needs WebCrypto and IndexedDB, on HTTPS or this computer).",
        "key.pair_this": "Pair this phone",
        "key.pairing": "Pairing…",
        "key.label": "Whose phone",
        "key.label_default": "My phone",
        "key.phones": "Paired phones",
        "key.no_phones": "No phone is paired yet.",
        "key.paired_on": "Paired {when}",
        "key.revoked_on": "Revoked {when}",
        "key.active": "Opens the car",
        "key.revoked": "Revoked",
        "key.revoke": "Revoke",
        "key.revoke_confirm": "Revoke this phone? The car refuses it from its next update on.",
        "key.second_driver": "Add a second driver's phone",
        "key.second_driver_hint": "Their phone makes its own key and shows its public key (on its “This phone” panel); paste it here.",
        "key.second_driver_label": "second driver",
        "key.public_key": "The phone's public key",
        "key.algorithm": "Kind of key",
        "key.add": "Add this phone",
        "key.my_public_key": "This phone's public key",
        "key.copy_hint": "To be added as a second driver on someone else's car, give them this text.",
        "key.try": "Try the key on the car",
        "key.try_hint": "Your phone asks the car for a challenge and signs it; the car checks the signature against the keys it received from us.",
        "key.unlock": "Unlock",
        "key.start": "Start",
        "key.unlocked": "The car is unlocked.",
        "key.started": "The car is started and ready to drive.",
        "key.refused": "The car refused: {reason}",
        "key.unreachable": "The car does not answer.",
        "key.not_on_car_yet": "The car learns of a new phone with its next update; if it refuses, try again in a moment.",
        "key.no_demo": "The car's local key link is not available here.",
        "flash.phone_paired": "The phone “{label}” is paired. The car receives it with its next update.",
        "flash.phone_revoked": "The phone “{label}” is revoked. The car refuses it from its next update on.",
        "event.phone.paired": "Phone paired with the car",
        "event.phone.revoked": "Phone revoked",
        "event.car.paired": "First phone paired: the car is yours to drive",
        "event.car.software_reported": "The car reports new software",
    },
    "es": {
        "nav.key": "Llave digital",
        "key.title": "Llave digital y privacidad",
        "key.intro": "Tu teléfono es la llave de tu coche: lo abre y lo arranca una vez emparejado, incluso donde el coche no tiene red.",
        "key.no_cars": "Aún no tienes coche. Cuando te lo entreguen, empareja aquí tu teléfono.",
        "key.not_delivered": "Podrás emparejar tu teléfono cuando te entreguen el coche.",
        "key.this_phone": "Este teléfono",
        "key.this_phone_paired": "Este teléfono está emparejado con este coche como «{label}».",
        "key.this_phone_not_paired": "Este teléfono no está emparejado con este coche.",
        "key.needs_webcrypto": "Este navegador no puede guardar una llave (necesita WebCrypto e IndexedDB, con HTTPS o en este ordenador).",
        "key.pair_this": "Emparejar este teléfono",
        "key.pairing": "Emparejando…",
        "key.label": "De quién es el teléfono",
        "key.label_default": "Mi teléfono",
        "key.phones": "Teléfonos emparejados",
        "key.no_phones": "Aún no hay ningún teléfono emparejado.",
        "key.paired_on": "Emparejado {when}",
        "key.revoked_on": "Revocado {when}",
        "key.active": "Abre el coche",
        "key.revoked": "Revocado",
        "key.revoke": "Revocar",
        "key.revoke_confirm": "¿Revocar este teléfono? El coche lo rechazará desde su próxima actualización.",
        "key.second_driver": "Añadir el teléfono de un segundo conductor",
        "key.second_driver_hint": "Su teléfono crea su propia llave y muestra su clave pública (en su apartado «Este teléfono»); pégala aquí.",
        "key.second_driver_label": "segundo conductor",
        "key.public_key": "Clave pública del teléfono",
        "key.algorithm": "Tipo de llave",
        "key.add": "Añadir este teléfono",
        "key.my_public_key": "Clave pública de este teléfono",
        "key.copy_hint": "Para ser segundo conductor del coche de otra persona, dale este texto.",
        "key.try": "Probar la llave en el coche",
        "key.try_hint": "Tu teléfono pide un reto al coche y lo firma; el coche comprueba la firma con las llaves que le enviamos.",
        "key.unlock": "Abrir",
        "key.start": "Arrancar",
        "key.unlocked": "El coche está abierto.",
        "key.started": "El coche está arrancado y listo.",
        "key.refused": "El coche lo ha rechazado: {reason}",
        "key.unreachable": "El coche no responde.",
        "key.not_on_car_yet": "El coche conoce un teléfono nuevo con su próxima actualización; si lo rechaza, inténtalo de nuevo en un momento.",
        "key.no_demo": "El enlace local con el coche no está disponible aquí.",
        "flash.phone_paired": "El teléfono «{label}» está emparejado. El coche lo recibirá con su próxima actualización.",
        "flash.phone_revoked": "El teléfono «{label}» está revocado. El coche lo rechazará desde su próxima actualización.",
        "event.phone.paired": "Teléfono emparejado con el coche",
        "event.phone.revoked": "Teléfono revocado",
        "event.car.paired": "Primer teléfono emparejado: el coche ya es tuyo",
        "event.car.software_reported": "El coche informa de un software nuevo",
    },
}

for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)


def _page(
    request: Request,
    session: Session,
    user: User,
    *,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    customer = sales.customer_of_user(session, user)
    _, _, unread = notifications.list_notifications(session, user_id=user.id, limit=1)
    sim_url = request.app.state.settings.vehicle_sim_url
    context: dict[str, Any] = {
        "customer": customer,
        "zone": zone_of_country(customer.country),
        "unread": unread,
        "cars": keys.keys_of_owner(session, user),
        "sim_url": sim_url.rstrip("/") if sim_url else "",
        "errors": errors or FormErrors(),
        "new_key": uuid.uuid4().hex,
    }
    response = render(request, "portal/key.html", context, status_code=status_code)
    if sim_url:
        # The browser talks to the car directly (standing in for Bluetooth).
        parts = urlsplit(sim_url)
        policy = response.headers["Content-Security-Policy"]
        response.headers["Content-Security-Policy"] = policy.replace(
            "connect-src 'self'", f"connect-src 'self' {parts.scheme}://{parts.netloc}", 1
        )
    return response


@router.get("/key")
def key_page(request: Request, session: DbSession, user: CustomerPage) -> Response:
    return _page(request, session, user)


@router.post("/key/{vin}/phones")
def pair_phone(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """Pair the phone whose public key the form carries (this browser's, made by
    phone-key.js, or a second driver's pasted by the owner); the form's key makes a second
    click harmless."""
    values = values_of(form)
    now = clock.now()
    try:
        body = PhoneKeyCreate.model_validate(
            {
                "algorithm": values.get("algorithm") or "ECDSA-P256-SHA256",
                "public_key": values.get("public_key", ""),
                "label": values.get("label", ""),
            }
        )

        def act() -> dict[str, Any]:
            key = keys.pair_phone(
                session,
                user=user,
                vin=vin,
                algorithm=body.algorithm,
                public_key=body.public_key,
                label=body.label,
                actor=actor_of(user),
                now=now,
            )
            return PhoneKeyRead.of(key, vin.upper()).model_dump(mode="json")

        with session.begin_nested():
            once(
                session,
                principal=f"user:{user.id}",
                key=values.get("idempotency_key"),
                operation=f"phone.pair:{vin.upper()}",
                request=body.model_dump(mode="json"),
                now=now,
                act=act,
            )
    except (ValidationError, CaasError) as error:
        if isinstance(error, CaasError) and error.status == 404:
            raise
        status = error.status if isinstance(error, CaasError) else 422
        return _page(request, session, user, errors=FormErrors.of(error), status_code=status)
    flash(request, "flash.phone_paired", label=body.label)
    return see_other(PAGE)


@router.post("/key/{vin}/phones/{key_id}/revoke")
def revoke_phone(
    request: Request,
    vin: str,
    key_id: int,
    _: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    key = keys.revoke_phone(
        session, user=user, vin=vin, key_id=key_id, actor=actor_of(user), now=clock.now()
    )
    flash(request, "flash.phone_revoked", label=key.label)
    return see_other(PAGE)
