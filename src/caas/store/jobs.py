"""Background work of the store, delivered by the worker's relay (`caas.core.outbox`).

Each part of the store adds its topics here: the purchase's deadline, the sweep of window
boundaries, renewals, occurrences, reminders.
"""

from __future__ import annotations

from caas.core.clock import Clock
from caas.core.outbox import Handler
from caas.core.settings import Settings


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    """Every store topic with the function that delivers it."""
    from caas.store import purchases, sweep

    topics: dict[str, Handler] = {}
    topics.update(sweep.handlers(clock))
    topics.update(purchases.handlers(settings, clock))
    return topics
