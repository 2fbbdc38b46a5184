# ruff: noqa: E501 - a catalogue of texts reads best one text per line
"""The customer's privacy page: what their data may be used for and each change of it, their
data to download, their corrections, and the erasure of their account."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError
from caas.notifications import service as notifications
from caas.privacy import erasure, export, profile
from caas.privacy import service as privacy
from caas.privacy.rules import OPTIONAL_PURPOSES
from caas.privacy.schemas import ErasureCreate, ProfileUpdate
from caas.sales import service as sales
from caas.web import strings
from caas.web.csrf import csrf_protect, renew_csrf_token
from caas.web.display import zone_of_country
from caas.web.forms import FormErrors, PostedForm, once_per_form, values_of
from caas.web.pages import CustomerPage, PageRoute, flash, render, see_other

router = APIRouter(
    prefix="/portal",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

PAGE = "/portal/privacy"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "flash.consents_saved": "Your privacy choices are saved.",
        "privacy.title": "What your car's data may be kept for",
        "privacy.intro": "We always keep what the service needs (odometer, software version, battery, online status). Anything more only with your consent, which you can withdraw at any time: from then on it is no longer kept.",
        "privacy.location_history": "Location history: where the car has been",
        "privacy.driving_style": "Driving style: speed and the car's further readings",
        "privacy.changed": "Changed {when}",
        "privacy.never": "Never given",
        "privacy.save": "Save my choices",
        "event.consent.granted": "Consent given",
        "event.consent.withdrawn": "Consent withdrawn",
        "privacy.page_title": "My data and privacy",
        "privacy.service": "Running the service: odometer, software version, battery, online status and the metered use you are billed for",
        "privacy.product_improvement": "Product improvement: the maker may use how the car is used, without your name",
        "privacy.tailored_offers": "Tailored offers: suggest cheaper ways to buy what you use, from your metered use, the days you drive in winter, the km you drive and (with driving style on) your motorway trips",
        "privacy.required": "needed, always on",
        "privacy.history": "Changes of your consents",
        "privacy.no_history": "You have not changed any consent yet.",
        "privacy.history_granted": "{purpose}: given",
        "privacy.history_withdrawn": "{purpose}: withdrawn",
        "privacy.export": "Download my data",
        "privacy.export_hint": "A ZIP with everything we hold about you (data.json, machine-readable) and the PDFs of your invoices.",
        "privacy.profile": "Correct my details",
        "privacy.national_id_hint": "To correct your national id ({national_id}), ask your dealer.",
        "privacy.first_name": "First name",
        "privacy.last_name": "Last name",
        "privacy.phone": "Phone",
        "privacy.street": "Street",
        "privacy.postal_code": "Postal code",
        "privacy.city": "City",
        "privacy.language": "Language",
        "privacy.save_profile": "Save my details",
        "privacy.erase": "Erase my account",
        "privacy.erase_hint": "Your personal data are anonymised and you can no longer log in. Invoices and the ledger are kept as the law requires. You must first sell or transfer your car.",
        "privacy.password": "Your password, to confirm",
        "privacy.erase_button": "Erase my account for good",
        "flash.profile_saved": "Your details are saved.",
        "flash.profile_unchanged": "Nothing to change.",
        "flash.account_erased": "Your account is erased.",
        "event.profile.corrected": "Details corrected",
        "event.account.erased": "Account erased",
        "store.suggestions.title": "Suggested for how you use your car",
        "store.suggestions.ask": "Want offers tailored to how you use your car? Turn them on in",
    },
    "es": {
        "flash.consents_saved": "Tus preferencias de privacidad están guardadas.",
        "privacy.title": "Para qué se pueden guardar los datos de tu coche",
        "privacy.intro": "Siempre guardamos lo que el servicio necesita (cuentakilómetros, versión de software, batería, conexión). Lo demás, solo con tu consentimiento, que puedes retirar cuando quieras: desde entonces deja de guardarse.",
        "privacy.location_history": "Historial de ubicaciones: por dónde ha pasado el coche",
        "privacy.driving_style": "Estilo de conducción: velocidad y demás lecturas del coche",
        "privacy.changed": "Cambiado {when}",
        "privacy.never": "Nunca dado",
        "privacy.save": "Guardar mis preferencias",
        "event.consent.granted": "Consentimiento dado",
        "event.consent.withdrawn": "Consentimiento retirado",
        "privacy.page_title": "Mis datos y privacidad",
        "privacy.service": "Prestar el servicio: cuentakilómetros, versión de software, batería, conexión y el uso medido que se te factura",
        "privacy.product_improvement": "Mejora del producto: el fabricante puede usar cómo se usa el coche, sin tu nombre",
        "privacy.tailored_offers": "Ofertas a tu medida: sugerirte formas más baratas de comprar lo que usas, a partir de tu uso medido, los días que conduces en invierno, los km que recorres y (con el estilo de conducción activado) tus viajes por autopista",
        "privacy.required": "necesario, siempre activo",
        "privacy.history": "Cambios de tus consentimientos",
        "privacy.no_history": "Aún no has cambiado ningún consentimiento.",
        "privacy.history_granted": "{purpose}: dado",
        "privacy.history_withdrawn": "{purpose}: retirado",
        "privacy.export": "Descargar mis datos",
        "privacy.export_hint": "Un ZIP con todo lo que guardamos sobre ti (data.json, legible por máquina) y los PDF de tus facturas.",
        "privacy.profile": "Corregir mis datos",
        "privacy.national_id_hint": "Para corregir tu documento de identidad ({national_id}), pídeselo a tu concesionario.",
        "privacy.first_name": "Nombre",
        "privacy.last_name": "Apellidos",
        "privacy.phone": "Teléfono",
        "privacy.street": "Calle",
        "privacy.postal_code": "Código postal",
        "privacy.city": "Ciudad",
        "privacy.language": "Idioma",
        "privacy.save_profile": "Guardar mis datos",
        "privacy.erase": "Borrar mi cuenta",
        "privacy.erase_hint": "Tus datos personales se anonimizan y ya no podrás entrar. Las facturas y la contabilidad se conservan como exige la ley. Antes tienes que vender o transferir tu coche.",
        "privacy.password": "Tu contraseña, para confirmar",
        "privacy.erase_button": "Borrar mi cuenta definitivamente",
        "flash.profile_saved": "Tus datos están guardados.",
        "flash.profile_unchanged": "No hay nada que cambiar.",
        "flash.account_erased": "Tu cuenta está borrada.",
        "event.profile.corrected": "Datos corregidos",
        "event.account.erased": "Cuenta borrada",
        "store.suggestions.title": "Sugerido para cómo usas tu coche",
        "store.suggestions.ask": "¿Quieres ofertas a la medida de cómo usas tu coche? Actívalas en",
    },
}

for _language, _texts in TEXTS.items():
    for _key, _text in _texts.items():
        strings.TEXTS.setdefault(_language, {}).setdefault(_key, _text)

LANGUAGE_NAMES = {
    "es": "Español",
    "en": "English",
    "fr": "Français",
    "de": "Deutsch",
    "it": "Italiano",
    "pt": "Português",
}


def _page(
    request: Request,
    session: Session,
    user: User,
    *,
    errors: FormErrors | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    customer = sales.customer_of_user(session, user)
    _, _, unread = notifications.list_notifications(session, user_id=user.id, limit=1)
    shown = {field: getattr(customer, field) for field in profile.EDITABLE}
    context: dict[str, Any] = {
        "customer": customer,
        "zone": zone_of_country(customer.country),
        "unread": unread,
        "consents": privacy.consents_of(session, customer.id),
        "history": privacy.consent_history(session, customer.id),
        "values": {**shown, **(values or {})},
        "languages_offered": list(LANGUAGE_NAMES.items()),
        "errors": errors or FormErrors(),
        "new_key": uuid.uuid4().hex,
    }
    return render(request, "portal/privacy.html", context, status_code=status_code)


@router.get("/privacy")
def privacy_page(request: Request, session: DbSession, user: CustomerPage) -> Response:
    return _page(request, session, user)


@router.post("/privacy")
def save_consents(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """The consent form: a ticked box is consent given, an unticked one consent withdrawn."""
    customer = sales.customer_of_user(session, user)
    privacy.set_consents(
        session,
        customer_id=customer.id,
        choices={purpose: form.get(purpose) == "on" for purpose in OPTIONAL_PURPOSES},
        actor=actor_of(user),
        now=clock.now(),
    )
    flash(request, "flash.consents_saved")
    return see_other(PAGE)


@router.get("/privacy/export")
def download_export(session: DbSession, clock: ClockDep, user: CustomerPage) -> StreamingResponse:
    customer = sales.customer_of_user(session, user)
    now = clock.now()
    return StreamingResponse(
        export.chunks(export.build_export(session, customer, now=now)),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="caas-my-data-{now:%Y%m%d}.zip"'},
    )


@router.post("/privacy/profile")
def correct_profile(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    values = values_of(form)
    customer = sales.customer_of_user(session, user)
    now = clock.now()
    sent = {field: values[field] for field in profile.EDITABLE if values.get(field) is not None}
    try:
        body = ProfileUpdate.model_validate(sent)
        wanted = body.model_dump(exclude_none=True)

        def act() -> dict[str, Any]:
            changes = profile.correct_profile(
                session,
                customer=customer,
                user=user,
                correction=profile.Correction(**wanted),
                actor=actor_of(user),
                now=now,
            )
            return {"changed": sorted(changes)}

        done = once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation="profile.correct",
            request=wanted,
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        return _page(
            request, session, user, errors=FormErrors.of(error), values=values, status_code=status
        )
    flash(request, "flash.profile_saved" if done["changed"] else "flash.profile_unchanged")
    return see_other(PAGE)


@router.post("/privacy/erase")
def erase_account(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    values = values_of(form)
    customer = sales.customer_of_user(session, user)
    now = clock.now()
    try:
        body = ErasureCreate.model_validate({"password": values.get("password", "")})

        def act() -> dict[str, Any]:
            done = erasure.erase_account(
                session, customer=customer, user=user, password=body.password, now=now
            )
            return {"erased_at": done.erased_at.isoformat()}

        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=erasure.ERASE_OPERATION,
            request={},
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        return _page(request, session, user, errors=FormErrors.of(error), status_code=status)
    language = request.session.get("lang")
    request.session.clear()
    if language:
        request.session["lang"] = language
    renew_csrf_token(request)
    flash(request, "flash.account_erased")
    return see_other("/login")
