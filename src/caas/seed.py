"""Demo data: five countries, dealerships with a salesperson each, three platforms with their
options (names in six languages, requirements, countries) and maintenance plans, the store's
offers for every option and country, an operator and a workshop user. Loaded once; safe to
re-run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from caas.accounts.models import Dealership, Role, User
from caas.accounts.service import create_user
from caas.catalog.models import Country, Feature, FeaturePrice, Platform, PlatformPrice, VatRate
from caas.store.models import Offer
from caas.store.offers import DEFAULT_APPLY_DEADLINE_SECONDS
from caas.store.rules import DEFAULT_REFUND_POLICY, DEFAULT_TRIAL, DURATIONS
from caas.upkeep import seed as upkeep_seed
from caas.upkeep import thresholds as upkeep_thresholds
from caas.upkeep.readings_models import UpkeepThreshold

DEMO_PASSWORD = "caas-demo-2026"
# When reference data loaded without a clock says it was created.
CATALOG_DATE = datetime(2026, 1, 1, tzinfo=UTC)

COUNTRIES = [
    # code, name, currency, language, VAT bp, deposit bp, invoice series
    ("ES", "España", "EUR", "es", 2100, 1000, "ES"),
    ("FR", "France", "EUR", "fr", 2000, 1000, "FR"),
    ("DE", "Deutschland", "EUR", "de", 1900, 1500, "DE"),
    ("IT", "Italia", "EUR", "it", 2200, 1000, "IT"),
    ("PT", "Portugal", "EUR", "pt", 2300, 1000, "PT"),
]
# The day the seeded VAT rates (the column above) are in force from.
VAT_VALID_FROM = date(2000, 1, 1)

DEALERSHIPS = [
    # code, name, country, city, address, salesperson e-mail, salesperson name, language
    ("MAD01", "caas Madrid Castellana", "ES", "Madrid", "Paseo de la Castellana 100, 28046 Madrid",
     "sales.madrid@caas.example", "Lucía Fernández", "es"),
    ("LYS01", "caas Lyon Part-Dieu", "FR", "Lyon", "12 rue Garibaldi, 69003 Lyon",
     "sales.lyon@caas.example", "Camille Moreau", "en"),
    ("MUC01", "caas München Schwabing", "DE", "München", "Leopoldstraße 50, 80802 München",
     "sales.muenchen@caas.example", "Jonas Becker", "en"),
    ("MIL01", "caas Milano Porta Nuova", "IT", "Milano", "Via Melchiorre Gioia 8, 20124 Milano",
     "sales.milano@caas.example", "Giulia Rossi", "en"),
    ("OPO01", "caas Porto Boavista", "PT", "Porto", "Avenida da Boavista 1000, 4100-113 Porto",
     "sales.porto@caas.example", "Tiago Sousa", "en"),
]  # fmt: skip

# code, name, description, km, months, software, base net per country (EUR cents), maintenance
PLATFORMS = [
    ("AURA", "Aura", "Compact electric hatchback for the city and beyond.", 20000, 12, "7.2.0",
     2_900_000, 180_000),
    ("BOREAL", "Boreal", "Family SUV with all-wheel drive hardware fitted.", 25000, 12, "7.2.0",
     4_400_000, 240_000),
    ("CIRRUS", "Cirrus", "Long-range saloon built for motorways.", 30000, 24, "7.3.1",
     5_200_000, 260_000),
]  # fmt: skip

# code, name, category, needs hardware, plan net (EUR cents), parameters
FEATURES = [
    ("power_boost", "+50 % power", "performance", False, 350_000, {"percent": 50}),
    ("driver_assist", "Driver assistance", "safety", True, 180_000, {}),
    ("motorway_autopilot", "Motorway autopilot", "autonomy", True, 450_000, {}),
    ("winter_traction", "Winter traction modes", "traction", False, 90_000, {}),
    ("climate_plus", "Four-zone climate", "comfort", True, 120_000, {}),
    ("entertainment", "Rear-seat entertainment", "entertainment", True, 80_000, {}),
]

# What the store says about each feature, per language (English is the catalog's `name`).
FEATURE_NAMES: dict[str, dict[str, str]] = {
    "power_boost": {
        "en": "+50 % power", "es": "+50 % de potencia", "fr": "+50 % de puissance",
        "de": "+50 % Leistung", "it": "+50 % di potenza", "pt": "+50 % de potência",
    },
    "driver_assist": {
        "en": "Driver assistance", "es": "Asistencia a la conducción",
        "fr": "Aide à la conduite", "de": "Fahrassistenz", "it": "Assistenza alla guida",
        "pt": "Assistência à condução",
    },
    "motorway_autopilot": {
        "en": "Motorway autopilot", "es": "Piloto automático en autopista",
        "fr": "Pilote automatique sur autoroute", "de": "Autobahn-Autopilot",
        "it": "Pilota automatico in autostrada", "pt": "Piloto automático em autoestrada",
    },
    "winter_traction": {
        "en": "Winter traction modes", "es": "Modos de tracción de invierno",
        "fr": "Modes de traction hivernale", "de": "Wintertraktionsmodi",
        "it": "Modalità di trazione invernale", "pt": "Modos de tração de inverno",
    },
    "climate_plus": {
        "en": "Four-zone climate", "es": "Climatización de cuatro zonas",
        "fr": "Climatisation quatre zones", "de": "Vier-Zonen-Klimaautomatik",
        "it": "Climatizzatore a quattro zone", "pt": "Climatização de quatro zonas",
    },
    "entertainment": {
        "en": "Rear-seat entertainment", "es": "Entretenimiento trasero",
        "fr": "Divertissement à l'arrière", "de": "Fond-Entertainment",
        "it": "Intrattenimento posteriore", "pt": "Entretenimento traseiro",
    },
}  # fmt: skip
FEATURE_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "power_boost": {
        "en": "50 % more power from the same motors, for as long as you choose.",
        "es": "Un 50 % más de potencia con los mismos motores, durante el tiempo que elija.",
        "fr": "50 % de puissance en plus avec les mêmes moteurs, aussi longtemps que vous voulez.",
        "de": "50 % mehr Leistung aus denselben Motoren, so lange Sie möchten.",
        "it": "Il 50 % di potenza in più dagli stessi motori, per tutto il tempo che vuole.",
        "pt": "Mais 50 % de potência dos mesmos motores, durante o tempo que escolher.",
    },
    "driver_assist": {
        "en": "Adaptive cruise control, lane keeping and emergency braking.",
        "es": "Control de crucero adaptativo, mantenimiento de carril y frenada de emergencia.",
        "fr": "Régulateur adaptatif, maintien dans la voie et freinage d'urgence.",
        "de": "Abstandsregeltempomat, Spurhalteassistent und Notbremsassistent.",
        "it": "Cruise control adattivo, mantenimento della corsia e frenata d'emergenza.",
        "pt": "Cruise control adaptativo, manutenção na faixa e travagem de emergência.",
    },
    "motorway_autopilot": {
        "en": "Supervised automated driving on motorways: speed, steering, lane changes. "
              "Needs driver assistance.",
        "es": "Conducción automatizada supervisada en autopista: velocidad, dirección y cambios "
              "de carril. Necesita la asistencia a la conducción.",
        "fr": "Conduite automatisée supervisée sur autoroute : vitesse, direction, changements "
              "de voie. Nécessite l'aide à la conduite.",
        "de": "Überwachtes automatisiertes Fahren auf der Autobahn: Tempo, Lenkung, "
              "Spurwechsel. Setzt die Fahrassistenz voraus.",
        "it": "Guida automatizzata supervisionata in autostrada: velocità, sterzo, cambi di "
              "corsia. Richiede l'assistenza alla guida.",
        "pt": "Condução automatizada supervisionada em autoestrada: velocidade, direção e "
              "mudanças de faixa. Requer a assistência à condução.",
    },
    "winter_traction": {
        "en": "Traction and stability modes for snow, ice and loose surfaces.",
        "es": "Modos de tracción y estabilidad para nieve, hielo y firmes sueltos.",
        "fr": "Modes de traction et de stabilité pour la neige, le verglas et les sols meubles.",
        "de": "Traktions- und Stabilitätsmodi für Schnee, Eis und losen Untergrund.",
        "it": "Modalità di trazione e stabilità per neve, ghiaccio e fondi sconnessi.",
        "pt": "Modos de tração e estabilidade para neve, gelo e pisos soltos.",
    },
    "climate_plus": {
        "en": "Its own temperature for each of the four seats.",
        "es": "Temperatura independiente para cada una de las cuatro plazas.",
        "fr": "Une température propre à chacune des quatre places.",
        "de": "Eine eigene Temperatur für jeden der vier Sitzplätze.",
        "it": "Una temperatura per ciascuno dei quattro posti.",
        "pt": "Uma temperatura própria para cada um dos quatro lugares.",
    },
    "entertainment": {
        "en": "Screens and streaming for the rear seats.",
        "es": "Pantallas y contenidos en streaming para las plazas traseras.",
        "fr": "Écrans et streaming pour les places arrière.",
        "de": "Bildschirme und Streaming für die Fondsitze.",
        "it": "Schermi e streaming per i posti posteriori.",
        "pt": "Ecrãs e streaming para os lugares traseiros.",
    },
}  # fmt: skip

# What the store needs beyond the plan: prerequisites, the oldest software that runs the
# feature, whether it can only be bought while the car follows the maintenance plan, and
# where it may be sold (None: every country). The motorway autopilot runs on the Cirrus's
# 7.3 software (the Cirrus leaves the factory with 7.3.1), needs driver assistance, and is
# not approved in Portugal; the two that stress the car most need it serviced on time.
FEATURE_RULES: dict[str, dict[str, Any]] = {
    "power_boost": {"requires_maintenance": True, "min_software_version": "7.2.0"},
    "motorway_autopilot": {
        "requires": ["driver_assist"],
        "min_software_version": "7.3.0",
        "requires_maintenance": True,
        "countries": ["ES", "FR", "DE", "IT"],
    },
}

# The store's prices in Spain, net EUR cents: windows of 1D, 7D, 1M, 1Y and 3Y, custom dates
# (per started day), subscriptions per month and per year, permanent; metered per unit. Other
# countries scale them like the plan prices (`_store_price`). Every feature has a free
# one-month trial.
OFFER_PRICES: dict[str, dict[str, int]] = {
    # code: window 1D, 7D, 1M, 1Y, 3Y / custom per day / subscription 1M, 1Y / permanent
    "power_boost": {"1D": 900, "7D": 2_900, "1M": 5_900, "1Y": 59_000, "3Y": 149_000,
                    "day": 800, "sub1M": 4_900, "sub1Y": 49_000, "permanent": 390_000},
    "driver_assist": {"1D": 500, "7D": 1_500, "1M": 3_500, "1Y": 35_000, "3Y": 89_000,
                      "day": 400, "sub1M": 2_900, "sub1Y": 29_000, "permanent": 199_000},
    "motorway_autopilot": {"1D": 1_500, "7D": 4_900, "1M": 12_900, "1Y": 129_000,
                           "3Y": 329_000, "day": 1_200, "sub1M": 9_900, "sub1Y": 99_000,
                           "permanent": 490_000},
    "winter_traction": {"1D": 300, "7D": 900, "1M": 1_900, "1Y": 14_900, "3Y": 39_000,
                        "day": 200, "sub1M": 1_200, "sub1Y": 11_900, "permanent": 99_000},
    "climate_plus": {"1D": 300, "7D": 900, "1M": 1_900, "1Y": 17_900, "3Y": 44_900,
                     "day": 200, "sub1M": 1_500, "sub1Y": 14_900, "permanent": 129_000},
    "entertainment": {"1D": 200, "7D": 700, "1M": 1_500, "1Y": 12_900, "3Y": 32_900,
                      "day": 200, "sub1M": 1_200, "sub1Y": 11_900, "permanent": 89_000},
}  # fmt: skip
# Pay per use: (unit, net EUR cents per unit in Spain).
METERED_PRICES: dict[str, tuple[str, int]] = {
    "power_boost": ("hour", 150),
    "motorway_autopilot": ("km", 5),
}

PLATFORM_FEATURES = {
    "AURA": ["power_boost", "driver_assist", "winter_traction", "entertainment"],
    "BOREAL": ["power_boost", "driver_assist", "winter_traction", "climate_plus", "entertainment"],
    "CIRRUS": ["power_boost", "driver_assist", "motorway_autopilot", "climate_plus"],
}

# Price differences between countries, in basis points of the Spanish price.
COUNTRY_PRICE_BP = {"ES": 10000, "FR": 10300, "DE": 10500, "IT": 10200, "PT": 9900}


@dataclass(frozen=True)
class DemoLogin:
    role: str
    email: str
    password: str
    note: str


STAFF = [
    ("operator@caas.example", "Olivia Operator", Role.OPERATOR, None),
    ("workshop@caas.example", "Walter Workshop", Role.WORKSHOP, None),
]


def _scaled(amount: int, country: str) -> int:
    # Whole euros: a price list has no stray cents.
    return amount * COUNTRY_PRICE_BP[country] // 10000 // 100 * 100


def _store_price(amount: int, country: str) -> int:
    """A Spanish store price scaled to `country`, rounded half up to whole euros from 100 EUR,
    to 10 cents from 1 EUR, to the cent below that (never to nothing)."""
    scaled = (amount * COUNTRY_PRICE_BP[country] + 5_000) // 10_000
    step = 100 if amount >= 10_000 else 10 if amount >= 100 else 1
    return max(step, (scaled + step // 2) // step * step)


def _offer_rows(feature_id: int, code: str, country: str, currency: str) -> list[dict[str, Any]]:
    """Every offer of one feature in one country, as rows for one bulk insert."""
    prices = OFFER_PRICES[code]
    shapes: list[tuple[str, str, int, str | None]] = [
        ("trial", DEFAULT_TRIAL, 0, None),
        *(("window", duration, prices[duration], None) for duration in DURATIONS["window"]),
        ("custom", "", prices["day"], None),
        ("subscription", "1M", prices["sub1M"], None),
        ("subscription", "1Y", prices["sub1Y"], None),
        ("permanent", "", prices["permanent"], None),
    ]
    if code in METERED_PRICES:
        unit, per_unit = METERED_PRICES[code]
        shapes.append(("metered", "", per_unit, unit))
    return [
        {
            "feature_id": feature_id,
            "country": country,
            "kind": kind,
            "duration": duration,
            "net_minor": _store_price(net, country) if net else 0,
            "currency": currency,
            "unit": unit,
            "refund_policy": DEFAULT_REFUND_POLICY[kind],
            "apply_deadline_seconds": DEFAULT_APPLY_DEADLINE_SECONDS,
            "active": True,
        }
        for kind, duration, net, unit in shapes
    ]


def load_reference_data(session: Session, *, now: datetime = CATALOG_DATE) -> None:
    """Countries, platforms, features, plan prices and the store's offers: what every
    deployment needs. Loaded in a few bulk inserts when missing; safe to re-run."""
    if session.get(Country, "ES") is None:
        _load_catalog(session)
    if session.scalars(select(Offer.id).limit(1)).first() is None:
        _load_offers(session, now=now)
    if session.scalars(select(UpkeepThreshold.id).limit(1)).first() is None:
        platforms = dict(session.execute(select(Platform.code, Platform.id)).all())
        upkeep_thresholds.load_defaults(session, platforms, now=now)
    upkeep_seed.load_parts(
        session, COUNTRY_PRICE_BP, {code: currency for code, _, currency, *_ in COUNTRIES}
    )
    session.flush()


def _sold_in(code: str, country: str) -> bool:
    countries = FEATURE_RULES.get(code, {}).get("countries")
    return countries is None or country in countries


def _load_catalog(session: Session) -> None:
    session.execute(
        insert(Country),
        [
            {
                "code": code,
                "name": name,
                "currency": currency,
                "language": language,
                "deposit_share_bp": deposit,
                "invoice_series": series,
            }
            for code, name, currency, language, _, deposit, series in COUNTRIES
        ],
    )
    session.execute(
        insert(VatRate),
        [
            {"country": code, "valid_from": VAT_VALID_FROM, "rate_bp": vat}
            for code, _, _, _, vat, _, _ in COUNTRIES
        ],
    )
    platform_ids = dict(
        session.execute(
            insert(Platform).returning(Platform.code, Platform.id, sort_by_parameter_order=True),
            [
                {
                    "code": code,
                    "name": name,
                    "description": description,
                    "service_every_km": km,
                    "service_every_months": months,
                    "software_version": software,
                }
                for code, name, description, km, months, software, _, _ in PLATFORMS
            ],
        ).all()
    )
    session.execute(
        insert(PlatformPrice),
        [
            {
                "platform_id": platform_ids[code],
                "country": country,
                "net_minor": _scaled(base, country),
                "maintenance_net_minor": _scaled(maintenance, country),
            }
            for code, _, _, _, _, _, base, maintenance in PLATFORMS
            for country in COUNTRY_PRICE_BP
        ],
    )
    features = {row[0]: row for row in FEATURES}
    feature_rows = []
    for platform_code, codes in PLATFORM_FEATURES.items():
        for code in codes:
            _, name, category, hardware, _, parameters = features[code]
            extra = FEATURE_RULES.get(code, {})
            feature_rows.append(
                {
                    "platform_id": platform_ids[platform_code],
                    "code": code,
                    "name": name,
                    "description": FEATURE_DESCRIPTIONS[code]["en"],
                    "category": category,
                    "needs_hardware": hardware,
                    "parameters": parameters,
                    "names": FEATURE_NAMES[code],
                    "descriptions": FEATURE_DESCRIPTIONS[code],
                    "min_software_version": extra.get("min_software_version"),
                    "requires": extra.get("requires", []),
                    "conflicts": extra.get("conflicts", []),
                    "countries": extra.get("countries"),
                    "requires_maintenance": extra.get("requires_maintenance", False),
                    "active": True,
                }
            )
    inserted = session.execute(
        insert(Feature).returning(Feature.id, Feature.code, sort_by_parameter_order=True),
        feature_rows,
    ).all()
    session.execute(
        insert(FeaturePrice),
        [
            {
                "feature_id": feature_id,
                "country": country,
                "plan_net_minor": _scaled(features[code][4], country),
            }
            for feature_id, code in inserted
            for country in COUNTRY_PRICE_BP
            if _sold_in(code, country)
        ],
    )


def _load_offers(session: Session, *, now: datetime) -> None:
    currencies = dict(session.execute(select(Country.code, Country.currency)).all())
    rows = [
        {**row, "created_at": now, "updated_at": now}
        for feature_id, code, countries in session.execute(
            select(Feature.id, Feature.code, Feature.countries)
        ).all()
        if code in OFFER_PRICES
        for country, currency in currencies.items()
        if countries is None or country in countries
        for row in _offer_rows(feature_id, code, country, currency)
    ]
    if rows:
        session.execute(insert(Offer), rows)


def load_demo_data(session: Session, *, now: datetime) -> list[DemoLogin]:
    """Reference data plus dealerships and staff; returns the logins to print."""
    load_reference_data(session, now=now)
    logins: list[DemoLogin] = []
    for code, name, country, city, address, email, person, language in DEALERSHIPS:
        dealership = session.scalars(select(Dealership).where(Dealership.code == code)).first()
        if dealership is None:
            dealership = Dealership(
                code=code,
                name=name,
                country=country,
                city=city,
                address=address,
                email=f"{code.lower()}@caas.example",
            )
            session.add(dealership)
            session.flush()
        if session.scalars(select(User).where(User.email == email)).first() is None:
            create_user(
                session,
                email=email,
                full_name=person,
                role=Role.DEALER,
                dealership_id=dealership.id,
                language=language,
                password=DEMO_PASSWORD,
                now=now,
            )
        logins.append(DemoLogin("dealer", email, DEMO_PASSWORD, f"salesperson, {name}"))
    for email, person, role, _ in STAFF:
        if session.scalars(select(User).where(User.email == email)).first() is None:
            create_user(
                session, email=email, full_name=person, role=role, password=DEMO_PASSWORD, now=now
            )
        logins.append(DemoLogin(role.value, email, DEMO_PASSWORD, person))
    upkeep_seed.load_workshops(session, now=now)
    session.flush()
    return logins
