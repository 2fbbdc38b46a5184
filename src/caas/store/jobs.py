"""Background work of the store, delivered by the worker's relay (`caas.core.outbox`).

Each part of the store adds its topics here: the purchase's deadline, the sweep of window
boundaries, renewals, occurrences, reminders.
"""

from __future__ import annotations

from caas.core.clock import Clock
from caas.core.outbox import Handler
from caas.core.settings import Settings


def time_handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    """Renewals, occurrences and reminders (`subscriptions`, `schedules`, `reminders`)."""
    from caas.billing.provider import SandboxProvider
    from caas.store import reminders, schedules, subscriptions

    def provider() -> SandboxProvider:
        return SandboxProvider.from_settings(settings)

    return {
        **subscriptions.handlers(provider, clock),
        **schedules.handlers(provider, clock),
        **reminders.handlers(clock),
    }


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    """Every store topic with the function that delivers it."""
    from caas.store import purchases, sweep

    topics: dict[str, Handler] = {}
    topics.update(sweep.handlers(clock))
    topics.update(purchases.handlers(settings, clock))
    topics.update(time_handlers(settings, clock))
    return topics
