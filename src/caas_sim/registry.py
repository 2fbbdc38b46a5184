"""Simulator of the five vehicle registries: Spain's DGT, France's SIV, Germany's
Zulassungsstelle, Italy's PRA and Portugal's IMT, each at its own path with its own fields
and its own words (the contract is `caas.protocol.registry`).

How a request is answered, in this order:

1. `POST /sim/outage {"down": true}` was called: 503 until it is called with `false`.
2. A missing or wrong `Authorization: Bearer <api key>`: 401.
3. A missing or malformed field: 422, in the registry's language, naming its field.
4. A VIN this registry already registered: 201 with the same plate (a retry is safe).
5. `POST /sim/reject-next {"country", "reason", "field"}` was called: that refusal, once.
6. The deterministic rule: a holder's address without a house number (no digit at all in the
   street, e.g. "Calle Mayor") is refused ("domicilio incompleto...", field `domicilio` in
   Spain, `adresse`, `Halter.Straße`, `indirizzo`, `morada` elsewhere). In Germany a
   Zulassungsbezirk whose name has no letter (e.g. a postal code typed as the city) is refused
   too (`Zulassungsbezirk`).
7. At random with probability `rejection_rate` (reproducible with `seed`): a plausible refusal.
8. Otherwise 201 with a new plate in the country's format, unique in that country; German
   plates start with the district's sign (`M-` for München; a district missing from
   `DE_DISTRICTS` gets the first letters of its name, as many real signs do: `GAR-`).

A registered car's change of holder (`{path}/{vin}/{HOLDER_CHANGE}`) is answered by steps 1-3,
5 and 6 (the new holder's request), then 200 with the same plate; its deregistration
(`{path}/{vin}/{DEREGISTRATION}`) by steps 1-3 and 5, then 200 with the plate it closed. A VIN never
registered there is 404; a deregistered car accepts no change of holder (422).
`GET /sim/registrations` lists each car's current holder and whether it was deregistered.
"""

from __future__ import annotations

import hmac
import itertools
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from caas.protocol import registry as wire

ES_LETTERS = "BCDFGHJKLMNPRSTVWXYZ"
FR_LETTERS = "ABCDEFGHJKLMNPQRSTVWXYZ"
IT_LETTERS = "ABCDEFGHJKLMNPRSTVWXYZ"
DE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
PT_LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class Voice:
    """How one registry speaks: its field names, its words, its answers and its plates."""

    country: str
    code_prefix: str
    address_field: str
    missing: Callable[[str], str]
    no_house_number: str
    random_refusals: tuple[tuple[str, str], ...]
    refusal: Callable[[str, str, str | None], dict[str, Any]]
    success: Callable[[str, str, str], dict[str, Any]]
    vin_field: str
    plate: Callable[[random.Random, dict[str, Any]], str]


def _es_plate(rng: random.Random, _: dict[str, Any]) -> str:
    return f"{rng.randrange(10000):04d} {''.join(rng.choices(ES_LETTERS, k=3))}"


def _fr_plate(rng: random.Random, _: dict[str, Any]) -> str:
    left, right = "".join(rng.choices(FR_LETTERS, k=2)), "".join(rng.choices(FR_LETTERS, k=2))
    return f"{left}-{rng.randrange(1, 1000):03d}-{right}"


def _district_sign(district: str) -> str:
    """The Unterscheidungszeichen of a district: the known one, else up to three of the
    first letters of its name; empty when the name has no letter at all."""
    if district in wire.DE_DISTRICTS:
        return wire.DE_DISTRICTS[district]
    letters = [c for c in district.upper() if c in string.ascii_uppercase or c in "ÄÖÜ"]
    return "".join(letters[:3])


def _de_plate(rng: random.Random, request: dict[str, Any]) -> str:
    sign = _district_sign(request["Zulassungsbezirk"])
    letters = "".join(rng.choices(DE_LETTERS, k=rng.choice((1, 2))))
    # A German plate holds at most eight characters besides the separators.
    digits = min(4, 8 - len(sign) - len(letters))
    return f"{sign}-{letters} {rng.randrange(1, 10**digits)}"


def _it_plate(rng: random.Random, _: dict[str, Any]) -> str:
    left, right = "".join(rng.choices(IT_LETTERS, k=2)), "".join(rng.choices(IT_LETTERS, k=2))
    return f"{left} {rng.randrange(1000):03d} {right}"


