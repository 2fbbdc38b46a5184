"""Where every domain's routers are mounted on the application."""

from __future__ import annotations

from fastapi import FastAPI

from caas.accounts.api import router as accounts_router
from caas.billing.api import router as billing_router
from caas.billing.finance_api import router as finance_router
from caas.billing.methods_api import router as payment_methods_router
from caas.catalog.api import router as catalog_router
from caas.delivery.api import router as delivery_router
from caas.factory.api import router as factory_router
from caas.files.api import router as files_router
from caas.maintenance.api import router as maintenance_router
from caas.notifications.api import router as notifications_router
from caas.ownership.api import router as ownership_router
from caas.privacy.api import router as privacy_router
from caas.registration.api import router as registration_router
from caas.releases.api import owner_router as software_owner_router
from caas.releases.api import router as releases_router
from caas.sales.api import router as sales_router
from caas.store.api import router as store_router
from caas.store.metering_api import router as metering_router
from caas.store.offers_api import router as offers_router
from caas.store.options_api import router as options_router
from caas.store.time_api import router as store_time_router
from caas.store.upcoming_api import router as upcoming_router
from caas.upkeep.api import router as upkeep_router
from caas.upkeep.thresholds_api import router as upkeep_thresholds_router
from caas.vehicles.api import router as twin_router
from caas.vehicles.keys_api import router as phone_keys_router
from caas.web.site import include_web


def include_routes(app: FastAPI) -> None:
    app.include_router(accounts_router)
    app.include_router(sales_router)
    app.include_router(billing_router)
    app.include_router(payment_methods_router)
    app.include_router(notifications_router)
    app.include_router(factory_router)
    app.include_router(registration_router)
    app.include_router(delivery_router)
    app.include_router(phone_keys_router)
    app.include_router(twin_router)
    app.include_router(ownership_router)
    app.include_router(privacy_router)
    include_web(app)
    app.include_router(catalog_router)
    app.include_router(maintenance_router)
    app.include_router(files_router)
    app.include_router(store_router)
    app.include_router(options_router)
    app.include_router(offers_router)
    app.include_router(store_time_router)
    app.include_router(metering_router)
    app.include_router(upcoming_router)
    app.include_router(releases_router)
    app.include_router(software_owner_router)
    app.include_router(finance_router)
    app.include_router(upkeep_router)
    app.include_router(upkeep_thresholds_router)
