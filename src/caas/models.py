"""Every table of the platform, imported in one place for Alembic and the metadata."""

from caas.accounts import models as accounts_models
from caas.billing import models as billing_models
from caas.catalog import models as catalog_models
from caas.core import history, idempotency, outbox
from caas.delivery import models as delivery_models
from caas.factory import models as factory_models
from caas.iot import models as iot_models
from caas.maintenance import models as maintenance_models
from caas.notifications import models as notifications_models
from caas.ota import models as ota_models
from caas.ownership import models as ownership_models
from caas.privacy import models as privacy_models
from caas.registration import models as registration_models
from caas.releases import models as releases_models
from caas.sales import models as sales_models
from caas.store import models as store_models
from caas.upkeep import models as upkeep_models
from caas.upkeep import readings_models as upkeep_readings_models
from caas.vehicles import models as vehicles_models

__all__ = [
    "accounts_models",
    "billing_models",
    "catalog_models",
    "delivery_models",
    "factory_models",
    "history",
    "idempotency",
    "iot_models",
    "maintenance_models",
    "notifications_models",
    "ota_models",
    "outbox",
    "ownership_models",
    "privacy_models",
    "registration_models",
    "releases_models",
    "sales_models",
    "store_models",
    "upkeep_models",
    "upkeep_readings_models",
    "vehicles_models",
]
