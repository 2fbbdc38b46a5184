"""The vehicle registries' wire contracts: one request and answer shape per country.

Each country's authority has its own endpoint, its own field names and its own words:

| country | authority | path | plate |
|---|---|---|---|
| ES | DGT (Dirección General de Tráfico) | `/dgt/v1/matriculaciones` | `1234 BCD` |
| FR | ANTS, Système d'immatriculation des véhicules | `/siv/v1/immatriculations` | `AB-123-CD` |
| DE | Zulassungsstelle, reported to the KBA | `/kba/v1/zulassungen` | `M-AB 1234` |
| IT | Motorizzazione civile / PRA | `/pra/v1/immatricolazioni` | `AB 123 CD` |
| PT | IMT (Instituto da Mobilidade e dos Transportes) | `/imt/v1/matriculas` | `AA-00-AA` |

Every registry takes `Authorization: Bearer <api key>` and answers:

- 201 with the plate when the car is registered (the same VIN sent again gets the same plate,
  so a retried request is safe);
- 422 with a reason (and the field at fault) when it refuses the request;
- 401 for a wrong key, 503 while it is down.

A registered car has two more requests, both at the car's own resource under its country's
path (`{path}/{vin}/...`, the last part in the registry's words, see `HOLDER_CHANGE` and
`DEREGISTRATION`):

- change of holder (a second-hand sale): the body is the country's registration request with
  the new holder's fields; 200 with the same plate, 422 with a reason as above;
- deregistration (the car scrapped): `Deregistration`; 200 with the plate it closed.

Both answer 404 for a VIN the registry never registered, and are safe to send again.
"""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

COUNTRIES = ("ES", "FR", "DE", "IT", "PT")

PATHS = {
    "ES": "/dgt/v1/matriculaciones",
    "FR": "/siv/v1/immatriculations",
    "DE": "/kba/v1/zulassungen",
    "IT": "/pra/v1/immatricolazioni",
    "PT": "/imt/v1/matriculas",
}

AUTHORITIES = {
    "ES": "DGT",
    "FR": "ANTS (SIV)",
    "DE": "Zulassungsstelle (KBA)",
    "IT": "Motorizzazione (PRA)",
    "PT": "IMT",
}

# The plate of each country, as its registry writes it.
PLATE_FORMATS = {
    # Four digits and three consonants (no vowels, no Ñ or Q).
    "ES": re.compile(r"^\d{4} [BCDFGHJKLMNPRSTVWXYZ]{3}$"),
    # SIV since 2009: no I, O or U.
    "FR": re.compile(r"^[A-HJ-NP-TV-Z]{2}-\d{3}-[A-HJ-NP-TV-Z]{2}$"),
    # District sign, one or two letters, one to four digits.
    "DE": re.compile(r"^[A-ZÄÖÜ]{1,3}-[A-Z]{1,2} \d{1,4}$"),
    # Since 1994: no I, O, Q or U.
    "IT": re.compile(r"^[A-HJ-NPR-TV-Z]{2} \d{3} [A-HJ-NPR-TV-Z]{2}$"),
    # Since 2020.
    "PT": re.compile(r"^[A-Z]{2}-\d{2}-[A-Z]{2}$"),
}

# Zulassungsbezirke (by the name of their city) and their Unterscheidungszeichen, the first part
# of a German plate. A holder is registered in the district of the city they live in.
DE_DISTRICTS = {
    "Augsburg": "A",
    "Berlin": "B",
    "Bielefeld": "BI",
    "Bochum": "BO",
    "Bonn": "BN",
    "Bremen": "HB",
    "Dortmund": "DO",
    "Dresden": "DD",
    "Duisburg": "DU",
    "Düsseldorf": "D",
    "Erfurt": "EF",
    "Essen": "E",
    "Frankfurt am Main": "F",
    "Freiburg im Breisgau": "FR",
    "Hamburg": "HH",
    "Hannover": "H",
    "Heidelberg": "HD",
    "Ingolstadt": "IN",
    "Karlsruhe": "KA",
    "Kiel": "KI",
    "Köln": "K",
    "Leipzig": "L",
    "Magdeburg": "MD",
    "Mainz": "MZ",
    "Mannheim": "MA",
    "München": "M",
    "Münster": "MS",
    "Nürnberg": "N",
    "Potsdam": "P",
    "Regensburg": "R",
    "Rostock": "HRO",
    "Saarbrücken": "SB",
    "Stuttgart": "S",
    "Ulm": "UL",
    "Wiesbaden": "WI",
    "Wuppertal": "W",
    "Würzburg": "WÜ",
}