def _pt_plate(rng: random.Random, _: dict[str, Any]) -> str:
    left, right = "".join(rng.choices(PT_LETTERS, k=2)), "".join(rng.choices(PT_LETTERS, k=2))
    return f"{left}-{rng.randrange(100):02d}-{right}"


VOICES = {
    "ES": Voice(
        country="ES",
        code_prefix="DGT",
        address_field="domicilio",
        missing=lambda name: f"falta o no es válido el campo {name}",
        no_house_number="domicilio incompleto: falta el número de la vía",
        random_refusals=(
            ("titular pendiente de verificación en el padrón municipal", "domicilio"),
            ("el código postal no corresponde al municipio", "codigo_postal"),
        ),
        refusal=lambda code, reason, name: {"codigo": code, "motivo": reason, "campo": name},
        success=lambda plate, number, day: {
            "matricula": plate,
            "numero_expediente": number,
            "fecha_matriculacion": day,
        },
        vin_field="bastidor",
        plate=_es_plate,
    ),
    "FR": Voice(
        country="FR",
        code_prefix="SIV",
        address_field="adresse",
        missing=lambda name: f"champ {name} absent ou invalide",
        no_house_number="adresse incomplète : numéro de voie manquant",
        random_refusals=(
            ("adresse non reconnue par la base adresse nationale", "adresse"),
            ("le code postal ne correspond pas à la commune", "code_postal"),
        ),
        refusal=lambda code, reason, name: {"code_erreur": code, "motif": reason, "champ": name},
        success=lambda plate, number, day: {
            "numero_immatriculation": plate,
            "numero_dossier": number,
            "date_immatriculation": day,
        },
        vin_field="vin",
        plate=_fr_plate,
    ),
    "DE": Voice(
        country="DE",
        code_prefix="KBA",
        address_field="Halter.Straße",
        missing=lambda name: f"Pflichtfeld {name} fehlt oder ist ungültig",
        no_house_number="Anschrift des Halters unvollständig: Hausnummer fehlt",
        random_refusals=(
            ("Meldeanschrift des Halters nicht bestätigt", "Halter.Straße"),
            ("Postleitzahl passt nicht zum Wohnort", "Halter.PLZ"),
        ),
        refusal=lambda code, reason, name: {
            "Fehlercode": code,
            "Ablehnungsgrund": reason,
            "Feld": name,
        },
        success=lambda plate, number, day: {
            "Kennzeichen": plate,
            "Vorgangsnummer": number,
            "Zulassungsdatum": day,
        },
        vin_field="FIN",
        plate=_de_plate,
    ),
    "IT": Voice(
        country="IT",
        code_prefix="PRA",
        address_field="indirizzo",
        missing=lambda name: f"campo {name} mancante o non valido",
        no_house_number="indirizzo incompleto: manca il numero civico",
        random_refusals=(
            ("residenza non confermata dall'anagrafe comunale", "indirizzo"),
            ("il CAP non corrisponde al comune", "cap"),
        ),
        refusal=lambda code, reason, name: {
            "esito": "respinta",
            "codice": code,
            "motivo": reason,
            "campo": name,
        },
        success=lambda plate, number, day: {
            "targa": plate,
            "numero_pratica": number,
            "data_immatricolazione": day,
        },
        vin_field="telaio",
        plate=_it_plate,
    ),
    "PT": Voice(
        country="PT",
        code_prefix="IMT",
        address_field="morada",
        missing=lambda name: f"campo {name} em falta ou inválido",
        no_house_number="morada incompleta: falta o número de polícia",
        random_refusals=(
            ("morada do proprietário não confirmada", "morada"),
            ("o código postal não corresponde à localidade", "codigo_postal"),
        ),
        refusal=lambda code, reason, name: {"codigo_erro": code, "motivo": reason, "campo": name},
        success=lambda plate, number, day: {
            "matricula": plate,
            "numero_processo": number,
            "data_matricula": day,
        },
        vin_field="quadro",
        plate=_pt_plate,
    ),
}


def _holder_name(country: str, request: dict[str, Any]) -> str:
    """The holder's name as the registry keeps it, first name first."""
    parts = {
        "ES": ("titular_nombre", "titular_apellidos"),
        "FR": ("titulaire_prenom", "titulaire_nom"),
        "IT": ("nome", "cognome"),
        "PT": ("nome", "apelido"),
    }
    if country == "DE":
        return f"{request['Halter']['Vorname']} {request['Halter']['Nachname']}"
    first, last = parts[country]
    return f"{request[first]} {request[last]}"


