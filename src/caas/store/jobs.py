"""Background work of the store, delivered by the worker's relay (`caas.core.outbox`).

Each part of the store adds its topics here: the purchase's deadline, the sweep of window
boundaries, renewals, occurrences, reminders.
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import Clock
from caas.core.db import unit_of_work
from caas.core.outbox import Handler
from caas.core.settings import Settings

log = structlog.get_logger(__name__)


def time_handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    """Renewals, occurrences and reminders (`subscriptions`, `schedules`, `reminders`); every
    renewal's and occurrence's payment goes through one provider client."""
    from caas.billing.provider import SharedProvider
    from caas.store import reminders, schedules, subscriptions

    provider = SharedProvider(settings)
    return {
        **subscriptions.handlers(provider, clock),
        **schedules.handlers(provider, clock),
        **reminders.handlers(clock),
    }


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    """Every store topic with the function that delivers it."""
    from caas.store import metering, purchases, sweep

    topics: dict[str, Handler] = {}
    topics.update(metering.handlers(settings, clock))
    topics.update(sweep.handlers(clock))
    topics.update(purchases.handlers(settings, clock))
    topics.update(time_handlers(settings, clock))
    return topics


def start_chains(sessions: sessionmaker[Session], clock: Clock) -> None:
    """Make sure the self-rescheduling sweeps (window boundaries, reminders) are queued: the
    first grant queues them too, but a worker that starts on a database where they never ran
    (or whose chain was lost with a restored backup) starts them here. Idempotent; a database
    that is down now only delays it to the first grant or the next start."""
    from caas.store import metering, reminders, sweep

    try:
        with unit_of_work(sessions) as session:
            now = clock.now()
            sweep.start_sweeping(session, now=now)
            reminders.start_reminding(session, now=now)
            metering.start_metering(session, now=now)
    except SQLAlchemyError as error:
        log.warning("store.chains_not_started", error=str(error))
