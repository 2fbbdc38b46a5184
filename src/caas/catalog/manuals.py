"""Owner's manuals: a PDF per platform model and language, generated from the catalog.

The manual is built from what the catalog says about the model (description, maintenance plan,
the options it supports) plus the fixed chapters every owner needs (the phone key, options over
the air, energy, safety). The output is deterministic: the same catalog gives the same bytes,
so a manual can be cached, compared and served with a stable ETag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from caas.catalog.models import Feature, Platform

MANUAL_LANGUAGES = ("en", "es")
FALLBACK_LANGUAGE = "en"
# Every manual carries this date: the bytes depend on the catalog only, never on the clock.
MANUAL_DATE = datetime(2026, 1, 1, tzinfo=UTC)
SERVICES_LISTED = 6


@dataclass(frozen=True)
class ManualOption:
    code: str
    name: str
    description: str
    category: str
    needs_hardware: bool


@dataclass(frozen=True)
class ManualModel:
    """What a manual is written from: the model as the catalog describes it."""

    code: str
    name: str
    description: str
    service_every_km: int
    service_every_months: int
    software_version: str
    options: tuple[ManualOption, ...]

    @classmethod
    def of(cls, platform: Platform, features: Sequence[Feature]) -> ManualModel:
        return cls(
            code=platform.code,
            name=platform.name,
            description=platform.description,
            service_every_km=platform.service_every_km,
            service_every_months=platform.service_every_months,
            software_version=platform.software_version,
            options=tuple(
                ManualOption(f.code, f.name, f.description, f.category, f.needs_hardware)
                for f in features
            ),
        )


def manual_language(language: str) -> str:
    return language if language in MANUAL_LANGUAGES else FALLBACK_LANGUAGE


def _km(value: int, language: str) -> str:
    separator = "." if language == "es" else ","
    return f"{value:,}".replace(",", separator)


# --- words per language ------------------------------------------------------------------

# What each known option does, per language; an option the manual does not know yet is
# described with the catalog's own name and description.
_OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "power_boost": ("+50 % power", "50 % more power from the same motors."),
        "driver_assist": (
            "Driver assistance",
            "Adaptive cruise control, lane keeping and emergency braking.",
        ),
        "motorway_autopilot": (
            "Motorway autopilot",
            "Supervised automated driving on motorways: speed, steering, lane changes.",
        ),
        "winter_traction": (
            "Winter traction modes",
            "Traction and stability modes for snow, ice and loose surfaces.",
        ),
        "climate_plus": ("Four-zone climate", "Its own temperature for each of the four seats."),
        "entertainment": ("Rear-seat entertainment", "Screens and streaming for the rear seats."),
    },
    "es": {
        "power_boost": ("+50 % de potencia", "Un 50 % más de potencia con los mismos motores."),
        "driver_assist": (
            "Asistencia a la conducción",
            "Control de crucero adaptativo, mantenimiento de carril y frenada de emergencia.",
        ),
        "motorway_autopilot": (
            "Piloto automático en autopista",
            "Conducción automatizada supervisada en autopista: velocidad, dirección y "
            "cambios de carril.",
        ),
        "winter_traction": (
            "Modos de tracción de invierno",
            "Modos de tracción y estabilidad para nieve, hielo y firmes sueltos.",
        ),
        "climate_plus": (
            "Climatización de cuatro zonas",
            "Temperatura independiente para cada una de las cuatro plazas.",
        ),
        "entertainment": (
            "Entretenimiento trasero",
            "Pantallas y contenidos en streaming para las plazas traseras.",
        ),
    },
}
_CATEGORIES = {
    "en": {},
    "es": {
        "performance": "prestaciones",
        "safety": "seguridad",
        "autonomy": "conducción autónoma",
        "traction": "tracción",
        "comfort": "confort",
        "entertainment": "entretenimiento",
    },
}
_DESCRIPTIONS_ES = {
    "AURA": "Compacto eléctrico para la ciudad y mucho más.",
    "BOREAL": "SUV familiar con el hardware de tracción total ya instalado.",
    "CIRRUS": "Berlina de gran autonomía pensada para la autopista.",
}

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "{name} owner's manual",
        "header": "caas {name} - owner's manual",
        "page": "Page {page} of {pages}",
        "edition": "Edition {year} - software {software}",
        "toc": "Contents",
        "options_head": "Option|Category|Needs|What it does",
        "yes": "fitted hardware",
        "no": "software only",
        "plan_head": "Service|Due at|or after",
        "plan_row": "Service {n}|{km} km|{months} months",
    },
    "es": {
        "title": "Manual del propietario del {name}",
        "header": "caas {name} - manual del propietario",
        "page": "Página {page} de {pages}",
        "edition": "Edición {year} - software {software}",
        "toc": "Índice",
        "options_head": "Opción|Categoría|Requiere|Qué hace",
        "yes": "hardware instalado",
        "no": "solo software",
        "plan_head": "Revisión|A los|o a los",
        "plan_row": "Revisión {n}|{km} km|{months} meses",
    },
}


def _chapters(model: ManualModel, language: str) -> list[tuple[str, list[str]]]:
    """The manual's chapters: a title and its paragraphs (`- ` starts a bullet)."""
    km = _km(model.service_every_km, language)
    months = model.service_every_months
    if language == "es":
        description = _DESCRIPTIONS_ES.get(model.code, model.description)
        return [
            (
                f"1. Su {model.name}",
                [
                    description,
                    f"Su {model.name} es una plataforma base completa: funciona perfectamente tal "
                    "como se entrega. Además, admite un conjunto de opciones que usted puede "
                    "activar o desactivar cuando quiera, pagando solo por el uso: durante un "
                    "periodo, para toda la vida del coche, como suscripción, con calendario o "
                    "por consumo.",
                    "Este manual describe el uso diario del coche, su plan de mantenimiento, "
                    "las opciones que admite y las precauciones de seguridad. Guárdelo en su "
                    "expediente: siempre tendrá la versión vigente en su portal.",
                ],
            ),
            (
                "2. Primeros pasos: el teléfono es la llave",
                [
                    "En la entrega, el transportista vincula la aplicación de caas de su teléfono "
                    "con el coche. El coche solo arranca con un teléfono vinculado: guarde bien "
                    "su teléfono y active el bloqueo de pantalla.",
                    "- Para abrir, acérquese al coche con el teléfono desbloqueado.",
                    "- Para arrancar, pise el freno y pulse el botón de arranque.",
                    "- Puede autorizar a otros conductores desde la aplicación; puede retirar "
                    "ese permiso en cualquier momento.",
                    "- Si pierde el teléfono, bloquee el acceso desde el portal y vincule uno "
                    "nuevo en su concesionario.",
                ],
            ),
            (
                "3. Energía, carga y autonomía",
                [
                    "Cargue el coche con el cargador de su domicilio o en cualquier punto de "
                    "carga público compatible. Para cuidar la batería en el uso diario, limite "
                    "la carga al 80 % y reserve la carga completa para los viajes largos.",
                    "- El frío reduce la autonomía: programe la climatización mientras el coche "
                    "está enchufado.",
                    "- No utilice alargadores ni adaptadores no homologados.",
                    "- La pantalla del coche y la aplicación muestran la autonomía estimada "
                    "según su forma de conducir.",
                ],
            ),
            (
                "4. Opciones a la carta por el aire",
                [
                    "Las opciones se compran en su portal o en la aplicación. El coche recibe "
                    "una configuración firmada por el fabricante para su número de bastidor y "
                    "solo la aplica si la firma es válida y es más reciente que la que tiene.",
                    "La activación aparece en la aplicación y en la pantalla del coche. Si el "
                    "coche no puede aplicar una opción, no se le cobra y se le explica el "
                    "motivo. Cuando termina el periodo de una opción, el coche la desactiva por "
                    "sí mismo, aunque no tenga conexión.",
                    "Algunas opciones solo pueden comprarse mientras el coche sigue el plan de "
                    "mantenimiento oficial.",
                ],
            ),
            (
                "5. Plan de mantenimiento",
                [
                    f"Su {model.name} necesita una revisión cada {km} km o cada {months} meses, "
                    "lo que ocurra primero, contando desde la entrega o desde la última "
                    "revisión.",
                    "Cada revisión la registra el taller en su expediente, con la fecha, los "
                    "kilómetros y el trabajo realizado. El portal le indica cuándo toca la "
                    "siguiente y le avisa con antelación.",
                    "- Revisión de frenos, neumáticos, suspensión y dirección.",
                    "- Comprobación del sistema de alta tensión y de la batería.",
                    "- Cambio del filtro del habitáculo y revisión de la climatización.",
                    "- Actualización del software del coche si hay una versión pendiente.",
                ],
            ),
            (
                "6. Seguridad",
                [
                    "- Las ayudas a la conducción no sustituyen al conductor: mantenga siempre "
                    "las manos en el volante y la atención en la carretera.",
                    "- El piloto automático en autopista solo funciona en autopistas "
                    "señalizadas y con buena visibilidad; el coche le pedirá retomar el control.",
                    "- No manipule los componentes de alta tensión (cables naranjas).",
                    "- Ante un accidente, el coche avisa a los servicios de emergencia y "
                    "desconecta la alta tensión.",
                    "- Lleve a los niños en sistemas de retención homologados y desactive el "
                    "airbag del acompañante si instala una silla a contramarcha.",
                ],
            ),
            (
                "7. Garantía, datos y contacto",
                [
                    "La garantía cubre la plataforma base y el hardware instalado durante el "
                    "periodo de servicio contratado. Usamos los datos de uso del coche solo con "
                    "su consentimiento y para los fines que usted acepte en el portal.",
                    "Para cualquier consulta, diríjase a su concesionario o escríbanos desde "
                    "su portal.",
                ],
            ),
        ]
    return [
        (
            f"1. Your {model.name}",
            [
                model.description,
                f"Your {model.name} is a complete base platform: it is fully operational as "
                "delivered. On top of it, it supports a set of options you can switch on and off "
                "whenever you like, paying only for use: for a time window, for the car's whole "
                "life, as a subscription, on a schedule or metered.",
                "This manual covers everyday use, the maintenance plan, the options your car "
                "supports and the safety precautions. The current edition is always in your "
                "file in the portal.",
            ],
        ),
        (
            "2. Getting started: your phone is the key",
            [
                "At delivery, the driver pairs the caas app on your phone with the car. The car "
                "starts only with a paired phone: look after your phone and keep its screen "
                "lock on.",
                "- To unlock, walk up to the car with your phone unlocked.",
                "- To start, press the brake pedal and the start button.",
                "- You can authorise other drivers from the app, and withdraw that permission "
                "at any time.",
                "- If you lose your phone, block access from the portal and pair a new one at "
                "your dealership.",
            ],
        ),
        (
            "3. Energy, charging and range",
            [
                "Charge the car with your home charger or at any compatible public charging "
                "point. To look after the battery in daily use, limit charging to 80 % and keep "
                "full charges for long trips.",
                "- Cold weather reduces range: pre-condition the cabin while the car is plugged "
                "in.",
                "- Do not use extension leads or unapproved adapters.",
                "- The car's screen and the app show the range estimated from your driving.",
            ],
        ),
        (
            "4. Options on demand, over the air",
            [
                "Options are bought in your portal or in the app. The car receives a "
                "configuration signed by the maker for its VIN and applies it only if the "
                "signature is valid and newer than the one it has.",
                "The activation shows in the app and on the car's screen. If the car cannot "
                "apply an option you are not charged, and you are told why. When an option's "
                "window ends, the car switches it off by itself, even when offline.",
                "Some options can only be bought while the car follows the official "
                "maintenance plan.",
            ],
        ),
        (
            "5. Maintenance plan",
            [
                f"Your {model.name} needs a service every {km} km or every {months} months, "
                "whichever comes first, counted from delivery or from the last service.",
                "The workshop records every service in your file with its date, odometer "
                "reading and the work done. The portal shows when the next one is due and "
                "reminds you ahead of time.",
                "- Brakes, tyres, suspension and steering inspected.",
                "- High-voltage system and battery health checked.",
                "- Cabin filter replaced and climate system checked.",
                "- The car's software updated if a newer release is pending.",
            ],
        ),
        (
            "6. Safety",
            [
                "- Driver assistance does not replace the driver: keep your hands on the wheel "
                "and your attention on the road.",
                "- Motorway autopilot works only on signed motorways in good visibility; the car "
                "will ask you to take over.",
                "- Never tamper with high-voltage components (orange cables).",
                "- After a crash, the car calls the emergency services and disconnects the high "
                "voltage.",
                "- Carry children in approved restraints and switch off the passenger airbag "
                "when fitting a rear-facing seat.",
            ],
        ),
        (
            "7. Warranty, data and contact",
            [
                "The warranty covers the base platform and the fitted hardware for the service "
                "period of your plan. We use your car's usage data only with your consent and "
                "for the purposes you accept in the portal.",
                "For any question, ask your dealership or write to us from your portal.",
            ],
        ),
    ]