def _address_of(country: str, request: dict[str, Any]) -> str:
    if country == "DE":
        return str(request["Halter"]["Straße"])
    return str(request[VOICES[country].address_field])


@dataclass
class Registries:
    """The registries' memory: who is registered under which plate, and the test controls."""

    rejection_rate: float
    rng: random.Random
    down: bool = False
    reject_next: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    plates: dict[str, dict[str, str]] = field(default_factory=lambda: {c: {} for c in VOICES})
    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # The current holder's name of each registered car, and the deregistered cars.
    holders: dict[str, dict[str, str]] = field(default_factory=lambda: {c: {} for c in VOICES})
    deregistered: dict[str, dict[str, str]] = field(default_factory=lambda: {c: {} for c in VOICES})

    def _validated(
        self, voice: Voice, model: type[Any], body: Any
    ) -> dict[str, Any] | JSONResponse:
        try:
            return dict(model.model_validate(body).model_dump(by_alias=True))
        except ValidationError as error:
            first = error.errors()[0]
            bad = ".".join(str(part) for part in first["loc"]) or "body"
            return self._refuse(voice, "R00", voice.missing(bad), bad)

    def answer(self, country: str, body: Any) -> JSONResponse:
        voice = VOICES[country]
        request = self._validated(voice, wire.REQUESTS[country], body)
        if isinstance(request, JSONResponse):
            return request
        vin = request[voice.vin_field]
        issued = self.plates[country]
        if vin in issued:
            return self._register(voice, issued[vin])
        if country in self.reject_next:
            ordered_reason, ordered_field = self.reject_next.pop(country)
            return self._refuse(voice, "R10", ordered_reason, ordered_field)
        if not any(character.isdigit() for character in _address_of(country, request)):
            return self._refuse(voice, "R20", voice.no_house_number, voice.address_field)
        if country == "DE" and not _district_sign(request["Zulassungsbezirk"]):
            unknown = f"keine Zulassungsstelle für den Bezirk {request['Zulassungsbezirk']}"
            return self._refuse(voice, "R21", unknown, "Zulassungsbezirk")
        if self.rng.random() < self.rejection_rate:
            random_reason, random_field = self.rng.choice(voice.random_refusals)
            return self._refuse(voice, "R30", random_reason, random_field)
        taken = set(issued.values())
        plate = voice.plate(self.rng, request)
        while plate in taken:
            plate = voice.plate(self.rng, request)
        issued[vin] = plate
        self.holders[country][vin] = _holder_name(country, request)
        return self._register(voice, plate)

    def change_holder(self, country: str, vin: str, body: Any) -> JSONResponse:
        """The car passes to the holder in `body` (a registration request for the new one)."""
        voice = VOICES[country]
        plate = self.plates[country].get(vin)
        if plate is None:
            return JSONResponse({"error": f"{vin} is not registered here"}, status_code=404)
        request = self._validated(voice, wire.REQUESTS[country], body)
        if isinstance(request, JSONResponse):
            return request
        if request[voice.vin_field] != vin:
            return self._refuse(voice, "R01", voice.missing(voice.vin_field), voice.vin_field)
        if vin in self.deregistered[country]:
            return self._refuse(voice, "R40", "deregistered", voice.vin_field)
        if country in self.reject_next:
            ordered_reason, ordered_field = self.reject_next.pop(country)
            return self._refuse(voice, "R10", ordered_reason, ordered_field)
        if not any(character.isdigit() for character in _address_of(country, request)):
            return self._refuse(voice, "R20", voice.no_house_number, voice.address_field)
        self.holders[country][vin] = _holder_name(country, request)
        return self._register(voice, plate, status_code=200)

    def deregister(self, country: str, vin: str, body: Any) -> JSONResponse:
        """The car's registration closes for good (scrapped); again changes nothing."""
        voice = VOICES[country]
        plate = self.plates[country].get(vin)
        if plate is None:
            return JSONResponse({"error": f"{vin} is not registered here"}, status_code=404)
        request = self._validated(voice, wire.Deregistration, body)
        if isinstance(request, JSONResponse):
            return request
        if country in self.reject_next:
            ordered_reason, ordered_field = self.reject_next.pop(country)
            return self._refuse(voice, "R10", ordered_reason, ordered_field)
        self.deregistered[country].setdefault(vin, request["certificate_number"])
        return self._register(voice, plate, status_code=200)

    def _register(self, voice: Voice, plate: str, *, status_code: int = 201) -> JSONResponse:
        today = datetime.now(UTC).date()
        number = f"{voice.code_prefix}-{today.year}-{next(self.numbers):06d}"
        return JSONResponse(
            voice.success(plate, number, today.isoformat()), status_code=status_code
        )

    @staticmethod
    def _refuse(voice: Voice, code: str, reason: str, name: str | None) -> JSONResponse:
        body = voice.refusal(f"{voice.code_prefix}-{code}", reason, name)
        return JSONResponse(body, status_code=422)


