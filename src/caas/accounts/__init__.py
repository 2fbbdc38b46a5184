"""Users, roles, dealerships, activation tokens, web sessions and API tokens."""