VIN_FORMAT = r"^[A-HJ-NPR-Z0-9]{17}$"


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


# --- Spain: DGT ---------------------------------------------------------------------------


class DgtMatriculacion(_Wire):
    """Solicitud de matriculación presentada por el concesionario."""

    bastidor: str = Field(pattern=VIN_FORMAT, description="Número de bastidor (VIN)")
    marca: str = Field(min_length=1)
    titular_nif: str = Field(min_length=9, max_length=9, description="DNI/NIE del titular")
    titular_nombre: str = Field(min_length=1)
    titular_apellidos: str = Field(min_length=1)
    domicilio: str = Field(min_length=3, description="Vía y número")
    codigo_postal: str = Field(pattern=r"^\d{5}$")
    municipio: str = Field(min_length=1)
    provincia: str = Field(pattern=r"^\d{2}$", description="Código INE de la provincia")
    concesionario: str = Field(min_length=1, description="Código del concesionario")


class DgtMatricula(_Wire):
    matricula: str
    numero_expediente: str
    fecha_matriculacion: date


class DgtRechazo(_Wire):
    codigo: str
    motivo: str
    campo: str | None = None


# --- France: SIV --------------------------------------------------------------------------


class SivDemande(_Wire):
    """Demande d'immatriculation déposée par le professionnel habilité."""

    vin: str = Field(pattern=VIN_FORMAT)
    marque: str = Field(min_length=1)
    genre_national: str = Field(default="VP", description="VP: voiture particulière")
    titulaire_nom: str = Field(min_length=1)
    titulaire_prenom: str = Field(min_length=1)
    titulaire_nir: str = Field(min_length=13, max_length=15)
    adresse: str = Field(min_length=3)
    code_postal: str = Field(pattern=r"^\d{5}$")
    commune: str = Field(min_length=1)
    professionnel_habilite: str = Field(min_length=1)


class SivCertificat(_Wire):
    numero_immatriculation: str
    numero_dossier: str
    date_immatriculation: date


class SivRefus(_Wire):
    code_erreur: str
    motif: str
    champ: str | None = None


# --- Germany: Zulassungsstelle ------------------------------------------------------------


class Halter(_Wire):
    vorname: str = Field(alias="Vorname", min_length=1)
    nachname: str = Field(alias="Nachname", min_length=1)
    strasse: str = Field(alias="Straße", min_length=3)
    plz: str = Field(alias="PLZ", pattern=r"^\d{5}$")
    ort: str = Field(alias="Ort", min_length=1)


class Zulassungsantrag(_Wire):
    """Antrag auf Zulassung eines Neufahrzeugs, gestellt vom Händler."""

    fin: str = Field(alias="FIN", pattern=VIN_FORMAT, description="Fahrzeug-Identifizierungsnummer")
    hersteller: str = Field(alias="Hersteller", min_length=1)
    halter: Halter = Field(alias="Halter")
    steuer_idnr: str = Field(alias="Steuer-IdNr", pattern=r"^\d{11}$")
    zulassungsbezirk: str = Field(alias="Zulassungsbezirk", min_length=1)
    haendler: str = Field(alias="Händler", min_length=1)


class Zulassung(_Wire):
    kennzeichen: str = Field(alias="Kennzeichen")
    vorgangsnummer: str = Field(alias="Vorgangsnummer")
    zulassungsdatum: date = Field(alias="Zulassungsdatum")


