"""Upkeep's demo and reference data: the parts catalog with prices per country, official
workshops with their hours, bays and stock, and the demo workshop user's workshop."""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.core.money import percent_of
from caas.upkeep.models import OpeningHours, Part, PartPrice, Workshop, WorkshopStaff, WorkshopStock

PARTS = [
    # code, kind, need, name, quantity per order, net EUR cents in Spain
    ("service_kit", "part", "service", "Service kit (oil, filters)", 1, 9_500),
    ("labour_service", "labour", "service", "Periodic service labour", 1, 12_000),
    ("washer_fluid", "part", "washer_fluid", "Washer fluid 5 l", 1, 900),
    ("labour_top_up", "labour", "washer_fluid", "Top-up labour", 1, 1_000),
    ("adblue", "part", "adblue", "AdBlue 10 l", 1, 1_800),
    ("labour_adblue", "labour", "adblue", "AdBlue top-up labour", 1, 1_000),
    ("tyre", "part", "tyre_tread", "Tyre 205/55 R16", 4, 8_900),
    ("labour_tyres", "labour", "tyre_tread", "Tyre fitting and balancing", 1, 6_000),
    ("brake_pads", "part", "brake_pads", "Brake pads, front axle", 1, 7_500),
    ("labour_brakes", "labour", "brake_pads", "Brake pad replacement labour", 1, 7_000),
    ("battery_12v", "part", "battery_12v", "12 V battery 60 Ah", 1, 14_000),
    ("labour_battery", "labour", "battery_12v", "12 V battery replacement labour", 1, 3_000),
]  # fmt: skip

WEEKDAY_HOURS = [(time(8, 0), time(13, 0)), (time(14, 0), time(18, 0))]

WORKSHOPS = [
    # code, name, country, city, address, postal code, lat e6, lon e6, timezone, bays
    ("TMAD1", "Taller Norte", "ES", "Madrid", "Calle de Bravo Murillo 300", "28020",
     40_458_000, -3_703_000, "Europe/Madrid", 2),
    ("TMAD2", "Taller Sur", "ES", "Madrid", "Avenida de Andalucía 40", "28041",
     40_370_000, -3_699_000, "Europe/Madrid", 1),
    ("TBCN1", "Taller Diagonal", "ES", "Barcelona", "Avinguda Diagonal 600", "08021",
     41_393_000, 2_140_000, "Europe/Madrid", 2),
    ("ALYS1", "Atelier Part-Dieu", "FR", "Lyon", "20 rue Garibaldi", "69003",
     45_760_000, 4_852_000, "Europe/Paris", 2),
    ("WMUC1", "Werkstatt Schwabing", "DE", "München", "Leopoldstraße 90", "80802",
     48_163_000, 11_586_000, "Europe/Berlin", 2),
    ("OMIL1", "Officina Porta Nuova", "IT", "Milano", "Via Melchiorre Gioia 20", "20124",
     45_485_000, 9_195_000, "Europe/Rome", 2),
    ("OOPO1", "Oficina Boavista", "PT", "Porto", "Avenida da Boavista 1200", "4100-113",
     41_158_000, -8_640_000, "Europe/Lisbon", 1),
]  # fmt: skip

STOCK_PER_PART = 20
# The demo workshop user works at the first workshop.
DEMO_WORKSHOP_USER = "workshop@caas.example"


def load_parts(session: Session, price_bp: dict[str, int], currencies: dict[str, str]) -> None:
    """The parts catalog and its prices in every country (Spain's scaled by `price_bp`)."""
    if session.scalars(select(Part.id).limit(1)).first() is not None:
        return
    for code, kind, need, name, quantity, spanish in PARTS:
        part = Part(code=code, kind=kind, need=need, name=name, quantity=quantity)
        session.add(part)
        session.flush()
        for country, bp in price_bp.items():
            session.add(
                PartPrice(
                    part_id=part.id,
                    country=country,
                    net_minor=percent_of(spanish, bp),
                    currency=currencies[country],
                )
            )
    session.flush()


def load_workshops(session: Session, *, now: datetime) -> list[Workshop]:
    """The official workshops, open Monday to Friday, with their stock; idempotent."""
    loaded: list[Workshop] = []
    parts = list(session.scalars(select(Part).where(Part.kind == "part")))
    for code, name, country, city, address, postal, lat, lon, zone, bays in WORKSHOPS:
        workshop = session.scalars(select(Workshop).where(Workshop.code == code)).first()
        if workshop is None:
            workshop = Workshop(
                code=code,
                name=name,
                country=country,
                city=city,
                address=address,
                postal_code=postal,
                latitude_e6=lat,
                longitude_e6=lon,
                timezone=zone,
                bays=bays,
                grid_minutes=30,
                slot_minutes={},
                email=f"{code.lower()}@caas.example",
                created_at=now,
            )
            session.add(workshop)
            session.flush()
            for weekday in range(5):
                for opens, closes in WEEKDAY_HOURS:
                    session.add(
                        OpeningHours(
                            workshop_id=workshop.id, weekday=weekday, opens=opens, closes=closes
                        )
                    )
            for part in parts:
                session.add(
                    WorkshopStock(workshop_id=workshop.id, part_id=part.id, on_hand=STOCK_PER_PART)
                )
        loaded.append(workshop)
    session.flush()
    user = session.scalars(select(User).where(User.email == DEMO_WORKSHOP_USER)).first()
    if user is not None and session.get(WorkshopStaff, user.id) is None:
        session.add(WorkshopStaff(user_id=user.id, workshop_id=loaded[0].id))
        session.flush()
    return loaded
