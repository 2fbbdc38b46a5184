"""Change of owner (a car sold second-hand) and end of life (a car scrapped)."""
