"""Whether a car can get an option now, and why not: the one place the store page, the API and
the purchase itself ask.

`car_facts` reads once what the rules need of a car (fitted hardware, software, what it runs,
trials used, options owned for life, maintenance); `refusals_for` is the pure decision, so the
store page asks it for every feature and offer without another query; `refusals` is both in
one call. Every refusal has a `rules.Reason` code and a message in the customer's language
(`explain`), from the one table `MESSAGES`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.catalog import service as catalog
from caas.catalog.models import Feature
from caas.maintenance.service import follows_plan_now
from caas.ota.rules import software_at_least
from caas.ota.service import entitlements as car_windows
from caas.sales.models import Customer
from caas.store.models import Entitlement, Offer
from caas.store.rules import COUNTING_STATES, Reason, Refusal
from caas.vehicles.models import Vehicle
from caas.vehicles.twin import fitted_hardware

# Sources of an entitlement that the car keeps for the rest of its life.
LIFETIME_SOURCES: Final = frozenset({"permanent"})

# What the customer reads for each reason, per language. Placeholders: {name} (the option
# concerned: required, conflicting), {version} (the software needed), {running} (the car's
# software), {country}.
MESSAGES: Final[dict[Reason, dict[str, str]]] = {
    "not_delivered": {
        "en": "This car is not yours yet, or has not been delivered.",
        "es": "Este coche aún no es tuyo o no se ha entregado.",
        "fr": "Cette voiture n'est pas encore à vous ou n'a pas été livrée.",
        "de": "Dieses Auto gehört Ihnen noch nicht oder wurde noch nicht ausgeliefert.",
        "it": "Quest'auto non è ancora tua o non è stata consegnata.",
        "pt": "Este carro ainda não é seu ou não foi entregue.",
    },
    "withdrawn": {
        "en": "This option is no longer on sale.",
        "es": "Esta opción ya no está a la venta.",
        "fr": "Cette option n'est plus en vente.",
        "de": "Diese Option wird nicht mehr verkauft.",
        "it": "Questa opzione non è più in vendita.",
        "pt": "Esta opção já não está à venda.",
    },
    "hardware_missing": {
        "en": "Its hardware was not fitted to this car at the factory.",
        "es": "Este coche no salió de fábrica con el hardware que necesita.",
        "fr": "Son matériel n'a pas été monté sur cette voiture en usine.",
        "de": "Die nötige Hardware wurde in diesem Auto nicht verbaut.",
        "it": "L'hardware necessario non è stato montato in fabbrica su quest'auto.",
        "pt": "O hardware necessário não foi montado de fábrica neste carro.",
    },
    "software_too_old": {
        "en": "It needs software {version} or newer; the car runs {running}.",
        "es": "Necesita el software {version} o posterior; el coche tiene {running}.",
        "fr": "Il faut le logiciel {version} ou plus récent ; la voiture a {running}.",
        "de": "Es braucht Software {version} oder neuer; das Auto hat {running}.",
        "it": "Serve il software {version} o successivo; l'auto ha {running}.",
        "pt": "Precisa do software {version} ou mais recente; o carro tem {running}.",
    },
    "requires_feature": {
        "en": "It needs {name} active on the car (or in the same purchase).",
        "es": "Necesita {name} activa en el coche (o en la misma compra).",
        "fr": "Il faut {name} active sur la voiture (ou dans le même achat).",
        "de": "Es braucht {name} aktiv im Auto (oder im selben Kauf).",
        "it": "Serve {name} attiva sull'auto (o nello stesso acquisto).",
        "pt": "Precisa de {name} ativa no carro (ou na mesma compra).",
    },
    "conflicts_with": {
        "en": "It cannot run beside {name}.",
        "es": "No puede funcionar junto a {name}.",
        "fr": "Il ne peut pas fonctionner avec {name}.",
        "de": "Es kann nicht zusammen mit {name} laufen.",
        "it": "Non può funzionare insieme a {name}.",
        "pt": "Não pode funcionar juntamente com {name}.",
    },
    "not_sold_in_country": {
        "en": "This option is not sold in your country ({country}).",
        "es": "Esta opción no se vende en tu país ({country}).",
        "fr": "Cette option n'est pas vendue dans votre pays ({country}).",
        "de": "Diese Option wird in Ihrem Land ({country}) nicht verkauft.",
        "it": "Questa opzione non è in vendita nel tuo paese ({country}).",
        "pt": "Esta opção não é vendida no seu país ({country}).",
    },
    "maintenance_overdue": {
        "en": "The car's maintenance is overdue: book the service to buy this option.",
        "es": "El mantenimiento del coche está vencido: pide cita en el taller para comprarla.",
        "fr": "L'entretien de la voiture est en retard : faites-le pour acheter cette option.",
        "de": "Die Wartung des Autos ist überfällig: erst danach ist diese Option erhältlich.",
        "it": "La manutenzione dell'auto è scaduta: fai il tagliando per acquistarla.",
        "pt": "A manutenção do carro está em atraso: faça a revisão para a comprar.",
    },
    "trial_used": {
        "en": "This car has already had its free trial of this option.",
        "es": "Este coche ya disfrutó de la prueba gratuita de esta opción.",
        "fr": "Cette voiture a déjà eu son essai gratuit de cette option.",
        "de": "Dieses Auto hatte seine kostenlose Testphase dieser Option schon.",
        "it": "Quest'auto ha già avuto la prova gratuita di questa opzione.",
        "pt": "Este carro já teve o teste gratuito desta opção.",
    },
    "already_permanent": {
        "en": "The car already has this option for life.",
        "es": "El coche ya tiene esta opción para siempre.",
        "fr": "La voiture a déjà cette option à vie.",
        "de": "Das Auto hat diese Option bereits dauerhaft.",
        "it": "L'auto ha già questa opzione per sempre.",
        "pt": "O carro já tem esta opção para sempre.",
    },
}
FALLBACK_LANGUAGE: Final = "en"


def explain(refusal: Refusal, language: str, *, names: Mapping[str, str] | None = None) -> str:
    """The refusal for a person, in `language` (English when the table lacks it); `names`
    gives the options' names in that language by code (else the code is shown)."""
    texts = MESSAGES[refusal.reason]
    template = texts.get(language) or texts[FALLBACK_LANGUAGE]
    details = dict(refusal.details)
    code = details.get("feature", "")
    details["name"] = (names or {}).get(code, code)
    for placeholder in ("version", "running", "country"):
        details.setdefault(placeholder, "")
    return template.format(**details)