# --- the PDF ------------------------------------------------------------------------------


class _Manual(FPDF):
    def __init__(self, header_text: str, page_text: str) -> None:
        super().__init__(format="A4")
        self.header_text = header_text
        self.page_text = page_text

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font("helvetica", "I", 8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 8, self.header_text, align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(4)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", "", 8)
        self.set_text_color(110, 110, 110)
        text = self.page_text.format(page=self.page_no(), pages="{nb}")
        self.cell(0, 10, text, align="C")


@lru_cache(maxsize=32)
def owner_manual_pdf(model: ManualModel, language: str) -> bytes:
    """The owner's manual of `model` in `language` (English when not written in it).

    Kept in memory once made: the same catalog always gives the same bytes anyway.
    """
    return render_owner_manual(model, manual_language(language))


def render_owner_manual(model: ManualModel, language: str) -> bytes:
    """Typeset the manual (a few hundred milliseconds; `owner_manual_pdf` caches it)."""
    language = manual_language(language)
    words = _WORDS[language]
    pdf = _Manual(words["header"].format(name=model.name), words["page"])
    pdf.core_fonts_encoding = "windows-1252"
    pdf.set_creation_date(MANUAL_DATE)
    pdf.set_title(words["title"].format(name=model.name))
    pdf.set_author("caas")
    pdf.set_lang(language)
    pdf.set_auto_page_break(auto=True, margin=20)
    chapters = _chapters(model, language)

    # Cover and contents.
    pdf.add_page()
    pdf.set_font("helvetica", "B", 28)
    pdf.ln(50)
    pdf.multi_cell(0, 14, words["title"].format(name=model.name), align="C")
    pdf.set_font("helvetica", "", 12)
    pdf.ln(6)
    edition = words["edition"].format(year=MANUAL_DATE.year, software=model.software_version)
    pdf.cell(0, 8, edition, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(30)
    pdf.set_font("helvetica", "B", 14)
    pdf.cell(0, 10, words["toc"], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("helvetica", "", 12)
    for title, _ in chapters:
        pdf.cell(0, 8, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    for number, (title, paragraphs) in enumerate(chapters, start=1):
        pdf.add_page()
        pdf.set_text_color(0, 0, 0)
        pdf.set_font("helvetica", "B", 18)
        pdf.multi_cell(0, 10, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(3)
        pdf.set_font("helvetica", "", 11)
        for paragraph in paragraphs:
            if paragraph.startswith("- "):
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(0, 6, "\u2022 " + paragraph[2:], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            else:
                pdf.multi_cell(0, 6, paragraph, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                pdf.ln(2)
        if number == 4:
            _options_table(pdf, model, language)
        if number == 5:
            _plan_table(pdf, model, language)
    return bytes(pdf.output())


def _options_table(pdf: FPDF, model: ManualModel, language: str) -> None:
    words = _WORDS[language]
    categories = _CATEGORIES[language]
    pdf.ln(4)
    pdf.set_font("helvetica", "", 10)
    with pdf.table(col_widths=(38, 26, 30, 76), text_align="LEFT") as table:
        table.row(words["options_head"].split("|"))
        for option in model.options:
            name, text = _OPTIONS[language].get(option.code, (option.name, option.description))
            table.row(
                [
                    name,
                    categories.get(option.category, option.category),
                    words["yes"] if option.needs_hardware else words["no"],
                    text,
                ]
            )


def _plan_table(pdf: FPDF, model: ManualModel, language: str) -> None:
    words = _WORDS[language]
    pdf.ln(4)
    pdf.set_font("helvetica", "", 10)
    with pdf.table(col_widths=(40, 50, 50), text_align="LEFT") as table:
        table.row(words["plan_head"].split("|"))
        for n in range(1, SERVICES_LISTED + 1):
            row = words["plan_row"].format(
                n=n,
                km=_km(model.service_every_km * n, language),
                months=model.service_every_months * n,
            )
            table.row(row.split("|"))


def manual_etag(pdf: bytes) -> str:
    return '"' + hashlib.sha256(pdf).hexdigest()[:32] + '"'
