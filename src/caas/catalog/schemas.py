"""Shapes of the catalog: platform models, their options, prices and maintenance plan; the
operator's features."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from caas.catalog import rules
from caas.core.schemas import MoneyRead


class PriceRead(BaseModel):
    """A net price in one country, with that country's VAT."""

    country: str = Field(description="ISO 3166-1 alpha-2", examples=["ES"])
    net: MoneyRead = Field(description="Price without VAT, in the country's currency")
    vat_rate_percent: str = Field(description="The country's VAT rate", examples=["21.00"])
    vat: MoneyRead = Field(description="VAT on the net price, rounded half up")
    total: MoneyRead = Field(description="Net plus the country's VAT")


class PlatformPriceRead(PriceRead):
    """The base price of a platform model in one country."""

    maintenance_net: MoneyRead = Field(
        description="Scheduled maintenance for the whole service period, net, if included"
    )


class OptionRead(BaseModel):
    """An option a platform supports."""

    code: str = Field(description="Stable code of the option", examples=["driver_assist"])
    name: str = Field(description="Name shown to people", examples=["Driver assistance"])
    description: str = Field(
        description="What the option does, for the customer",
        examples=["Driver assistance for the Aura."],
    )
    category: str = Field(
        description="Kind of option, e.g. performance, safety, autonomy, traction, comfort",
        examples=["safety"],
    )
    needs_hardware: bool = Field(description="Uses hardware fitted at the factory")
    plan_prices: list[PriceRead] = Field(
        description="Price of including it for the whole service period, per country"
    )


class MaintenancePlanRead(BaseModel):
    """How often a platform model is serviced."""

    every_km: int = Field(description="A service every this many kilometres...", examples=[20000])
    every_months: int = Field(
        description="...or every this many months, whichever comes first", examples=[12]
    )


class PlatformRead(BaseModel):
    """A platform model of the catalog: its options, maintenance plan and prices."""

    code: str = Field(description="Stable code of the model", examples=["AURA"])
    name: str = Field(description="Name shown to people", examples=["Aura"])
    description: str = Field(
        description="The model in a sentence or two, for the customer",
        examples=["Compact electric hatchback for the city and beyond."],
    )
    software_version: str = Field(
        description="Software the factory installs on new cars", examples=["7.2.0"]
    )
    maintenance_plan: MaintenancePlanRead = Field(description="How often the model is serviced")
    prices: list[PlatformPriceRead] = Field(description="Base price per country")
    options: list[OptionRead] = Field(description="The options this platform supports")
    manual_url: str = Field(
        description="The owner's manual (PDF; needs a login); add `?lang=es` for Spanish",
        examples=["/api/v1/platforms/AURA/manual.pdf"],
    )


# --- the operator's catalog: features --------------------------------------------------------

FeatureName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
FeatureDescription = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
]
FeatureCode = Annotated[str, StringConstraints(pattern=rules.FEATURE_CODE)]
CountryCodeText = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
ParameterValue = int | bool | str

_NAMES_EXAMPLE = {"en": "Motorway autopilot", "es": "Piloto automático en autopista"}
_DESCRIPTIONS_EXAMPLE = {
    "en": "Supervised automated driving on motorways.",
    "es": "Conducción automatizada supervisada en autopista.",
}


def _with_english(texts: dict[rules.Language, str] | None) -> dict[rules.Language, str] | None:
    if texts is not None and rules.REQUIRED_LANGUAGE not in texts:
        raise ValueError("write it in English (`en`) at least: the fallback for every reader")
    return texts


def _unique(codes: list[str] | None) -> list[str] | None:
    if codes is not None and len(set(codes)) != len(codes):
        raise ValueError("each code once")
    return codes


def _software(value: str | None) -> str | None:
    if value is not None and not rules.is_software_version(value):
        raise ValueError("a software version is dotted numbers, like 7.3.0")
    return value