class Ablehnung(_Wire):
    fehlercode: str = Field(alias="Fehlercode")
    ablehnungsgrund: str = Field(alias="Ablehnungsgrund")
    feld: str | None = Field(default=None, alias="Feld")


# --- Italy: Motorizzazione / PRA ----------------------------------------------------------


class PraImmatricolazione(_Wire):
    """Richiesta di immatricolazione e iscrizione al PRA presentata dal concessionario."""

    telaio: str = Field(pattern=VIN_FORMAT, description="Numero di telaio (VIN)")
    marca: str = Field(min_length=1)
    codice_fiscale: str = Field(pattern=r"^[A-Z0-9]{16}$")
    cognome: str = Field(min_length=1)
    nome: str = Field(min_length=1)
    indirizzo: str = Field(min_length=3)
    cap: str = Field(pattern=r"^\d{5}$")
    comune: str = Field(min_length=1)
    concessionario: str = Field(min_length=1)


class PraTarga(_Wire):
    targa: str
    numero_pratica: str
    data_immatricolazione: date


class PraEsitoNegativo(_Wire):
    esito: str = "respinta"
    codice: str
    motivo: str
    campo: str | None = None


# --- Portugal: IMT ------------------------------------------------------------------------


class ImtPedido(_Wire):
    """Pedido de atribuição de matrícula apresentado pelo stand."""

    quadro: str = Field(pattern=VIN_FORMAT, description="Número de quadro (VIN)")
    marca: str = Field(min_length=1)
    nif: str = Field(pattern=r"^\d{9}$")
    nome: str = Field(min_length=1, description="Nomes próprios")
    apelido: str = Field(min_length=1)
    morada: str = Field(min_length=3)
    codigo_postal: str = Field(pattern=r"^\d{4}-\d{3}$")
    localidade: str = Field(min_length=1)
    entidade: str = Field(min_length=1, description="Código do stand")


class ImtMatricula(_Wire):
    matricula: str
    numero_processo: str
    data_matricula: date


class ImtRecusa(_Wire):
    codigo_erro: str
    motivo: str
    campo: str | None = None


REQUESTS: dict[str, type[_Wire]] = {
    "ES": DgtMatriculacion,
    "FR": SivDemande,
    "DE": Zulassungsantrag,
    "IT": PraImmatricolazione,
    "PT": ImtPedido,
}


# The car's resource's sub-paths for a change of holder and a deregistration, per country.
HOLDER_CHANGE = {
    "ES": "cambio-titular",
    "FR": "changement-titulaire",
    "DE": "halterwechsel",
    "IT": "passaggio-proprieta",
    "PT": "registo-propriedade",
}
DEREGISTRATION = {
    "ES": "baja-definitiva",
    "FR": "destruction",
    "DE": "ausserbetriebsetzung",
    "IT": "radiazione",
    "PT": "cancelamento",
}


def holder_change_path(country: str, vin: str) -> str:
    return f"{PATHS[country]}/{vin}/{HOLDER_CHANGE[country]}"


def deregistration_path(country: str, vin: str) -> str:
    return f"{PATHS[country]}/{vin}/{DEREGISTRATION[country]}"


class Deregistration(_Wire):
    """A car's registration closed for good: it was scrapped at an authorised facility."""

    certificate_number: str = Field(
        min_length=1, max_length=40, description="Certificate of destruction"
    )
    reason: str = Field(min_length=1, max_length=300)


class SimRejectNext(BaseModel):
    """Simulator control: refuse the next request to `country` with this reason."""

    country: str = Field(pattern=r"^(ES|FR|DE|IT|PT)$")
    reason: str = Field(min_length=1, max_length=300)
    field: str | None = Field(default=None, max_length=60)


class SimOutage(BaseModel):
    """Simulator control: every registry answers 503 while `down` is true."""

    down: bool