def create_app(*, api_key: str, rejection_rate: float = 0.0, seed: int | None = None) -> FastAPI:
    """The five registries in one HTTP server, with test controls under `/sim`."""
    if not 0.0 <= rejection_rate <= 1.0:
        raise ValueError("rejection_rate is a probability between 0 and 1")
    app = FastAPI(
        title="caas registry simulator",
        description=__doc__,
        docs_url="/docs",
        redoc_url=None,
    )
    registries = Registries(rejection_rate=rejection_rate, rng=random.Random(seed))
    app.state.registries = registries
    expected = f"Bearer {api_key}".encode()

    async def refused(request: Request) -> Response | None:
        """The answer for a registry that is down or a wrong key; None when it may go on."""
        if registries.down:
            return JSONResponse(
                {"error": "service unavailable"}, status_code=503, headers={"Retry-After": "5"}
            )
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return None

    async def json_of(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    def add_registry(country: str) -> None:
        async def register(request: Request) -> Response:
            if (answer := await refused(request)) is not None:
                return answer
            body = await json_of(request)
            if body is None:
                return JSONResponse({"error": "the body is not JSON"}, status_code=400)
            return registries.answer(country, body)

        async def change_holder(vin: str, request: Request) -> Response:
            if (answer := await refused(request)) is not None:
                return answer
            return registries.change_holder(country, vin, await json_of(request))

        async def deregister(vin: str, request: Request) -> Response:
            if (answer := await refused(request)) is not None:
                return answer
            return registries.deregister(country, vin, await json_of(request))

        app.add_api_route(
            wire.PATHS[country] + "/{vin}/" + wire.HOLDER_CHANGE[country],
            change_holder,
            methods=["POST"],
            name=f"change_holder_{country.lower()}",
            summary=f"{wire.AUTHORITIES[country]}: record a registered car's new holder",
            description=f"Body: `{wire.REQUESTS[country].__name__}` with the new holder.",
            tags=["registries"],
        )
        app.add_api_route(
            wire.PATHS[country] + "/{vin}/" + wire.DEREGISTRATION[country],
            deregister,
            methods=["POST"],
            name=f"deregister_{country.lower()}",
            summary=f"{wire.AUTHORITIES[country]}: deregister a scrapped car",
            description="Body: `Deregistration` in caas.protocol.registry.",
            tags=["registries"],
        )

        app.add_api_route(
            wire.PATHS[country],
            register,
            methods=["POST"],
            name=f"register_{country.lower()}",
            summary=f"{wire.AUTHORITIES[country]}: register a new car ({country})",
            description=f"Body: `{wire.REQUESTS[country].__name__}` in caas.protocol.registry.",
            tags=["registries"],
        )

    for country in wire.COUNTRIES:
        add_registry(country)

    @app.post("/sim/reject-next", status_code=204, tags=["simulator controls"])
    async def reject_next(control: wire.SimRejectNext) -> Response:
        """The next request to `country` is refused with `reason` (and `field`)."""
        registries.reject_next[control.country] = (control.reason, control.field)
        return Response(status_code=204)

    @app.post("/sim/outage", status_code=204, tags=["simulator controls"])
    async def outage(control: wire.SimOutage) -> Response:
        """While down, every registry answers 503."""
        registries.down = control.down
        return Response(status_code=204)

    @app.get("/sim/registrations", tags=["simulator controls"])
    async def registrations() -> list[dict[str, str]]:
        """Every car registered so far, per country."""
        return [
            {
                "country": country,
                "vin": vin,
                "plate": plate,
                "holder": registries.holders[country].get(vin, ""),
                "state": "deregistered" if vin in registries.deregistered[country] else "active",
            }
            for country, issued in registries.plates.items()
            for vin, plate in issued.items()
        ]

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
