"""The feature store: offers, eligibility, purchases, entitlements over time (issue 5)."""