@dataclass(frozen=True)
class CarFacts:
    """What eligibility needs to know of a car and its platform at one instant."""

    vehicle_id: int
    owner_customer_id: int | None
    delivered: bool
    software_version: str
    fitted: frozenset[str]
    # Codes the car runs at the instant (its counting entitlements that cover it).
    running: frozenset[str]
    trials_used: frozenset[int]  # feature ids
    lifetime: frozenset[int]  # feature ids owned for the rest of the car's life
    follows_plan: bool
    # Every feature of the platform by code, to read conflicts declared on either side.
    platform: Mapping[str, Feature]


def car_facts(session: Session, vehicle: Vehicle, *, at: datetime) -> CarFacts:
    """Read once what `refusals_for` needs of the car."""
    running = frozenset(
        window.code
        for window in car_windows(session, vehicle)
        if (window.valid_from is None or window.valid_from <= at)
        and (window.valid_until is None or at < window.valid_until)
    )
    rows = session.execute(
        select(Entitlement.feature_id, Entitlement.source, Entitlement.state).where(
            Entitlement.vehicle_id == vehicle.id,
            Entitlement.source.in_(("trial", *LIFETIME_SOURCES)),
        )
    ).all()
    return CarFacts(
        vehicle_id=vehicle.id,
        owner_customer_id=vehicle.owner_customer_id,
        # A scrapped car (archived) is on the road no more: nothing can be bought for it.
        delivered=vehicle.delivered_at is not None
        and vehicle.delivered_at <= at
        and vehicle.state != "archived",
        software_version=vehicle.software_version,
        fitted=fitted_hardware(session, vehicle),
        running=running,
        trials_used=frozenset(feature_id for feature_id, source, _ in rows if source == "trial"),
        lifetime=frozenset(
            feature_id
            for feature_id, source, state in rows
            if source in LIFETIME_SOURCES and state in COUNTING_STATES
        ),
        follows_plan=follows_plan_now(session, vehicle, today=at.date()),
        platform={
            feature.code: feature
            for feature in catalog.platform_features(session, vehicle.platform_id)
        },
    )


def refusals_for(
    facts: CarFacts,
    *,
    feature: Feature,
    offer: Offer | None,
    customer: Customer,
    cart: Collection[str] = (),
) -> list[Refusal]:
    """Every reason why `customer` cannot get `feature` (through `offer`, when given) on the
    car now; empty when they can. `cart`: the codes of the other options bought together,
    which count as present for requirements and conflicts."""
    found: list[Refusal] = []

    def refuse(reason: Reason, **details: str) -> None:
        found.append(Refusal(reason, details))

    if not facts.delivered or facts.owner_customer_id != customer.id:
        refuse("not_delivered")
    if not feature.active or (offer is not None and not offer.active):
        refuse("withdrawn")
    if feature.needs_hardware and feature.code not in facts.fitted:
        refuse("hardware_missing")
    minimum = feature.min_software_version
    if minimum is not None and not software_at_least(facts.software_version, minimum):
        refuse("software_too_old", version=minimum, running=facts.software_version)
    present = facts.running | frozenset(cart)
    for code in feature.requires or ():
        if code not in present:
            refuse("requires_feature", feature=code)
    for code in sorted(present - {feature.code}):
        other = facts.platform.get(code)
        if code in (feature.conflicts or ()) or (
            other is not None and feature.code in (other.conflicts or ())
        ):
            refuse("conflicts_with", feature=code)
    sold_here = feature.countries is None or customer.country in feature.countries
    if not sold_here or (offer is not None and offer.country != customer.country):
        refuse("not_sold_in_country", country=customer.country)
    if feature.requires_maintenance and not facts.follows_plan:
        refuse("maintenance_overdue")
    if offer is not None and offer.kind == "trial" and feature.id in facts.trials_used:
        refuse("trial_used")
    if feature.id in facts.lifetime:
        refuse("already_permanent")
    return found


def refusals(
    session: Session,
    *,
    vehicle: Vehicle,
    feature: Feature,
    offer: Offer | None,
    customer: Customer,
    at: datetime,
    cart: Collection[str] = (),
) -> list[Refusal]:
    """`refusals_for` with the car's facts read now (one car, one option)."""
    facts = car_facts(session, vehicle, at=at)
    return refusals_for(facts, feature=feature, offer=offer, customer=customer, cart=cart)
