"""Demo data: five countries, dealerships with a salesperson each, three platforms with their
options and maintenance plans, an operator and a workshop user. Loaded once; safe to re-run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Dealership, Role, User
from caas.accounts.service import create_user
from caas.catalog.models import Country, Feature, FeaturePrice, Platform, PlatformPrice

DEMO_PASSWORD = "caas-demo-2026"

COUNTRIES = [
    # code, name, currency, language, VAT bp, deposit bp, invoice series
    ("ES", "España", "EUR", "es", 2100, 1000, "ES"),
    ("FR", "France", "EUR", "fr", 2000, 1000, "FR"),
    ("DE", "Deutschland", "EUR", "de", 1900, 1500, "DE"),
    ("IT", "Italia", "EUR", "it", 2200, 1000, "IT"),
    ("PT", "Portugal", "EUR", "pt", 2300, 1000, "PT"),
]

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


def load_reference_data(session: Session) -> None:
    """Countries, platforms, options and prices: what every deployment needs."""
    if session.get(Country, "ES") is not None:
        return
    for code, name, currency, language, vat, deposit, series in COUNTRIES:
        session.add(
            Country(
                code=code,
                name=name,
                currency=currency,
                language=language,
                vat_rate_bp=vat,
                deposit_share_bp=deposit,
                invoice_series=series,
            )
        )
    session.flush()
    features = {row[0]: row for row in FEATURES}
    for code, name, description, km, months, software, base, maintenance in PLATFORMS:
        platform = Platform(
            code=code,
            name=name,
            description=description,
            service_every_km=km,
            service_every_months=months,
            software_version=software,
        )
        session.add(platform)
        session.flush()
        for country in COUNTRY_PRICE_BP:
            session.add(
                PlatformPrice(
                    platform_id=platform.id,
                    country=country,
                    net_minor=_scaled(base, country),
                    maintenance_net_minor=_scaled(maintenance, country),
                )
            )
        for feature_code in PLATFORM_FEATURES[code]:
            _, feature_name, category, hardware, plan_net, parameters = features[feature_code]
            feature = Feature(
                platform_id=platform.id,
                code=feature_code,
                name=feature_name,
                description=f"{feature_name} for the {name}.",
                category=category,
                needs_hardware=hardware,
                parameters=parameters,
            )
            session.add(feature)
            session.flush()
            for country in COUNTRY_PRICE_BP:
                session.add(
                    FeaturePrice(
                        feature_id=feature.id,
                        country=country,
                        plan_net_minor=_scaled(plan_net, country),
                    )
                )
    session.flush()


def load_demo_data(session: Session, *, now: datetime) -> list[DemoLogin]:
    """Reference data plus dealerships and staff; returns the logins to print."""
    load_reference_data(session)
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
    session.flush()
    return logins
