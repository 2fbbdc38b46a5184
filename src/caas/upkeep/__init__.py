"""Upkeep: the car that looks after itself.

The car's readings cross a threshold (`readings`, `thresholds`), detection calls
`caas.upkeep.orders.propose`, and a service order follows its life at an official workshop:
proposed, confirmed (a slot taken in the workshop's calendar, `calendar`), parts reserved,
done (recorded in the maintenance history) or cancelled. A customer's standing consent
(`consent`) lets the platform confirm orders up to an amount without asking.
"""
