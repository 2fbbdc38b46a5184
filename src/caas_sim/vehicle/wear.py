"""What a simulated car uses up and wears out as it is driven and ages, read by its sensors.

The car reports these levels in its telemetry (`Telemetry.extra`) under COVESA VSS names where
VSS has the signal; VSS has no tyre tread depth and no 12 V battery state of health, so those
two names follow its style and say so below. Fluids and parts go down per km driven, the
service counters per km and per day, the 12 V battery's health per day. A workshop's service
restores what it did on the car (`serviced`): the platform never tells a car its levels, the
car's sensors read what the workshop filled in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal

DISTANCE_TO_SERVICE: Final = "Vehicle.Service.DistanceToService"  # VSS, km
TIME_TO_SERVICE: Final = "Vehicle.Service.TimeToService"  # VSS, s
WASHER_FLUID: Final = "Vehicle.Body.Windshield.Front.WasherFluid.Level"  # VSS, %
ADBLUE: Final = "Vehicle.Powertrain.CombustionEngine.DieselExhaustFluid.Level"  # VSS, %
TYRE_TREAD: Final = "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.TreadDepth"  # NOT VSS, mm
BRAKE_PAD_WEAR: Final = "Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.PadWear"  # VSS, % worn
BATTERY_12V_HEALTH: Final = "Vehicle.LowVoltageBattery.StateOfHealth"  # NOT VSS, %

Need = Literal["service", "washer_fluid", "adblue", "tyre_tread", "brake_pads", "battery_12v"]

SECONDS_PER_DAY: Final = 86_400.0


@dataclass(frozen=True)
class WearRates:
    """How fast a car uses things up. The defaults make a demo car driven at a few thousand
    km/h of simulated speed cross every mark within minutes, yet stay plausible per km."""

    service_every_km: float = 30_000.0
    service_every_days: float = 365.0
    washer_fluid_percent_per_km: float = 0.02  # a 4 l tank lasts ~5,000 km
    adblue_percent_per_km: float = 0.006  # ~16,000 km per tank
    tread_new_mm: float = 8.0
    tread_mm_per_km: float = 0.00012  # 8 -> 1.6 mm in ~53,000 km
    pad_wear_percent_per_km: float = 0.0025  # worn out at ~40,000 km
    battery_health_percent_per_day: float = 0.03  # ~11 % a year


@dataclass
class Consumables:
    """The car's levels now, in the units of their signals."""

    distance_to_service_km: float
    time_to_service_s: float
    washer_fluid_percent: float = 100.0
    adblue_percent: float = 100.0
    tread_mm: float = 8.0
    pad_wear_percent: float = 0.0
    battery_health_percent: float = 100.0

    @classmethod
    def new(cls, rates: WearRates) -> Consumables:
        """A car as it leaves the factory (or the workshop after everything was done)."""
        return cls(
            distance_to_service_km=rates.service_every_km,
            time_to_service_s=rates.service_every_days * SECONDS_PER_DAY,
            tread_mm=rates.tread_new_mm,
        )

    def drive(self, km: float, rates: WearRates) -> None:
        """`km` more driven: fluids used, tread and pads worn, the service distance counted."""
        if km < 0:
            raise ValueError("distance cannot be negative")
        self.distance_to_service_km -= km  # negative: overdue, as the car's display says
        self.washer_fluid_percent = max(
            0.0, self.washer_fluid_percent - km * rates.washer_fluid_percent_per_km
        )
        self.adblue_percent = max(0.0, self.adblue_percent - km * rates.adblue_percent_per_km)
        self.tread_mm = max(0.0, self.tread_mm - km * rates.tread_mm_per_km)
        self.pad_wear_percent = min(
            100.0, self.pad_wear_percent + km * rates.pad_wear_percent_per_km
        )

    def age(self, seconds: float, rates: WearRates) -> None:
        """`seconds` of the car's life passed: the service date comes nearer, the battery ages."""
        if seconds <= 0:
            return
        self.time_to_service_s -= seconds
        self.battery_health_percent = max(
            0.0,
            self.battery_health_percent
            - seconds / SECONDS_PER_DAY * rates.battery_health_percent_per_day,
        )

    def serviced(self, needs: set[Need], rates: WearRates) -> None:
        """The workshop did `needs` on the car: what they cover is new or full again."""
        fresh = Consumables.new(rates)
        covered: dict[Need, tuple[str, ...]] = {
            "service": ("distance_to_service_km", "time_to_service_s"),
            "washer_fluid": ("washer_fluid_percent",),
            "adblue": ("adblue_percent",),
            "tyre_tread": ("tread_mm",),
            "brake_pads": ("pad_wear_percent",),
            "battery_12v": ("battery_health_percent",),
        }
        for need in needs:
            for name in covered[need]:
                setattr(self, name, getattr(fresh, name))

    def readings(self, *, diesel: bool = True) -> dict[str, float]:
        """The levels by signal name, as the car reports them (AdBlue only on a diesel)."""
        values = {
            DISTANCE_TO_SERVICE: round(self.distance_to_service_km, 1),
            TIME_TO_SERVICE: round(self.time_to_service_s),
            WASHER_FLUID: round(self.washer_fluid_percent, 1),
            TYRE_TREAD: round(self.tread_mm, 2),
            BRAKE_PAD_WEAR: round(self.pad_wear_percent, 1),
            BATTERY_12V_HEALTH: round(self.battery_health_percent, 1),
        }
        if diesel:
            values[ADBLUE] = round(self.adblue_percent, 1)
        return values

    def set(self, **levels: float) -> None:
        """Set levels by attribute name (the simulator's knob: a leak, a customer's refill)."""
        known = {field.name for field in fields(self)}
        for name, value in levels.items():
            if name not in known:
                raise ValueError(f"no level {name!r}")
            setattr(self, name, float(value))


NEEDS: Final[tuple[Need, ...]] = (
    "service",
    "washer_fluid",
    "adblue",
    "tyre_tread",
    "brake_pads",
    "battery_12v",
)