class FeatureFields(BaseModel):
    """What the operator says about a feature (shared by create and update)."""

    model_config = ConfigDict(extra="forbid")

    names: dict[rules.Language, FeatureName] | None = Field(
        default=None,
        description="Name per language (es, en, fr, de, it, pt); English is required",
        examples=[_NAMES_EXAMPLE],
    )
    descriptions: dict[rules.Language, FeatureDescription] | None = Field(
        default=None,
        description="What it does, for the customer, per language; English is required",
        examples=[_DESCRIPTIONS_EXAMPLE],
    )
    category: rules.Category | None = Field(
        default=None,
        description="Kind of feature; performance, safety, autonomy and traction affect "
        "driving (the car applies them parked)",
        examples=["autonomy"],
    )
    min_software_version: str | None = Field(
        default=None,
        max_length=20,
        description="The oldest car software that runs it (dotted numbers); null: any",
        examples=["7.3.0"],
    )
    requires: list[FeatureCode] | None = Field(
        default=None,
        max_length=20,
        description="Codes of features of the same platform that must be on for this one",
        examples=[["driver_assist"]],
    )
    conflicts: list[FeatureCode] | None = Field(
        default=None,
        max_length=20,
        description="Codes of features of the same platform that cannot be on beside it",
        examples=[[]],
    )
    countries: list[CountryCodeText] | None = Field(
        default=None,
        max_length=30,
        description="Where it may be sold (ISO 3166-1 alpha-2); null: every country",
        examples=[["ES", "FR", "DE", "IT"]],
    )
    requires_maintenance: bool | None = Field(
        default=None,
        description="Only bought or renewed while the car follows the official maintenance plan",
    )
    parameters: dict[str, ParameterValue] | None = Field(
        default=None,
        description="Settings the car receives with it, e.g. the power boost's percent",
        examples=[{"percent": 50}],
    )

    _english_names = field_validator("names")(_with_english)
    _english_descriptions = field_validator("descriptions")(_with_english)
    _unique_requires = field_validator("requires", "conflicts", "countries")(_unique)
    _software_version = field_validator("min_software_version")(_software)


class FeatureCreate(FeatureFields):
    """A new feature of a platform."""

    code: FeatureCode = Field(
        description="Stable code: lower case, digits and underscores; unique on the platform",
        examples=["lane_change_assist"],
    )
    names: dict[rules.Language, FeatureName] = Field(
        description="Name per language (es, en, fr, de, it, pt); English is required",
        examples=[_NAMES_EXAMPLE],
    )
    descriptions: dict[rules.Language, FeatureDescription] = Field(
        description="What it does, for the customer, per language; English is required",
        examples=[_DESCRIPTIONS_EXAMPLE],
    )
    category: rules.Category = Field(
        description="Kind of feature; performance, safety, autonomy and traction affect "
        "driving (the car applies them parked)",
        examples=["autonomy"],
    )
    needs_hardware: bool = Field(
        default=False, description="Needs hardware fitted at the factory (else software only)"
    )


class FeatureUpdate(FeatureFields):
    """A change to a feature: only the fields sent change (`null` clears the minimum software
    and makes `countries` every country). `names`/`descriptions` replace the whole map.
    `active: false` withdraws it from sale (owned options run on), `true` reinstates it."""

    active: bool | None = Field(default=None, description="On sale (true) or withdrawn (false)")


class FeatureRead(BaseModel):
    """A feature of a platform as the catalog describes it."""

    id: int = Field(description="Database id", examples=[3])
    platform: str = Field(description="Code of its platform model", examples=["CIRRUS"])
    code: str = Field(description="Stable code", examples=["motorway_autopilot"])
    name: str = Field(description="Name in the reader's language", examples=["Motorway autopilot"])
    description: str = Field(description="What it does, in the reader's language")
    names: dict[str, str] = Field(description="Name per language")
    descriptions: dict[str, str] = Field(description="Description per language")
    category: str = Field(description="Kind of feature", examples=["autonomy"])
    needs_hardware: bool = Field(description="Needs hardware fitted at the factory")
    min_software_version: str | None = Field(
        description="The oldest car software that runs it; null: any", examples=["7.3.0"]
    )
    requires: list[str] = Field(description="Features that must be on for this one")
    conflicts: list[str] = Field(description="Features that cannot be on beside it")
    countries: list[str] | None = Field(description="Where it may be sold; null: everywhere")
    requires_maintenance: bool = Field(
        description="Only bought or renewed while the car follows the maintenance plan"
    )
    parameters: dict[str, Any] = Field(description="Settings the car receives with it")
    active: bool = Field(description="On sale (false: withdrawn)")
