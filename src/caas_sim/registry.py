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

    def answer(self, country: str, body: Any) -> JSONResponse:
        voice = VOICES[country]
        try:
            request = wire.REQUESTS[country].model_validate(body).model_dump(by_alias=True)
        except ValidationError as error:
            first = error.errors()[0]
            bad = ".".join(str(part) for part in first["loc"]) or "body"
            return self._refuse(voice, "R00", voice.missing(bad), bad)
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
        return self._register(voice, plate)

    def _register(self, voice: Voice, plate: str) -> JSONResponse:
        today = datetime.now(UTC).date()
        number = f"{voice.code_prefix}-{today.year}-{next(self.numbers):06d}"
        return JSONResponse(voice.success(plate, number, today.isoformat()), status_code=201)

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

    def add_registry(country: str) -> None:
        async def register(request: Request) -> Response:
            if registries.down:
                return JSONResponse(
                    {"error": "service unavailable"}, status_code=503, headers={"Retry-After": "5"}
                )
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": "the body is not JSON"}, status_code=400)
            return registries.answer(country, body)

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
            {"country": country, "vin": vin, "plate": plate}
            for country, issued in registries.plates.items()
            for vin, plate in issued.items()
        ]

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
